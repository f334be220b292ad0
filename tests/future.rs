//! Behaviour of a single future: Python's rules, and the callback guarantees.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use concurrent_futures::{FutureHandle, InvalidState, Promise, TaskError, set_callback_panic_hook};

type Cb = Box<dyn FnOnce(Result<&u32, &TaskError>) + Send>;

fn recorder() -> (
    Arc<Mutex<Vec<u32>>>,
    impl Fn(u32) -> Cb + Clone + Send + 'static,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let make = move |id: u32| -> Cb {
        let l = l.clone();
        Box::new(move |_| l.lock().unwrap().push(id))
    };
    (log, make)
}

#[test]
fn cancel_follows_python_rules() {
    // pending -> true, cancelled -> true again
    let p = Promise::<u8>::new();
    let h = p.handle();
    assert!(h.cancel());
    assert!(h.cancel());
    assert!(h.cancelled() && h.done() && !h.running());
    assert_eq!(h.result(), Err(TaskError::Cancelled));
    assert_eq!(p.set_running_or_notify_cancel(), Ok(false));
    assert_eq!(p.set_result(1), Err(InvalidState::Cancelled(1)));
    assert!(p.is_cancelled());

    // running -> false
    let p = Promise::<u8>::new();
    let h = p.handle();
    assert_eq!(p.set_running_or_notify_cancel(), Ok(true));
    assert!(h.running());
    assert!(!h.cancel());
    assert!(!h.cancelled());
    p.set_result(3).unwrap();

    // finished -> false
    assert!(!h.cancel());
    assert_eq!(h.result(), Ok(&3));
    assert_eq!(
        p.set_running_or_notify_cancel(),
        Err(concurrent_futures::AlreadyStarted)
    );
}

#[test]
fn second_set_is_a_typed_error_that_returns_the_value() {
    let p = Promise::new();
    p.set_result(String::from("first")).unwrap();
    let err = p.set_result(String::from("second")).unwrap_err();
    assert_eq!(err, InvalidState::AlreadyFinished(String::from("second")));
    assert_eq!(
        p.complete(Err(TaskError::Abandoned))
            .unwrap_err()
            .into_inner(),
        Err(TaskError::Abandoned)
    );
    assert_eq!(p.handle().result().map(String::as_str), Ok("first"));
}

#[test]
fn dropped_promise_resolves_abandoned_and_wakes_waiters() {
    let p = Promise::<u8>::new();
    let h = p.handle();
    let start = Arc::new(Barrier::new(2));
    let s = start.clone();
    let waiter = {
        let h = h.clone();
        thread::spawn(move || {
            s.wait();
            h.result().cloned()
        })
    };
    start.wait();
    drop(p);
    assert_eq!(waiter.join().unwrap(), Err(TaskError::Abandoned));
    assert_eq!(h.join(), Err(TaskError::Abandoned));
}

#[test]
fn timeouts_zero_small_and_max() {
    let p = Promise::<u8>::new();
    let h = p.handle();
    assert_eq!(h.result_timeout(Duration::ZERO), Err(TaskError::Timeout));
    assert_eq!(
        h.result_timeout(Duration::from_millis(5)),
        Err(TaskError::Timeout)
    );
    assert_eq!(
        h.wait_timeout(Duration::from_nanos(1)),
        Err(TaskError::Timeout)
    );
    let setter = thread::spawn(move || p.set_result(9).unwrap());
    assert_eq!(h.result_timeout(Duration::MAX), Ok(&9));
    setter.join().unwrap();
    assert_eq!(h.wait_timeout(Duration::ZERO), Ok(()));
}

#[test]
fn callbacks_run_in_registration_order_with_the_outcome() {
    let p = Promise::new();
    let h = p.handle();
    let (tx, rx) = mpsc::channel();
    for i in 0..100 {
        let tx = tx.clone();
        h.add_done_callback(move |r| tx.send((i, r.copied().map_err(Clone::clone))).unwrap());
    }
    assert!(rx.try_recv().is_err(), "nothing runs before completion");
    p.set_result(5u64).unwrap();
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got, (0..100).map(|i| (i, Ok(5))).collect::<Vec<_>>());
    // After completion: runs at once, inline.
    let tx2 = tx.clone();
    h.add_done_callback(move |r| tx2.send((100, r.copied().map_err(Clone::clone))).unwrap());
    assert_eq!(rx.try_recv().unwrap(), (100, Ok(5)));
}

#[test]
fn cancel_runs_callbacks_with_cancelled() {
    let p = Promise::<u8>::new();
    let h = p.handle();
    let (tx, rx) = mpsc::channel();
    h.add_done_callback(move |r| tx.send(r.map_err(Clone::clone).copied()).unwrap());
    assert!(h.cancel());
    assert_eq!(rx.try_recv().unwrap(), Err(TaskError::Cancelled));
}

#[test]
fn removed_callback_never_runs_and_removal_reports_the_race() {
    let p = Promise::new();
    let h = p.handle();
    let (log, make) = recorder();
    let a = h.add_done_callback(make(1));
    let _b = h.add_done_callback(make(2));
    let c = h.add_done_callback(make(3));
    assert!(h.remove_done_callback(a));
    p.set_result(0).unwrap();
    assert!(!h.remove_done_callback(c), "completion won: it already ran");
    assert_eq!(*log.lock().unwrap(), [2, 3]);

    // A registration of another future is refused.
    let other = Promise::<u32>::new();
    let foreign = other.handle().add_done_callback(make(4));
    assert!(!h.remove_done_callback(foreign));
    drop(other);
    assert_eq!(*log.lock().unwrap(), [2, 3, 4]);
}

#[test]
fn many_removals_on_a_pending_future_keep_the_rest_in_order() {
    let p = Promise::new();
    let h = p.handle();
    let (log, make) = recorder();
    let mut keep = Vec::new();
    for i in 0..1000 {
        let reg = h.add_done_callback(make(i));
        if i % 3 == 0 {
            keep.push(i); // its registration is simply not used
        } else {
            assert!(h.remove_done_callback(reg));
        }
    }
    p.set_result(1).unwrap();
    assert_eq!(*log.lock().unwrap(), keep);
}

#[test]
fn panicking_callback_is_reported_and_the_rest_still_run() {
    let reported = Arc::new(AtomicUsize::new(0));
    let r = reported.clone();
    set_callback_panic_hook(move |p| {
        if p.message().as_str() == "callback boom" {
            r.fetch_add(1, Ordering::SeqCst);
        }
    });
    let p = Promise::new();
    let h = p.handle();
    let (log, make) = recorder();
    h.add_done_callback(make(1));
    h.add_done_callback(|_| panic!("callback boom"));
    h.add_done_callback(make(2));
    p.set_result(0).unwrap();
    concurrent_futures::clear_callback_panic_hook();
    assert_eq!(*log.lock().unwrap(), [1, 2]);
    assert_eq!(reported.load(Ordering::SeqCst), 1);
}

#[test]
fn reentrant_callbacks_attach_read_complete_and_drop() {
    let p = Promise::new();
    let h = p.handle();
    let other = Arc::new(Promise::new());
    let (log, make) = recorder();
    let inner_make = make.clone();
    let h2 = h.clone();
    let o = other.clone();
    h.add_done_callback(move |r| {
        let v = *r.unwrap();
        // Read the same future, attach to it (runs after this callback),
        // complete another future, then drop the last handle we own.
        assert_eq!(h2.result(), Ok(&v));
        h2.add_done_callback(inner_make(20));
        o.set_result(v + 1).unwrap();
        drop(h2);
    });
    h.add_done_callback(make(10));
    p.set_result(7u32).unwrap();
    drop(p);
    assert_eq!(*log.lock().unwrap(), [10, 20]);
    assert_eq!(other.handle().result(), Ok(&8));
    drop(h);
}

#[test]
fn callback_may_drop_the_last_handle_to_its_own_future() {
    let p = Promise::new();
    let (tx, rx) = mpsc::channel();
    {
        let h = p.handle();
        let holder = h.clone();
        h.add_done_callback(move |r| {
            tx.send(*r.unwrap()).unwrap();
            drop(holder);
        });
    }
    p.set_result(1).unwrap();
    drop(p);
    assert_eq!(rx.recv().unwrap(), 1);
}

#[test]
fn join_moves_out_of_the_last_handle_and_clones_otherwise() {
    // A non-Clone value can only come out of the last handle.
    #[derive(Debug)]
    struct NoClone(u8);
    let p = Promise::new();
    let h = p.handle();
    let h2 = h.clone();
    p.set_result(NoClone(4)).unwrap();
    let h = h.try_join().unwrap_err();
    drop(h2);
    let h = h.try_join().unwrap_err(); // the promise could still make handles
    drop(p);
    assert_eq!(h.try_join().ok().unwrap().unwrap().0, 4);

    let p = Promise::new();
    let (a, b) = (p.handle(), p.handle());
    p.set_result(vec![1]).unwrap();
    assert_eq!(a.join(), Ok(vec![1]));
    assert_eq!(b.join(), Ok(vec![1]));
}

#[test]
fn last_handle_join_waits_for_running_callbacks() {
    // The waiter is woken before callbacks run; moving the value out must
    // wait until the callback that reads it has finished. A pool task has no
    // promise, so its one handle is the last reader.
    let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let h = pool
        .submit(move || {
            g.wait();
            String::from("value")
        })
        .unwrap();
    let in_cb = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (i, r) = (in_cb.clone(), release.clone());
    let seen = Arc::new(Mutex::new(String::new()));
    let s = seen.clone();
    h.add_done_callback(move |v| {
        i.wait();
        r.wait();
        *s.lock().unwrap() = v.unwrap().clone();
    });
    gate.wait();
    in_cb.wait(); // the callback is running on the worker
    let joiner = common::spawn_parked(move || h.try_join().ok().unwrap());
    // It sleeps, waiting for the callback, rather than taking the value.
    let early = joiner.is_finished();
    release.wait();
    assert!(
        !early,
        "the last handle took the value under a running callback"
    );
    assert_eq!(joiner.join().unwrap().as_deref(), Ok("value"));
    assert_eq!(*seen.lock().unwrap(), "value");
}

struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_awaiting_clone_is_woken() {
    let p = Promise::new();
    let handles: Vec<FutureHandle<u8>> = (0..8).map(|_| p.handle()).collect();
    let wakers: Vec<_> = (0..8)
        .map(|_| Arc::new(CountingWaker(AtomicUsize::new(0))))
        .collect();
    let mut futs: Vec<_> = handles.iter().map(|h| Box::pin(h.wait_async())).collect();
    for (f, w) in futs.iter_mut().zip(&wakers) {
        let waker = Waker::from(w.clone());
        assert!(
            f.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    p.set_result(1).unwrap();
    for (f, w) in futs.iter_mut().zip(&wakers) {
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        let waker = Waker::from(w.clone());
        assert_eq!(
            f.as_mut().poll(&mut Context::from_waker(&waker)),
            Poll::Ready(Ok(&1))
        );
    }
}

#[test]
fn awaiting_by_value_moves_or_clones() {
    let p = Promise::new();
    let h = p.handle();
    let mut fut = Box::pin(std::future::IntoFuture::into_future(h));
    let w = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(w.clone());
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    p.set_result(String::from("x")).unwrap();
    assert_eq!(w.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        fut.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(Ok(String::from("x")))
    );
    // Polled again, it says so rather than stay pending with no waker.
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fut.as_mut().poll(&mut Context::from_waker(&waker))
    }));
    let msg = again.expect_err("a second Ready, or pending for good");
    assert_eq!(
        msg.downcast_ref::<&str>(),
        Some(&"`Join` polled after it returned `Ready`")
    );
}

#[test]
fn waiting_from_a_callback_of_the_same_future_does_not_hang() {
    let p = Promise::new();
    let h = p.handle();
    let h2 = h.clone();
    let (tx, rx) = mpsc::channel();
    h.add_done_callback(move |_| {
        tx.send((h2.result().copied(), h2.wait_timeout(Duration::MAX)))
            .unwrap();
    });
    p.set_result(3).unwrap();
    assert_eq!(rx.recv().unwrap(), (Ok(3), Ok(())));
}

#[test]
fn many_threads_wait_and_all_wake() {
    let p = Promise::new();
    let barrier = Arc::new(Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let h = p.handle();
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                if i % 2 == 0 {
                    h.result().copied()
                } else {
                    h.result_timeout(Duration::from_secs(3600)).copied()
                }
            })
        })
        .collect();
    barrier.wait();
    p.set_result(11).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Ok(11));
    }
}

#[test]
fn handle_and_promise_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<FutureHandle<String>>();
    is_send_sync::<Promise<String>>();
    is_send_sync::<concurrent_futures::Registration<String>>();
}

#[test]
fn a_stale_registration_cannot_remove_a_new_futures_callback() {
    // The old future's memory (and its callback node's) is likely reused by
    // the next future at once (the allocator hands back what was just
    // freed): the stale registration must not name the new callback.
    for _ in 0..64 {
        let stale = {
            let p = Promise::<u8>::new();
            let h = p.handle();
            h.add_done_callback(|_| {})
        }; // promise dropped: abandoned, the callback ran, memory freed
        let p = Promise::<u8>::new();
        let h = p.handle();
        let (tx, rx) = mpsc::channel();
        let _r = h.add_done_callback(move |_| tx.send(()).unwrap());
        assert!(!h.remove_done_callback(stale));
        p.set_result(1).unwrap();
        assert!(rx.try_recv().is_ok(), "the new callback must run");
    }
}
