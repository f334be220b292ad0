// Pins `F: Send` on `ThreadPool::submit`: the closure runs on a worker
// thread, so it must not capture an `Rc` (whose count is not atomic). The
// task returns a plain `u8`, so only the closure is at fault here.
use std::rc::Rc;

use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let rc = Rc::new(1u8);
    let _ = pool.submit(move || *rc);
}
