// Pins `T: Send` on `ThreadPool::submit`: the value is made on a worker and
// read (or moved out) on other threads, so an `Rc` result must be refused
// even though the closure itself captures nothing.
use std::rc::Rc;

use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let _ = pool.submit(|| Rc::new(1u8));
}
