//! Several threads attach done-callbacks to one promise while another thread
//! completes it; prints the order they ran in and checks the guarantees:
//! each ran once, each thread's in its own order, never two at once.
//!
//! Run: `cargo run --release --example callbacks`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use concurrent_futures::Promise;

const THREADS: usize = 3;
const PER_THREAD: usize = 5;

fn main() {
    let promise = Promise::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS + 1));

    let attachers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, order, running, start) = (
                promise.handle(),
                order.clone(),
                running.clone(),
                start.clone(),
            );
            thread::spawn(move || {
                start.wait();
                for i in 0..PER_THREAD {
                    let (order, running) = (order.clone(), running.clone());
                    handle.add_done_callback(move |value| {
                        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "overlap");
                        order.lock().unwrap().push((t, i, *value.unwrap()));
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        })
        .collect();

    start.wait();
    // Complete while the attachers are (probably) still attaching: callbacks
    // attached after this point run after the earlier ones, on the draining
    // thread or on the attaching thread.
    promise.set_result(42).unwrap();
    for a in attachers {
        a.join().unwrap();
    }

    let order = order.lock().unwrap();
    println!("callbacks ran in this order (thread, index, value):");
    for (t, i, v) in order.iter() {
        println!("  thread {t} callback {i} saw {v}");
    }
    assert_eq!(order.len(), THREADS * PER_THREAD, "each exactly once");
    for t in 0..THREADS {
        let mine: Vec<usize> = order.iter().filter(|e| e.0 == t).map(|e| e.1).collect();
        assert_eq!(
            mine,
            (0..PER_THREAD).collect::<Vec<_>>(),
            "thread {t} out of order"
        );
    }
    println!(
        "ok: {} callbacks, each once, per-thread order kept, none overlapped",
        order.len()
    );
}
