// Pins the same loan on `Strand::submit`: the result type `R` cannot
// borrow from the `&mut S` the closure gets, so the state cannot leak out
// through the returned `FutureHandle`.
use concurrent_futures::{Strand, ThreadPool};

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    let _leak = strand.submit(|s| s);
}
