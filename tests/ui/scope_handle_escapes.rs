// A scoped handle cannot outlive its scope: returning it out of `scope`
// is refused, so no handle can reach a task after the borrows it ran on end.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let data = vec![1, 2, 3];
    let handle = pool.scope(|s| s.submit(|| data.len()).unwrap());
    drop(handle);
}
