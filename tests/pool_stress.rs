//! Stress: ten million tiny tasks, and a million strand posts from several
//! threads (and a million more, posts and dispatches mixed). Run in release (`cargo test --release --test pool_stress`);
//! the debug run uses a tenth of the counts.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use concurrent_futures::{FutureHandle, Strand, ThreadPool};

const SCALE: usize = if cfg!(debug_assertions) { 10 } else { 1 };

#[test]
fn ten_million_tiny_tasks_complete_exactly_once() {
    let tasks = 10_000_000 / SCALE;
    let pool = ThreadPool::new(2).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    // Keep every handle of a window and check it, so "every handle done" is
    // checked without holding ten million handles at once.
    const WINDOW: usize = 100_000;
    let mut window: Vec<FutureHandle<()>> = Vec::with_capacity(WINDOW);
    for _ in 0..tasks / WINDOW {
        for _ in 0..WINDOW {
            let r = ran.clone();
            window.push(
                pool.submit(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap(),
            );
        }
        for h in window.drain(..) {
            assert_eq!(h.result(), Ok(&()));
        }
    }
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::Relaxed), tasks);
    let m = pool.metrics();
    assert_eq!((m.completed, m.queued, m.running), (tasks, 0, 0));
}

#[test]
fn a_million_strand_posts_from_several_threads() {
    strand_stress(|_, _| false);
}

/// Runs of 1,000 posts and 1,000 dispatches in turn, out of step between
/// the threads: drains on the pool and on dispatching threads hand the
/// flag to each other.
#[test]
fn a_million_strand_posts_and_dispatches_mixed() {
    strand_stress(|t, seq| (t + seq / 1000) % 2 == 1);
}

/// Four threads queue 250,000 closures each, dispatching where
/// `dispatch(thread, seq)` says and posting elsewhere: each runs once, in
/// its thread's order, never two at a time.
fn strand_stress(dispatch: fn(usize, usize) -> bool) {
    const THREADS: usize = 4;
    let per_thread = 250_000 / SCALE;
    let pool = ThreadPool::new(2).unwrap();
    struct State {
        last: [usize; THREADS],
        count: usize,
    }
    let strand = Strand::new(
        &pool,
        State {
            last: [0; THREADS],
            count: 0,
        },
    );
    let running = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let disorder = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(THREADS));
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (strand, running, overlap, disorder, start) = (
                strand.clone(),
                running.clone(),
                overlap.clone(),
                disorder.clone(),
                start.clone(),
            );
            thread::spawn(move || {
                start.wait();
                for seq in 1..=per_thread {
                    let (running, overlap, disorder) =
                        (running.clone(), overlap.clone(), disorder.clone());
                    let job = move |s: &mut State| {
                        if running.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlap.store(true, Ordering::SeqCst);
                        }
                        if s.last[t] + 1 != seq {
                            disorder.store(true, Ordering::SeqCst);
                        }
                        s.last[t] = seq;
                        s.count += 1;
                        running.fetch_sub(1, Ordering::SeqCst);
                    };
                    if dispatch(t, seq) {
                        strand.dispatch(job);
                    } else {
                        strand.post(job);
                    }
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    let (count, last) = strand.submit(|s| (s.count, s.last)).join().unwrap();
    assert_eq!(count, THREADS * per_thread, "each post ran exactly once");
    assert_eq!(last, [per_thread; THREADS]);
    assert!(!overlap.load(Ordering::SeqCst), "two posts ran at once");
    assert!(
        !disorder.load(Ordering::SeqCst),
        "a thread's posts ran out of order"
    );
}
