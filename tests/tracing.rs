//! The `tracing` feature: a pool's lifecycle and its tasks are visible to
//! a subscriber, and events a task emits nest inside its `task` span.
#![cfg(all(feature = "tracing", not(loom)))]

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use concurrent_futures::ThreadPool;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records, for each event, its message and the span names it is inside.
#[derive(Default)]
struct Recorder {
    next_id: AtomicU64,
    spans: Mutex<Vec<(u64, &'static str)>>,
    events: Mutex<Vec<(String, Vec<&'static str>)>>,
}

thread_local! {
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[derive(Clone)]
struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.0
            .spans
            .lock()
            .unwrap()
            .push((id, attrs.metadata().name()));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans = self.0.spans.lock().unwrap();
        let inside = STACK.with(|s| {
            s.borrow()
                .iter()
                .filter_map(|id| spans.iter().find(|(i, _)| i == id).map(|(_, n)| *n))
                .collect()
        });
        self.0.events.lock().unwrap().push((message.0, inside));
    }
    fn enter(&self, id: &Id) {
        STACK.with(|s| s.borrow_mut().push(id.into_u64()));
    }
    fn exit(&self, _: &Id) {
        STACK.with(|s| s.borrow_mut().pop());
    }
}

#[test]
fn pool_lifecycle_and_tasks_are_traced() {
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Shared(recorder.clone())).unwrap();

    let pool = ThreadPool::new(2).unwrap();
    let h = pool.submit(|| tracing::info!("inside the task")).unwrap();
    h.join().unwrap();
    let report = pool.shutdown_timeout(std::time::Duration::from_secs(60), false);
    assert!(report.finished);

    let events = recorder.events.lock().unwrap();
    let messages: Vec<&str> = events.iter().map(|(m, _)| m.as_str()).collect();
    for expected in [
        "pool started",
        "worker started",
        "task finished",
        "shutdown",
        "worker exited",
        "shutdown returns",
    ] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
    assert_eq!(
        messages.iter().filter(|m| **m == "worker started").count(),
        2
    );
    assert_eq!(
        messages.iter().filter(|m| **m == "worker exited").count(),
        2
    );
    let (_, inside) = events
        .iter()
        .find(|(m, _)| m == "inside the task")
        .expect("the task's own event");
    assert_eq!(inside, &["task"]);
}
