// Inside a scope, the pool's own `spawn` still needs `'static`: only the
// scope's `spawn`/`submit` may borrow.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let data = vec![1, 2, 3];
    pool.scope(|_s| {
        let data = &data;
        pool.spawn(move || println!("{}", data.len())).unwrap();
    });
}
