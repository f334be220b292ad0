// Pins `F: 'static` on `ThreadPool::spawn`: a fire-and-forget task may run
// after the spawning frame returns, so it must not borrow a local.
use concurrent_futures::ThreadPool;

fn main() {
    let pool = ThreadPool::new(1).unwrap();
    let local = String::from("borrowed");
    let local_ref = &local;
    let _ = pool.spawn(move || println!("{}", local_ref));
}
