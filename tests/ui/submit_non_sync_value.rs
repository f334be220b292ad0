// Pins `T: Sync` on `ThreadPool::submit`: every handle clone and every
// done-callback reads the value by `&T`, possibly on several threads at
// once, so a `Send` but not `Sync` result (`Cell`) must be refused.
use std::cell::Cell;

use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let _ = pool.submit(|| Cell::new(1u8));
}
