//! Futures polled on the pool (`submit_future`, `spawn_future`), the
//! `futures` feature's `Stream` and `Spawn`, and awaiting handles from tokio.
#![cfg(not(loom))]

mod common;
use common::{Watchdog, occupy, one_worker_pool};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll, Waker};

use concurrent_futures::{Promise, TaskError, ThreadPool};

/// A future that is pending until its gate opens; it keeps the waker it
/// was last polled with, and counts its polls.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
    polls: AtomicUsize,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        // Not under the lock: the wake may poll inline, and the poll locks.
        let waker = self.waker.lock().unwrap().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Spins until the gate's future was polled `n` times.
    fn wait_polls(&self, n: usize) {
        while self.polls.load(Ordering::SeqCst) < n {
            std::thread::yield_now();
        }
    }
}

struct Wait(Arc<Gate>);

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let gate = &self.0;
        *gate.waker.lock().unwrap() = Some(cx.waker().clone());
        gate.polls.fetch_add(1, Ordering::SeqCst);
        if gate.open.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_submitted_future_awaits_a_promise_set_elsewhere() {
    let pool = ThreadPool::new(2).unwrap();
    let input = Promise::new();
    let ready = input.handle();
    let out = pool
        .submit_future(async move { ready.await.map(|v: u32| v + 1) })
        .unwrap();
    std::thread::spawn(move || input.set_result(41).unwrap());
    assert_eq!(out.join(), Ok(Ok(42)));
}

/// A future woken by a task on another pool's worker goes back to its own
/// pool: a worker pushes a wake to its own deque only for its own pool's
/// futures (the wake of a future of this pool from one of its workers
/// borrows the worker's reference to the pool; from anywhere else it must
/// queue on the future's pool).
#[test]
fn a_future_woken_on_another_pools_worker_is_polled_on_its_own_pool() {
    let (a, b) = (one_worker_pool("pool-a"), one_worker_pool("pool-b"));
    let gate = Arc::new(Gate::default());
    let polled_on = Arc::new(Mutex::new(Vec::new()));
    let (g, names) = (gate.clone(), polled_on.clone());
    let out = a
        .submit_future(std::future::poll_fn(move |cx| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            names.lock().unwrap().push(name);
            Pin::new(&mut Wait(g.clone())).poll(cx)
        }))
        .unwrap();
    gate.wait_polls(1);
    let g = gate.clone();
    b.submit(move || g.open()).unwrap().join().unwrap();
    out.join().unwrap();
    let names = polled_on.lock().unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("pool-a-")), "{names:?}");
}

/// A future that wakes itself must give its worker back between polls: a
/// one-worker pool still runs the closure the future queued behind it.
#[test]
fn a_self_waking_future_yields_its_worker() {
    let pool = ThreadPool::new(1).unwrap();
    let p = pool.clone();
    let ran = Arc::new(AtomicBool::new(false));
    let out = pool
        .submit_future(async move {
            let r = ran.clone();
            p.spawn(move || r.store(true, Ordering::SeqCst)).unwrap();
            let mut yields = 0;
            std::future::poll_fn(|cx| {
                if ran.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    yields += 1;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
            yields
        })
        .unwrap();
    // Polled inline in a loop, this would never end (and `join` would hang).
    assert_eq!(out.join(), Ok(1));
}

#[test]
fn cancelling_before_the_first_poll_means_it_never_runs() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, gate) = occupy(&pool);
    let polled = Arc::new(AtomicBool::new(false));
    let p = polled.clone();
    let h = pool
        .submit_future(async move { p.store(true, Ordering::SeqCst) })
        .unwrap();
    assert!(h.cancel());
    gate.wait();
    blocker.join().unwrap();
    pool.shutdown(true, false);
    assert!(!polled.load(Ordering::SeqCst));
    assert_eq!(h.result(), Err(TaskError::Cancelled));
}

#[test]
fn a_polled_future_is_running_and_cannot_be_cancelled() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let h = pool.submit_future(Wait(gate.clone())).unwrap();
    gate.wait_polls(1);
    assert!(h.running());
    assert!(!h.cancel());
    gate.open();
    assert_eq!(h.join(), Ok(()));
    assert_eq!(gate.polls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panic_in_poll_resolves_the_handle_and_the_worker_survives() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let pool = ThreadPool::builder()
        .workers(1)
        .callback_panic_hook(move |p| tx.lock().unwrap().send(p.message().to_string()).unwrap())
        .build()
        .unwrap();
    let h = pool
        .submit_future(async { panic!("poll boom") as u8 })
        .unwrap();
    assert!(matches!(h.result(), Err(TaskError::Panicked(m)) if m.as_str() == "poll boom"));
    // Without a handle the panic goes to the hook and the metrics.
    pool.spawn_future(async { panic!("detached boom") })
        .unwrap();
    assert_eq!(rx.recv().unwrap(), "detached boom");
    assert_eq!(pool.submit_future(async { 7 }).unwrap().join(), Ok(7));
    pool.shutdown(true, false);
    // Both panics count: the one its handle carries, and the detached one.
    assert_eq!(pool.metrics().panicked, 2);
}

/// Python's `cancel_futures`: what never ran is cancelled; a future that
/// was polled has started, so it is polled to the end instead of dropped.
#[test]
fn a_cancelling_shutdown_cancels_unpolled_futures_and_finishes_polled_ones() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let started = pool.submit_future(Wait(gate.clone())).unwrap();
    gate.wait_polls(1);
    let (blocker, barrier) = occupy(&pool);
    let unpolled = pool.submit_future(async { 1 }).unwrap();
    gate.open(); // queues `started` behind `unpolled`
    pool.shutdown(false, true);
    barrier.wait();
    blocker.join().unwrap();
    assert_eq!(unpolled.result(), Err(TaskError::Cancelled));
    assert_eq!(started.join(), Ok(()));
}

/// A live future holds the pool open: after shutdown new work is refused,
/// but the workers stay to poll it (never the waking thread), and only
/// then exit.
#[test]
fn a_future_pending_at_shutdown_keeps_the_pool_open() {
    let _dog = Watchdog::new(
        "a_future_pending_at_shutdown_keeps_the_pool_open",
        std::time::Duration::from_secs(120),
    );
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let h = pool
        .submit_future(async move {
            Wait(g).await;
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
    gate.wait_polls(1);
    pool.shutdown(false, false);
    assert!(pool.submit(|| ()).is_err());
    assert!(!h.done());
    std::thread::Builder::new()
        .name("waker".into())
        .spawn(move || gate.open())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(h.join(), Ok(Some("cf-worker-0".to_owned())));
    let report = pool.shutdown_timeout(std::time::Duration::from_secs(60), false);
    assert!(report.finished);
    assert_eq!(report.pending_futures, 0);
}

/// The hazard of polling on the waking thread: a waker that holds a lock
/// the future's `poll` takes. The poll happens on a worker, so this works
/// before and after shutdown.
#[test]
fn a_waker_may_hold_a_lock_that_poll_takes() {
    for shut_down_first in [false, true] {
        let pool = ThreadPool::new(1).unwrap();
        let gate = Arc::new(Gate::default());
        let h = pool.submit_future(Wait(gate.clone())).unwrap();
        gate.wait_polls(1);
        if shut_down_first {
            pool.shutdown(false, false);
        }
        {
            // `Wait::poll` locks `gate.waker`: wake while holding it.
            let mut slot = gate.waker.lock().unwrap();
            gate.open.store(true, Ordering::SeqCst);
            slot.take().unwrap().wake();
        }
        assert_eq!(h.join(), Ok(()));
    }
}

/// `shutdown_timeout` reports a future still pending instead of hanging on
/// it; the future still finishes on the pool once woken.
#[test]
fn shutdown_timeout_reports_pending_futures() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let h = pool.submit_future(Wait(gate.clone())).unwrap();
    gate.wait_polls(1);
    let report = pool.shutdown_timeout(std::time::Duration::from_millis(10), false);
    assert!(!report.finished);
    assert_eq!(report.pending_futures, 1);
    gate.open();
    assert_eq!(h.join(), Ok(()));
}

#[test]
fn a_future_dropped_with_its_last_waker_resolves_as_abandoned() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let h = pool.submit_future(Wait(gate.clone())).unwrap();
    gate.wait_polls(1);
    // Nothing can wake it any more: once the worker lets go of it too, the
    // task is dropped, and with it the promise inside.
    drop(gate.waker.lock().unwrap().take());
    assert_eq!(h.result(), Err(TaskError::Abandoned));
}

/// A cancelling shutdown called from a pool task that holds a lock: the
/// started future it finds in the injector goes back to the workers; it is
/// not polled on that task's stack, where its `poll` would take the lock
/// again.
#[test]
fn a_cancelling_shutdown_from_a_task_never_polls_on_that_task() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let started = pool.submit_future(Wait(gate.clone())).unwrap();
    gate.wait_polls(1);
    let waker = gate.waker.lock().unwrap().take().unwrap();
    let (held, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let task = {
        let (gate, pool, held, go) = (gate.clone(), pool.clone(), held.clone(), go.clone());
        pool.clone()
            .submit(move || {
                // `Wait::poll` takes this lock.
                let _lock = gate.waker.lock().unwrap();
                held.wait();
                go.wait();
                pool.shutdown(false, true);
            })
            .unwrap()
    };
    held.wait();
    gate.open.store(true, Ordering::SeqCst);
    waker.wake(); // from outside: queued in the injector, behind the task
    go.wait();
    assert_eq!(task.join(), Ok(()));
    assert_eq!(started.join(), Ok(()));
}

/// A future that holds the last `ThreadPool` and is dropped with its last
/// waker on a thread outside the pool: dropping the pool there waits for
/// every live future, this one included, so the future must let the pool
/// go before its captures are dropped.
#[test]
fn a_future_holding_the_last_pool_can_be_dropped_on_any_thread() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Gate::default());
    let h = {
        let (keep, gate) = (pool.clone(), gate.clone());
        pool.submit_future(async move {
            let _pool = keep;
            Wait(gate).await;
        })
        .unwrap()
    };
    gate.wait_polls(1);
    drop(pool); // the future now holds the only `ThreadPool`
    let g = gate.clone();
    std::thread::spawn(move || drop(g.waker.lock().unwrap().take()))
        .join()
        .unwrap();
    assert_eq!(h.result(), Err(TaskError::Abandoned));
}

/// Many futures, each woken by several threads racing: every one finishes.
#[test]
fn many_futures_woken_by_racing_threads_all_finish() {
    let _dog = Watchdog::new(
        "many_futures_woken_by_racing_threads_all_finish",
        std::time::Duration::from_secs(120),
    );
    const FUTURES: usize = 200;
    const INPUTS: usize = 4;
    let pool = ThreadPool::new(2).unwrap();
    let promises: Vec<Vec<Promise<usize>>> = (0..FUTURES)
        .map(|_| (0..INPUTS).map(|_| Promise::new()).collect())
        .collect();
    let outs: Vec<_> = promises
        .iter()
        .map(|ps| {
            let inputs: Vec<_> = ps.iter().map(Promise::handle).collect();
            pool.submit_future(async move {
                let mut sum = 0;
                for h in inputs {
                    sum += h.await.unwrap();
                }
                sum
            })
            .unwrap()
        })
        .collect();
    let start = Arc::new(Barrier::new(INPUTS));
    let mut columns: Vec<Vec<Promise<usize>>> = (0..INPUTS).map(|_| Vec::new()).collect();
    for ps in promises {
        for (j, p) in ps.into_iter().enumerate() {
            columns[j].push(p);
        }
    }
    let setters: Vec<_> = columns
        .into_iter()
        .enumerate()
        .map(|(j, column)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for p in column {
                    p.set_result(j + 1).unwrap();
                }
            })
        })
        .collect();
    for s in setters {
        s.join().unwrap();
    }
    for h in outs {
        assert_eq!(h.join(), Ok(1 + 2 + 3 + 4));
    }
}

#[test]
fn submitting_a_future_after_shutdown_hands_it_back() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    let err = pool.submit_future(async { 5 }).unwrap_err();
    assert_eq!(futures::executor::block_on(err.into_inner()), 5);
    assert!(pool.spawn_future(async {}).is_err());
}

#[test]
fn tokio_tasks_await_pool_handles() {
    let pool = ThreadPool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let total = rt.block_on(async {
        let handles: Vec<_> = (0..8u64)
            .map(|i| pool.submit(move || (0..=i).sum::<u64>()).unwrap())
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        total
    });
    assert_eq!(total, (0..8u64).map(|i| i * (i + 1) / 2).sum::<u64>());
}

/// Sends once when dropped: tells the test a future on the pool is gone.
struct SaysDropped(mpsc::Sender<()>);

impl Drop for SaysDropped {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Polls `f` once from inside an async block, whatever it returns.
async fn poll_once_inside<F: Future + Unpin>(f: &mut F) {
    std::future::poll_fn(|cx| {
        let _ = Pin::new(&mut *f).poll(cx);
        Poll::Ready(())
    })
    .await
}

/// A future on the pool polls a `wait_async` on a promise that stays
/// pending, drops it, then waits on nothing that can wake it: nothing can
/// reach it, so it is dropped. The node its waiter left on the promise's
/// list (freed only at a later compaction, or the promise's completion)
/// holds none of its wakers, which would keep it, and its pool, alive.
#[test]
fn a_dropped_async_waiter_keeps_no_task_alive() {
    let _dog = Watchdog::new("a_dropped_async_waiter", std::time::Duration::from_secs(30));
    let pool = ThreadPool::new(1).unwrap();
    let promise = Promise::<u8>::new();
    let h = promise.handle();
    let (dropped_tx, dropped) = mpsc::channel();
    let says = SaysDropped(dropped_tx);
    pool.spawn_future(async move {
        let _says = says;
        poll_once_inside(&mut Box::pin(h.wait_async())).await;
        std::future::pending::<()>().await;
    })
    .unwrap();
    dropped.recv().unwrap();
    let report = pool.shutdown_timeout(std::time::Duration::MAX, false);
    assert!(report.finished && report.pending_futures == 0, "{report:?}");
    drop(promise);
}

/// A future's drop that drops another pool's future (its last waker),
/// whose drop drops the first pool's last handle: that handle's drop must
/// not wait for the first future's hold, which is released only once the
/// outer drop returns. The marker that tells it so was one per thread, and
/// the inner drop overwrote it: the drop waited for good.
#[test]
fn nested_drops_of_held_futures_across_two_pools_do_not_wait_on_themselves() {
    let _dog = Watchdog::new("nested_held_drops", std::time::Duration::from_secs(60));
    type Slot = Arc<Mutex<Option<Waker>>>;
    let (a, b) = (ThreadPool::new(1).unwrap(), ThreadPool::new(1).unwrap());
    let (slot1, slot2): (Slot, Slot) = Default::default();
    let (polled_tx, polled) = mpsc::channel::<()>();
    // FB on pool B holds pool A's last handle; its waker goes to slot 1.
    let (a2, s1, tx) = (a.clone(), slot1.clone(), polled_tx.clone());
    b.spawn_future(async move {
        let _a = a2;
        std::future::poll_fn(|cx| {
            if s1.lock().unwrap().replace(cx.waker().clone()).is_none() {
                tx.send(()).unwrap();
            }
            Poll::<()>::Pending
        })
        .await;
    })
    .unwrap();
    polled.recv().unwrap();
    // FA on pool A owns FB's waker; its own waker goes to slot 2.
    let (s1, s2) = (slot1.clone(), slot2.clone());
    a.spawn_future(async move {
        let fb = s1.lock().unwrap().take().expect("FB polled");
        std::future::poll_fn(|cx| {
            if s2.lock().unwrap().replace(cx.waker().clone()).is_none() {
                polled_tx.send(()).unwrap();
            }
            Poll::<()>::Pending
        })
        .await;
        drop(fb);
    })
    .unwrap();
    polled.recv().unwrap();
    drop(a); // FB's handle is pool A's last
    // FA's last waker: FA dropped here, then FB (FA held its last waker),
    // then pool A's last handle (FB held it).
    let fa = slot2.lock().unwrap().take().unwrap();
    drop(fa);
    drop(b);
}

#[cfg(feature = "futures")]
mod futures_feature {
    use std::time::Duration;

    use concurrent_futures::{Promise, ThreadPool, TimedOut, as_completed};
    use futures::StreamExt;
    use futures::executor::block_on;
    use futures::task::{Spawn, SpawnExt};

    /// The same for a dropped `as_completed` stream: the callbacks it
    /// removes keep its inbox until a compaction or the completion, and
    /// the inbox holds no waker of the task once the stream is gone.
    #[test]
    fn a_dropped_stream_keeps_no_task_alive() {
        let _dog = super::Watchdog::new("a_dropped_stream", Duration::from_secs(30));
        let pool = ThreadPool::new(1).unwrap();
        let promise = Promise::<u8>::new();
        let h = promise.handle();
        let (dropped_tx, dropped) = std::sync::mpsc::channel();
        let says = super::SaysDropped(dropped_tx);
        pool.spawn_future(async move {
            let _says = says;
            let mut stream = as_completed([h], None).into_stream();
            super::poll_once_inside(&mut stream.next()).await;
            drop(stream);
            std::future::pending::<()>().await;
        })
        .unwrap();
        dropped.recv().unwrap();
        let report = pool.shutdown_timeout(Duration::MAX, false);
        assert!(report.finished && report.pending_futures == 0, "{report:?}");
        drop(promise);
    }

    #[test]
    fn the_pool_is_a_spawner() {
        let pool = ThreadPool::new(2).unwrap();
        let h = pool.spawn_with_handle(async { "spawned" }).unwrap();
        assert_eq!(block_on(h), "spawned");
        assert!(pool.status().is_ok());
        pool.shutdown(true, false);
        assert!(pool.status().unwrap_err().is_shutdown());
        assert!(SpawnExt::spawn(&pool, async {}).unwrap_err().is_shutdown());
    }

    #[test]
    fn the_stream_yields_done_ones_first_then_in_completion_order() {
        let (a, b, c) = (Promise::new(), Promise::new(), Promise::new());
        b.set_result(2).unwrap();
        let mut s =
            as_completed([a.handle(), b.handle(), c.handle(), b.handle()], None).into_stream();
        let order = block_on(async {
            let mut order = Vec::new();
            order.push(*s.next().await.unwrap().unwrap().result().unwrap());
            let setter = std::thread::spawn(move || {
                c.set_result(3).unwrap();
                a.set_result(1).unwrap();
            });
            while let Some(h) = s.next().await {
                order.push(*h.unwrap().result().unwrap());
            }
            setter.join().unwrap();
            order
        });
        // b was done first; c and a arrive in their completion order; the
        // duplicate b is collapsed.
        assert_eq!(order, [2, 3, 1]);
    }

    /// The timeout wakes the task by itself (no runtime timer), yields the
    /// error once, then the stream ends.
    #[test]
    fn the_stream_times_out_without_a_runtime_timer() {
        let (a, b) = (Promise::<u8>::new(), Promise::<u8>::new());
        a.set_result(1).unwrap();
        let mut s =
            as_completed([a.handle(), b.handle()], Some(Duration::from_millis(20))).into_stream();
        let items = block_on(async {
            let mut items = Vec::new();
            while let Some(item) = s.next().await {
                items.push(item.map(|h| *h.result().unwrap()));
            }
            items
        });
        assert!(
            matches!(
                items[..],
                [
                    Ok(1),
                    Err(TimedOut {
                        unfinished: 1,
                        total: 2,
                        ..
                    })
                ]
            ),
            "{items:?}"
        );
        assert!(futures::stream::FusedStream::is_terminated(&s));
        drop(b);
    }
}
