//! Resources: pools created and dropped in a loop leave no thread and no
//! memory behind, and waiters that give up on futures that never complete
//! leave nothing behind either. Counted by a global allocator and by the
//! kernel's list of this process's threads; both are process-global, so
//! every check runs in the one test of this binary.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, mpsc};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use concurrent_futures::{FutureHandle, Promise, ReturnWhen, TaskError, ThreadPool};

struct Counting;

/// Bytes allocated and not yet freed, by anyone in the process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        new
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Relaxed)
}

/// The process's threads, as the kernel lists them. Only Linux has that
/// list: elsewhere 0, so the thread checks hold trivially there and the
/// memory checks still run.
fn threads() -> usize {
    if cfg!(target_os = "linux") {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    } else {
        0
    }
}

/// The thread count once it is at most `want`, or after 5 s. A joined
/// thread's kernel task can outlive `pthread_join` by a moment (the kernel
/// wakes the joiner before it reaps the task), and there is nothing to wait
/// on for that: this polls the kernel's state, it does not synchronise.
fn settled_threads(want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = threads();
        if n <= want || Instant::now() >= deadline {
            return n;
        }
        std::thread::yield_now();
    }
}

/// A pool of 1 or 2 workers, one task submitted and waited for, then
/// dropped (which shuts it down and joins its workers). `result`, not
/// `join`: a last-handle `join` ends in a pure spin in `wait_quiescent`
/// that costs a scheduler tick (~4 ms) per call on a busy 2-core machine.
fn pool_lifecycles(n: usize) {
    for i in 0..n {
        let pool = ThreadPool::new(1 + i % 2).unwrap();
        assert_eq!(pool.submit(move || i).unwrap().result(), Ok(&i));
    }
}

/// Waiters that give up on `h`, which never completes during the test.
fn give_up_waiting(h: &FutureHandle<u64>, n: usize) {
    let mut cx = Context::from_waker(Waker::noop());
    let zero = Some(Duration::ZERO);
    for _ in 0..n {
        // Dropped async waiters: each registers a waiter node, then
        // withdraws it when dropped.
        let mut by_ref = pin!(h.wait_async());
        assert!(by_ref.as_mut().poll(&mut cx).is_pending());
        let mut by_value = pin!(h.clone().into_future());
        assert!(by_value.as_mut().poll(&mut cx).is_pending());
        // Zero timeouts: only look (wait) or attach and detach (as_completed).
        assert_eq!(h.wait_timeout(Duration::ZERO), Err(TaskError::Timeout));
        for when in [ReturnWhen::FirstCompleted, ReturnWhen::AllCompleted] {
            let r = concurrent_futures::wait([h.clone()], when, zero);
            assert_eq!((r.done.len(), r.not_done.len()), (0, 1));
        }
        let mut it = concurrent_futures::as_completed([h.clone(), h.clone()], zero);
        assert!(it.next().unwrap().is_err());
    }
}

#[test]
fn pools_and_abandoned_waiters_leak_no_thread_and_no_memory() {
    // A hang must fail CI, not stall it (a verdict, not synchronisation).
    // Started first, so its thread and channel are in every baseline.
    let (done, dog) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if dog.recv_timeout(Duration::from_secs(300)) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("watchdog: resources test hung");
            std::process::abort();
        }
    });
    let started = Instant::now();

    // 1. Pool lifecycles. The warm-up lets one-time allocations (thread
    // machinery, stdout capture) happen before the baselines.
    let cycles = if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    };
    let before = threads();
    pool_lifecycles(20);
    let (base_threads, base_bytes) = (settled_threads(before), live());
    pool_lifecycles(cycles);
    let after_threads = settled_threads(base_threads);
    let grown = live() - base_bytes;
    assert!(
        after_threads <= base_threads,
        "{cycles} pools left {} threads behind",
        after_threads - base_threads
    );
    assert!(grown < 64 * 1024, "{cycles} pools leaked {grown} bytes");
    let pools_took = started.elapsed();

    // 2. Waiters giving up on a promise that is never set and on a pool
    // task that is held running: warm up past the bounded garbage a removed
    // callback leaves until the next compaction, then the live bytes must
    // not grow with the number of waits.
    let iters = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let promise = Promise::<u64>::new();
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let task = pool.submit(move || g.wait().is_leader().into()).unwrap();
    while !task.running() {
        std::thread::yield_now();
    }
    let threads_with_pool = threads();
    for h in [&promise.handle(), &task] {
        give_up_waiting(h, 1_000);
        let base = live();
        give_up_waiting(h, iters);
        let grown = live() - base;
        assert!(
            grown < 16 * 1024,
            "{iters} abandoned waits leaked {grown} bytes"
        );
    }
    assert_eq!(threads(), threads_with_pool, "waiting started threads");
    // Both still complete normally afterwards.
    promise.set_result(7).unwrap();
    assert_eq!(promise.handle().result(), Ok(&7));
    gate.wait();
    assert!(task.result().is_ok());
    done.send(()).unwrap();
    eprintln!(
        "{cycles} pools in {pools_took:?}; {iters} x 2 waiter rounds in {:?}",
        started.elapsed() - pools_took
    );
}
