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
    use loom::sync::Mutex;
    use loom::thread;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// Two posters, drains started as the flag says: every job runs exactly
    /// once, in per-poster order, never two at a time.
    #[test]
    fn strand_scheduled_flag() {
        loom::model(|| {
            struct S {
                flag: Schedule,
                queue: Mutex<VecDeque<(usize, usize)>>,
                running: AtomicUsize,
                ran: Mutex<Vec<(usize, usize)>>,
            }
            fn drain(s: &S) {
                loop {
                    while let Some(job) = s.queue.lock().unwrap().pop_front() {
                        assert_eq!(s.running.fetch_add(1, Ordering::SeqCst), 0, "overlap");
                        s.ran.lock().unwrap().push(job);
                        s.running.fetch_sub(1, Ordering::SeqCst);
                    }
                    if !s.flag.release(|| s.queue.lock().unwrap().is_empty()) {
                        return;
                    }
                }
            }
            let s = Arc::new(S {
                flag: Schedule::default(),
                queue: Mutex::new(VecDeque::new()),
                running: AtomicUsize::new(0),
                ran: Mutex::new(Vec::new()),
            });
            let posters: Vec<_> = (0..2)
                .map(|p| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for i in 0..2 {
                            s.queue.lock().unwrap().push_back((p, i));
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
            let ran = s.ran.lock().unwrap().clone();
            assert_eq!(ran.len(), 4, "{ran:?}");
            for p in 0..2 {
                let mine: Vec<_> = ran.iter().filter(|j| j.0 == p).map(|j| j.1).collect();
                assert_eq!(mine, [0, 1]);
            }
        });
    }
}
