//! loom models of the future's atomic protocols, through the public API.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom`
//! (`LOOM_MAX_PREEMPTIONS` defaults to 3 here; see docs/testing.md.)
#![cfg(loom)]

use std::sync::Arc;
use std::time::Duration;

use concurrent_futures::{Promise, TaskError};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Records callbacks and whether two ever ran at once, or one saw a wrong
/// outcome. (A panic inside a callback would be caught and reported by the
/// crate, not fail the model, so the callback records and `ran` asserts.)
/// The record is a loom `UnsafeCell` each callback writes, and the overlap
/// count uses Relaxed read-modify-writes: nothing of the log's own orders
/// one callback after another, so a drain hand-off that failed to (a
/// weakened ordering in `stack.rs`) is a causality violation loom reports,
/// where a `Mutex` and SeqCst counters would have supplied the order.
#[derive(Default)]
struct Log {
    running: AtomicUsize,
    bad: AtomicUsize,
    ran: UnsafeCell<Vec<u32>>,
}

// SAFETY: `ran` is written only by callbacks, which the crate runs one at a
// time, each after the last (the property under test; loom checks every
// access), and read once every thread that ran one has been joined.
unsafe impl Sync for Log {}

impl Log {
    fn callback(
        self: &Arc<Self>,
        id: u32,
    ) -> impl FnOnce(Result<&u32, &TaskError>) + Send + 'static {
        let log = self.clone();
        move |r| {
            // Relaxed: a count, not an order (see above).
            if r != Ok(&7) || log.running.fetch_add(1, Ordering::Relaxed) != 0 {
                log.bad.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: see `Sync` above; loom checks it.
            log.ran.with_mut(|ran| unsafe { (*ran).push(id) });
            log.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn ran(&self) -> Vec<u32> {
        assert_eq!(
            self.bad.load(Ordering::Relaxed),
            0,
            "overlap or wrong outcome"
        );
        // SAFETY: see `Sync` above.
        self.ran.with(|ran| unsafe { (*ran).clone() })
    }
}

fn in_order(ran: &[u32], ids: &[u32]) -> bool {
    let pos: Vec<usize> = ids
        .iter()
        .map(|i| ran.iter().position(|r| r == i).unwrap())
        .collect();
    pos.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn attach_vs_complete_three_threads() {
    model(|| {
        let p = Promise::new();
        let log = Arc::new(Log::default());
        let attachers: Vec<_> = [[1, 2], [3, 4]]
            .into_iter()
            .map(|ids| {
                let h = p.handle();
                let log = log.clone();
                thread::spawn(move || {
                    for id in ids {
                        h.add_done_callback(log.callback(id));
                    }
                })
            })
            .collect();
        p.set_result(7).unwrap();
        for a in attachers {
            a.join().unwrap();
        }
        let mut ran = log.ran();
        assert!(
            in_order(&ran, &[1, 2]) && in_order(&ran, &[3, 4]),
            "{ran:?}"
        );
        ran.sort();
        assert_eq!(ran, [1, 2, 3, 4], "each exactly once");
    });
}

#[test]
fn attach_during_drain_runs_after_earlier_callbacks() {
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let log = Arc::new(Log::default());
        h.add_done_callback(log.callback(1));
        let h2 = h.clone();
        let l2 = log.clone();
        // A callback that attaches to its own future while it is draining.
        h.add_done_callback(move |_| {
            h2.add_done_callback(l2.callback(3));
        });
        let late = {
            let h = h.clone();
            let log = log.clone();
            thread::spawn(move || {
                h.add_done_callback(log.callback(2));
            })
        };
        p.set_result(7).unwrap();
        late.join().unwrap();
        let ran = log.ran();
        assert_eq!(ran.len(), 3, "{ran:?}");
        assert_eq!(ran[0], 1);
        assert!(
            in_order(&ran, &[1, 3]) && in_order(&ran, &[1, 2]),
            "{ran:?}"
        );
    });
}

/// Callbacks attached to a done future make no node: an attacher that
/// finds the stack idle claims the drain and runs its callback directly.
/// A thread attaching (whose callback attaches another from inside, while
/// it holds the drain) races the completer's drain and the completer's own
/// attach right after completing.
#[test]
fn late_attaches_race_for_the_drain() {
    model(|| {
        let p = Promise::new();
        let log = Arc::new(Log::default());
        p.handle().add_done_callback(log.callback(1));
        let attacher = {
            let (h, log) = (p.handle(), log.clone());
            thread::spawn(move || {
                let (inner, l) = (h.clone(), log.clone());
                let first = log.callback(2);
                h.add_done_callback(move |r| {
                    first(r);
                    inner.add_done_callback(l.callback(3));
                });
            })
        };
        let h = p.handle();
        p.set_result(7).unwrap();
        h.add_done_callback(log.callback(4));
        attacher.join().unwrap();
        let mut ran = log.ran();
        assert!(
            in_order(&ran, &[1, 2, 3]) && in_order(&ran, &[1, 4]),
            "{ran:?}"
        );
        ran.sort();
        assert_eq!(ran, [1, 2, 3, 4], "each exactly once");
    });
}

#[test]
fn cancel_vs_start() {
    model(|| {
        let p = Promise::<u32>::new();
        let h = p.handle();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let _ = h.add_done_callback(move |r| {
            // 1 if it saw the cancellation, 100 if it saw anything else.
            let seen = if r == Err(&TaskError::Cancelled) {
                1
            } else {
                100
            };
            f.fetch_add(seen, Ordering::SeqCst);
        });
        let canceller = thread::spawn(move || h.cancel());
        let started = p.set_running_or_notify_cancel().unwrap();
        let cancelled = canceller.join().unwrap();
        assert_ne!(started, cancelled, "exactly one wins");
        if started {
            assert_eq!(fired.load(Ordering::SeqCst), 0, "nothing before the result");
            p.set_result(7).unwrap();
            assert_eq!(fired.load(Ordering::SeqCst), 100, "it saw the value once");
        } else {
            assert_eq!(fired.load(Ordering::SeqCst), 1);
        }
    });
}

/// A timed wait racing the completion: under loom its deadline passes only
/// once it has slept with its node pushed (`wait.rs`, `Clock`), so the
/// model explores the give-up (`try_remove`, `note_removed`) against the
/// drain. Both outcomes must be reached, or the model proved nothing.
#[test]
fn timed_wait_vs_complete() {
    static OUTCOMES: [std::sync::atomic::AtomicUsize; 2] =
        [const { std::sync::atomic::AtomicUsize::new(0) }; 2];
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let waiter = thread::spawn(move || {
            let done = h.wait_timeout(Duration::from_secs(3600)).is_ok();
            (done, h.done())
        });
        p.set_result(7).unwrap();
        let (reported, actually) = waiter.join().unwrap();
        assert!(!reported || actually, "a wait that reports done saw done");
        OUTCOMES[usize::from(reported)].fetch_add(1, Ordering::Relaxed);
    });
    let [timed_out, done] = OUTCOMES.each_ref().map(|n| n.load(Ordering::Relaxed));
    assert!(
        timed_out > 0 && done > 0,
        "timed out {timed_out}, done {done}"
    );
}

#[test]
fn blocking_wait_vs_complete_never_hangs() {
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let waiter = thread::spawn(move || h.result().copied());
        p.set_result(7u32).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(7));
    });
}

#[test]
fn waker_registration_vs_complete() {
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let a = thread::spawn(move || loom::future::block_on(h.wait_async()).copied());
        p.set_result(7u32).unwrap();
        assert_eq!(a.join().unwrap(), Ok(7));
    });
}

#[test]
fn remove_vs_complete_exactly_one_wins() {
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let log = Arc::new(Log::default());
        let reg = h.add_done_callback(log.callback(1));
        h.add_done_callback(log.callback(2));
        let remover = thread::spawn(move || h.remove_done_callback(reg));
        p.set_result(7).unwrap();
        let removed = remover.join().unwrap();
        let ran = log.ran();
        if removed {
            assert_eq!(ran, [2]);
        } else {
            assert_eq!(ran, [1, 2]);
        }
    });
}

#[test]
fn compaction_vs_complete_hands_over_the_drain() {
    // With loom's garbage threshold of 1, every removal compacts, so this
    // races compaction (which owns the list interior) against completion.
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let log = Arc::new(Log::default());
        h.add_done_callback(log.callback(1));
        let doomed = h.add_done_callback(log.callback(9));
        h.add_done_callback(log.callback(2));
        let remover = thread::spawn(move || h.remove_done_callback(doomed));
        p.set_result(7).unwrap();
        let removed = remover.join().unwrap();
        let ran = log.ran();
        if removed {
            assert_eq!(ran, [1, 2]);
        } else {
            assert_eq!(ran, [1, 9, 2]);
        }
    });
}

#[test]
fn last_handle_take_vs_draining_callback() {
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let log = Arc::new(Log::default());
        h.add_done_callback(log.callback(1));
        let joiner = thread::spawn(move || {
            let mut h = h;
            loop {
                match h.try_join() {
                    Ok(outcome) => return outcome,
                    // The promise is still alive and could make handles.
                    Err(back) => h = back,
                }
                thread::yield_now();
            }
        });
        p.set_result(7u32).unwrap();
        drop(p);
        assert_eq!(joiner.join().unwrap(), Ok(7));
        assert_eq!(log.ran(), [1]);
    });
}

/// Counts drops of what a callback captured.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_removed_callback_is_dropped_exactly_once() {
    // Every removal compacts (threshold 1 under loom); a compaction only
    // marks the callbacks it removes and drops them after letting go of
    // the list, while completion may drain what is left meanwhile.
    model(|| {
        let p = Promise::new();
        let h = p.handle();
        let log = Arc::new(Log::default());
        let drops = Arc::new(AtomicUsize::new(0));
        let mut regs = Vec::new();
        for id in [8, 9] {
            let (log, count) = (log.clone(), DropCount(drops.clone()));
            regs.push(h.add_done_callback(move |r: Result<&u32, &TaskError>| {
                let _count = count;
                log.callback(id)(r);
            }));
        }
        h.add_done_callback(log.callback(1));
        let remover = thread::spawn(move || {
            regs.into_iter()
                .map(|r| h.remove_done_callback(r))
                .collect::<Vec<_>>()
        });
        p.set_result(7).unwrap();
        let removed = remover.join().unwrap();
        let ran = log.ran();
        let fired: Vec<u32> = [8, 9]
            .into_iter()
            .zip(&removed)
            .filter(|(_, r)| !**r)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            ran.iter().filter(|&&i| i != 1).copied().collect::<Vec<_>>(),
            fired
        );
        assert_eq!(drops.load(Ordering::SeqCst), 2, "each closure dropped once");
    });
}
