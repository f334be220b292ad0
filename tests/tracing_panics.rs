//! A `tracing` subscriber is user code: one that panics inside the task
//! span, or in any event the pool emits, is contained and reported; no
//! worker dies and shutdown still returns.
#![cfg(all(feature = "tracing", not(loom)))]

mod common;
use common::{Watchdog, assert_all_workers_alive};

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concurrent_futures::{CallbackPanic, PanicOrigin, ThreadPool};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Panics in every callback, but only on the pool's threads (named
/// `panicky-*`), so the test's own thread can still build and shut down.
struct Panicky;

fn on_pool() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("panicky"))
}

fn boom(what: &str) {
    if on_pool() {
        panic!("subscriber {what}");
    }
}

impl Subscriber for Panicky {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        boom("event");
    }
    fn enter(&self, _: &Id) {
        // Every other enter succeeds, so that exits happen (and panic) too.
        if ENTERS.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            boom("enter");
        }
    }
    fn exit(&self, _: &Id) {
        boom("exit");
    }
}

static ENTERS: AtomicUsize = AtomicUsize::new(0);

static SEEN: Mutex<Vec<(PanicOrigin, String)>> = Mutex::new(Vec::new());

fn record(p: &CallbackPanic) {
    SEEN.lock()
        .unwrap()
        .push((p.origin(), p.message().to_string()));
}

#[test]
fn a_panicking_subscriber_kills_no_worker() {
    let _dog = Watchdog::new(
        "a_panicking_subscriber_kills_no_worker",
        Duration::from_secs(60),
    );
    tracing::subscriber::set_global_default(Panicky).unwrap();
    let pool = ThreadPool::builder()
        .workers(1)
        .max_blocking(0)
        .thread_name("panicky")
        .callback_panic_hook(record)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..10u32)
        .map(|i| pool.submit(move || i).unwrap())
        .collect();
    let sum: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 45);
    assert_all_workers_alive(&pool);
    assert_eq!(pool.metrics().threads, 1);
    let report = pool.shutdown_timeout(Duration::from_secs(30), false);
    assert!(report.finished);
    let seen = SEEN.lock().unwrap();
    for what in ["subscriber enter", "subscriber exit", "subscriber event"] {
        assert!(
            seen.iter()
                .any(|(o, m)| *o == PanicOrigin::Tracing && m == what),
            "{what} not reported: {seen:?}"
        );
    }
}
