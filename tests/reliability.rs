//! Reliability: injected panics, shutdown racing submits, and misuse. Every
//! failure must end in a typed outcome: never a lost handle, a dead worker,
//! a task run twice, a panic escaping into the caller, or a hang.
#![cfg(not(loom))]

mod common;
use common::{Watchdog, assert_all_workers_alive, gated, hold_workers};

use std::panic::panic_any;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use concurrent_futures::{BuildError, FutureHandle, InvalidState, Promise, ReturnWhen, Strand};
use concurrent_futures::{SubmitError, TaskError, ThreadPool, as_completed, wait};
use concurrent_futures::{clear_callback_panic_hook, set_callback_panic_hook};

/// Panics when dropped, with its message.
struct Bomb(&'static str);
impl Bomb {
    /// Makes a closure capture the whole bomb (by value, in a `move` one).
    fn keep<T>(&self, v: T) -> T {
        v
    }
}
impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// A task returning `i` whose captured `Bomb` panics when the closure goes.
fn armed(i: usize, msg: &'static str) -> impl FnOnce() -> usize + Send + 'static {
    let b = Bomb(msg);
    move || b.keep(i)
}

/// A done-callback whose captured `Bomb` panics when the closure goes.
fn armed_cb(msg: &'static str) -> impl FnOnce(Result<&u32, &TaskError>) + Send + 'static {
    let b = Bomb(msg);
    move |_| b.keep(())
}

/// An outcome as plain data: the value or the panic message / error name.
fn outcome(r: Result<&usize, TaskError>) -> Result<usize, String> {
    r.copied().map_err(|e| match e {
        TaskError::Panicked(m) => m.as_str().to_owned(),
        e => format!("{e:?}"),
    })
}

#[test]
fn panicking_tasks_resolve_their_handles_and_never_kill_a_worker() {
    let _dog = Watchdog::new("panicking_tasks", Duration::from_secs(60));
    let pool = ThreadPool::new(3).unwrap();
    let release = hold_workers(&pool); // so that cancels land before runs
    let mut hs = Vec::new();
    for i in 0..120usize {
        let task: Box<dyn FnOnce() -> usize + Send> = match i % 5 {
            0 => Box::new(move || panic!("task {i}")),
            // The payload panics on drop too: the worker must catch that.
            1 => Box::new(|| panic_any(Bomb("payload"))),
            // The finished closure drops its capture, which panics.
            2 => Box::new(armed(i, "capture")),
            // Cancelled: the worker drops the unrun closure, which panics.
            3 => Box::new(armed(i, "cancelled")),
            _ => Box::new(move || i),
        };
        let h = pool.submit(task).unwrap();
        if i % 5 == 3 {
            assert!(h.cancel());
        }
        hs.push(h);
        pool.spawn(|| panic!("spawned")).unwrap();
        // A value that panics on drop, dropped on the worker (no handle).
        drop(pool.submit(|| Bomb("value")).unwrap());
    }
    release();
    for (i, h) in hs.iter().enumerate() {
        let want = ["", "<non-string panic payload>", "capture", "Cancelled"];
        let want = match i % 5 {
            0 => Err(format!("task {i}")),
            4 => Ok(i),
            k => Err(want[k].to_owned()),
        };
        assert_eq!(outcome(h.result()), want, "task {i}");
    }
    assert_all_workers_alive(&pool);
    pool.shutdown(true, false); // joins the workers: the counters are final
    assert_eq!(pool.metrics().panicked, 3 * 24 + 120);
}

/// The only test of this binary that sets the process-global hook.
#[test]
fn panicking_callbacks_captures_and_hooks_are_contained() {
    let _dog = Watchdog::new("panicking_callbacks", Duration::from_secs(60));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = |m: &str| seen.lock().unwrap().iter().filter(|s| *s == m).count();
    let s = seen.clone();
    set_callback_panic_hook(move |p| s.lock().unwrap().push(p.message().to_string()));
    let after = Arc::new(AtomicUsize::new(0));
    let bump = |n: usize| {
        let a = after.clone();
        move |_: Result<&u32, &TaskError>| _ = a.fetch_add(n, SeqCst)
    };
    // Pool tasks finishing on the workers run their callbacks there.
    let pool = ThreadPool::new(2).unwrap();
    let release = hold_workers(&pool);
    let mut hs = Vec::new();
    for i in 0..20u32 {
        let h = pool.submit(move || i).unwrap();
        h.add_done_callback(|_| panic!("body"));
        h.add_done_callback(armed_cb("ran")); // runs, then its capture panics
        let reg = h.add_done_callback(armed_cb("removed"));
        assert!(h.remove_done_callback(reg)); // dropped unrun at completion
        h.add_done_callback(bump(1)); // later callbacks still run
        hs.push(h);
    }
    release();
    hs.iter()
        .zip(0..)
        .for_each(|(h, i)| assert_eq!(h.result(), Ok(&i)));
    // 40 removals compact the list on this thread: remove must not unwind.
    let p = Promise::<u32>::new();
    for _ in 0..40 {
        let reg = p.handle().add_done_callback(armed_cb("compacted"));
        assert!(p.handle().remove_done_callback(reg));
    }
    p.handle().add_done_callback(|_| panic!("body"));
    p.handle().add_done_callback(bump(100));
    assert_eq!(p.set_result(1), Ok(()), "a callback panic got out");
    // Strand closures and callbacks routed to the pool are contained too.
    let strand = Strand::new(&pool, 0u32);
    strand.post(|_| panic!("strand"));
    // A submitted closure's panic is its handle's outcome, as a task's is
    // (not a report: the counts below have no "strand submit").
    let bad = strand.submit(|_| -> u32 { panic!("strand submit") });
    assert!(matches!(bad.result(), Err(TaskError::Panicked(m)) if m.as_str() == "strand submit"));
    assert_eq!(strand.submit(|n| std::mem::replace(n, 1) + 1).join(), Ok(1));
    pool.add_done_callback(&p.handle(), |_| panic!("routed"));
    let (tx, rx) = mpsc::channel();
    pool.add_done_callback(&p.handle(), move |r| tx.send(*r.unwrap()).unwrap());
    assert_eq!(rx.recv(), Ok(1));
    assert_all_workers_alive(&pool);
    pool.shutdown(true, false); // joins the workers: their callbacks are over
    assert_eq!(after.load(SeqCst), 20 + 100);
    let counts = ["body", "ran", "removed", "compacted", "strand"].map(count);
    assert_eq!(counts, [21, 20, 20, 40, 1]);

    // A hook that panics itself: the crate falls back to printing, and the
    // other callbacks still run, on this thread and on a worker.
    let s = seen.clone();
    set_callback_panic_hook(move |p| {
        s.lock().unwrap().push(format!("hook saw {}", p.message()));
        panic!("the hook panicked");
    });
    let pool = ThreadPool::new(2).unwrap();
    let (p, release) = (Promise::new(), hold_workers(&pool));
    for h in [p.handle(), pool.submit(|| 5).unwrap()] {
        h.add_done_callback(|_| panic!("bad hook"));
        h.add_done_callback(bump(1));
    }
    p.set_result(5).unwrap();
    release();
    assert_all_workers_alive(&pool);
    pool.shutdown(true, false);
    clear_callback_panic_hook();
    assert_eq!((count("hook saw bad hook"), after.load(SeqCst)), (2, 122));
}

#[test]
fn shutdown_racing_three_submitters_loses_nothing_and_runs_nothing_twice() {
    let dog = Watchdog::new("shutdown_under_load", Duration::from_secs(120));
    let (mut ran, mut cancelled) = (0, 0);
    for round in 0..100 {
        dog.stage(format!("round {round}"));
        let (wait_, cancel) =
            [(true, false), (true, true), (false, false), (false, true)][round % 4];
        let pool = ThreadPool::new(2).unwrap();
        let (accepted, start) = (Arc::new(AtomicUsize::new(0)), Arc::new(Barrier::new(4)));
        let submitter = |_| {
            let (pool, accepted, start) = (pool.clone(), accepted.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut ok = Vec::new();
                loop {
                    // Each task counts its runs and returns the count before.
                    let runs = Arc::new(AtomicUsize::new(0));
                    let r = runs.clone();
                    match pool.submit(move || r.fetch_add(1, SeqCst)) {
                        Ok(h) => ok.push((runs, h)),
                        // Handed back unrun; dropping it must not run it.
                        Err(SubmitError::Shutdown(f)) => return (ok, runs, drop(f)),
                        Err(SubmitError::Full(_)) => panic!("submit reported Full"),
                    }
                    accepted.fetch_add(1, SeqCst);
                }
            })
        };
        let submitters: Vec<_> = (0..3).map(submitter).collect();
        // Shut down after a round-dependent number of accepted submits, so
        // it lands at different points of the load (0: as soon as it can).
        let (threshold, p) = (round * 37 % 300, pool.clone());
        let shutter = thread::spawn(move || {
            start.wait();
            while accepted.load(SeqCst) < threshold {
                thread::yield_now();
            }
            p.shutdown(wait_, cancel);
        });
        shutter.join().unwrap();
        let ran_before = ran;
        for s in submitters {
            let (ok, refused, ()) = s.join().unwrap();
            assert_eq!(refused.load(SeqCst), 0, "round {round}: a refused task ran");
            for (runs, h) in ok {
                // shutdown(wait) returns once every accepted task is done.
                assert!(!wait_ || h.done(), "round {round}: accepted task not done");
                match (h.result(), runs.load(SeqCst)) {
                    (Ok(0), 1) => ran += 1,
                    (Err(TaskError::Cancelled), 0) if cancel => cancelled += 1,
                    other => panic!("round {round}: outcome and runs {other:?}"),
                }
            }
        }
        pool.shutdown(true, false); // again: harmless; joins if wait=false
        let m = pool.metrics();
        let got = (m.queued, m.running, m.panicked, m.completed);
        assert_eq!(got, (0, 0, 0, ran - ran_before), "round {round}");
    }
    eprintln!("shutdown under load: {ran} ran, {cancelled} cancelled");
}

#[test]
fn promise_builder_and_shut_pool_misuse_get_typed_errors() {
    let p = Promise::new();
    let twice = (p.set_result(1), p.set_result(2));
    assert_eq!(twice, (Ok(()), Err(InvalidState::AlreadyFinished(2))));
    assert!(p.set_running_or_notify_cancel().is_err() && !p.handle().cancel());
    assert_eq!(p.handle().result(), Ok(&1), "the first value stays");
    let c = Promise::new();
    assert!(c.handle().cancel());
    assert_eq!(c.set_result(3), Err(InvalidState::Cancelled(3)));
    assert_eq!(c.set_running_or_notify_cancel(), Ok(false));
    assert!(matches!(ThreadPool::new(0), Err(BuildError::ZeroWorkers)));
    let bound_zero = ThreadPool::builder().workers(1).max_queued(0).build();
    assert!(matches!(bound_zero, Err(BuildError::ZeroBound)));
    // After shutdown every submit hands its closure back, and it still works.
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    assert!(matches!(pool.submit(|| 10), Err(SubmitError::Shutdown(f)) if f() == 10));
    assert!(matches!(pool.try_submit(|| 11), Err(SubmitError::Shutdown(f)) if f() == 11));
    let (tx, rx) = mpsc::channel();
    let refused = pool.spawn(move || tx.send(12).unwrap()).unwrap_err();
    refused.into_inner()();
    assert_eq!(rx.recv(), Ok(12));
    let mapped: Vec<_> = pool.map(|x: u8| x, 0..5).collect();
    assert_eq!(mapped, [Err(TaskError::Shutdown)]);
    // Documented fallbacks: strands and routed callbacks run on the caller.
    let strand = Strand::new(&pool, 1);
    assert_eq!(strand.submit(|n| *n + 1).try_result(), Some(Ok(&2)));
    let (tx, rx) = mpsc::channel();
    let here = thread::current().id();
    pool.add_done_callback(&p.handle(), move |_| {
        tx.send(thread::current().id()).unwrap()
    });
    assert_eq!(rx.try_recv(), Ok(here));
}

#[test]
fn waiting_inside_a_callback_of_the_same_future_returns_at_once() {
    let _dog = Watchdog::new("wait_in_callback", Duration::from_secs(60));
    let (pool, p) = (ThreadPool::new(1).unwrap(), Promise::new());
    let release = hold_workers(&pool);
    // On the completing thread (promise) and on the worker (task). The outer
    // handles outlive the callbacks, so `join` clones (a callback's `join`
    // of the last handle moves the value out without waiting for itself:
    // `joining_the_last_handle_inside_its_own_callback_does_not_hang`).
    let hs = [p.handle(), pool.submit(|| 7).unwrap()];
    let (tx, rx) = mpsc::channel();
    for h in &hs {
        let (me, tx) = (h.clone(), tx.clone());
        h.add_done_callback(move |_| {
            let w = |t| me.wait_timeout(t);
            let waits = [me.wait(), w(Duration::ZERO), w(Duration::MAX)];
            let got = (waits, me.result().copied(), me.try_result().is_some());
            tx.send((got, me.join())).unwrap();
        });
    }
    p.set_result(7).unwrap();
    release();
    for _ in &hs {
        let waits = [Ok(()), Ok(()), Ok(())];
        assert_eq!(rx.recv(), Ok(((waits, Ok(7), true), Ok(7))));
    }
}

#[test]
fn zero_and_max_timeouts_neither_panic_nor_hang() {
    let _dog = Watchdog::new("timeouts", Duration::from_secs(60));
    let (zero, max, all) = (Duration::ZERO, Duration::MAX, ReturnWhen::AllCompleted);
    let pending = Promise::<u8>::new();
    let h = pending.handle();
    let late = TaskError::Timeout;
    assert_eq!(h.wait_timeout(zero), Err(late.clone()));
    assert_eq!(h.result_timeout(zero), Err(late));
    for when in [ReturnWhen::FirstCompleted, ReturnWhen::FirstException, all] {
        assert_eq!(wait([h.clone()], when, Some(zero)).not_done.len(), 1);
    }
    let mut it = as_completed([h.clone()], Some(zero));
    let e = it.next().unwrap().unwrap_err();
    assert_eq!((e.unfinished, e.total), (1, 1));
    assert!(it.next().is_none());
    // Duration::MAX overflows Instant: it must mean "forever", not "expired".
    let setter = thread::spawn(move || pending.set_result(7).unwrap());
    assert_eq!(h.result_timeout(max), Ok(&7));
    setter.join().unwrap();
    assert_eq!(
        (h.wait_timeout(max), h.result_timeout(zero)),
        (Ok(()), Ok(&7))
    );
    for t in [zero, max] {
        assert_eq!(wait([h.clone()], all, Some(t)).done.len(), 1);
        assert!(as_completed([h.clone()], Some(t)).all(|r| r.is_ok()));
    }
    // map with a zero timeout on a held pool gives up and cancels its tasks.
    let pool = ThreadPool::new(1).unwrap();
    let release = hold_workers(&pool);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let mut m = pool.map(move |x: usize| r.fetch_add(x, SeqCst), 1..5);
    m = m.timeout(zero);
    assert_eq!((m.next(), m.next()), (Some(Err(TaskError::Timeout)), None));
    assert!(!pool.shutdown_timeout(zero, false).finished, "busy");
    release();
    assert!(pool.shutdown_timeout(max, false).finished);
    assert_eq!(runs.load(SeqCst), 0, "a chunk map cancelled ran");
    let pool = ThreadPool::new(2).unwrap();
    let doubled: Vec<_> = pool.map(|x: u32| x * 2, 0..50).timeout(max).collect();
    assert_eq!(doubled, (0..50).map(|x| Ok(x * 2)).collect::<Vec<_>>());
}

#[test]
fn shutdown_twice_or_from_inside_the_pool_never_deadlocks() {
    let _dog = Watchdog::new("shutdown_misuse", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    pool.shutdown(false, true);
    pool.shutdown(true, false);
    pool.shutdown(true, true);
    assert!(pool.shutdown_timeout(Duration::ZERO, false).finished);
    // From inside a task shutdown does not wait (it would wait on itself);
    // with cancel, the task queued behind it is cancelled.
    let pool = ThreadPool::new(1).unwrap();
    let (release, p) = (hold_workers(&pool), pool.clone());
    let stopper = pool.submit(move || p.shutdown(true, true)).unwrap();
    let behind = pool.submit(|| ()).unwrap();
    release();
    assert_eq!(
        (stopper.join(), behind.join()),
        (Ok(()), Err(TaskError::Cancelled))
    );
    // shutdown_timeout from inside: returns at once, "not finished", and
    // says why; a shutdown that did wait says it could.
    let pool = ThreadPool::new(1).unwrap();
    let p = pool.clone();
    let h = pool.submit(move || {
        let r = p.shutdown_timeout(Duration::MAX, false);
        (r.finished, r.would_deadlock)
    });
    assert_eq!(h.unwrap().join(), Ok((false, true)));
    assert!(!pool.shutdown_timeout(Duration::MAX, false).would_deadlock);
    // One that timed out says so, and not that it would have deadlocked.
    let pool = ThreadPool::new(1).unwrap();
    let release = hold_workers(&pool);
    let r = pool.shutdown_timeout(Duration::from_millis(1), false);
    release();
    assert_eq!((r.finished, r.would_deadlock), (false, false));
    // The last clone dropped inside a task: the pool shuts down from inside.
    let pool = ThreadPool::new(1).unwrap();
    let (release, p) = (hold_workers(&pool), pool.clone());
    let h = pool.submit(move || drop(p)).unwrap();
    drop(pool);
    release();
    assert_eq!(h.join(), Ok(()));
}

#[test]
fn waiting_on_itself_or_in_a_cycle_is_refused() {
    let _dog = Watchdog::new("self_wait", Duration::from_secs(60));
    type H = FutureHandle<Vec<Result<(), TaskError>>>;
    // One worker: `a` runs first and waits on `b`, which has not started, so
    // `b` runs inline inside `a` and tries to wait on `a` and on itself.
    let pool = ThreadPool::new(1).unwrap();
    let ((to_a, a_rx), (to_b, b_rx)) = (mpsc::channel::<(H, H)>(), mpsc::channel::<(H, H)>());
    let a = pool.submit(move || {
        let (me, b) = a_rx.recv().unwrap();
        let w = |t| me.wait_timeout(t);
        // A zero timeout only looks (it cannot block), so it times out.
        let mut got = vec![me.wait(), w(Duration::ZERO), w(Duration::MAX)];
        got.push(me.result().map(drop));
        got.extend(b.result().unwrap().iter().cloned()); // runs `b` inline
        got.push(me.try_join().unwrap().map(drop));
        got
    });
    let a = a.unwrap();
    let b = pool.submit(move || {
        let (a, me) = b_rx.recv().unwrap();
        vec![a.wait(), me.wait(), a.result().map(drop)]
    });
    let b = b.unwrap();
    to_b.send((a.clone(), b.clone())).unwrap();
    to_a.send((a.clone(), b.clone())).unwrap();
    let dead = Err(TaskError::WouldDeadlock);
    assert_eq!(b.join(), Ok(vec![dead.clone(); 3]));
    let mut expected = vec![dead; 8];
    expected[1] = Err(TaskError::Timeout);
    assert_eq!(a.join(), Ok(expected));
}

/// A waker that polls its task inline, as some executors do: the task
/// awaits a pool task's last handle, then joins it. The waker runs on the
/// completing worker while it wakes waiters, before it seals the callback
/// list; a join that waited there for the callbacks to end waited on its
/// own thread, and the worker was lost for good. It gives the handle back
/// instead, and a later join moves the value out.
#[test]
fn joining_the_last_handle_from_a_waker_the_completion_runs_does_not_hang() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Wake, Waker};

    type Joined = Result<Result<u8, TaskError>, FutureHandle<u8>>;
    type Task = Pin<Box<dyn Future<Output = Joined> + Send>>;
    struct Inline {
        task: Mutex<Option<Task>>,
        tx: Mutex<mpsc::Sender<Joined>>,
    }
    impl Wake for Inline {
        fn wake(self: Arc<Self>) {
            let waker = Waker::from(self.clone());
            let mut task = self.task.lock().unwrap();
            let fut = task.as_mut().expect("polled after it ended");
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                *task = None;
                self.tx.lock().unwrap().send(r).unwrap();
            }
        }
    }

    let _dog = Watchdog::new("join_from_waker", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let (h, gate) = gated(&pool, 5u8);
    let (tx, rx) = mpsc::channel();
    let inline = Arc::new(Inline {
        task: Mutex::new(Some(Box::pin(async move {
            let _ = h.wait_async().await;
            h.try_join()
        }))),
        tx: Mutex::new(tx),
    });
    // The first poll registers the waker; the task is still gated.
    inline.clone().wake();
    assert!(rx.try_recv().is_err());
    gate.wait();
    let Ok(got) = rx.recv_timeout(Duration::from_secs(30)) else {
        std::mem::forget(pool); // its worker is stuck: dropping would wait
        panic!("the worker hung in the waker's join");
    };
    let h = got.expect_err("inside the completion's wake the value may not move");
    assert_eq!(h.try_join().ok(), Some(Ok(5)));
    assert_all_workers_alive(&pool);
}

/// A future whose callbacks are still running counts as done for the
/// module-level `wait`, as in Python (its state says so). The wait's own
/// watcher attached to such a future reported only once the running
/// callbacks ended: never, when `wait` was called from one of them, and
/// only after the slow one on another thread otherwise. Both cases, the
/// other input finishing once the waiter sleeps, under the two conditions
/// that need every input (the first look finds one done and attaches).
#[test]
fn wait_counts_a_future_whose_callbacks_still_run_as_done() {
    use common::{kernel_tid, until_asleep};
    let _dog = Watchdog::new("wait_during_drain", Duration::from_secs(60));
    // Sets `p` once the thread whose id comes on `tid` sleeps in its wait.
    let set_when_asleep = |p: Promise<u8>, tid: mpsc::Receiver<i32>| {
        thread::spawn(move || {
            until_asleep(tid.recv().unwrap(), || false);
            p.set_result(2).unwrap();
        })
    };
    for when in [ReturnWhen::AllCompleted, ReturnWhen::FirstException] {
        // From one of the done future's own callbacks.
        let (p1, p2) = (Promise::<u8>::new(), Promise::<u8>::new());
        let hs = [p1.handle(), p2.handle()];
        let (tid_tx, tid) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        p1.handle().add_done_callback(move |_| {
            tid_tx.send(kernel_tid()).unwrap();
            let r = wait(hs, when, None);
            tx.send((r.done.len(), r.not_done.len())).unwrap();
        });
        let setter = set_when_asleep(p2, tid);
        p1.set_result(1).unwrap();
        assert_eq!(rx.recv(), Ok((2, 0)), "{when:?}, from its callback");
        setter.join().unwrap();
        // From another thread while its callback runs.
        let (p1, p2) = (Promise::<u8>::new(), Promise::<u8>::new());
        let hs = [p1.handle(), p2.handle()];
        let (inside_tx, inside) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel::<()>();
        p1.handle().add_done_callback(move |_| {
            inside_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
        });
        let completer = thread::spawn(move || p1.set_result(1).unwrap());
        inside.recv().unwrap();
        let (tid_tx, tid) = mpsc::channel();
        tid_tx.send(kernel_tid()).unwrap();
        let setter = set_when_asleep(p2, tid);
        let r = wait(hs, when, None);
        assert_eq!(
            (r.done.len(), r.not_done.len()),
            (2, 0),
            "{when:?}, while it runs"
        );
        gate.send(()).unwrap();
        completer.join().unwrap();
        setter.join().unwrap();
    }
}
