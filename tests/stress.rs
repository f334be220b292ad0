//! Stress: many threads attach callbacks while another completes the future.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use concurrent_futures::Promise;

const THREADS: usize = 4;
/// 1,000,000 callbacks in all (fewer under Miri, which is ~1000x slower).
const PER_THREAD: usize = if cfg!(miri) { 50 } else { 250_000 };

struct Check {
    running: AtomicUsize,
    max_running: AtomicUsize,
    ran: AtomicUsize,
    /// Last sequence number seen per attaching thread (+1; 0 = none yet).
    last: Vec<AtomicUsize>,
    out_of_order: AtomicBool,
    attached: AtomicUsize,
}

#[test]
fn million_callbacks_attached_while_completing_run_once_in_order_never_overlapping() {
    let check = Arc::new(Check {
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
        ran: AtomicUsize::new(0),
        last: (0..THREADS).map(|_| AtomicUsize::new(0)).collect(),
        out_of_order: AtomicBool::new(false),
        attached: AtomicUsize::new(0),
    });
    let promise = Promise::new();
    let start = Arc::new(Barrier::new(THREADS + 1));
    let attachers: Vec<_> = (0..THREADS)
        .map(|t| {
            let h = promise.handle();
            let (check, start) = (check.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for seq in 1..=PER_THREAD {
                    let c = check.clone();
                    let _ = h.add_done_callback(move |r| {
                        // A panic here would be caught and reported, not
                        // fail the test: record a wrong outcome as disorder.
                        if r != Ok(&1u8) {
                            c.out_of_order.store(true, Ordering::SeqCst);
                        }
                        let now = c.running.fetch_add(1, Ordering::SeqCst) + 1;
                        c.max_running.fetch_max(now, Ordering::SeqCst);
                        // Callbacks never overlap, so this check-then-store is
                        // race-free exactly when the guarantee holds.
                        if c.last[t].load(Ordering::SeqCst) >= seq {
                            c.out_of_order.store(true, Ordering::SeqCst);
                        }
                        c.last[t].store(seq, Ordering::SeqCst);
                        c.ran.fetch_add(1, Ordering::SeqCst);
                        c.running.fetch_sub(1, Ordering::SeqCst);
                    });
                    check.attached.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    start.wait();
    // Complete once a third of the callbacks are attached, so the rest race
    // the drain or arrive after it (no sleeping: wait on the count).
    while check.attached.load(Ordering::Relaxed) < THREADS * PER_THREAD / 3 {
        thread::yield_now();
    }
    promise.set_result(1).unwrap();
    for a in attachers {
        a.join().unwrap();
    }
    assert_eq!(
        check.ran.load(Ordering::SeqCst),
        THREADS * PER_THREAD,
        "each exactly once"
    );
    assert_eq!(
        check.max_running.load(Ordering::SeqCst),
        1,
        "callbacks overlapped"
    );
    assert!(
        !check.out_of_order.load(Ordering::SeqCst),
        "a thread's callbacks ran out of order"
    );
    for l in &check.last {
        assert_eq!(l.load(Ordering::SeqCst), PER_THREAD);
    }
}
