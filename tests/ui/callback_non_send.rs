// Pins `F: Send` on `FutureHandle::add_done_callback`: the callback runs
// on whichever thread completes the future (or drops it, if removed), so
// it must not capture an `Rc`.
use std::rc::Rc;

use concurrent_futures::Promise;

fn main() {
    let promise = Promise::<u8>::new();
    let handle = promise.handle();
    let rc = Rc::new(());
    let _ = handle.add_done_callback(move |_| drop(rc));
}
