// A scope does not lend its lifetime to a strand: strand work may run after
// the scope, so a closure borrowing the scope's data is refused there.
use concurrent_futures::{Strand, ThreadPool};

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    let data = vec![1u32, 2, 3];
    pool.scope(|_s| {
        let data = &data;
        strand.post(move |total| *total += data[0]);
    });
}
