//! The scheduled flag of a [`Strand`](super::strand::Strand): who drains
//! its queue, with no lock.
//!
//! - A poster pushes its job, then swaps the flag to 1; if it was 0, the
//!   poster schedules a drain (it now owns the flag for the drainer).
//! - The drainer runs jobs; when the queue looks empty it swaps the flag
//!   back to 0, then looks again: if a job arrived, it tries to take the
//!   flag back (swap to 1) and keeps draining if it got it.
//!
//! Every access is an RMW, so all of them are ordered on the flag. A poster
//! whose swap saw 1 came before the drainer's swap to 0, which reads (and
//! acquires) the poster's write: the drainer's second look sees the job. A
//! poster whose swap saw 0 schedules a new drain. Either way no job is left
//! behind, and at most one drainer owns the flag, so jobs run one at a time.

use crate::sync::{AtomicUsize, Ordering};

/// The flag; see the module docs.
#[derive(Default)]
pub(crate) struct Schedule(AtomicUsize);

impl Schedule {
    /// After pushing a job: true if the caller must start a drain.
    pub(crate) fn claim_after_push(&self) -> bool {
        // AcqRel: Release publishes our push to the drainer that reads this
        // write with its swap; Acquire pairs with the last drainer's release,
        // so the next drain sees the state the last one left.
        self.0.swap(1, Ordering::AcqRel) == 0
    }

    /// The drainer found the queue empty. Returns true if it must keep
    /// draining (a job arrived and the flag is still, or again, its own).
    pub(crate) fn release(&self, queue_is_empty: impl Fn() -> bool) -> bool {
        // AcqRel: Release hands the state to the next drainer; Acquire
        // pairs with posters that swapped before us, so their jobs are
        // visible to the look below.
        self.0.swap(0, Ordering::AcqRel);
        !queue_is_empty() && self.0.swap(1, Ordering::AcqRel) == 0
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::Schedule;
    use crate::sync::{AtomicUsize, Ordering};
    use loom::cell::UnsafeCell;
    use loom::thread;
    use std::sync::Arc;

    /// Two posters of two jobs each, drains started as the flag says: every
    /// job runs exactly once, in per-poster order, never two at a time.
    ///
    /// As in `Strand`, the jobs' shared state (here the record of what
    /// ran) is a cell that only the flag's owner touches, so the flag's
    /// hand-off is all that orders one drainer's jobs after the last's:
    /// weakening either swap is a causality violation. The queue orders
    /// only each job's push before its take (one slot per job, Release /
    /// Acquire; how far each poster's jobs were taken, Relaxed), as the
    /// strand's injector does, and the overlap count is Relaxed: neither
    /// supplies an order of its own.
    #[test]
    fn strand_scheduled_flag() {
        loom::model(|| {
            struct S {
                flag: Schedule,
                /// Poster `p`'s job `i` in `slots[p][i]`: 0 empty, else 1.
                slots: [[AtomicUsize; 2]; 2],
                /// How many of poster `p`'s jobs were taken (written by the
                /// flag's owner only).
                taken: [AtomicUsize; 2],
                running: AtomicUsize,
                ran: UnsafeCell<Vec<(usize, usize)>>,
            }
            // SAFETY: `ran` is touched only by the flag's owner (the
            // property under test; loom checks every access), and read by
            // the model once every poster is joined.
            unsafe impl Sync for S {}
            impl S {
                /// The next job of some poster, taken (flag owner only).
                fn take(&self) -> Option<(usize, usize)> {
                    (0..2).find_map(|p| {
                        // Relaxed: the flag's hand-off orders the owners.
                        let i = self.taken[p].load(Ordering::Relaxed);
                        // Acquire: pairs with the push's Release.
                        (i < 2 && self.slots[p][i].load(Ordering::Acquire) != 0).then(|| {
                            self.taken[p].store(i + 1, Ordering::Relaxed);
                            (p, i)
                        })
                    })
                }
                fn is_empty(&self) -> bool {
                    (0..2).all(|p| {
                        let i = self.taken[p].load(Ordering::Relaxed);
                        i == 2 || self.slots[p][i].load(Ordering::Acquire) == 0
                    })
                }
            }
            fn drain(s: &S) {
                loop {
                    while let Some(job) = s.take() {
                        // Relaxed: a count, not an order (see above).
                        assert_eq!(s.running.fetch_add(1, Ordering::Relaxed), 0, "overlap");
                        // SAFETY: see `Sync`.
                        s.ran.with_mut(|ran| unsafe { (*ran).push(job) });
                        s.running.fetch_sub(1, Ordering::Relaxed);
                    }
                    if !s.flag.release(|| s.is_empty()) {
                        return;
                    }
                }
            }
            let s = Arc::new(S {
                flag: Schedule::default(),
                slots: Default::default(),
                taken: Default::default(),
                running: AtomicUsize::new(0),
                ran: UnsafeCell::new(Vec::new()),
            });
            let posters: Vec<_> = (0..2)
                .map(|p| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for i in 0..2 {
                            // Release: the job before its take.
                            s.slots[p][i].store(1, Ordering::Release);
                            if s.flag.claim_after_push() {
                                drain(&s); // the "drain task", run here
                            }
                        }
                    })
                })
                .collect();
            for p in posters {
                p.join().unwrap();
            }
            // SAFETY: every poster, and so every drainer, is joined.
            let ran = s.ran.with(|ran| unsafe { (*ran).clone() });
            assert_eq!(ran.len(), 4, "{ran:?}");
            for p in 0..2 {
                let mine: Vec<_> = ran.iter().filter(|j| j.0 == p).map(|j| j.1).collect();
                assert_eq!(mine, [0, 1]);
            }
        });
    }
}
