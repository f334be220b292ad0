//! The executor's unsafe code under Miri: a small run of every path that
//! touches it (the task cell and its `ManuallyDrop` queue entry, claim-inline,
//! cancel and abandon, fire-and-forget tasks, the strand's state cell, the
//! worker's thread-local context, the async task). Also part of `cargo test`; counts are
//! small so the interpreter finishes in minutes.
#![cfg(not(loom))]

mod common;
use common::{hold_workers, wakes_itself};

use concurrent_futures::{ReturnWhen, Strand, TaskError, ThreadPool, as_completed, wait};

#[test]
fn tasks_run_cancel_abandon_and_claim_inline() {
    let pool = ThreadPool::new(2).unwrap();
    // Submit from outside, run, join (moves out of the last handle).
    let hs: Vec<_> = (0..8u32)
        .map(|i| pool.submit(move || i * 2).unwrap())
        .collect();
    let sum: u32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 56);
    // Submit from inside a worker (its own deque), then claim inline.
    let p = pool.clone();
    let outer = pool
        .submit(move || {
            let inner = p.submit(|| String::from("inner")).unwrap();
            inner.join()
        })
        .unwrap();
    assert_eq!(outer.join().unwrap().as_deref(), Ok("inner"));
    // The same through the worker's own context (no pool handle), and a
    // fire-and-forget spawn from there. The handles come back to this
    // thread: a worker blocked in a wait could start a compensating worker,
    // which would outlive this block and run what `hold_workers` below
    // means to hold back.
    let outer = pool
        .submit(|| {
            let spawned = concurrent_futures::Promise::new();
            let seen = spawned.handle();
            concurrent_futures::spawn(move || spawned.set_result(1u8).unwrap()).unwrap();
            let inner = concurrent_futures::submit(|| String::from("ambient")).unwrap();
            (inner, seen)
        })
        .unwrap();
    let (inner, seen) = outer.join().unwrap();
    assert_eq!(inner.join().as_deref(), Ok("ambient"));
    assert_eq!(seen.join(), Ok(1));
    // Cancel queued work behind held workers; panics resolve handles. Both
    // workers are inside their task (first barrier) before anything else
    // is queued, so nothing can start `queued` before it is cancelled.
    let release = hold_workers(&pool);
    let queued = pool.submit(|| vec![1u8]).unwrap();
    let bad = pool.submit(|| -> u8 { panic!("miri") }).unwrap();
    assert!(queued.cancel());
    release();
    assert_eq!(queued.result(), Err(TaskError::Cancelled));
    assert!(matches!(bad.result(), Err(TaskError::Panicked(_))));
    // Shutdown cancelling queued work; a dropped pool abandons nothing.
    let left: Vec<_> = (0..4u8).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(true, true);
    for h in left {
        assert!(h.wait().is_ok());
    }
}

#[test]
fn strands_map_wait_and_routed_callbacks() {
    let pool = ThreadPool::new(2).unwrap();
    let strand = Strand::new(&pool, Vec::new());
    for i in 0..6 {
        strand.post(move |v: &mut Vec<i32>| v.push(i));
    }
    assert_eq!(
        strand.submit(|v| v.clone()).join(),
        Ok((0..6).collect::<Vec<_>>())
    );
    let h = pool.submit(|| 3u64).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    strand.add_done_callback(&h, move |v, r| {
        v.push(*r.unwrap() as i32);
        tx.send(v.len()).unwrap();
    });
    assert_eq!(rx.recv(), Ok(7));
    // Dispatches drain on their own threads, racing a post's pool drain
    // and a dispatched callback run by the worker that completes it.
    let other = {
        let strand = strand.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                strand.dispatch(|v| v.push(-1));
            }
        })
    };
    let h = pool.submit(|| 9u64).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    strand.dispatch_done_callback(&h, move |v, r| {
        v.push(*r.unwrap() as i32);
        tx.send(()).unwrap();
    });
    strand.post(|v| v.push(-2));
    strand.dispatch(|v| v.push(-3));
    other.join().unwrap();
    rx.recv().unwrap();
    let v = strand.submit(|v| v.clone()).join().unwrap();
    assert_eq!(v.len(), 13);
    let mine: Vec<_> = v[7..].iter().filter(|&&x| x < -1).collect();
    assert_eq!(mine, [&-2, &-3]);
    let out: Vec<_> = pool.map(|x: u8| x + 1, 0..5).chunksize(2).collect();
    assert_eq!(out, (1..6).map(Ok).collect::<Vec<_>>());
    let hs: Vec<_> = (0..4u8).map(|i| pool.submit(move || i).unwrap()).collect();
    assert_eq!(
        wait(hs.clone(), ReturnWhen::AllCompleted, None).done.len(),
        4
    );
    assert_eq!(as_completed(hs, None).count(), 4);
    let (tx, rx) = std::sync::mpsc::channel();
    pool.add_done_callback(&pool.submit(|| 1u8).unwrap(), move |r| {
        tx.send(*r.unwrap()).unwrap()
    });
    assert_eq!(rx.recv(), Ok(1));
}

/// The async task's unsafe paths: the pinned future in its cell, the
/// queue entry reused as waker and re-queued, the unpolled cancel, the
/// in-place drop (also of a future whose `Drop` panics), and a future
/// holding the pool open past shutdown.
#[test]
fn futures_on_the_pool() {
    use concurrent_futures::Promise;

    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop boom");
        }
    }

    let pool = ThreadPool::new(2).unwrap();
    let input = Promise::new();
    let ready = input.handle();
    let out = pool
        .submit_future(async move { ready.await.unwrap() + 1 })
        .unwrap();
    input.set_result(1u32).unwrap();
    assert_eq!(out.join(), Ok(2));
    // A future that wakes itself a few times (re-queued, no allocation).
    let yields = pool.submit_future(wakes_itself(3)).unwrap();
    assert_eq!(yields.join(), Ok(()));
    // A future whose drop panics, dropped in place after it finished (an
    // async block would drop its captures inside `poll`: a panic in poll).
    struct ReadyThenBoom(#[allow(dead_code)] PanicOnDrop);
    impl std::future::Future for ReadyThenBoom {
        type Output = u8;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<u8> {
            std::task::Poll::Ready(5)
        }
    }
    let h = pool.submit_future(ReadyThenBoom(PanicOnDrop)).unwrap();
    assert_eq!(h.join(), Ok(5));
    let after = pool.submit(|| "the worker survived").unwrap();
    assert_eq!(after.join(), Ok("the worker survived"));
    // Cancelled before its first poll, behind held workers.
    let release = hold_workers(&pool);
    let never = pool.submit_future(async { 0u8 }).unwrap();
    assert!(never.cancel());
    release();
    assert_eq!(never.result(), Err(TaskError::Cancelled));
    // Pending at shutdown, woken after it: the workers stay to poll it.
    let late = Promise::new();
    let wait_for = late.handle();
    let h = pool
        .submit_future(async move { wait_for.await.unwrap() })
        .unwrap();
    while !h.running() {
        std::thread::yield_now();
    }
    pool.shutdown(false, false);
    late.set_result(9u8).unwrap();
    assert_eq!(h.join(), Ok(9));
    pool.shutdown(true, false);
}

/// Scoped tasks, `join` and `install` borrow stack data: Miri checks that
/// nothing touches it after the scope (or the join) returns, including a
/// cancelled task's closure, dropped by a worker, and a join's second half
/// run by a thief or inline.
#[test]
fn scoped_tasks_and_joins_borrow_stack_data() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let pool = ThreadPool::new(2).unwrap();
    let mut data = [1u64, 2, 3, 4, 5, 6];
    let seen = AtomicUsize::new(0);
    let drops = AtomicUsize::new(0);
    pool.scope(|s| {
        let (left, right) = data.split_at_mut(3);
        s.spawn(|| left.iter_mut().for_each(|x| *x *= 2)).unwrap();
        let h = s.submit(|| right.iter().sum::<u64>()).unwrap();
        h.add_done_callback(|r| {
            seen.fetch_add(*r.unwrap() as usize, Ordering::Relaxed);
        });
        std::mem::forget(h.clone());
    });
    assert_eq!(data, [2, 4, 6, 4, 5, 6]);
    assert_eq!(seen.load(Ordering::Relaxed), 15);
    // A task cancelled while queued: its closure is dropped by a worker,
    // inside the scope.
    let release = hold_workers(&pool);
    pool.scope(|s| {
        let counted = Counted(&drops);
        let h = s.submit(move || drop(counted)).unwrap();
        assert!(h.cancel());
        release();
    });
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert_eq!(common::join_sum(&pool, &data, 2), 27);
    let text = String::from("borrowed");
    assert_eq!(pool.install(|| text.len()), 8);
    // A join whose second half is certainly stolen (`a` waits for it): the
    // thief runs it on the joiner's stack job while the joiner waits.
    let gate = std::sync::Barrier::new(2);
    let mut stolen = 0u32;
    let (a, ()) = pool.install(|| {
        pool.join(
            || {
                // A join's wake is a hint that may miss a worker going to
                // sleep (weak memory here, too); a submit's is not.
                pool.spawn(|| ()).unwrap();
                gate.wait();
                1
            },
            || {
                gate.wait();
                stolen += 1;
            },
        )
    });
    assert_eq!((a, stolen), (1, 1));
}
