// A scoped task's result must be `'static`: a handle or a queue entry may
// keep it after the scope, so it cannot borrow what the task borrowed.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let data = vec![1, 2, 3];
    pool.scope(|s| {
        let h = s.submit(|| &data[..2]).unwrap();
        drop(h);
    });
}
