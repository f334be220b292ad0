//! Python's module-level API and the strand, modelled on what CPython's own
//! executor tests check.
#![cfg(not(loom))]

mod common;
use common::Watchdog;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use concurrent_futures::{
    FutureHandle, Promise, ReturnWhen, Strand, TaskError, ThreadPool, as_completed, wait,
};

fn promises(n: usize) -> (Vec<Promise<u32>>, Vec<FutureHandle<u32>>) {
    let ps: Vec<_> = (0..n).map(|_| Promise::new()).collect();
    let hs = ps.iter().map(Promise::handle).collect();
    (ps, hs)
}

#[test]
fn wait_first_completed_returns_all_already_done() {
    let (ps, hs) = promises(3);
    ps[0].set_result(0).unwrap();
    ps[2].set_result(2).unwrap();
    let r = wait(hs, ReturnWhen::FirstCompleted, None);
    assert_eq!(r.done.len(), 2);
    assert_eq!(r.not_done.len(), 1);
    assert!(r.not_done[0].ptr_eq(&ps[1].handle()));
}

#[test]
fn wait_first_completed_blocks_until_one_finishes() {
    let _dog = Watchdog::new(
        "wait_first_completed_blocks_until_one_finishes",
        Duration::from_secs(120),
    );
    let pool = ThreadPool::new(2).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let slow = pool
        .submit(move || {
            g.wait();
        })
        .unwrap();
    let (p, h) = {
        let p = Promise::new();
        let h = p.handle();
        (p, h)
    };
    let setter = std::thread::spawn(move || p.set_result(()).unwrap());
    let r = wait([slow.clone(), h], ReturnWhen::FirstCompleted, None);
    assert_eq!(r.done.len(), 1);
    assert!(r.not_done[0].ptr_eq(&slow));
    setter.join().unwrap();
    gate.wait();
}

#[test]
fn wait_timeout_returns_sets_never_an_error() {
    let (_ps, hs) = promises(2);
    let r = wait(hs, ReturnWhen::AllCompleted, Some(Duration::from_millis(5)));
    assert_eq!((r.done.len(), r.not_done.len()), (0, 2));
}

#[test]
fn wait_first_exception_ignores_cancellation_and_returns_on_failure() {
    let (ps, hs) = promises(3);
    assert!(hs[0].cancel());
    // Cancelled is not an exception: with a timeout we come back not done.
    let r = wait(
        hs.clone(),
        ReturnWhen::FirstException,
        Some(Duration::from_millis(5)),
    );
    assert_eq!((r.done.len(), r.not_done.len()), (1, 2));
    // An already-failed input returns at once.
    ps[1].complete(Err(TaskError::Abandoned)).unwrap();
    let r = wait(hs.clone(), ReturnWhen::FirstException, None);
    assert_eq!((r.done.len(), r.not_done.len()), (2, 1));
    // A panic in a pool task is an exception too.
    let pool = ThreadPool::new(1).unwrap();
    let bad = pool.submit(|| -> u32 { panic!("x") }).unwrap();
    let r = wait([bad, hs[2].clone()], ReturnWhen::FirstException, None);
    assert_eq!(r.done.len(), 1);
}

#[test]
fn wait_all_completed_and_duplicates() {
    let pool = ThreadPool::new(2).unwrap();
    let hs: Vec<_> = (0..50u32)
        .map(|i| pool.submit(move || i).unwrap())
        .collect();
    let mut with_dups = hs.clone();
    with_dups.extend(hs.iter().cloned());
    let r = wait(with_dups, ReturnWhen::AllCompleted, None);
    assert_eq!((r.done.len(), r.not_done.len()), (50, 0));
}

#[test]
fn as_completed_yields_finished_first_each_once_and_counts_cancelled() {
    let (ps, hs) = promises(4);
    ps[2].set_result(2).unwrap();
    assert!(hs[3].cancel());
    let mut input = hs.clone();
    input.push(hs[2].clone()); // duplicate
    let mut it = as_completed(input, None);
    let first = it.next().unwrap().unwrap();
    assert!(first.ptr_eq(&hs[2]));
    let second = it.next().unwrap().unwrap();
    assert!(second.cancelled());
    let p0 = std::thread::spawn({
        let p = ps.into_iter().take(2).collect::<Vec<_>>();
        move || {
            for (i, p) in p.into_iter().enumerate() {
                p.set_result(i as u32).unwrap();
            }
        }
    });
    let rest: Vec<_> = it.map(|r| *r.unwrap().result().unwrap()).collect();
    p0.join().unwrap();
    assert_eq!(rest.len(), 2);
}

#[test]
fn as_completed_timeout_says_how_many_are_unfinished() {
    let (ps, hs) = promises(3);
    ps[0].set_result(0).unwrap();
    let mut it = as_completed(hs, Some(Duration::from_millis(10)));
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    assert_eq!((err.unfinished, err.total), (2, 3));
    assert!(it.next().is_none(), "the iterator ends after the timeout");
}

#[test]
fn map_keeps_input_order_and_reports_errors_in_place() {
    let pool = ThreadPool::new(2).unwrap();
    let out: Vec<_> = pool
        .map(
            |x: u32| {
                if x == 3 {
                    panic!("three");
                }
                x * 2
            },
            0..8,
        )
        .chunksize(3)
        .collect();
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(TaskError::Panicked(m)) if m.as_str() == "three"));
        } else {
            assert_eq!(r, &Ok(i as u32 * 2));
        }
    }
}

#[test]
fn map_pulls_inputs_lazily_within_the_buffer() {
    let pool = ThreadPool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let inputs = (0..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let mut m = pool.map(|x: u64| x, inputs).buffer(4).chunksize(2);
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        0,
        "nothing before the first read"
    );
    assert_eq!(m.next(), Some(Ok(0)));
    let after_one = pulled.load(Ordering::SeqCst);
    assert!(
        after_one <= 4 * 2 + 2,
        "pulled {after_one} from an endless input"
    );
    let first: Vec<_> = m.by_ref().take(99).map(Result::unwrap).collect();
    assert_eq!(first, (1..100).collect::<Vec<u64>>());
    assert!(pulled.load(Ordering::SeqCst) <= 100 + 4 * 2 + 2);
}

/// A map whose deadline passes with a task still running ends with
/// `Timeout` and cancels what is queued behind it. (The first task may
/// itself still be queued at the deadline on a slow machine: then it is
/// cancelled too, and nothing waits for it.)
#[test]
fn map_timeout_ends_the_iteration_and_cancels_the_rest() {
    let pool = ThreadPool::new(1).unwrap();
    // A std channel, not a `Promise`: a worker blocked in a crate wait gets
    // a stand-in, which would run the rest before the deadline.
    let (open, opened) = std::sync::mpsc::channel::<()>();
    let opened = std::sync::Mutex::new(opened);
    let rest_ran = Arc::new(AtomicUsize::new(0));
    let r = rest_ran.clone();
    let mut m = pool
        .map(
            move |x: u32| {
                if x == 0 {
                    let _ = opened.lock().unwrap().recv();
                } else {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                x
            },
            0..10,
        )
        .buffer(10)
        .timeout(Duration::from_millis(20));
    assert_eq!(m.next(), Some(Err(TaskError::Timeout)));
    assert_eq!(m.next(), None);
    let _ = open.send(()); // fails if the first task was cancelled too
    pool.shutdown(true, false);
    assert_eq!(
        rest_ran.load(Ordering::SeqCst),
        0,
        "the queued rest was cancelled"
    );
}

#[test]
fn dropping_map_cancels_queued_tasks() {
    let pool = ThreadPool::new(1).unwrap();
    let (first, second) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (g1, g2) = (first.clone(), second.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let mut m = pool
        .map(
            move |x: u32| {
                match x {
                    0 => {
                        g1.wait();
                    }
                    1 => {
                        g2.wait(); // tell the test task 1 runs
                        g2.wait(); // and stay until it says go
                    }
                    _ => {}
                }
                r.fetch_add(1, Ordering::SeqCst);
                x
            },
            0..10,
        )
        .buffer(10);
    // The first read submits all 10 and waits for task 0.
    let opener = std::thread::spawn(move || {
        first.wait();
    });
    assert_eq!(m.next(), Some(Ok(0)));
    opener.join().unwrap();
    // Once task 1 runs it blocks the only worker; 2..9 stay queued. (Without
    // waiting for it to start, the drop could cancel task 1 too.)
    second.wait();
    drop(m);
    second.wait();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 2, "tasks 2..9 were cancelled");
}

#[test]
fn map_after_shutdown_reports_shutdown() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    let out: Vec<_> = pool.map(|x: u8| x, 0..3).collect();
    assert_eq!(out, [Err(TaskError::Shutdown)]);
    let out: Vec<_> = pool.map(|x: u8| x, 0..3).chunksize(2).collect();
    assert_eq!(out, [Err(TaskError::Shutdown), Err(TaskError::Shutdown)]);
}

#[test]
fn strand_runs_posts_in_order_one_at_a_time() {
    let pool = ThreadPool::new(2).unwrap();
    let strand = Strand::new(&pool, (Vec::new(), 0usize));
    let running = Arc::new(AtomicUsize::new(0));
    for i in 0..1000 {
        let running = running.clone();
        strand.post(move |(log, _): &mut (Vec<i32>, usize)| {
            assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
            log.push(i);
            running.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let log = strand.submit(|(log, _)| log.clone()).join().unwrap();
    assert_eq!(log, (0..1000).collect::<Vec<_>>());
}

#[test]
fn strand_survives_a_panicking_closure() {
    concurrent_futures::set_callback_panic_hook(|_| {});
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    strand.post(|_| panic!("in strand"));
    let h = strand.submit(|_| -> u32 { panic!("in submit") });
    strand.post(|n| *n += 1);
    assert!(matches!(h.result(), Err(TaskError::Panicked(m)) if m.as_str() == "in submit"));
    assert_eq!(strand.submit(|n| *n).join(), Ok(1));
    concurrent_futures::clear_callback_panic_hook();
}

#[test]
fn strand_after_pool_shutdown_runs_on_the_poster() {
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    pool.shutdown(true, false);
    strand.post(|n| *n += 5);
    assert_eq!(strand.submit(|n| *n).join(), Ok(5));
}

#[test]
fn a_dispatch_while_another_thread_drains_queues_behind_it_and_returns() {
    // Thread A dispatches to an idle strand and drains it; its closure
    // holds the strand until B has dispatched 300 closures, each of which
    // must queue and return. They then run on A, after A's, in order, and
    // all before A's dispatch returns: past the drain's budget A keeps
    // draining, as the pool's only worker is busy and could not.
    let pool = ThreadPool::new(1).unwrap();
    let (free_tx, free) = std::sync::mpsc::channel::<()>();
    let busy = pool.submit(move || free.recv().unwrap()).unwrap();
    let strand = Strand::new(&pool, Vec::new());
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (leave, leave_rx) = std::sync::mpsc::channel::<()>();
    let a = std::thread::spawn({
        let strand = strand.clone();
        move || {
            let me = std::thread::current().id();
            strand.dispatch(move |log: &mut Vec<(usize, bool)>| {
                entered_tx.send(()).unwrap();
                leave_rx.recv().unwrap();
                log.push((0, std::thread::current().id() == me));
            });
        }
    });
    entered
        .recv_timeout(Duration::from_secs(60))
        .expect("A's dispatch to an idle strand did not run its closure");
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 1..=300 {
        let ran = ran.clone();
        strand.dispatch(move |log| {
            ran.fetch_add(1, Ordering::Relaxed);
            log.push((i, false));
        });
    }
    assert_eq!(
        ran.load(Ordering::Relaxed),
        0,
        "a dispatch waited for its closure"
    );
    leave.send(()).unwrap();
    a.join().unwrap();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        300,
        "A returned before the queue was empty"
    );
    free_tx.send(()).unwrap();
    busy.join().unwrap();
    let log = strand.submit(|log| log.clone()).join().unwrap();
    let expected: Vec<_> = (0..=300).map(|i| (i, i == 0)).collect();
    assert_eq!(log, expected);
}

#[test]
fn a_dispatched_done_callback_needs_no_free_worker() {
    // The only worker waits for what the callback sends; the main thread
    // completes the future, so the callback runs here. Posted instead
    // (`Strand::add_done_callback`), it would queue behind the worker.
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    let (tx, rx) = std::sync::mpsc::channel();
    let (started_tx, started) = std::sync::mpsc::channel();
    let waiter = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            rx.recv_timeout(Duration::from_secs(60))
        })
        .unwrap();
    started.recv().unwrap();
    let promise = Promise::new();
    strand.dispatch_done_callback(&promise.handle(), move |n, r| {
        *n += *r.unwrap();
        tx.send(*n).unwrap();
    });
    promise.set_result(5).unwrap();
    assert_eq!(waiter.join(), Ok(Ok(5)));
}

#[test]
fn callbacks_routed_to_the_pool_never_run_on_the_completing_thread() {
    let pool = ThreadPool::builder()
        .workers(1)
        .thread_name("routed")
        .build()
        .unwrap();
    let promise = Promise::new();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..10 {
        let tx = tx.clone();
        pool.add_done_callback(&promise.handle(), move |r| {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send((i, *r.unwrap(), name)).unwrap();
        });
    }
    promise.set_result(7u8).unwrap();
    let got: Vec<_> = (0..10).map(|_| rx.recv().unwrap()).collect();
    for (n, (i, v, name)) in got.into_iter().enumerate() {
        assert_eq!((i, v, name.as_deref()), (n, 7, Some("routed-0")));
    }
}

/// A strand's `submit` handle keeps a pool task's contract: cancelled while
/// queued, the closure never runs; while it runs, the handle reads running
/// and refuses a cancel. (The closure ran after a successful cancel, and
/// the handle never read running.)
#[test]
fn a_strand_submit_can_be_cancelled_only_while_queued() {
    let _dog = Watchdog::new("strand_submit_cancel", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let strand = Strand::new(&pool, 0u32);
    // The strand is busy until the gate opens.
    let gate = Promise::<()>::new();
    let g = gate.handle();
    strand.post(move |_| g.wait().unwrap());
    let queued = strand.submit(|n| *n += 1);
    assert!(queued.cancel(), "queued: cancellable");
    let (inside, started) = (Promise::<()>::new(), Promise::<()>::new());
    let (go, started_h) = (inside.handle(), started.handle());
    let running = strand.submit(move |n| {
        started.set_result(()).unwrap();
        go.wait().unwrap();
        *n += 10;
    });
    gate.set_result(()).unwrap();
    started_h.wait().unwrap();
    assert!(running.running(), "its closure runs");
    assert!(!running.cancel(), "running: not cancellable");
    inside.set_result(()).unwrap();
    assert_eq!(running.join(), Ok(()));
    assert_eq!(queued.join(), Err(TaskError::Cancelled));
    assert_eq!(
        strand.submit(|n| *n).join(),
        Ok(10),
        "the cancelled closure never ran"
    );
}

/// An input iterator that panics: the panic comes out of `next`, the map
/// ends (the broken input is not called again) and cancels what it queued.
/// It went on pulling from the iterator after its panic, with the inputs
/// of the chunk being built lost and no error at their places.
#[test]
fn a_map_whose_input_panics_ends_there() {
    let _dog = Watchdog::new("map_input_panics", Duration::from_secs(60));
    let pool = ThreadPool::new(1).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let inputs = (0..9).inspect(move |&i| {
        c.fetch_add(1, Ordering::SeqCst);
        assert_ne!(i, 4, "the input breaks");
    });
    let mut m = pool.map(|x: i32| x, inputs).chunksize(3).buffer(1);
    assert_eq!(m.next(), Some(Ok(0)));
    let pulled = calls.load(Ordering::SeqCst);
    let caught =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| while m.next().is_some() {}));
    assert!(caught.is_err(), "the input's panic comes out of next");
    let at_panic = calls.load(Ordering::SeqCst);
    assert!(
        at_panic > pulled && at_panic == 5,
        "pulled through input 4: {at_panic}"
    );
    assert_eq!(m.next(), None, "the map ended");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the broken input was not called again"
    );
}
