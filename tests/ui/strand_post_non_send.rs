// Pins `F: Send` on `Strand::post`: the closure runs on a pool worker, not
// on the posting thread, so it must not capture an `Rc`.
use std::rc::Rc;

use concurrent_futures::{Strand, ThreadPool};

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    let rc = Rc::new(1u32);
    strand.post(move |s| *s += *rc);
}
