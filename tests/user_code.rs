//! User code can never break the machinery: regression tests for the bugs a
//! review found where the crate calls code it does not control, and the
//! panic-injection matrix over every such call (docs/design.md, "Calls
//! into user code").
//!
//! Every panic here carries a message unique to its test, and every report
//! lands in one recorder (the process-wide hook, and each pool's hook), so
//! tests running in parallel can each look for their own.
#![cfg(not(loom))]

mod common;
use common::{
    Watchdog, assert_all_workers_alive, occupy, one_worker_pool, spawn_parked, thread_name,
};

use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, Once};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::thread;
use std::time::Duration;

use concurrent_futures::{
    BuildError, FutureHandle, PanicOrigin, Promise, ReturnWhen, Strand, TaskError, ThreadPool, wait,
};

// ---------------------------------------------------------------------------
// The recorder and the bombs.

static SEEN: Mutex<Vec<(PanicOrigin, String)>> = Mutex::new(Vec::new());

fn record(p: &concurrent_futures::CallbackPanic) {
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((p.origin(), p.message().to_string()));
}

/// Installs the recording process-wide hook (once for this binary).
fn recorder() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| concurrent_futures::set_callback_panic_hook(record));
}

/// The origins reported so far for `message`.
fn reports(message: &str) -> Vec<PanicOrigin> {
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, m)| m == message)
        .map(|(o, _)| *o)
        .collect()
}

/// A one-worker pool whose hook records, and which never compensates (so a
/// dead worker cannot be hidden by an extra one).
fn one_worker() -> ThreadPool {
    recorder();
    ThreadPool::builder()
        .workers(1)
        .max_blocking(0)
        .callback_panic_hook(record)
        .build()
        .unwrap()
}

/// Panics with its message when dropped (unless defused: emptied).
struct Bomb(String);

impl Drop for Bomb {
    fn drop(&mut self) {
        if !thread::panicking() && !self.0.is_empty() {
            panic!("{}", self.0);
        }
    }
}

/// What the injected user code does wrong.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Its body panics.
    Panics,
    /// Its body returns, but something it owns panics on drop.
    DropPanics,
}

const FAULTS: [Fault; 2] = [Fault::Panics, Fault::DropPanics];

/// A waker that counts wakes and panics in `wake`, `clone` or `drop` as
/// configured (a raw vtable, so each misbehaviour can be chosen alone).
struct Naughty {
    wakes: AtomicUsize,
    panic_in_wake: Option<String>,
    panic_in_clone: Option<String>,
    panic_in_drop: Option<String>,
    refs: AtomicUsize,
}

impl Naughty {
    fn new() -> Naughty {
        Naughty {
            wakes: AtomicUsize::new(0),
            panic_in_wake: None,
            panic_in_clone: None,
            panic_in_drop: None,
            refs: AtomicUsize::new(1),
        }
    }

    /// A waker over this `Naughty`, and the test's own reference to it.
    fn waker(self) -> (Waker, Arc<Naughty>) {
        let n = Arc::new(self);
        let raw = RawWaker::new(Arc::into_raw(n.clone()) as *const (), &VTABLE);
        // SAFETY: the data pointer is an `Arc<Naughty>` reference, which
        // the vtable's clone and drop count and free as an `Arc` does.
        (unsafe { Waker::from_raw(raw) }, n)
    }
}

/// The `Naughty` behind a waker's data pointer.
///
/// # Safety
/// `p` is a live `Arc<Naughty>` reference made by `Naughty::waker`.
unsafe fn naughty<'a>(p: *const ()) -> &'a Naughty {
    // SAFETY: by contract.
    unsafe { &*(p as *const Naughty) }
}

/// Gives up one waker reference; the last waker's drop may panic (after
/// the memory is given back, so nothing leaks either way).
///
/// # Safety
/// As for [`naughty`]; the reference is not used again.
unsafe fn release(p: *const ()) {
    // SAFETY: by contract.
    let n = unsafe { naughty(p) };
    let last = n.refs.fetch_sub(1, SeqCst) == 1;
    let message = n.panic_in_drop.clone().filter(|_| last);
    // SAFETY: by contract, this reference is ours to give up.
    unsafe { Arc::decrement_strong_count(p as *const Naughty) };
    if let Some(m) = message {
        panic!("{m}");
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |p| {
        // SAFETY: the vtable is only used with `Naughty::waker`'s pointers.
        let n = unsafe { naughty(p) };
        if let Some(m) = &n.panic_in_clone {
            panic!("{m}");
        }
        n.refs.fetch_add(1, SeqCst);
        // SAFETY: as above; the new waker owns one more reference.
        unsafe { Arc::increment_strong_count(p as *const Naughty) };
        RawWaker::new(p, &VTABLE)
    },
    |p| {
        // SAFETY: as above.
        let n = unsafe { naughty(p) };
        n.wakes.fetch_add(1, SeqCst);
        if let Some(m) = n.panic_in_wake.clone() {
            // SAFETY: `wake` consumes this reference.
            unsafe { release(p) };
            panic!("{m}");
        }
        // SAFETY: as above.
        unsafe { release(p) };
    },
    |p| {
        // SAFETY: as above.
        let n = unsafe { naughty(p) };
        n.wakes.fetch_add(1, SeqCst);
        if let Some(m) = &n.panic_in_wake {
            panic!("{m}");
        }
    },
    // SAFETY: as above; `drop` consumes this reference.
    |p| unsafe { release(p) },
);

/// Polls `f` once with `waker`.
fn poll_once<F: std::future::Future + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting_waker() -> (Waker, Arc<Counter>) {
    let c = Arc::new(Counter(AtomicUsize::new(0)));
    (Waker::from(c.clone()), c)
}

// ---------------------------------------------------------------------------
// Regression tests: each failed on the code before this change.

/// Bug 1: a panicking `Waker::wake` unwound through the waiter drain: the
/// completion unwound, a blocked waiter never woke, and no callback ran.
#[test]
fn a_panicking_wake_does_not_break_completion() {
    recorder();
    let _dog = Watchdog::new(
        "a_panicking_wake_does_not_break_completion",
        Duration::from_secs(20),
    );
    let promise = Promise::<u32>::new();
    let handle = promise.handle();
    let mut bad = Naughty::new();
    bad.panic_in_wake = Some("bug 1: wake".into());
    let (waker, bad) = bad.waker();
    let mut waiting = Box::pin(handle.wait_async());
    assert!(poll_once(waiting.as_mut(), &waker).is_pending());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    handle.add_done_callback(move |_| {
        r.fetch_add(1, SeqCst);
    });
    let blocked = {
        let h = handle.clone();
        spawn_parked(move || h.wait())
    };
    let set = catch_unwind(AssertUnwindSafe(|| promise.set_result(7)));
    assert!(matches!(set, Ok(Ok(()))), "set_result unwound");
    assert_eq!(blocked.join().unwrap(), Ok(()));
    assert_eq!(ran.load(SeqCst), 1);
    assert_eq!(bad.wakes.load(SeqCst), 1);
    // The callback list was sealed: a late callback runs at once.
    let r = ran.clone();
    handle.add_done_callback(move |_| {
        r.fetch_add(1, SeqCst);
    });
    assert_eq!(ran.load(SeqCst), 2);
    assert_eq!(reports("bug 1: wake"), [PanicOrigin::Waker]);
    assert!(matches!(
        poll_once(waiting.as_mut(), &waker),
        Poll::Ready(Ok(&7))
    ));
}

/// Bug 1 on a pool: the worker completing the task died.
#[test]
fn a_panicking_wake_does_not_kill_the_completing_worker() {
    let _dog = Watchdog::new(
        "a_panicking_wake_does_not_kill_the_completing_worker",
        Duration::from_secs(20),
    );
    let pool = one_worker();
    let gate = Promise::<()>::new();
    let g = gate.handle();
    let task = pool.submit(move || *g.result().unwrap()).unwrap();
    let mut bad = Naughty::new();
    bad.panic_in_wake = Some("bug 1 on a pool: wake".into());
    let (waker, _) = bad.waker();
    let mut waiting = Box::pin(task.wait_async());
    assert!(poll_once(waiting.as_mut(), &waker).is_pending());
    gate.set_result(()).unwrap();
    assert_eq!(task.wait(), Ok(()));
    assert_all_workers_alive(&pool);
    assert_eq!(pool.metrics().threads, 1);
    assert_eq!(reports("bug 1 on a pool: wake"), [PanicOrigin::Waker]);
}

/// Bug 2: a waker whose `drop` panicked during compaction left the waiter
/// stack busy, and every later waiter hung.
#[test]
fn a_waker_panicking_on_drop_during_compaction_loses_no_waiter() {
    recorder();
    let _dog = Watchdog::new(
        "a_waker_panicking_on_drop_during_compaction",
        Duration::from_secs(20),
    );
    let promise = Promise::<u32>::new();
    let handle = promise.handle();
    // More withdrawn async waiters than the compaction threshold, each with
    // a waker that panics when its last reference goes.
    for i in 0..40 {
        let mut bad = Naughty::new();
        bad.panic_in_drop = Some(format!("bug 2: drop {i}"));
        let (waker, _) = bad.waker();
        let mut waiting = Box::pin(handle.wait_async());
        assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        drop(waker);
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(waiting)));
        assert!(dropped.is_ok(), "withdrawing waiter {i} unwound");
    }
    let (waker, woken) = counting_waker();
    let mut waiting = Box::pin(handle.wait_async());
    assert!(poll_once(waiting.as_mut(), &waker).is_pending());
    let blocked = {
        let h = handle.clone();
        spawn_parked(move || h.wait())
    };
    promise.set_result(3).unwrap();
    assert_eq!(blocked.join().unwrap(), Ok(()));
    assert_eq!(woken.0.load(SeqCst), 1);
    assert!(matches!(
        poll_once(waiting.as_mut(), &waker),
        Poll::Ready(Ok(&3))
    ));
    // Every waker was dropped exactly once, each drop reported.
    for i in 0..40 {
        assert_eq!(
            reports(&format!("bug 2: drop {i}")),
            [PanicOrigin::Drop],
            "waker {i}"
        );
    }
}

/// A compaction drops removed closures only after letting go of the list:
/// a slow `Drop` there must not leave the completer's callbacks to it.
#[test]
fn a_compaction_runs_no_user_drop_while_it_owns_the_list() {
    let _dog = Watchdog::new("a_compaction_runs_no_user_drop", Duration::from_secs(20));
    let promise = Promise::<u8>::new();
    let handle = promise.handle();
    let (in_drop_tx, in_drop) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    /// Says it is being dropped, then waits to be let go.
    struct Slow(mpsc::Sender<()>, Mutex<mpsc::Receiver<()>>);
    impl Drop for Slow {
        fn drop(&mut self) {
            let _ = self.0.send(());
            let _ = self.1.lock().unwrap().recv();
        }
    }
    let slow = Slow(in_drop_tx, Mutex::new(go_rx));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    handle.add_done_callback(move |_| {
        r.fetch_add(1, SeqCst);
    });
    let first = handle.add_done_callback(move |_| drop(slow));
    let regs: Vec<_> = (0..40).map(|_| handle.add_done_callback(|_| {})).collect();
    let remover = {
        let h = handle.clone();
        thread::spawn(move || {
            h.remove_done_callback(first);
            for r in regs {
                h.remove_done_callback(r);
            }
        })
    };
    // The remover's compaction is inside `Slow`'s drop now.
    in_drop.recv().unwrap();
    promise.set_result(1).unwrap();
    // The list was not busy: this thread ran the callbacks itself.
    assert_eq!(ran.load(SeqCst), 1);
    go.send(()).unwrap();
    remover.join().unwrap();
}

/// A cancelling shutdown of `pool` while the caller holds `log`'s lock,
/// which the work routed to the workers takes: run on the caller instead,
/// it would deadlock (the watchdog would end the test).
fn cancel_holding<T>(pool: &ThreadPool, log: &Mutex<T>) {
    let held = log.lock().unwrap();
    pool.shutdown(false, true);
    drop(held);
}

/// Bug 3: a cancelling shutdown ran pool-routed callbacks and strand drains
/// on the thread that called it.
#[test]
fn a_cancelling_shutdown_runs_no_pool_work_on_the_caller() {
    let _dog = Watchdog::new(
        "a_cancelling_shutdown_runs_no_pool_work_on_the_caller",
        Duration::from_secs(20),
    );
    let pool = one_worker_pool("bug3");
    let (busy, gate) = occupy(&pool);
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    // A routed callback and a strand drain, both queued behind the busy
    // worker.
    let promise = Promise::<u8>::new();
    let r = ran_on.clone();
    pool.add_done_callback(&promise.handle(), move |_| {
        r.lock().unwrap().push(thread_name());
    });
    promise.set_result(1).unwrap();
    let strand = Strand::new(&pool, ());
    let r = ran_on.clone();
    strand.post(move |_| r.lock().unwrap().push(thread_name()));
    // And a plain task, which a cancelling shutdown does cancel.
    let plain = pool.submit(|| ()).unwrap();
    cancel_holding(&pool, &ran_on);
    assert_eq!(plain.result(), Err(TaskError::Cancelled));
    gate.wait();
    busy.join().unwrap();
    pool.shutdown(true, false);
    let on = ran_on.lock().unwrap().clone();
    assert_eq!(on, ["bug3-0", "bug3-0"]);
}

/// The same for callbacks routed on the very tasks the shutdown cancels:
/// the cancel runs their futures' callbacks on the caller, and a routed
/// one's hand-off to the pool was refused there (the pool being shut
/// down), so it ran on the caller. A review found it.
#[test]
fn a_cancelling_shutdown_routes_the_callbacks_of_what_it_cancels_to_the_workers() {
    let _dog = Watchdog::new(
        "a_cancelling_shutdown_routes_the_callbacks_of_what_it_cancels",
        Duration::from_secs(20),
    );
    let pool = one_worker_pool("cancelled");
    let (busy, gate) = occupy(&pool);
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let plain = pool.submit(|| 1u8).unwrap();
    let r = ran_on.clone();
    pool.add_done_callback(&plain, move |o| {
        r.lock().unwrap().push((o.is_err(), thread_name()));
    });
    let strand = Strand::new(&pool, ());
    let r = ran_on.clone();
    strand.add_done_callback(&plain, move |_, o| {
        r.lock().unwrap().push((o.is_err(), thread_name()));
    });
    cancel_holding(&pool, &ran_on);
    assert_eq!(plain.result(), Err(TaskError::Cancelled));
    gate.wait();
    busy.join().unwrap();
    pool.shutdown(true, false);
    let on = ran_on.lock().unwrap().clone();
    let worker = "cancelled-0".to_owned();
    assert_eq!(on, [(true, worker.clone()), (true, worker)]);
}

/// One level down: a callback of a task pool `a`'s cancel cancels shuts
/// `b` down, cancelling too; a callback routed to `a` on a task of `b`
/// still goes to `a`'s workers (the thread marks every pool it is
/// cancelling, not the innermost only).
#[test]
fn nested_cancelling_shutdowns_route_callbacks_to_the_workers() {
    let _dog = Watchdog::new(
        "nested_cancelling_shutdowns_route_callbacks",
        Duration::from_secs(20),
    );
    let (a, b) = (one_worker_pool("outer"), one_worker_pool("inner"));
    let ((busy_a, gate_a), (busy_b, gate_b)) = (occupy(&a), occupy(&b));
    let (qa, qb) = (a.submit(|| ()).unwrap(), b.submit(|| ()).unwrap());
    let b2 = b.clone();
    let _ = qa.add_done_callback(move |_| b2.shutdown(false, true));
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let r = ran_on.clone();
    a.add_done_callback(&qb, move |_| {
        r.lock().unwrap().push(thread_name());
    });
    cancel_holding(&a, &ran_on);
    assert_eq!(qb.result(), Err(TaskError::Cancelled));
    gate_a.wait();
    gate_b.wait();
    busy_a.join().unwrap();
    busy_b.join().unwrap();
    a.shutdown(true, false);
    b.shutdown(true, false);
    assert_eq!(*ran_on.lock().unwrap(), ["outer-0"]);
}

/// A callback of a task a cancelling shutdown cancels runs on that call's
/// thread, which holds the pool open until it returns: a waiting shutdown
/// of the same pool there could never end, and returns at once.
#[test]
fn a_waiting_shutdown_inside_a_cancelling_shutdowns_callback_returns() {
    let _dog = Watchdog::new(
        "a_waiting_shutdown_inside_a_cancelling_shutdowns_callback",
        Duration::from_secs(20),
    );
    let pool = one_worker_pool("reshut");
    let (busy, gate) = occupy(&pool);
    let queued = pool.submit(|| ()).unwrap();
    let (p, (report_tx, report_rx)) = (pool.clone(), mpsc::channel());
    let _ = queued.add_done_callback(move |_| {
        gate.wait(); // frees the worker: only the hold keeps the pool open
        p.shutdown(true, false);
        report_tx
            .send(p.shutdown_timeout(Duration::MAX, false))
            .unwrap();
    });
    pool.shutdown(true, true);
    let inner = report_rx.recv().unwrap();
    assert!(inner.would_deadlock && !inner.finished, "{inner:?}");
    assert_eq!(queued.result(), Err(TaskError::Cancelled));
    busy.join().unwrap();
    assert!(pool.shutdown_timeout(Duration::MAX, false).finished);
}

/// Bug 4: `shutdown(true, _)` returned while the `Drop` of a future given
/// to `submit_future` was still running (the hold went first).
#[test]
fn shutdown_waits_for_a_dropped_future_to_finish_dropping() {
    let _dog = Watchdog::new(
        "shutdown_waits_for_a_dropped_future",
        Duration::from_secs(20),
    );
    let pool = ThreadPool::new(1).unwrap();
    let parked: Arc<Mutex<Option<Waker>>> = Arc::default();
    let (returned_tx, returned_rx) = mpsc::channel::<()>();
    let events = Arc::new(Mutex::new(Vec::new()));
    /// Its drop waits for shutdown to return, up to a bound: with the
    /// right order shutdown cannot return meanwhile, so the bound passes
    /// and "dropped" comes first; with the wrong one it comes second.
    struct SlowDrop(Mutex<mpsc::Receiver<()>>, Arc<Mutex<Vec<&'static str>>>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            let _ = self
                .0
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_millis(200));
            self.1.lock().unwrap().push("dropped");
        }
    }
    let capture = SlowDrop(Mutex::new(returned_rx), events.clone());
    let slot = parked.clone();
    let polled = Arc::new(Barrier::new(2));
    let p = polled.clone();
    let mut first = true;
    let handle = pool
        .submit_future(std::future::poll_fn(move |cx| {
            let _keep = &capture;
            *slot.lock().unwrap() = Some(cx.waker().clone());
            if std::mem::take(&mut first) {
                p.wait();
            }
            Poll::<()>::Pending
        }))
        .unwrap();
    polled.wait();
    let shutter = {
        let (pool, events) = (pool.clone(), events.clone());
        thread::spawn(move || {
            pool.shutdown(true, false);
            events.lock().unwrap().push("shutdown returned");
            let _ = returned_tx.send(());
        })
    };
    // The only waker goes: the task is dropped here, pending.
    let waker = loop {
        if let Some(w) = parked.lock().unwrap().take() {
            break w;
        }
        thread::yield_now();
    };
    drop(waker);
    shutter.join().unwrap();
    assert_eq!(*events.lock().unwrap(), ["dropped", "shutdown returned"]);
    assert_eq!(handle.result(), Err(TaskError::Abandoned));
}

/// Bug 5: a NUL in the thread name panicked inside `build`, and the half
/// built pool's drop then waited forever for a worker never started.
#[test]
fn a_nul_in_the_thread_name_is_a_build_error() {
    let _dog = Watchdog::new(
        "a_nul_in_the_thread_name_is_a_build_error",
        Duration::from_secs(20),
    );
    let built = catch_unwind(|| ThreadPool::builder().thread_name("bad\0name").build());
    match built {
        Ok(Err(BuildError::ThreadName(name))) => assert_eq!(name, "bad\0name"),
        other => panic!("expected a ThreadName error, got {other:?}"),
    }
}

/// Bug 6: `map` dropped a mapped closure's panic payload unguarded: a
/// payload that panics on drop failed the whole chunk.
#[test]
fn a_map_payload_that_panics_on_drop_fails_only_its_item() {
    let pool = ThreadPool::new(1).unwrap();
    let results: Vec<_> = pool
        .map(
            |x: u32| {
                if x == 2 {
                    panic_any(Bomb("bug 6: payload".into()));
                }
                x
            },
            [1, 2, 3],
        )
        .chunksize(3)
        .collect();
    assert_eq!(results[0], Ok(1));
    assert!(
        matches!(&results[1], Err(TaskError::Panicked(_))),
        "{results:?}"
    );
    assert_eq!(results[2], Ok(3));
}

/// A panic payload whose drop panics even during an unwind (there, an
/// abort): dropped anywhere but under the crate's guard, it takes the
/// process down. Defused by emptying it.
struct Hard(String);

impl Drop for Hard {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            panic!("{}", std::mem::take(&mut self.0));
        }
    }
}

/// The payload `f` panicked with, a `Hard`, defused: its message.
fn resumed_hard(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it should panic");
    let mut hard = payload
        .downcast::<Hard>()
        .expect("the payload resumed is a Hard one");
    std::mem::take(&mut hard.0)
}

/// When both halves of a `join`, or a scope's body and one of its tasks,
/// panic, the first's payload is resumed and the other's is dropped: its
/// drop is user code and may panic. `join` dropped it unguarded (run
/// here: its panic escaped instead of `a`'s; stolen: while `a`'s unwound,
/// an abort), and so did `scope` (while the body's unwound), and a scope's
/// second panicking task (on the worker, before the task was counted over:
/// the scope waited for good). Each now resumes the first and reports the
/// other's drop.
#[test]
fn the_panic_not_resumed_is_dropped_under_a_guard() {
    let _dog = Watchdog::new("payload_drops", Duration::from_secs(60));
    let hard = |m: &str| {
        let m = m.to_owned();
        move || panic_any(Hard(m))
    };
    // Run here: one worker, which runs `b` after `a`.
    let one = one_worker();
    let a = resumed_hard(|| {
        one.join(hard("join here: a"), hard("join here: b's drop"));
    });
    assert_eq!(a, "join here: a");
    assert_eq!(reports("join here: b's drop"), [PanicOrigin::Drop]);
    // Stolen: `a` waits until the other worker has started `b`.
    recorder();
    let two = ThreadPool::builder()
        .workers(2)
        .callback_panic_hook(record)
        .build()
        .unwrap();
    let inner = two.clone();
    let a = resumed_hard(|| {
        two.install(|| {
            let started = std::sync::atomic::AtomicBool::new(false);
            inner.join(
                || {
                    inner.spawn(|| ()).unwrap(); // a submit's wake (see wait_graph.rs)
                    while !started.load(SeqCst) {
                        thread::yield_now();
                    }
                    panic_any(Hard("join stolen: a".into()))
                },
                || {
                    started.store(true, SeqCst);
                    panic_any(Hard("join stolen: b's drop".into()))
                },
            )
        });
    });
    assert_eq!(a, "join stolen: a");
    assert_eq!(reports("join stolen: b's drop"), [PanicOrigin::Drop]);
    // A scope: the body's panic over its tasks', the first task's over the
    // second's (which one is first is up to the worker).
    let body = resumed_hard(|| {
        one.scope(|s| {
            s.spawn(hard("scope: a task's drop")).unwrap();
            panic_any(Hard("scope: the body".into()))
        });
    });
    assert_eq!(body, "scope: the body");
    assert_eq!(reports("scope: a task's drop"), [PanicOrigin::Drop]);
    let first = resumed_hard(|| {
        one.scope(|s| {
            s.spawn(hard("scope: task 1")).unwrap();
            s.spawn(hard("scope: task 2")).unwrap();
        });
    });
    let second = ["scope: task 1", "scope: task 2"]
        .into_iter()
        .find(|m| *m != first);
    assert_eq!(reports(second.unwrap()), [PanicOrigin::Drop]);
    assert_all_workers_alive(&one);
}

/// Bug 7: `WouldDeadlock` was per pool: two tasks on two pools waiting on
/// each other both hung.
#[test]
fn a_wait_cycle_across_two_pools_is_refused() {
    let _dog = Watchdog::new(
        "a_wait_cycle_across_two_pools_is_refused",
        Duration::from_secs(20),
    );
    let (a_pool, b_pool) = (ThreadPool::new(1).unwrap(), ThreadPool::new(1).unwrap());
    let to_a = Promise::<FutureHandle<u32>>::new();
    let to_b = Promise::<FutureHandle<u32>>::new();
    let (for_a, for_b) = (to_a.handle(), to_b.handle());
    let a = a_pool
        .submit(move || match for_a.result().unwrap().result() {
            Ok(v) => v + 1,
            Err(e) => {
                assert_eq!(e, TaskError::WouldDeadlock);
                100
            }
        })
        .unwrap();
    let b = b_pool
        .submit(move || match for_b.result().unwrap().result() {
            Ok(v) => v + 1,
            Err(e) => {
                assert_eq!(e, TaskError::WouldDeadlock);
                100
            }
        })
        .unwrap();
    // Both have started on their own pools before they learn of each
    // other, so neither can run the other inline.
    while !(a.running() && b.running()) {
        thread::yield_now();
    }
    to_a.set_result(b.clone()).unwrap();
    to_b.set_result(a.clone()).unwrap();
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    // One wait closed the cycle and was refused; the other then finished.
    assert!(matches!((a, b), (100, 101) | (101, 100)), "{a} {b}");
}

/// Bug 9: module-level `wait` on the calling task's own handle hung.
#[test]
fn wait_leaves_out_the_calling_tasks_own_handle() {
    let _dog = Watchdog::new(
        "wait_leaves_out_the_calling_tasks_own_handle",
        Duration::from_secs(20),
    );
    let pool = ThreadPool::new(2).unwrap();
    let own = Promise::<FutureHandle<(usize, usize)>>::new();
    let mine = own.handle();
    let other = pool.submit(|| (0, 0)).unwrap();
    let o = other.clone();
    let task = pool
        .submit(move || {
            let me = mine.result().unwrap().clone();
            let r = wait([me.clone(), o.clone()], ReturnWhen::AllCompleted, None);
            assert!(r.not_done[0].ptr_eq(&me));
            let first = wait([me], ReturnWhen::FirstCompleted, None);
            (r.done.len(), first.not_done.len())
        })
        .unwrap();
    own.set_result(task.clone()).unwrap();
    assert_eq!(task.join(), Ok((1, 1)));
}

// ---------------------------------------------------------------------------
// The panic-injection matrix: every row of design.md's table of calls into
// user code, with a panicking body and with a panicking drop.

/// The unique message of one matrix cell.
fn case_message(case: &str, fault: Fault) -> String {
    format!("matrix: {case} ({fault:?})")
}

/// User code misbehaving as `fault` with `message`: `fire` it from a
/// closure. It owns a bomb either way, so dropped unrun it panics in drop.
struct Bad {
    fault: Fault,
    bomb: Bomb,
}

fn bad(fault: Fault, message: &str) -> Bad {
    Bad {
        fault,
        bomb: Bomb(message.to_owned()),
    }
}

impl Bad {
    fn fire(self) {
        match self.fault {
            Fault::Panics => {
                let mut bomb = self.bomb;
                let m = std::mem::take(&mut bomb.0); // defused: nothing leaks
                drop(bomb);
                panic!("{m}");
            }
            Fault::DropPanics => drop(self.bomb),
        }
    }
}

/// Counts how often it ran: `hit` it from a closure.
struct Hit(Arc<AtomicUsize>);

fn counted(n: &Arc<AtomicUsize>) -> Hit {
    Hit(n.clone())
}

impl Hit {
    fn hit(self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Runs `f`, which must not unwind into the caller.
fn no_unwind<R>(case: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panic!("{case}: a panic escaped into the caller"),
    }
}

/// A future that is ready at once and owns a bomb, dropped after it finished.
struct ReadyHolding(#[allow(dead_code)] Bomb);

impl std::future::Future for ReadyHolding {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

fn m_spawned(fault: Fault) -> String {
    case_message("spawned future", fault)
}

#[test]
fn panic_injection_matrix() {
    let _dog = Watchdog::new("panic_injection_matrix", Duration::from_secs(120));
    recorder();
    for fault in FAULTS {
        let pool = one_worker();

        // Row: an inline done-callback, on the completing thread, with
        // callbacks before and after it and a late one.
        let m = case_message("inline done-callback", fault);
        let promise = Promise::<u8>::new();
        let h = promise.handle();
        let (before, after) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        h.add_done_callback({
            let c = counted(&before);
            move |_| c.hit()
        });
        h.add_done_callback({
            let b = bad(fault, &m);
            move |_| b.fire()
        });
        h.add_done_callback({
            let c = counted(&after);
            move |_| c.hit()
        });
        no_unwind(&m, || promise.set_result(1).unwrap());
        h.add_done_callback({
            let c = counted(&after);
            move |_| c.hit()
        });
        assert_eq!((before.load(SeqCst), after.load(SeqCst)), (1, 2), "{m}");
        assert_eq!(reports(&m), [PanicOrigin::DoneCallback], "{m}");

        // Row: a callback attached to a done future runs on the attacher.
        let m = case_message("callback on a done future", fault);
        no_unwind(&m, || {
            h.add_done_callback({
                let b = bad(fault, &m);
                move |_| b.fire()
            })
        });
        assert_eq!(reports(&m), [PanicOrigin::DoneCallback], "{m}");

        // Row: removed callbacks are dropped unrun, by a compaction (after
        // it lets go of the list) or by the completing drain.
        let m = case_message("removed callback", fault);
        let promise = Promise::<u8>::new();
        let h = promise.handle();
        let (kept, removed_ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for i in 0..40 {
            let b = bad(fault, &format!("{m} #{i}"));
            let c = counted(&removed_ran);
            // Its report is the same whether it ran or was dropped unrun:
            // the count tells the two apart.
            let r = h.add_done_callback(move |_| {
                c.hit();
                b.fire()
            });
            h.add_done_callback({
                let c = counted(&kept);
                move |_| c.hit()
            });
            assert!(no_unwind(&m, || h.remove_done_callback(r)), "{m}");
        }
        no_unwind(&m, || promise.set_result(1).unwrap());
        assert_eq!(kept.load(SeqCst), 40, "{m}");
        assert_eq!(removed_ran.load(SeqCst), 0, "{m}: a removed callback ran");
        // Never run; each dropped once, its bomb reported.
        for i in 0..40 {
            let mi = format!("{m} #{i}");
            assert_eq!(reports(&mi), [PanicOrigin::DoneCallback], "{mi}");
        }

        // Row: a callback routed to the pool runs on its worker.
        let m = case_message("routed callback", fault);
        let promise = Promise::<u8>::new();
        let ran = Arc::new(AtomicUsize::new(0));
        pool.add_done_callback(&promise.handle(), {
            let b = bad(fault, &m);
            move |_| b.fire()
        });
        pool.add_done_callback(&promise.handle(), {
            let c = counted(&ran);
            move |_| c.hit()
        });
        promise.set_result(1).unwrap();
        assert_all_workers_alive(&pool);
        assert_eq!(ran.load(SeqCst), 1, "{m}");
        assert_eq!(reports(&m), [PanicOrigin::DoneCallback], "{m}");

        // Row: a strand closure, and a strand's `submit` closure.
        let m = case_message("strand closure", fault);
        let strand = Strand::new(&pool, 0u32);
        let b = bad(fault, &m);
        strand.post(move |_| b.fire());
        strand.post(|n| *n += 1);
        let sm = format!("{m} (submit)");
        let b = bad(fault, &sm);
        let submitted = strand.submit(move |_| b.fire());
        assert_eq!(strand.submit(|n| *n).join(), Ok(1), "{m}");
        // (The bomb drops inside the call either way.) A submitted
        // closure's panic is its handle's outcome, as a task's is.
        assert!(
            matches!(submitted.result(), Err(TaskError::Panicked(p)) if p.as_str() == sm),
            "{sm}"
        );
        assert_eq!(reports(&m), [PanicOrigin::StrandClosure], "{m}");
        assert!(reports(&sm).is_empty(), "{sm}");
        assert_all_workers_alive(&pool);

        // Row: a strand's state, dropped by the drain that held the last
        // reference (its owner dropped the strand first).
        let m = case_message("strand state", fault);
        let (busy, gate) = occupy(&pool);
        let strand = Strand::new(&pool, Bomb(m.clone()));
        strand.post(|_| {});
        drop(strand);
        gate.wait();
        busy.join().unwrap();
        assert_all_workers_alive(&pool);
        assert_eq!(reports(&m), [PanicOrigin::Drop], "{m}");

        // Row: the same, dropped by a dispatched done-callback that held
        // the last reference, on the thread completing the future (once
        // reported as the callback's panic).
        let m = case_message("strand state in a callback", fault);
        let strand = Strand::new(&pool, Bomb(m.clone()));
        let promise = Promise::<()>::new();
        strand.dispatch_done_callback(&promise.handle(), |_, _| {});
        drop(strand);
        promise.set_result(()).unwrap();
        assert_eq!(reports(&m), [PanicOrigin::Drop], "{m}");

        // Row: a task closure: its panic (or its captures' drop, which
        // happens inside the call) is the handle's outcome, not a report.
        let m = case_message("task closure", fault);
        let b = bad(fault, &m);
        let h = pool.submit(move || b.fire()).unwrap();
        assert!(
            matches!(h.result(), Err(TaskError::Panicked(p)) if p.as_str() == m),
            "{m}"
        );
        assert!(reports(&m).is_empty(), "{m}");

        // Row: a cancelled task's closure is dropped unrun, on the worker
        // that pops it.
        let m = case_message("cancelled closure", fault);
        let (busy, gate) = occupy(&pool);
        let b = bad(fault, &m);
        let h = pool.submit(move || b.fire()).unwrap();
        assert!(h.cancel());
        gate.wait();
        busy.join().unwrap();
        assert_all_workers_alive(&pool);
        assert_eq!(reports(&m), [PanicOrigin::Drop], "{m}");

        // Row: a task's result, dropped by the worker that holds the last
        // reference (the handle went before it ran).
        let m = case_message("result value", fault);
        let (busy, gate) = occupy(&pool);
        let mm = m.clone();
        let h = pool
            .submit(move || match fault {
                Fault::Panics => panic_any(Bomb(mm)), // a payload that panics on drop
                Fault::DropPanics => Bomb(mm),
            })
            .unwrap();
        drop(h);
        gate.wait();
        busy.join().unwrap();
        assert_all_workers_alive(&pool);
        assert_eq!(reports(&m), [PanicOrigin::Drop], "{m}");

        // Row: an async waiter's waker: `wake` on the completing worker,
        // `drop` wherever the last relay goes.
        let m = case_message("waker", fault);
        let gate = Promise::<()>::new();
        let g = gate.handle();
        let h = pool.submit(move || *g.result().unwrap()).unwrap();
        let mut n = Naughty::new();
        match fault {
            Fault::Panics => n.panic_in_wake = Some(m.clone()),
            Fault::DropPanics => n.panic_in_drop = Some(m.clone()),
        }
        let (waker, n) = n.waker();
        let mut waiting = Box::pin(h.wait_async());
        assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        drop(waker);
        let ran = Arc::new(AtomicUsize::new(0));
        h.add_done_callback({
            let c = counted(&ran);
            move |_| c.hit()
        });
        gate.set_result(()).unwrap();
        assert_eq!(h.wait(), Ok(()));
        // The one worker has finished the completion's drains (waiters,
        // then callbacks) once it serves the next tasks: only then may the
        // waiter go (withdrawn earlier, it would rightly never be woken).
        assert_all_workers_alive(&pool);
        no_unwind(&m, || drop(waiting));
        assert_eq!(ran.load(SeqCst), 1, "{m}");
        assert_eq!(n.wakes.load(SeqCst), 1, "{m}");
        let origin = match fault {
            Fault::Panics => PanicOrigin::Waker,
            Fault::DropPanics => PanicOrigin::Drop,
        };
        assert_eq!(reports(&m), [origin], "{m}");

        // Row: a waker's `clone` runs on the polling thread before anything
        // is registered: its panic unwinds into that poll (the caller's own
        // code), and the waiter is left as if never polled.
        let m = case_message("waker clone", fault);
        let promise = Promise::<u8>::new();
        let h = promise.handle();
        let mut n = Naughty::new();
        n.panic_in_clone = Some(m.clone());
        let (waker, _) = n.waker();
        let mut waiting = Box::pin(h.wait_async());
        assert!(catch_unwind(AssertUnwindSafe(|| poll_once(waiting.as_mut(), &waker))).is_err());
        let (good, woken) = counting_waker();
        assert!(poll_once(waiting.as_mut(), &good).is_pending());
        promise.set_result(4).unwrap();
        assert_eq!(woken.0.load(SeqCst), 1, "{m}");
        assert!(matches!(
            poll_once(waiting.as_mut(), &good),
            Poll::Ready(Ok(&4))
        ));
        // The same for `handle.await`, which owns its handle.
        let promise = Promise::<u8>::new();
        let mut joining = std::future::IntoFuture::into_future(promise.handle());
        let mut n = Naughty::new();
        n.panic_in_clone = Some(format!("{m} (join)"));
        let (waker, _) = n.waker();
        let mut joining = Pin::new(&mut joining);
        assert!(catch_unwind(AssertUnwindSafe(|| poll_once(joining.as_mut(), &waker))).is_err());
        promise.set_result(5).unwrap();
        assert_eq!(
            poll_once(joining.as_mut(), &good),
            Poll::Ready(Ok(5)),
            "{m}"
        );

        // Row: a spawned future's `poll` (reported) or its drop after it
        // finished; a submitted future's poll panic is its handle's outcome.
        let m = case_message("spawned future", fault);
        let m2 = format!("{m} (submitted)");
        match fault {
            Fault::Panics => {
                let mm = m.clone();
                pool.spawn_future(async move { panic!("{mm}") }).unwrap();
                let mm = m2.clone();
                let h = pool.submit_future(async move { panic!("{mm}") }).unwrap();
                let outcome = h.result();
                assert!(matches!(outcome, Err(TaskError::Panicked(p)) if p.as_str() == m2));
                assert!(reports(&m2).is_empty(), "{m2}");
            }
            Fault::DropPanics => {
                pool.spawn_future(ReadyHolding(Bomb(m.clone()))).unwrap();
                let h = pool.submit_future(ReadyHolding(Bomb(m2.clone()))).unwrap();
                assert_eq!(h.result(), Ok(&()));
            }
        }
        // Shut down later: both futures have been dropped by then.
        assert_all_workers_alive(&pool);

        // Row: a panic payload whose own drop panics, from a callback.
        let m = case_message("callback payload", fault);
        let promise = Promise::<u8>::new();
        let mm = m.clone();
        promise
            .handle()
            .add_done_callback(move |_| panic_any(Bomb(mm)));
        no_unwind(&m, || promise.set_result(1).unwrap());
        // The callback's panic is reported (its message is a placeholder:
        // the payload is no string), then its payload's drop.
        assert_eq!(reports(&m), [PanicOrigin::Drop], "{m}");

        // Row: the callback-panic hook itself, on a pool of its own whose
        // hook panics (Panics) or panics with a payload that panics on drop
        // (DropPanics). The drain on its worker must go on: the callbacks
        // after the panicking one run, the handle's waits return, later
        // attaches run, and the worker lives.
        let m = case_message("panic hook", fault);
        let hm = format!("{m} (hook)");
        let naughty = ThreadPool::builder()
            .workers(1)
            .max_blocking(0)
            .callback_panic_hook(move |_| match fault {
                Fault::Panics => panic!("{hm}"),
                Fault::DropPanics => panic_any(Bomb(hm.clone())),
            })
            .build()
            .unwrap();
        let gate = Promise::<()>::new();
        let g = gate.handle();
        let h = naughty.submit(move || g.wait().map(|()| 5u8)).unwrap();
        let after = Arc::new(AtomicUsize::new(0));
        h.add_done_callback({
            let mm = m.clone();
            move |_| panic!("{mm}")
        });
        h.add_done_callback({
            let c = counted(&after);
            move |_| c.hit()
        });
        gate.set_result(()).unwrap();
        assert_eq!(h.wait(), Ok(()), "{m}");
        assert_all_workers_alive(&naughty);
        h.add_done_callback({
            let c = counted(&after);
            move |_| c.hit()
        });
        assert_eq!(after.load(SeqCst), 2, "{m}");
        assert!(matches!(h.try_join(), Ok(Ok(Ok(5)))), "{m}");
        naughty.shutdown(true, false);

        // No worker died, none was added, and the pool still serves.
        assert_eq!(pool.metrics().threads, 1);
        assert_all_workers_alive(&pool);
        pool.shutdown(true, false);
        assert_eq!(pool.metrics().threads, 0);
        match fault {
            Fault::Panics => assert_eq!(reports(&m_spawned(fault)), [PanicOrigin::FuturePoll]),
            Fault::DropPanics => {
                assert_eq!(reports(&m_spawned(fault)), [PanicOrigin::Drop]);
                let m2 = format!("{} (submitted)", m_spawned(fault));
                assert_eq!(reports(&m2), [PanicOrigin::Drop]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// User code in a thread-local's destructor.

/// A wait from a thread-local's destructor, after the crate's own
/// per-thread state (the running-task stack, the wait hook) has been torn
/// down, still waits (here: until its deadline) and returns. Thread-locals
/// are destroyed in reverse order of first use, so the user's slot, filled
/// first, drops last; a panic there would abort the process.
#[test]
fn a_wait_from_a_thread_local_destructor_still_returns() {
    type Reply = mpsc::Sender<Result<u32, TaskError>>;
    struct WaitOnDrop(Option<(FutureHandle<u32>, Reply)>);
    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            if let Some((handle, tx)) = self.0.take() {
                let waited = handle.result_timeout(Duration::from_millis(1));
                let _ = tx.send(waited.copied());
            }
        }
    }
    thread_local! {
        static SLOT: std::cell::RefCell<Option<WaitOnDrop>> = const { std::cell::RefCell::new(None) };
    }
    let _watchdog = Watchdog::new(
        "a wait from a thread-local destructor",
        Duration::from_secs(60),
    );
    let pool = ThreadPool::new(1).unwrap();
    let gate = Promise::<()>::new();
    let opened = gate.handle();
    // Runs until the gate opens, so both waits below find it unfinished
    // and go all the way into the crate's per-thread state.
    let stuck = pool
        .submit(move || opened.wait().map(|()| 7).unwrap_or(0))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let for_slot = stuck.clone();
    thread::spawn(move || {
        SLOT.with(|s| *s.borrow_mut() = Some(WaitOnDrop(Some((for_slot, tx)))));
        // First use of the crate's per-thread state, after the slot's.
        let first = stuck.result_timeout(Duration::from_millis(1)).copied();
        assert_eq!(first, Err(TaskError::Timeout));
    })
    .join()
    .unwrap();
    assert_eq!(rx.recv().unwrap(), Err(TaskError::Timeout));
    gate.set_result(()).unwrap();
}
