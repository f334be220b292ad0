// Pins that `Promise<T>` is not `Send` for a non-`Send` `T`: moving the
// writer to another thread would let it set an `Rc` there that the
// handles then touch from here.
use std::rc::Rc;

use concurrent_futures::Promise;

fn set_elsewhere(promise: Promise<Rc<u8>>) {
    std::thread::spawn(move || drop(promise));
}

fn main() {
    let _ = set_elsewhere;
}
