// Pins the higher-ranked `FnOnce(&mut S)` of `Strand::post`: the `&mut S`
// lent to a closure is valid only for that call (the next drain, on another
// worker, mutates the same state), so it must not be smuggled out. The
// sink here is a `'static + Send` channel, so the only error is the escape.
use std::sync::mpsc;

use concurrent_futures::{Strand, ThreadPool};

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    let (tx, _rx) = mpsc::channel::<&'static mut u32>();
    strand.post(move |s| tx.send(s).unwrap());
}
