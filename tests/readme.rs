//! The README's example, compiled and run.
#![cfg(not(loom))]

#[test]
fn readme_example() {
    use concurrent_futures::{Promise, Strand, ThreadPool};

    let pool = ThreadPool::new(4).unwrap();
    let handle = pool.submit(|| (1..=10u64).product::<u64>()).unwrap();
    handle.add_done_callback(|r| println!("10! = {}", r.unwrap()));
    assert_eq!(handle.join(), Ok(3_628_800));

    let totals = Strand::new(&pool, 0u64);
    let h = pool.submit(|| 5u64).unwrap();
    totals.add_done_callback(&h, |sum, r| *sum += r.unwrap());

    let promise = Promise::new();
    let h = promise.handle();
    std::thread::spawn(move || promise.set_result("hi").unwrap());
    assert_eq!(h.result(), Ok(&"hi"));
}
