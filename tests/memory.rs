//! Waiters that give up leave nothing behind, and a wake of a future on the
//! pool allocates nothing (a counting global allocator).
#![cfg(not(loom))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use concurrent_futures::Promise;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Allocations made by this thread: a count no other thread of the
    /// process (the test harness's own, say) can disturb.
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn mine() -> usize {
    MINE.with(|n| n.get())
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // A const-initialised thread-local allocates nothing itself.
        let _ = MINE.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = if cfg!(miri) { 200 } else { 1_000_000 };

// The tests of this file share the counters, so they run as one test.
#[test]
fn waiters_that_give_up_keep_memory_bounded() {
    let promise = Promise::<u64>::new();
    let handle = promise.handle();

    // 1. Zero-timeout waits only look: no allocation at all. (Counted on
    // this thread: the harness's main thread may allocate meanwhile.)
    let before = mine();
    for _ in 0..N {
        assert!(handle.wait_timeout(Duration::ZERO).is_err());
        assert!(handle.result_timeout(Duration::ZERO).is_err());
    }
    assert_eq!(mine(), before, "zero-timeout waits allocated");

    // 2. Dropped async waiters: each registers a node, then withdraws it.
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut drop_waiters = |n: usize| {
        for _ in 0..n {
            let mut fut = Box::pin(handle.wait_async());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
    };
    drop_waiters(1000);
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    drop_waiters(N);
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(growth < 4096, "dropped async waiters leaked {growth} bytes");

    // 3. Timed waits that really park and time out (fewer: each sleeps).
    // 200 µs outlasts the wait's spin on any CPU (64 pauses: up to ~10 µs
    // where a pause is slow), so each wait pushes its node and removes it;
    // a 1 µs one expired during the spin on such CPUs and tested nothing.
    let timed = if cfg!(miri) { 20 } else { 2_000 };
    let tick = Duration::from_micros(200);
    for _ in 0..100 {
        assert!(handle.wait_timeout(tick).is_err());
    }
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..timed {
        assert!(handle.wait_timeout(tick).is_err());
    }
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(growth < 4096, "timed-out waits leaked {growth} bytes");

    // 4. Removed callbacks on a future that never completes.
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..N / 10 {
        let reg = handle.add_done_callback(|_| {});
        assert!(handle.remove_done_callback(reg));
    }
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(growth < 4096, "removed callbacks leaked {growth} bytes");

    // 5. wait / as_completed that time out on a pending handle (wait with a
    // short timeout, past the spin, so it really attaches and detaches its
    // callback). A
    // removed callback's closure (here holding a channel) is dropped at the
    // next compaction, so a bounded amount stays alive: warm up past that,
    // then check the memory does not grow with the number of calls.
    let cycle = |n: usize| {
        for _ in 0..n {
            let r = concurrent_futures::wait(
                [handle.clone()],
                concurrent_futures::ReturnWhen::FirstCompleted,
                Some(tick),
            );
            assert_eq!(r.not_done.len(), 1);
            let mut it = concurrent_futures::as_completed([handle.clone()], Some(Duration::ZERO));
            assert!(it.next().unwrap().is_err());
        }
    };
    cycle(200);
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    cycle(timed);
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 16 * 1024,
        "wait/as_completed leaked {growth} bytes"
    );

    // Completing afterwards still works and frees the rest.
    promise.set_result(1).unwrap();
    assert_eq!(handle.result(), Ok(&1));

    // 6. A future on the pool waking itself: a wake re-queues the task's
    // own allocation, so the allocations do not grow with the wakes.
    let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    let allocs_for = |wakes: usize| {
        let before = ALLOCS.load(Ordering::Relaxed);
        pool.submit_future(common::wakes_itself(wakes))
            .unwrap()
            .join()
            .unwrap();
        ALLOCS.load(Ordering::Relaxed) - before
    };
    allocs_for(10); // warm up (thread-locals, the deque's first buffer)
    let (few, many) = (allocs_for(10), allocs_for(N / 10));
    assert!(
        many <= few + 2,
        "{many} allocations for {} wakes against {few} for 10",
        N / 10
    );
    drop(pool);

    // 7. Callback nodes come from per-thread block caches (`blocks.rs`).
    // A thread that attaches and drains many callbacks, then exits, gives
    // every block back, and every slab is freed...
    let attach_and_drain = |n: usize| {
        let p = Promise::<u64>::new();
        let h = p.handle();
        for i in 0..n {
            let _ = h.add_done_callback(move |v| {
                let _ = std::hint::black_box((v, i));
            });
        }
        p.set_result(1).unwrap();
    };
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    std::thread::spawn(move || attach_and_drain(N / 10))
        .join()
        .unwrap();
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 4096,
        "an exited thread's node cache kept {growth} bytes"
    );
    // ...and a thread that lives on keeps a bounded cache: at most 16 KiB
    // of free blocks per size class, plus the slab it is carving.
    attach_and_drain(100);
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    attach_and_drain(N / 10);
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 20 * 1024,
        "a live thread's node cache grew by {growth} bytes"
    );
    // Blocks freed on another thread than the one that carved them.
    let p = Promise::<u64>::new();
    let h = p.handle();
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    std::thread::spawn(move || {
        for i in 0..N / 10 {
            let _ = h.add_done_callback(move |v| {
                let _ = std::hint::black_box((v, i));
            });
        }
    })
    .join()
    .unwrap();
    p.set_result(1).unwrap();
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 24 * 1024,
        "nodes freed across threads kept {growth} bytes"
    );

    // 8. The adversarial pattern for a bound on blocks: a producer thread
    // carves slabs, keeps one node of each alive (a callback on `scattered`)
    // and frees the rest, then exits. A consumer thread drains `scattered`:
    // its free list gets one block of each of many slabs, each the last
    // block keeping its slab allocated. Blocks of at most four slabs are
    // kept per class (`blocks.rs`), so the consumer, idle but alive, holds
    // a few KiB, not one slab per cached block (264 KiB before).
    let slabs = if cfg!(miri) { 20 } else { 2_000 };
    let scattered = Promise::<u64>::new();
    let h = scattered.handle();
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    std::thread::spawn(move || {
        let rest = Promise::<u64>::new();
        let r = rest.handle();
        for i in 0..slabs * 16 {
            // Slabs hold 16 blocks; a fresh thread carves them in order.
            let on = if i % 16 == 0 { &h } else { &r };
            let _ = on.add_done_callback(move |v| {
                let _ = std::hint::black_box((v, i));
            });
        }
        rest.set_result(1).unwrap();
    })
    .join()
    .unwrap();
    let idle = std::sync::Arc::new(std::sync::Barrier::new(2));
    let consumer = std::thread::spawn({
        let idle = idle.clone();
        move || {
            scattered.set_result(1).unwrap();
            idle.wait(); // drained: measure now
            idle.wait(); // measured: exit
        }
    });
    idle.wait();
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    idle.wait();
    consumer.join().unwrap();
    assert!(
        growth < 16 * 1024,
        "one cached block per slab pinned {growth} bytes"
    );

    // 9. Fire-and-forget tasks live in the same blocks, made on the
    // spawning thread and freed on the worker that ran them. After many,
    // the pool's threads keep bounded caches (each, per size class, four
    // slabs' blocks and the slab it carves)...
    let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    let spawn_all = |n: usize| {
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        let (all_ran, done) = std::sync::mpsc::channel();
        for i in 0..n {
            let (ran, all_ran) = (ran.clone(), all_ran.clone());
            pool.spawn(move || {
                let _ = std::hint::black_box(i);
                if ran.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    all_ran.send(()).unwrap();
                }
            })
            .unwrap();
        }
        done.recv().unwrap();
    };
    spawn_all(1_000); // warm up: the workers' thread-locals, the deques
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    spawn_all(N / 10);
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 32 * 1024,
        "{} spawned tasks left {growth} bytes behind",
        N / 10
    );
    // ...and once the workers exit, theirs are given back.
    pool.shutdown(true, false);
    drop(pool);
    let growth = LIVE_BYTES.load(Ordering::Relaxed) - base;
    assert!(
        growth < 8 * 1024,
        "an exited pool's task blocks kept {growth} bytes"
    );
}
