// Nor can the future of `.await` on a scoped handle.
use concurrent_futures::ThreadPool;
use std::future::IntoFuture;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let join = pool.scope(|s| s.submit(|| 1u8).unwrap().into_future());
    drop(join);
}
