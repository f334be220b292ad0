// Pins that `FutureHandle<T>` is `Send` only when `T: Sync` (it holds an
// `Arc` of the shared state): `Cell<u8>` is `Send` but not `Sync`, and
// handles on several threads would share one `&Cell` through `result()`.
use std::cell::Cell;

use concurrent_futures::FutureHandle;

fn read_elsewhere(handle: FutureHandle<Cell<u8>>) {
    std::thread::spawn(move || handle.try_result().is_some());
}

fn main() {
    let _ = read_elsewhere;
}
