// The same for a scoped handle's done-callback: it may run after the body
// returns, so it cannot borrow the body's locals.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    pool.scope(|s| {
        let local = String::from("dies with the body");
        let h = s.submit(|| 1u8).unwrap();
        h.add_done_callback(|_| println!("{local}"));
    });
}
