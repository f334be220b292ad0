//! Which waits are refused with `WouldDeadlock`, and which thread runs
//! what: the same program gets the same answer whichever thread ran what.
//!
//! A `join` half, a scoped task and an `install`ed closure are work their
//! caller blocks on, so each holds what its caller holds: a wait in it on
//! the caller's task is refused, whether it runs on the caller's thread or
//! on another. A task waited on by a thread of another pool runs on its
//! own pool, never inline on the waiter.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, ThreadId};
use std::time::Duration;

use common::{Watchdog, one_worker_pool, thread_name};
use concurrent_futures::{
    FutureHandle, Promise, ReturnWhen, TaskError, ThreadPool, as_completed, wait,
};

/// What a probe reports: the outcome of its wait on its caller's task, and
/// whether it ran on the caller's thread.
type Probe = (Result<(), TaskError>, bool);

/// Submits `body` as a task that is given its own handle and the thread it
/// runs on; returns what it returned.
fn run_knowing_itself<R: Clone + Send + Sync + 'static>(
    pool: &ThreadPool,
    body: impl FnOnce(&FutureHandle<R>, ThreadId) -> R + Send + 'static,
) -> R {
    let me = Promise::<FutureHandle<R>>::new();
    let mine = me.handle();
    let h = pool
        .submit(move || body(mine.result().unwrap(), thread::current().id()))
        .unwrap();
    me.set_result(h.clone()).unwrap();
    h.join().unwrap()
}

/// A probe from `home`'s caller: waits on `me`, says where it ran.
fn probe<R>(me: &FutureHandle<R>, home: ThreadId) -> Probe {
    (me.wait(), thread::current().id() == home)
}

/// `join(a, b)` inside task X where `b` waits on X. With `steal`, `a` keeps
/// X's thread until `b` has started, so another worker stole it; without,
/// one worker runs `b` after `a` on X's thread.
fn join_half_waits_on_its_joiner(steal: bool) -> Probe {
    let pool = ThreadPool::new(if steal { 2 } else { 1 }).unwrap();
    let inner = pool.clone();
    run_knowing_itself(&pool, move |me, home| {
        let started = AtomicBool::new(false);
        let ((), p) = inner.join(
            || {
                // A join's wake is a hint that may miss a worker going to
                // sleep; a submit's is not, so one first (a no-op task).
                if steal {
                    inner.spawn(|| ()).unwrap();
                }
                // Acquire/Release: only a flag; b's wait is what is tested.
                while steal && !started.load(Ordering::Acquire) {
                    thread::yield_now();
                }
            },
            || {
                started.store(true, Ordering::Release);
                probe(me, home)
            },
        );
        p
    })
}

#[test]
fn a_join_half_waiting_on_its_joiners_task_is_refused_wherever_it_runs() {
    let _dog = Watchdog::new("join half", Duration::from_secs(60));
    // Stolen: it used to hang, the joiner waiting for b, b for the joiner.
    assert_eq!(
        join_half_waits_on_its_joiner(true),
        (Err(TaskError::WouldDeadlock), false)
    );
    assert_eq!(
        join_half_waits_on_its_joiner(false),
        (Err(TaskError::WouldDeadlock), true)
    );
}

/// A task's wait on its own handle: refused untimed and with a deadline
/// still ahead, since it could only end at the deadline; a deadline already
/// passed (zero) only looks, cannot block, and reports a timeout, as the
/// docs of `TaskError::WouldDeadlock` say. (The zero wait was refused too.)
#[test]
fn a_task_waiting_on_itself_is_refused_unless_its_timeout_has_passed() {
    let _dog = Watchdog::new("self wait", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let got = run_knowing_itself(&pool, |me, _| {
        let long = Duration::from_secs(3600);
        [
            me.wait(),
            me.wait_timeout(long),
            me.wait_timeout(Duration::ZERO),
        ]
    });
    let refused = Err(TaskError::WouldDeadlock);
    assert_eq!(got, [refused.clone(), refused, Err(TaskError::Timeout)]);
}

/// A scoped task's done-callbacks are waited for by the scope's owner
/// like the task itself, so they hold what the owner holds: in a callback
/// run by the worker that completes the task (after the task's own frame
/// is gone), a wait on the task that opened the scope is refused, and so
/// is a shutdown of that task's pool, as they would be in the task. They
/// used to be let through: the wait could only end at its deadline, and
/// the shutdown waited for a thread that waited for it.
#[test]
fn a_scoped_tasks_callbacks_hold_what_the_scope_owner_holds() {
    let _dog = Watchdog::new("scoped callbacks", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    let other = ThreadPool::new(1).unwrap();
    let home = pool.clone();
    let got = run_knowing_itself(&pool, move |me, _| {
        let mut seen = (None, None);
        let gate = Barrier::new(2);
        let (seen_ref, gate) = (&mut seen, &gate);
        // The scope on the other pool, its task on that pool's worker.
        other.scope(|s| {
            let h = s.submit(move || gate.wait()).unwrap();
            while !h.running() {
                thread::yield_now();
            }
            // Timed, so that a wait let through fails the test, not hangs it.
            let t = Duration::from_secs(2);
            let _ = h.add_done_callback(move |_| {
                *seen_ref = (
                    Some(me.wait_timeout(t)),
                    Some(home.shutdown_timeout(t, false).would_deadlock),
                );
            });
            gate.wait();
        });
        seen
    });
    assert_eq!(got, (Some(Err(TaskError::WouldDeadlock)), Some(true)));
}

/// Task X opens a scope whose task waits on X. `inline`: the body waits on
/// the task's handle, which runs it on X's thread (one worker, so no other
/// thread can steal it first); otherwise the scope's end waits, and another
/// thread runs it.
fn scoped_task_waits_on_its_scopes_task(inline: bool) -> Probe {
    let pool = ThreadPool::new(if inline { 1 } else { 2 }).unwrap();
    let inner = pool.clone();
    run_knowing_itself(&pool, move |me, home| {
        let mut out = None;
        let slot = &mut out;
        inner.scope(move |s| {
            if inline {
                *slot = Some(s.submit(move || probe(me, home)).unwrap().join().unwrap());
            } else {
                s.spawn(move || *slot = Some(probe(me, home))).unwrap();
            }
        });
        out.unwrap()
    })
}

#[test]
fn a_scoped_task_waiting_on_its_scopes_task_is_refused_wherever_it_runs() {
    let _dog = Watchdog::new("scoped task", Duration::from_secs(60));
    // On another thread: it used to hang, the scope's end waiting for the
    // task, the task for the scope's owner.
    assert_eq!(
        scoped_task_waits_on_its_scopes_task(false),
        (Err(TaskError::WouldDeadlock), false)
    );
    assert_eq!(
        scoped_task_waits_on_its_scopes_task(true),
        (Err(TaskError::WouldDeadlock), true)
    );
}

/// Probes with timed waits on `x` until one is refused.
fn probe_until_refused<R>(x: &FutureHandle<R>) {
    while x.wait_timeout(Duration::from_millis(1)) == Err(TaskError::Timeout) {}
}

/// Task X lends two scoped tasks to other threads, so both hold X: S1
/// blocks on task Y, then S2 on task Z, which can finish. Y's wait on X
/// closes X -> S1 -> Y -> X, and is refused although the newest wait among
/// X's holders, S2's, has a way out: X finishes only once every thread
/// holding it resumes. (The graph once consulted only that newest wait.)
/// Probes order the waits: Y's first is refused once S1 waits on Y, Z's
/// once S2 waits on Z; the std barriers between them add no edges.
#[test]
fn a_cycle_through_one_of_two_lent_tasks_is_refused_whatever_the_other_waits_on() {
    let _dog = Watchdog::new("two lent tasks", Duration::from_secs(60));
    let pool = ThreadPool::new(5).unwrap();
    let x_handle = Promise::<FutureHandle<()>>::new();
    let release = Promise::<()>::new();
    let (s1_waits, s2_waits) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (x_of_z, released, s2_in) = (x_handle.handle(), release.handle(), s2_waits.clone());
    let z = pool
        .submit(move || {
            probe_until_refused(x_of_z.result().unwrap());
            s2_in.wait();
            released.wait().unwrap();
        })
        .unwrap();
    let (x_of_y, s1_in) = (x_handle.handle(), s1_waits.clone());
    // Y has started before S1 waits on it, so S1's wait blocks (it would
    // run a queued Y inline, and the graph would never see the cycle).
    let y_started = Arc::new(AtomicBool::new(false));
    let started = y_started.clone();
    let y = pool
        .submit(move || {
            started.store(true, Ordering::Release);
            let x = x_of_y.result().unwrap();
            probe_until_refused(x);
            s1_in.wait(); // lets S2 wait on Z
            s2_waits.wait();
            x.wait_timeout(Duration::from_millis(100))
        })
        .unwrap();
    let (inner, y_of_s1) = (pool.clone(), y.clone());
    let x = pool
        .submit(move || {
            inner.scope(|s| {
                s.spawn(|| {
                    // Acquire: pairs with Y's Release; only a flag.
                    while !y_started.load(Ordering::Acquire) {
                        thread::yield_now();
                    }
                    let _ = y_of_s1.wait();
                })
                .unwrap();
                s.spawn(|| {
                    s1_waits.wait();
                    z.wait().unwrap();
                })
                .unwrap();
            })
        })
        .unwrap();
    x_handle.set_result(x.clone()).unwrap();
    assert_eq!(y.join(), Ok(Err(TaskError::WouldDeadlock)));
    release.set_result(()).unwrap();
    assert_eq!(x.join(), Ok(()));
}

/// Two one-worker pools named `a` and `b`.
fn two_pools() -> (ThreadPool, ThreadPool) {
    (one_worker_pool("a"), one_worker_pool("b"))
}

#[test]
fn work_given_to_another_pool_from_a_worker_runs_on_that_pool() {
    let _dog = Watchdog::new("foreign pool", Duration::from_secs(60));
    let (a, b) = two_pools();
    let on_a = |f: fn(&ThreadPool) -> Vec<String>| {
        let b = b.clone();
        a.submit(move || f(&b)).unwrap().join().unwrap()
    };
    // Each used to run on a's worker: its wait claimed b's task inline.
    assert_eq!(on_a(|b| vec![b.install(thread_name)]), ["b-0"]);
    assert_eq!(
        on_a(|b| b.scope(|s| vec![s.submit(thread_name).unwrap().join().unwrap()])),
        ["b-0"]
    );
    assert_eq!(
        on_a(|b| vec![b.submit(thread_name).unwrap().join().unwrap()]),
        ["b-0"]
    );
    assert_eq!(
        on_a(|b| {
            let (x, y) = b.join(thread_name, thread_name);
            vec![x, y]
        }),
        ["b-0", "b-0"]
    );
    // A task of the same pool still runs inline on its waiter: b's only
    // worker waits on a task queued behind it.
    let bb = b.clone();
    let nested = b
        .submit(move || bb.submit(thread_name).unwrap().join().unwrap())
        .unwrap();
    assert_eq!(nested.join(), Ok("b-0".to_owned()));
}

#[test]
fn an_install_on_another_pool_waiting_on_its_callers_task_is_refused() {
    let _dog = Watchdog::new("install cycle", Duration::from_secs(60));
    let (a, b) = two_pools();
    let (outcome, on_caller) =
        run_knowing_itself(&a, move |me, home| b.install(|| probe(me, home)));
    assert_eq!((outcome, on_caller), (Err(TaskError::WouldDeadlock), false));
}

/// Work lent to another pool (an `install`, a scoped task there) holds its
/// caller's task: a shutdown of the caller's pool there, or the drop of its
/// last clone, would wait for that task, which waits for the work. Neither
/// waits (each used to, for good); the pool finishes once the task does.
#[test]
fn lent_work_shutting_down_its_callers_pool_does_not_wait_for_it() {
    let _dog = Watchdog::new("shutdown from lent work", Duration::from_secs(60));
    let (a, b) = two_pools();
    let (a2, b2) = (a.clone(), b.clone());
    let x = a
        .submit(move || {
            let forever = Duration::from_secs(3600);
            let installed = b2.install(|| a2.shutdown_timeout(forever, false));
            let scoped = b2.scope(|s| {
                s.submit(|| a2.shutdown_timeout(forever, false))
                    .unwrap()
                    .join()
                    .unwrap()
            });
            [installed, scoped].map(|r| (r.finished, r.running, r.would_deadlock))
        })
        .unwrap();
    assert_eq!(x.join(), Ok([(false, 1, true), (false, 1, true)]));
    a.shutdown(true, false);
    assert_eq!(a.metrics().threads, 0);
}

/// The same for the drop of the pool's last clone, which shuts it down
/// and waits.
#[test]
fn lent_work_dropping_its_callers_last_pool_clone_does_not_wait_for_it() {
    let _dog = Watchdog::new("last clone dropped in lent work", Duration::from_secs(60));
    let (a, b) = two_pools();
    let a2 = a.clone();
    let (dropped_tx, dropped) = std::sync::mpsc::channel::<()>();
    let x = a
        .submit(move || {
            dropped.recv().unwrap();
            b.install(move || drop(a2));
        })
        .unwrap();
    drop(a);
    dropped_tx.send(()).unwrap();
    assert_eq!(x.join(), Ok(()));
}

/// Task X of pool `a` waits on Y of pool `b`, which then shuts `a` down:
/// the shutdown would wait for X, X waits for Y. It does not wait.
#[test]
fn a_shutdown_that_a_waiting_task_of_the_pool_waits_on_does_not_wait() {
    let _dog = Watchdog::new("shutdown in a cycle", Duration::from_secs(60));
    let (a, b) = two_pools();
    let a2 = a.clone();
    let x_handle = Promise::<FutureHandle<(bool, usize, bool)>>::new();
    let x_of_y = x_handle.handle();
    let x = a
        .submit(move || {
            let y = b
                .submit(move || {
                    // Refused once X waits on Y.
                    probe_until_refused(x_of_y.result().unwrap());
                    let r = a2.shutdown_timeout(Duration::from_secs(3600), false);
                    (r.finished, r.running, r.would_deadlock)
                })
                .unwrap();
            y.join().unwrap()
        })
        .unwrap();
    x_handle.set_result(x.clone()).unwrap();
    assert_eq!(x.join(), Ok((false, 1, true)));
}

/// A way to shut a pool down and wait.
type Shut = fn(&ThreadPool);

/// The untimed shutdown.
const SHUTDOWN: Shut = |a| {
    a.shutdown(true, false);
};

/// Task Y of `b`, shutting `a` down with `shut`: how many of `a`'s
/// threads were left when the shutdown returned.
fn shutting_down(b: &ThreadPool, a: &ThreadPool, shut: Shut) -> FutureHandle<usize> {
    let a = a.clone();
    b.submit(move || {
        shut(&a);
        a.metrics().threads
    })
    .unwrap()
}

/// A task of `pool` that waits on the returned promise, which the caller
/// sets (a wait on it is an edge of the graph; the task's own wait on the
/// promise is none, so it can always resume).
fn gated_task(pool: &ThreadPool) -> (Promise<()>, FutureHandle<()>) {
    let gate = Promise::new();
    let opened = gate.handle();
    (gate, pool.submit(move || opened.wait().unwrap()).unwrap())
}

/// The other order: Y of pool `b` waits in `a`'s shutdown, then task X of
/// `a` waits on Y. X's wait is refused (it used to hang), X returns, and
/// the shutdown then finishes. Untimed, as a timed wait ends by itself
/// and closes no cycle; a timeout too long for a deadline waits for good,
/// so it is untimed too (it was once taken for timed, and both hung).
#[test]
fn a_task_waiting_on_a_shutdown_of_its_own_pool_is_refused() {
    let dog = Watchdog::new("wait on a shutdown", Duration::from_secs(60));
    let shutdowns: [(&str, Shut); 2] = [
        ("shutdown", SHUTDOWN),
        ("shutdown_timeout(MAX)", |a| {
            a.shutdown_timeout(Duration::MAX, false);
        }),
    ];
    for (name, shut) in shutdowns {
        dog.stage(name.into());
        let (a, b) = two_pools();
        let a2 = a.clone();
        let x = a
            .submit(move || {
                let y = shutting_down(&b, &a2, shut);
                // Refused once Y waits in the shutdown.
                probe_until_refused(&y);
                (y.wait(), y)
            })
            .unwrap();
        let (refused, y) = x.join().unwrap();
        assert_eq!(refused, Err(TaskError::WouldDeadlock), "{name}");
        assert_eq!(
            y.join(),
            Ok(0),
            "{name}: the shutdown waited for a's worker"
        );
    }
}

/// How a blocked closure `w` runs on pool `a`: not only as a task with a
/// handle (whose frame names the task) but as anything a worker runs.
type Place = fn(&ThreadPool, Box<dyn FnOnce() + Send>);

const PLACES: [(&str, Place); 4] = [
    ("submit", |a, w| drop(a.submit(w).unwrap())),
    ("spawn", |a, w| a.spawn(w).unwrap()),
    ("routed callback", |a, w| {
        let p = Promise::<()>::new();
        a.add_done_callback(&p.handle(), move |_| w());
        p.set_result(()).unwrap();
    }),
    ("scoped spawn", |a, w| {
        let a = a.clone();
        thread::spawn(move || a.scope(|s| s.spawn(w).unwrap()));
    }),
];

/// A worker of `a`, running `w` placed as each of [`PLACES`] says, waits
/// on Y of pool `b`, which shuts `a` down. Whichever comes first, nothing
/// hangs: Y's shutdown does not wait (`a` still has its thread when it
/// returns), or, in the other order, `w`'s wait is refused and the
/// shutdown waits for the worker. (A worker's base frame names its pool,
/// whatever it runs; before it, only a task's frame did, and a `spawn`
/// hung here.)
#[test]
fn a_shutdown_and_a_worker_waiting_on_it_end_whatever_the_worker_runs() {
    let dog = Watchdog::new("shutdown and a worker", Duration::from_secs(60));
    for (name, place) in PLACES {
        dog.stage(name.into());
        let (a, b) = two_pools();
        let y_of = Promise::<FutureHandle<usize>>::new();
        let (y_handle, (outcome_tx, outcome), (started_tx, started)) =
            (y_of.handle(), mpsc::channel(), mpsc::channel());
        place(
            &a,
            Box::new(move || {
                started_tx.send(()).unwrap();
                outcome_tx.send(y_handle.result().unwrap().wait()).unwrap();
            }),
        );
        started.recv().unwrap();
        let y = shutting_down(&b, &a, SHUTDOWN);
        y_of.set_result(y.clone()).unwrap();
        let threads_left = y.join().unwrap();
        let refused = outcome.recv().unwrap() == Err(TaskError::WouldDeadlock);
        assert!(
            (refused && threads_left == 0) || (!refused && threads_left == 1),
            "{name}: refused {refused}, threads left {threads_left}"
        );
    }
}

/// And where the worker's wait can end, Y's untimed shutdown waits for
/// it, whatever the worker runs: no thread of `a` is left when it returns.
/// The worker waits on task Z of a third pool (an edge of the graph, so
/// the shutdown meets a blocked thread of `a` and must judge that it can
/// resume), and Z on a promise this thread sets only once the shutdown's
/// edge stands: a probe on `a`'s second worker sees its wait on Y refused.
#[test]
fn a_shutdown_from_another_pool_waits_for_a_worker_whatever_it_runs() {
    let dog = Watchdog::new("shutdown waits for a worker", Duration::from_secs(60));
    for (name, place) in PLACES {
        dog.stage(name.into());
        let (a, b, c) = (
            ThreadPool::new(2).unwrap(),
            one_worker_pool("b"),
            one_worker_pool("c"),
        );
        let (gate, z) = gated_task(&c);
        let (started_tx, started) = mpsc::channel();
        place(
            &a,
            Box::new(move || {
                started_tx.send(()).unwrap();
                z.wait().unwrap();
            }),
        );
        started.recv().unwrap();
        let y_of = Promise::<FutureHandle<usize>>::new();
        let y_handle = y_of.handle();
        let edge_stands = a
            .submit(move || probe_until_refused(y_handle.result().unwrap()))
            .unwrap();
        let y = shutting_down(&b, &a, SHUTDOWN);
        y_of.set_result(y.clone()).unwrap();
        edge_stands.join().unwrap();
        gate.set_result(()).unwrap();
        assert_eq!(y.join(), Ok(0), "{name}");
    }
}

/// A timed shutdown from another pool's task waits as before where the
/// pool's tasks can finish, and says so: X waits on task Z of a third
/// pool, which waits on a promise this thread sets once Y is about to
/// shut `a` down (a timed edge refuses nothing, so no probe can say when
/// it stands; the test above orders the untimed case).
#[test]
fn a_shutdown_from_another_pool_waits_for_tasks_that_can_finish() {
    let _dog = Watchdog::new("shutdown waits", Duration::from_secs(60));
    let (a, b, c) = (
        one_worker_pool("a"),
        one_worker_pool("b"),
        one_worker_pool("c"),
    );
    let (gate, z) = gated_task(&c);
    let (x_waits_tx, x_waits) = std::sync::mpsc::channel::<()>();
    let x = a
        .submit(move || {
            x_waits_tx.send(()).unwrap();
            z.wait().unwrap();
        })
        .unwrap();
    let (shutting_tx, shutting) = std::sync::mpsc::channel::<()>();
    let y = b
        .submit(move || {
            x_waits.recv().unwrap();
            shutting_tx.send(()).unwrap();
            let r = a.shutdown_timeout(Duration::from_secs(3600), false);
            (r.finished, r.would_deadlock)
        })
        .unwrap();
    shutting.recv().unwrap();
    gate.set_result(()).unwrap();
    assert_eq!(y.join(), Ok((true, false)));
    assert_eq!(x.join(), Ok(()));
}

/// A cycle through a stolen join half and another task: b waits on Y, Y on
/// the joiner's task X. Whichever wait closes the cycle is refused, and
/// the other returns.
#[test]
fn a_cycle_through_a_stolen_join_half_and_another_task_is_refused_once() {
    let _dog = Watchdog::new("cycle through a join", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    let inner = pool.clone();
    let (b_wait, y) = run_knowing_itself(&pool, move |me, _| {
        let me = me.clone();
        let y = inner.submit(move || me.wait()).unwrap();
        let started = AtomicBool::new(false);
        let nudge = inner.clone();
        let ((), b_wait) = inner.join(
            || {
                // A join's wake is a hint that may miss a worker going to
                // sleep (here, the one Y blocks); a submit's is not.
                nudge.spawn(|| ()).unwrap();
                while !started.load(Ordering::Acquire) {
                    thread::yield_now();
                }
            },
            || {
                started.store(true, Ordering::Release);
                y.wait()
            },
        );
        (b_wait, y)
    });
    let y_wait = y.join().unwrap();
    let refused = [&b_wait, &y_wait]
        .iter()
        .filter(|r| ***r == Err(TaskError::WouldDeadlock))
        .count();
    assert_eq!(refused, 1, "b: {b_wait:?}, y: {y_wait:?}");
}

/// Task X on a one-worker pool submits `y`, which waits on X's handle, and
/// watches `y` with `watch`. `y` cannot start until X blocks (X holds the
/// only worker; the pool starts a compensating one when X blocks), so X's
/// wait is in the wait-for graph when `y` waits: `y`'s wait is refused,
/// `y` ends, and X's wait returns. Before module-level waits entered the
/// graph both sides blocked for good.
fn watched_task_waiting_on_its_watcher<W>(watch: W) -> (W::Output, Result<(), TaskError>)
where
    W: WatchOne,
{
    let pool = ThreadPool::new(1).unwrap();
    let inner = pool.clone();
    run_knowing_itself(&pool, move |me, _| {
        let me = me.clone();
        let y = inner.submit(move || me.wait()).unwrap();
        let seen = watch.watch(y.clone());
        (seen, y.result().unwrap().clone())
    })
}

/// A way to wait on one handle (a closure cannot be generic over `T`).
trait WatchOne: Send + 'static {
    type Output: Clone + Send + Sync + 'static;
    fn watch(self, y: FutureHandle<Result<(), TaskError>>) -> Self::Output;
}

struct WaitFor(ReturnWhen);
impl WatchOne for WaitFor {
    /// (done, not done)
    type Output = (usize, usize);
    fn watch(self, y: FutureHandle<Result<(), TaskError>>) -> (usize, usize) {
        let r = wait([y], self.0, None);
        (r.done.len(), r.not_done.len())
    }
}

struct AsCompletedOne;
impl WatchOne for AsCompletedOne {
    /// How many items `as_completed` yielded, and whether each was a handle.
    type Output = (usize, bool);
    fn watch(self, y: FutureHandle<Result<(), TaskError>>) -> (usize, bool) {
        let items: Vec<_> = as_completed([y], None).collect();
        (items.len(), items.iter().all(Result::is_ok))
    }
}

#[test]
fn a_task_waiting_on_the_task_that_watches_it_is_refused() {
    let _dog = Watchdog::new("module-level waits", Duration::from_secs(60));
    for when in [
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
    ] {
        assert_eq!(
            watched_task_waiting_on_its_watcher(WaitFor(when)),
            ((1, 0), Err(TaskError::WouldDeadlock)),
            "{when:?}"
        );
    }
    assert_eq!(
        watched_task_waiting_on_its_watcher(AsCompletedOne),
        ((1, true), Err(TaskError::WouldDeadlock))
    );
}

/// From task X (`me`), submits a task that calls `wait_on_me(me)`, and
/// returns once that task is about to: it may or may not be blocked in it
/// yet (the order the tests below take either way).
fn submit_waiting_on<R, T>(
    pool: &ThreadPool,
    me: &FutureHandle<R>,
    wait_on_me: impl FnOnce(&FutureHandle<R>) -> T + Send + 'static,
) -> FutureHandle<T>
where
    R: Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let me = me.clone();
    let about_to_wait = Arc::new(Barrier::new(2));
    let a = about_to_wait.clone();
    let y = pool
        .submit(move || {
            a.wait();
            wait_on_me(&me)
        })
        .unwrap();
    about_to_wait.wait();
    y
}

/// Submits from task X (`me`) a task that waits on X, and returns once
/// that wait stands in the wait-for graph: X probes the task with timed
/// waits, which are refused exactly then (the task is stuck on X, which
/// the prober holds; a timed prober can resume, so the task's own wait is
/// never refused for it). A thread's kernel state would not do: it reads
/// asleep on the graph's own lock, before the edge exists.
fn submit_asleep_on<R>(
    pool: &ThreadPool,
    me: &FutureHandle<R>,
) -> FutureHandle<Result<(), TaskError>>
where
    R: Send + Sync + 'static,
{
    let me = me.clone();
    let y = pool.submit(move || me.wait()).unwrap();
    probe_until_refused(&y);
    y
}

/// The other order, on two workers: `y` already sleeps in its wait on X
/// when X calls `wait`. Then `y` cannot finish while X waits, and `wait`
/// leaves it out, as it leaves out X's own handle: it returns at once
/// with `y` not done, and `y` ends once X has. (X first: `y` is refused,
/// as above.)
#[test]
fn a_wait_on_a_task_already_waiting_on_the_caller_leaves_it_out() {
    let _dog = Watchdog::new("module-level wait, other order", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..5 {
        let inner = pool.clone();
        let (r, y) = run_knowing_itself(&pool, move |me, _| {
            let y = submit_asleep_on(&inner, me);
            let r = wait([y.clone()], ReturnWhen::AllCompleted, None);
            ((r.done.len(), r.not_done.len()), y)
        });
        assert_eq!(r, (0, 1));
        assert_eq!(y.join(), Ok(Ok(())));
    }
}

/// A thread in a timed wait resumes at its deadline, so it proves nothing:
/// X's `wait` for a task that waits on X with a timeout waits for it (it
/// ends at its deadline, or is refused if X got there first), where a
/// graph that took timed waits for good left it out at once.
#[test]
fn a_task_in_a_timed_wait_on_the_caller_is_waited_for() {
    let _dog = Watchdog::new("timed waits", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..5 {
        let inner = pool.clone();
        let (r, y) = run_knowing_itself(&pool, move |me, _| {
            let y = submit_waiting_on(&inner, me, |me| me.wait_timeout(Duration::from_millis(100)));
            let r = wait([y.clone()], ReturnWhen::AllCompleted, None);
            ((r.done.len(), r.not_done.len()), y)
        });
        assert_eq!(r, (1, 0));
        let y = y.join().unwrap();
        assert!(
            y == Err(TaskError::Timeout) || y == Err(TaskError::WouldDeadlock),
            "{y:?}"
        );
    }
}

/// And the other way: X in a `wait` with a timeout resumes at its deadline,
/// so a task that then waits on X is not refused: it waits for X.
#[test]
fn a_wait_on_a_task_in_a_timed_wait_is_not_refused() {
    let _dog = Watchdog::new("timed module wait", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let inner = pool.clone();
    let (r, y) = run_knowing_itself(&pool, move |me, _| {
        let me = me.clone();
        // Queued behind X (one worker): it starts once X blocks.
        let y = inner.submit(move || me.wait()).unwrap();
        let r = wait(
            [y.clone()],
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(100)),
        );
        ((r.done.len(), r.not_done.len()), y)
    });
    assert_eq!(r, (0, 1));
    assert_eq!(y.join(), Ok(Ok(())));
}

/// A wait for any one of several is stuck only if none can finish: X
/// waits for the first of `y` (which waits on X) and a promise that the
/// test sets, so `y`'s wait on X is not refused.
#[test]
fn a_wait_for_any_with_a_way_out_lets_its_waiters_wait() {
    let _dog = Watchdog::new("first completed", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let inner = pool.clone();
    let p = Promise::<Result<(), TaskError>>::new();
    let (ph, (tx, rx)) = (p.handle(), std::sync::mpsc::channel());
    let h = thread::spawn(move || {
        run_knowing_itself(&pool, move |me, _| {
            let me = me.clone();
            let y = inner
                .submit(move || {
                    tx.send(()).unwrap();
                    me.wait()
                })
                .unwrap();
            let r = wait([y.clone(), ph], ReturnWhen::FirstCompleted, None);
            (r.done.len(), y)
        })
    });
    rx.recv().unwrap(); // y runs: X is blocked in its wait
    p.set_result(Ok(())).unwrap();
    let (done, y) = h.join().unwrap();
    assert_eq!(done, 1);
    assert_eq!(y.join(), Ok(Ok(())));
}

/// An untimed `as_completed` blocked on a task that waits on its caller
/// (`as_completed` blocks on such a handle, as Python's does) stays in the
/// graph with that task listed, so a task that then waits on the caller is
/// refused (here a task of another pool: the graph spans pools). X and
/// `y1` then wait on each other for good: their pool is given up, and its
/// two threads stay blocked until the process exits (none of its threads
/// ends unjoined, which ThreadSanitizer would report). (The unit test
/// `a_stuck_target_still_listed_keeps_the_waiter_in_the_graph` checks the
/// graph's side edge by edge; this, that `as_completed` asks for it.)
#[test]
fn as_completed_blocked_on_a_stuck_task_keeps_its_edge() {
    let _dog = Watchdog::new("as_completed edge", Duration::from_secs(60));
    let pool = ThreadPool::new(2).unwrap();
    let other = ThreadPool::new(1).unwrap();
    let inner = pool.clone();
    let me = Promise::<FutureHandle<()>>::new();
    let mine = me.handle();
    let x = pool
        .submit(move || {
            let y1 = submit_asleep_on(&inner, mine.result().unwrap());
            for _ in as_completed([y1], None) {}
        })
        .unwrap();
    me.set_result(x.clone()).unwrap();
    // Timed probes of X are refused once X's edge stands (X is then stuck
    // on y1, stuck on X); then the untimed wait is refused too.
    let on_x = x.clone();
    let y2 = other
        .submit(move || {
            probe_until_refused(&on_x);
            on_x.wait()
        })
        .unwrap();
    assert_eq!(y2.join(), Ok(Err(TaskError::WouldDeadlock)));
    assert!(other.shutdown_timeout(Duration::MAX, false).finished);
    assert!(!x.done());
    assert!(!pool.shutdown_timeout(Duration::ZERO, false).finished);
}

/// With a timeout, `as_completed`'s wait ends by itself, so it refuses
/// nothing: a task that waits on its caller, before or after it blocks,
/// waits for the caller, which times out and ends.
#[test]
fn a_timed_as_completed_refuses_nothing() {
    let _dog = Watchdog::new("timed as_completed", Duration::from_secs(60));
    let pool = ThreadPool::new(3).unwrap();
    for _ in 0..5 {
        let inner = pool.clone();
        let (items, y1, y2) = run_knowing_itself(&pool, move |me, _| {
            let y1 = submit_waiting_on(&inner, me, |me| me.wait());
            let m = me.clone();
            let y2 = inner.submit(move || m.wait()).unwrap();
            let items: Vec<bool> = as_completed([y1.clone()], Some(Duration::from_millis(100)))
                .map(|i| i.is_ok())
                .collect();
            (items, y1, y2)
        });
        assert_eq!(items, [false]);
        assert_eq!((y1.join(), y2.join()), (Ok(Ok(())), Ok(Ok(()))));
    }
}
