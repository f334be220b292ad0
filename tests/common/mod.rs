//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::{Arc, Barrier};

use concurrent_futures::{FutureHandle, ThreadPool};

/// Occupies one worker with a task that waits at the returned barrier, and
/// returns once that task runs, so whatever is submitted next queues.
pub fn occupy(pool: &ThreadPool) -> (FutureHandle<()>, Arc<Barrier>) {
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let task = pool
        .submit(move || {
            g.wait();
        })
        .unwrap();
    while !task.running() {
        std::thread::yield_now();
    }
    (task, gate)
}

/// Holds every worker busy; what is submitted until the returned release
/// is called queues behind it.
pub fn hold_workers(pool: &ThreadPool) -> impl FnOnce() + use<> {
    let n = pool.workers();
    let (held, release) = (Arc::new(Barrier::new(n + 1)), Arc::new(Barrier::new(n + 1)));
    for _ in 0..n {
        let (h, r) = (held.clone(), release.clone());
        pool.spawn(move || {
            h.wait();
            r.wait();
        })
        .unwrap();
    }
    held.wait();
    move || {
        release.wait();
    }
}

/// A future that is pending `wakes` times, waking itself each time (each
/// wake re-queues it on the pool), then ready.
pub fn wakes_itself(wakes: usize) -> impl std::future::Future<Output = ()> + Send {
    let mut left = wakes;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return std::task::Poll::Ready(());
        }
        left -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}
