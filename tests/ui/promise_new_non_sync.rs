// Pins `T: Send + Sync` on `Promise::new`: a future's value is shared by
// reference between its handles and callbacks on any thread, so a promise
// of a non-`Sync` value (`Cell`) must not even be created.
use std::cell::Cell;

use concurrent_futures::Promise;

fn main() {
    let _promise = Promise::<Cell<u8>>::new();
}
