//! The thread pool: Python's executor semantics, and waiting inside the pool.
#![cfg(not(loom))]

mod common;
use common::{Watchdog, gated, occupy};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::Duration;

use concurrent_futures::{BuildError, SubmitError, TaskError, ThreadPool};

#[test]
fn submit_returns_results_and_panics_resolve_handles() {
    let pool = ThreadPool::new(2).unwrap();
    let ok = pool.submit(|| 40 + 2).unwrap();
    let bad = pool.submit(|| -> u8 { panic!("task boom") }).unwrap();
    assert_eq!(ok.join(), Ok(42));
    match bad.result() {
        Err(TaskError::Panicked(m)) => assert_eq!(m.as_str(), "task boom"),
        other => panic!("unexpected {other:?}"),
    }
    // The worker survived: the pool still runs work.
    for i in 0..100 {
        assert_eq!(pool.submit(move || i).unwrap().join(), Ok(i));
    }
    assert_eq!(pool.metrics().panicked, 1);
}

#[test]
fn builder_rejects_bad_input() {
    assert!(matches!(ThreadPool::new(0), Err(BuildError::ZeroWorkers)));
    assert!(matches!(
        ThreadPool::builder().max_queued(0).build(),
        Err(BuildError::ZeroBound)
    ));
}

#[test]
fn cancel_pending_but_not_running() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, gate) = occupy(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let pending = pool
        .submit(move || r.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    assert!(!running.cancel(), "a running task cannot be cancelled");
    assert!(pending.cancel());
    assert!(pending.cancel(), "cancel is idempotent");
    gate.wait();
    running.wait().unwrap();
    assert_eq!(pending.result(), Err(TaskError::Cancelled));
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled task never runs");
}

#[test]
fn result_timeout_on_a_slow_task() {
    let pool = ThreadPool::new(1).unwrap();
    let (h, gate) = gated(&pool, 7);
    assert_eq!(
        h.result_timeout(Duration::from_millis(10)),
        Err(TaskError::Timeout)
    );
    gate.wait();
    assert_eq!(h.result_timeout(Duration::MAX), Ok(&7));
}

#[test]
fn callbacks_on_pool_tasks_and_on_done_ones() {
    let pool = ThreadPool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let h = pool.submit(|| 5).unwrap();
    let t = tx.clone();
    h.add_done_callback(move |r| t.send(*r.unwrap()).unwrap());
    h.wait().unwrap();
    h.add_done_callback(move |r| tx.send(*r.unwrap() * 10).unwrap());
    let mut got = vec![rx.recv().unwrap(), rx.recv().unwrap()];
    got.sort();
    assert_eq!(got, [5, 50]);
}

#[test]
fn submit_after_shutdown_hands_the_closure_back() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    assert!(pool.is_shutdown());
    match pool.submit(|| 3) {
        Err(SubmitError::Shutdown(f)) => assert_eq!(f(), 3),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(pool.spawn(|| ()), Err(SubmitError::Shutdown(_))));
}

#[test]
fn shutdown_without_cancel_completes_queued_work() {
    let pool = ThreadPool::new(1).unwrap();
    let handles: Vec<_> = (0..100).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(true, false);
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join(), Ok(i));
    }
}

#[test]
fn shutdown_with_cancel_cancels_only_queued_work() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, gate) = gated(&pool, 1);
    while !running.running() {
        std::thread::yield_now();
    }
    let queued: Vec<_> = (0..50).map(|i| pool.submit(move || i).unwrap()).collect();
    let p = pool.clone();
    let shutter = std::thread::spawn(move || p.shutdown(true, true));
    // Cancelling is done before the wait: the queued handles resolve now.
    for h in &queued {
        assert_eq!(h.result(), Err(TaskError::Cancelled));
    }
    gate.wait();
    shutter.join().unwrap();
    assert_eq!(running.join(), Ok(1));
}

#[test]
fn shutdown_timeout_reports_what_still_runs() {
    let pool = ThreadPool::new(1).unwrap();
    let (stuck, gate) = occupy(&pool);
    let report = pool.shutdown_timeout(Duration::from_millis(20), false);
    assert!(!report.finished);
    assert_eq!(report.running, 1);
    gate.wait();
    stuck.wait().unwrap();
    let report = pool.shutdown_timeout(Duration::MAX, false);
    assert!(report.finished);
}

#[test]
fn dropping_the_pool_completes_queued_work() {
    let pool = ThreadPool::new(2).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..1000u32)
        .map(|i| {
            let ran = ran.clone();
            pool.submit(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                i * 2
            })
            .unwrap()
        })
        .collect();
    drop(pool);
    // The last clone's drop waited for the workers: every task ran
    // before it returned, before any handle is waited on.
    assert_eq!(ran.load(Ordering::Relaxed), 1000);
    let sum: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 999 * 1000);
}

#[test]
fn try_submit_refuses_when_full() {
    let pool = ThreadPool::builder()
        .workers(1)
        .max_queued(2)
        .build()
        .unwrap();
    let (_blocker, gate) = occupy(&pool);
    let a = pool.try_submit(|| 1).unwrap();
    let b = pool.try_submit(|| 2).unwrap();
    match pool.try_submit(|| 3) {
        Err(SubmitError::Full(f)) => assert_eq!(f(), 3),
        other => panic!("unexpected {other:?}"),
    }
    // Still full, and now shut down: it says shut down, so a caller that
    // retries while full stops.
    pool.shutdown(false, false);
    let after = pool.try_submit(|| 4);
    gate.wait(); // first, so that a failure below does not hang the drop
    match after {
        Err(SubmitError::Shutdown(f)) => assert_eq!(f(), 4),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((a.join(), b.join()), (Ok(1), Ok(2)));
}

/// A task a worker queued on its own deque is out of reach of the
/// cancelling shutdown's drain of the shared queue; a wait on it from that
/// worker, which would run it inline, cancels it instead, as the worker
/// would on popping it.
#[test]
fn a_cancelling_shutdown_reaches_a_task_in_a_workers_own_deque() {
    let pool = ThreadPool::new(1).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let child_ran = Arc::new(AtomicUsize::new(0));
    let c = child_ran.clone();
    let outer = pool
        .submit(move || {
            let child = concurrent_futures::submit(move || {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            child.result().cloned()
        })
        .unwrap();
    ready_rx.recv().unwrap();
    pool.shutdown(false, true);
    go_tx.send(()).unwrap();
    assert_eq!(outer.join(), Ok(Err(TaskError::Cancelled)));
    pool.shutdown(true, false);
    assert_eq!(child_ran.load(Ordering::Relaxed), 0);
}

// --- Waiting inside the pool (Python's documented deadlocks) ---

#[test]
fn one_worker_task_waiting_on_a_task_it_submitted() {
    let _dog = Watchdog::new(
        "one_worker_task_waiting_on_a_task_it_submitted",
        Duration::from_secs(120),
    );
    // Python's docs: deadlocks with max_workers=1.
    let pool = ThreadPool::new(1).unwrap();
    let p = pool.clone();
    let outer = pool
        .submit(move || {
            let inner = p.submit(|| 5u32.pow(2)).unwrap();
            inner.join()
        })
        .unwrap();
    assert_eq!(outer.join(), Ok(Ok(25)));
}

#[test]
fn two_tasks_waiting_on_each_other_get_an_error_not_a_hang() {
    let _dog = Watchdog::new(
        "two_tasks_waiting_on_each_other_get_an_error_not_a_hang",
        Duration::from_secs(120),
    );
    // Python's docs: a waits on b, b waits on a: deadlock. Here the wait that
    // closes the cycle is refused, and both tasks finish.
    let pool = ThreadPool::new(2).unwrap();
    let both_running = Arc::new(Barrier::new(2));
    let (a_tx, a_rx) = mpsc::channel::<concurrent_futures::FutureHandle<u32>>();
    let (b_tx, b_rx) = mpsc::channel::<concurrent_futures::FutureHandle<u32>>();
    let g = both_running.clone();
    let a = pool
        .submit(move || {
            g.wait();
            let b = b_rx.recv().unwrap();
            match b.result() {
                Ok(v) => *v + 1,
                Err(e) => {
                    assert_eq!(e, TaskError::WouldDeadlock);
                    100
                }
            }
        })
        .unwrap();
    let g = both_running.clone();
    let b = pool
        .submit(move || {
            g.wait();
            let a = a_rx.recv().unwrap();
            match a.result() {
                Ok(v) => *v + 1,
                Err(e) => {
                    assert_eq!(e, TaskError::WouldDeadlock);
                    200
                }
            }
        })
        .unwrap();
    a_tx.send(a.clone()).unwrap();
    b_tx.send(b.clone()).unwrap();
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!((a, b) == (100, 101) || (a, b) == (201, 200), "got {a}, {b}");
}

#[test]
fn a_task_waiting_on_itself_gets_an_error() {
    let _dog = Watchdog::new(
        "a_task_waiting_on_itself_gets_an_error",
        Duration::from_secs(120),
    );
    let pool = ThreadPool::new(1).unwrap();
    let (tx, rx) = mpsc::channel::<concurrent_futures::FutureHandle<TaskError>>();
    let me = pool
        .submit(move || {
            let me = rx.recv().unwrap();
            me.result().unwrap_err()
        })
        .unwrap();
    tx.send(me.clone()).unwrap();
    assert_eq!(me.join(), Ok(TaskError::WouldDeadlock));
}

fn chain(pool: ThreadPool, depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    let p = pool.clone();
    let next = pool.submit(move || chain(p, depth - 1)).unwrap();
    next.join().unwrap() + 1
}

#[test]
fn a_chain_of_a_thousand_nested_submit_and_wait_on_two_workers() {
    let _dog = Watchdog::new(
        "a_chain_of_a_thousand_nested_submit_and_wait_on_two_workers",
        Duration::from_secs(120),
    );
    let pool = ThreadPool::new(2).unwrap();
    let p = pool.clone();
    let h = pool.submit(move || chain(p, 1000)).unwrap();
    assert_eq!(h.join(), Ok(1000));
}

#[test]
fn a_task_resubmitting_itself_does_not_starve_the_injector() {
    let pool = ThreadPool::new(1).unwrap();
    let stop = Arc::new(AtomicUsize::new(0));
    fn again(pool: ThreadPool, stop: Arc<AtomicUsize>) {
        if stop.load(Ordering::SeqCst) == 0 {
            let p = pool.clone();
            let _ = pool.spawn(move || again(p, stop));
        }
    }
    let (p, s) = (pool.clone(), stop.clone());
    pool.spawn(move || again(p, s)).unwrap();
    // Submitted from outside while the loop keeps the local deque busy.
    let outside = pool.submit(|| "ran").unwrap();
    assert_eq!(outside.join(), Ok("ran"));
    stop.store(1, Ordering::SeqCst);
}

#[test]
fn metrics_count_tasks() {
    let pool = ThreadPool::new(2).unwrap();
    let hs: Vec<_> = (0..100).map(|_| pool.submit(|| ()).unwrap()).collect();
    for h in hs {
        h.wait().unwrap();
    }
    pool.shutdown(true, false);
    let m = pool.metrics();
    assert_eq!(m.completed, 100);
    assert_eq!((m.queued, m.running), (0, 0));
}

// --- Regressions found in review ---

#[test]
fn cancelling_shutdown_still_runs_strand_work_and_routed_callbacks() {
    let pool = ThreadPool::new(1).unwrap();
    let (_busy, gate) = occupy(&pool);
    let strand = concurrent_futures::Strand::new(&pool, 0u32);
    strand.post(|n| *n += 1); // its drain is queued behind `busy`
    let promise = concurrent_futures::Promise::new();
    let (tx, rx) = mpsc::channel();
    pool.add_done_callback(&promise.handle(), move |r| tx.send(*r.unwrap()).unwrap());
    promise.set_result(9u8).unwrap(); // the routed callback is queued too
    let p = pool.clone();
    let shutter = std::thread::spawn(move || p.shutdown(true, true));
    gate.wait();
    shutter.join().unwrap();
    assert_eq!(rx.recv().unwrap(), 9, "the routed callback was not lost");
    assert_eq!(
        strand.submit(|n| *n).join(),
        Ok(1),
        "the strand still works"
    );
}

#[test]
fn map_keeps_order_when_the_pool_shuts_down_mid_iteration() {
    let pool = ThreadPool::new(1).unwrap();
    let mut m = pool.map(|x: u32| x, 0..6).buffer(2);
    assert_eq!(m.next(), Some(Ok(0)));
    pool.shutdown(false, false);
    let rest: Vec<_> = m.collect();
    assert_eq!(rest, [Ok(1), Err(TaskError::Shutdown)]);
}

#[test]
fn a_one_worker_pool_task_waiting_on_a_promise_fed_by_the_pool() {
    let _dog = Watchdog::new(
        "a_one_worker_pool_task_waiting_on_a_promise_fed_by_the_pool",
        Duration::from_secs(120),
    );
    // The task blocks on a strand's handle whose drain sits in the same
    // worker's deque: a compensating worker keeps the pool going.
    let pool = ThreadPool::new(1).unwrap();
    let strand = concurrent_futures::Strand::new(&pool, 41u32);
    let s = strand.clone();
    let h = pool.submit(move || s.submit(|n| *n + 1).join()).unwrap();
    assert_eq!(h.join(), Ok(Ok(42)));
    let p = pool.clone();
    let h = pool
        .submit(move || {
            let inner = vec![p.submit(|| 1).unwrap(), p.submit(|| 2).unwrap()];
            concurrent_futures::wait(inner, concurrent_futures::ReturnWhen::AllCompleted, None)
                .done
                .len()
        })
        .unwrap();
    assert_eq!(h.join(), Ok(2));
}

#[test]
fn dropping_the_pool_after_a_timed_out_shutdown_does_not_hang() {
    let _dog = Watchdog::new(
        "dropping_the_pool_after_a_timed_out_shutdown_does_not_hang",
        Duration::from_secs(120),
    );
    let pool = ThreadPool::new(1).unwrap();
    let (stuck, gate) = occupy(&pool);
    assert!(
        !pool
            .shutdown_timeout(Duration::from_millis(5), false)
            .finished
    );
    drop(pool); // must return although the task is still stuck
    gate.wait();
    stuck.wait().unwrap();
}

#[test]
fn a_value_that_panics_on_drop_does_not_kill_the_worker() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("boom on drop");
        }
    }
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    pool.spawn(move || {
        g.wait();
    })
    .unwrap();
    for _ in 0..3 {
        // The handle goes first (the worker is held), so the value is
        // dropped on the worker.
        drop(pool.submit(|| Bomb).unwrap());
    }
    gate.wait();
    pool.spawn(|| drop(std::panic::catch_unwind(|| panic!("spawned"))))
        .unwrap();
    assert_eq!(
        pool.submit(|| 5).unwrap().join(),
        Ok(5),
        "the worker survived"
    );
}

#[test]
fn joining_the_last_handle_inside_its_own_callback_does_not_hang() {
    let _dog = Watchdog::new(
        "joining_the_last_handle_inside_its_own_callback_does_not_hang",
        Duration::from_secs(120),
    );
    // The callback holds the only handle of a pool task (no promise keeps
    // another reader): `join` must not wait for the drain it runs inside.
    let pool = ThreadPool::new(1).unwrap();
    let (h, gate) = gated(&pool, 5u32);
    let (tx, rx) = mpsc::channel();
    let me = h.clone();
    let _ = h.add_done_callback(move |_| {
        let _ = tx.send(me.join());
    });
    drop(h);
    gate.wait();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(Ok(5)));
}

/// A one-worker pool runs outside submits in submission order, as Python's
/// `ThreadPoolExecutor(max_workers=1)` does; the fairness tick used to take
/// one task from the injector ahead of the batch already in the worker's
/// deque (59, 63, 60).
#[test]
fn one_worker_runs_outside_submits_in_submission_order() {
    for _ in 0..50 {
        let pool = ThreadPool::new(1).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                pool.submit(move || log.lock().unwrap().push(i)).unwrap()
            })
            .collect();
        handles.into_iter().for_each(|h| h.wait().unwrap());
        assert_eq!(*log.lock().unwrap(), (0..200).collect::<Vec<_>>());
    }
}

/// One worker: A runs, B is submitted from outside, then A submits C.
/// Returns the order B and C ran in.
fn outside_then_inside(shared_queue: bool) -> Vec<&'static str> {
    let pool = ThreadPool::builder()
        .workers(1)
        .shared_queue(shared_queue)
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Barrier::new(2));
    let (p, o, g) = (pool.clone(), order.clone(), gate.clone());
    let a = pool
        .submit(move || {
            g.wait();
            p.submit(move || o.lock().unwrap().push("c")).unwrap()
        })
        .unwrap();
    let o = order.clone();
    let b = pool.submit(move || o.lock().unwrap().push("b")).unwrap();
    gate.wait();
    a.join().unwrap().join().unwrap();
    b.join().unwrap();
    order.lock().unwrap().clone()
}

#[test]
fn a_shared_queue_runs_tasks_in_the_order_they_were_submitted() {
    // By default a worker's own submit goes to its deque, ahead of outside
    // work; with the shared queue, in submission order.
    assert_eq!(outside_then_inside(false), ["c", "b"]);
    assert_eq!(outside_then_inside(true), ["b", "c"]);
}

#[test]
fn without_stand_ins_a_shared_queue_lets_earlier_work_finish_first() {
    // C waits on what B (submitted earlier, from outside) sets. One worker
    // and no stand-ins: C ahead of B would wait for good.
    let _dog = common::Watchdog::new("shared queue", Duration::from_secs(60));
    let pool = ThreadPool::builder()
        .workers(1)
        .max_blocking(0)
        .shared_queue(true)
        .build()
        .unwrap();
    let promise = Arc::new(concurrent_futures::Promise::<u8>::new());
    let gate = Arc::new(Barrier::new(2));
    let (p, g, h) = (pool.clone(), gate.clone(), promise.handle());
    let a = pool
        .submit(move || {
            g.wait();
            p.submit(move || *h.result().unwrap()).unwrap()
        })
        .unwrap();
    let set = promise.clone();
    let b = pool.submit(move || set.set_result(7).unwrap()).unwrap();
    gate.wait();
    assert_eq!(a.join().unwrap().join(), Ok(7));
    b.join().unwrap();
}

/// The calling thread's scheduling policy, from `/proc` (field 41 of its
/// `stat`; 0 is `SCHED_OTHER`, 3 `SCHED_BATCH`).
#[cfg(target_os = "linux")]
fn policy_of_this_thread() -> u32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields from the third on follow the parenthesised name.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace()
        .nth(41 - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// The policy a pool thread should read here with `batch_scheduling(on)`:
/// a thread starts under its creator's policy, and the option moves only
/// a normal one (0), to `SCHED_BATCH` (3), where the kernel allows it. So
/// a test run under `chrt -b` or `chrt -i`, or behind a filter that
/// refuses the call, checks what the option promises there instead of
/// failing; on an ordinary machine (and in CI) it checks the move itself.
#[cfg(target_os = "linux")]
fn policy_expected(on: bool) -> u32 {
    let inherited = policy_of_this_thread();
    if !on || inherited != 0 {
        return inherited;
    }
    // Asked from a thread of its own, which then exits: this one keeps
    // its policy.
    let allowed = std::thread::spawn(|| {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` that outlives the call,
        // which only reads it; it changes only this short-lived thread.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
    })
    .join()
    .unwrap();
    if allowed {
        3
    } else {
        eprintln!("SCHED_BATCH refused here: checking that the workers keep the normal policy");
        0
    }
}

#[cfg(target_os = "linux")]
#[test]
fn batch_scheduling_puts_every_worker_under_sched_batch() {
    let callers = policy_of_this_thread();
    for on in [false, true] {
        let expected = policy_expected(on);
        let pool = ThreadPool::builder()
            .workers(2)
            .batch_scheduling(on)
            .build()
            .unwrap();
        // Both workers at once, so neither answers for the other.
        let both = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let both = both.clone();
                pool.submit(move || {
                    both.wait();
                    policy_of_this_thread()
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            assert_eq!(h.join(), Ok(expected), "batch_scheduling({on})");
        }
        // The caller's own thread is untouched.
        assert_eq!(policy_of_this_thread(), callers);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn batch_scheduling_reaches_the_compensating_workers_too() {
    let _dog = common::Watchdog::new("batch stand-in", Duration::from_secs(60));
    let pool = ThreadPool::builder()
        .workers(1)
        .batch_scheduling(true)
        .build()
        .unwrap();
    // The only worker blocks on a promise the pool cannot run, so the
    // task queued next can only run on a compensating worker.
    let gate = concurrent_futures::Promise::<()>::new();
    let g = gate.handle();
    let (about_to_wait, told) = mpsc::channel();
    let blocked = pool
        .submit(move || {
            about_to_wait.send(()).unwrap();
            *g.result().unwrap()
        })
        .unwrap();
    told.recv().unwrap();
    let stand_in = pool
        .submit(|| {
            let name = std::thread::current().name().map(str::to_owned);
            (name, policy_of_this_thread())
        })
        .unwrap();
    let (name, policy) = stand_in.join().unwrap();
    assert!(name.as_deref().unwrap().ends_with("-extra"), "{name:?}");
    assert_eq!(policy, policy_expected(true));
    gate.set_result(()).unwrap();
    blocked.join().unwrap();
}
