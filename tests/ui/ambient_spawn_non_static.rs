// Pins `F: 'static` on `concurrent_futures::spawn` and `submit`: work queued
// from a task may run after the task returns, so it must not borrow the
// task's locals.
fn main() {
    let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    let _ = pool.submit(|| {
        let spawned = String::from("borrowed");
        let spawned_ref = &spawned;
        let _ = concurrent_futures::spawn(move || println!("{}", spawned_ref));
        let submitted = String::from("borrowed");
        let submitted_ref = &submitted;
        let _ = concurrent_futures::submit(move || submitted_ref.len());
    });
}
