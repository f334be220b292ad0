// A task may borrow what outlives the scope, not a local of the scope's
// body: the body returns before the scope has waited for its tasks.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    pool.scope(|s| {
        let local = String::from("dies with the body");
        s.spawn(|| println!("{local}")).unwrap();
    });
}
