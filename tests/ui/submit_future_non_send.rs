// Pins `F: Send` on `ThreadPool::submit_future`: the future moves between
// workers from poll to poll, so it must not hold an `Rc` across an await.
use std::rc::Rc;

use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let _ = pool.submit_future(async {
        let rc = Rc::new(1u8);
        std::future::ready(()).await;
        *rc
    });
}
