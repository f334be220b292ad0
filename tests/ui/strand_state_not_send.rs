// Pins `S: Send` on `Strand::new`: the state is handed from worker to
// worker as successive drains run, so a non-`Send` state (`Rc`) must be
// refused.
use std::rc::Rc;

use concurrent_futures::{Strand, ThreadPool};

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let _strand = Strand::new(&pool, Rc::new(1));
}
