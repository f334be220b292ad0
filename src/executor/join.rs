//! Fork-join: [`ThreadPool::join`].
//!
//! `join(a, b)` on a worker queues `b` on the worker's own deque (where an
//! idle worker steals it), runs `a`, then claims `b` with one CAS and runs
//! it inline if nobody stole it. If a thief runs `b`, the joiner does not
//! block at once: like a rayon worker it runs other queued tasks meanwhile,
//! and parks (keeping the pool's capacity, as every wait does) only when it
//! finds none.
//!
//! # Why `b` may borrow, and what a join allocates
//! `b` and its result stay on the joiner's stack (a `StackJob`). The queue
//! carries a `JoinEntry`: the job's address, the one function that runs
//! it, and the claim word. An entry can outlive the call (a job the joiner
//! claimed stays queued until someone pops and skips it), but it touches
//! the stack job only after winning the claim, and `join` returns only once
//! the job is claimed by itself or `DONE`: a stale entry reaches nothing.
//! Each thread keeps the entries of its past joins and reuses one once no
//! queue holds it any more (`Arc::get_mut`), so a join in steady state
//! allocates nothing.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::thread::Result as Outcome;

use super::pool::ThreadPool;
use super::scope::value_or_resume;
use super::submit::SubmitSlot;
use super::task::{Ran, Runnable, TaskRef};
use super::worker;
use crate::future::blocking::{blocking, running_depth};
use crate::sync::{AtomicU8, Ordering, Thread, UnsafeCell};

/// Queued, nobody runs it yet.
const PENDING: u8 = 0;
/// Claimed: the joiner runs it inline, or a thief runs it.
const RUNNING: u8 = 1;
/// A thief ran it; the result is stored.
const DONE: u8 = 2;
/// With `RUNNING`: the joiner parked, waiting for `DONE`.
const WAITING: u8 = 4;

/// Empty looks for work before a joiner whose `b` was stolen parks.
const SPINS: u32 = 16;
/// Past entries a thread keeps for reuse.
const KEPT: usize = 32;

/// `b` and its result, on the joiner's stack.
struct StackJob<B, R> {
    f: std::cell::UnsafeCell<Option<B>>,
    out: std::cell::UnsafeCell<Option<Outcome<R>>>,
}

/// Runs the stack job at `job`: takes `b`, stores its outcome.
///
/// # Safety
/// `job` is a live `StackJob<B, R>` and the caller won its entry's claim.
unsafe fn run_stack_job<B: FnOnce() -> R, R>(job: *const ()) {
    // SAFETY: by contract; the claim makes this thread the job's only user
    // until it sets DONE (or returns to the joiner, who claimed it).
    let job = unsafe { &*job.cast::<StackJob<B, R>>() };
    // SAFETY: as above.
    let f = unsafe { (*job.f.get()).take() };
    let f = f.unwrap_or_else(|| unreachable!("a claimed join job has its closure"));
    let out = catch_unwind(AssertUnwindSafe(f));
    // SAFETY: as above.
    unsafe { *job.out.get() = Some(out) };
}

/// A stack job's address and the function that runs it.
type JobRef = (*const (), unsafe fn(*const ()));

/// What the queues carry for one `join`.
struct JoinEntry {
    state: AtomicU8,
    /// The stack job's address and runner: set by the joiner before the
    /// push, read by the claimer.
    job: UnsafeCell<JobRef>,
    /// The joiner's thread, written before it sets `WAITING`.
    waiter: UnsafeCell<Option<Thread>>,
}

// SAFETY: `job` is written by the joiner before the push (which publishes
// it) or while it holds the only reference, and read by the claimer, which
// one CAS decides; `waiter` is written by the joiner before its Release CAS
// to WAITING and read by the thief after its AcqRel swap saw WAITING. The
// stack job behind `job` holds `Send` values (`join`'s bounds).
unsafe impl Send for JoinEntry {}
// SAFETY: as above.
unsafe impl Sync for JoinEntry {}

fn no_job(_: *const ()) {}

impl JoinEntry {
    fn new() -> Self {
        JoinEntry {
            state: AtomicU8::new(PENDING),
            job: UnsafeCell::new((std::ptr::null(), no_job)),
            waiter: UnsafeCell::new(None),
        }
    }

    /// Claims the job for the caller.
    fn claim(&self) -> bool {
        // Relaxed: a claim; the job's address reached every thread that can
        // claim it through the queue push (or was written by this thread).
        self.state
            .compare_exchange(PENDING, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Runs the job; the caller won the claim.
    fn run_claimed(&self) {
        // SAFETY: written before the push; the claim is ours.
        let (job, call) = self.job.with(|p| unsafe { *p });
        // SAFETY: the joiner keeps the stack job alive until the claimer
        // is done with it (it waits for DONE, or is the claimer).
        unsafe { call(job) };
    }
}

impl Runnable for JoinEntry {
    fn run(self: Arc<Self>) -> Ran {
        if !self.claim() {
            return Ran::Claimed; // the joiner ran it inline
        }
        self.run_claimed();
        // AcqRel: Release publishes the outcome to the joiner's Acquire
        // load; Acquire pairs with its Release CAS to WAITING, so `waiter`
        // is set. After this swap the stack job may be gone: not touched.
        if self.state.swap(DONE, Ordering::AcqRel) & WAITING != 0 {
            // SAFETY: the joiner wrote it before WAITING and no longer
            // touches it; our `Arc` keeps the entry alive.
            if let Some(t) = self.waiter.with_mut(|p| unsafe { (*p).take() }) {
                t.unpark();
            }
        }
        Ran::Completed
    }

    /// A cancelling shutdown leaves the job to the joiner, which claims
    /// and runs it inline: a join's second half is never lost.
    fn cancel(self: Arc<Self>) {}

    /// Likewise when a queue is thrown away.
    fn abandon(self: Arc<Self>) {}
}

std::thread_local! {
    /// This thread's past entries, for reuse.
    static ENTRIES: std::cell::RefCell<Vec<Arc<JoinEntry>>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// An entry no queue holds, reset for a new job.
fn fresh_entry(job: *const (), call: unsafe fn(*const ())) -> Arc<JoinEntry> {
    let reused = ENTRIES
        .try_with(|kept| {
            let mut kept = kept.borrow_mut();
            let i = kept.iter_mut().position(|e| Arc::get_mut(e).is_some())?;
            Some(kept.swap_remove(i))
        })
        .ok()
        .flatten();
    let mut entry = reused.unwrap_or_else(|| Arc::new(JoinEntry::new()));
    // `get_mut` (Acquire) succeeds: a reused entry is unique (checked
    // above, and nobody can clone it meanwhile), a new one too.
    let e = Arc::get_mut(&mut entry).unwrap_or_else(|| unreachable!("unique"));
    *e = JoinEntry::new();
    // SAFETY: exclusive access through `get_mut`.
    e.job.with_mut(|p| unsafe { *p = (job, call) });
    entry
}

/// Keeps `entry` for a later join on this thread.
fn keep_entry(entry: Arc<JoinEntry>) {
    let _ = ENTRIES.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(entry);
        }
    });
}

impl ThreadPool {
    /// Runs `a` and `b`, potentially in parallel, and returns both results
    /// (rayon's `join`). On a worker of this pool, `b` is queued where an
    /// idle worker can steal it while this thread runs `a`; if nobody did,
    /// this thread runs `b` itself afterwards. If somebody did, this thread
    /// runs other queued tasks of the pool until `b` is done (as a rayon
    /// worker does: do not hold a lock across `join` that such a task
    /// takes), and parks only when there are none. Called from outside the
    /// pool, both run on the pool while the caller blocks (as
    /// [`install`](ThreadPool::install)).
    ///
    /// Both always run. If either panics, the panic is resumed once both
    /// are over (`a`'s if both panic). After shutdown both run on the
    /// calling thread.
    ///
    /// ```
    /// use concurrent_futures::ThreadPool;
    ///
    /// fn sum(pool: &ThreadPool, v: &[u64]) -> u64 {
    ///     if v.len() <= 1024 {
    ///         return v.iter().sum();
    ///     }
    ///     let (l, r) = v.split_at(v.len() / 2);
    ///     let (a, b) = pool.join(|| sum(pool, l), || sum(pool, r));
    ///     a + b
    /// }
    /// let pool = ThreadPool::new(2).unwrap();
    /// let v: Vec<u64> = (1..=100_000).collect();
    /// assert_eq!(sum(&pool, &v), 5_000_050_000);
    /// ```
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        if worker::is_worker_of(self.registry()) {
            return self.join_on_worker(a, b);
        }
        if self.is_shutdown() {
            return both(
                catch_unwind(AssertUnwindSafe(a)),
                catch_unwind(AssertUnwindSafe(b)),
            );
        }
        self.install(|| self.join(a, b))
    }

    fn join_on_worker<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let Some(slot) = SubmitSlot::claim(self.registry()) else {
            // Shut down: no new work is queued; run both here.
            return both(
                catch_unwind(AssertUnwindSafe(a)),
                catch_unwind(AssertUnwindSafe(b)),
            );
        };
        let job = StackJob {
            f: std::cell::UnsafeCell::new(Some(b)),
            out: std::cell::UnsafeCell::new(None),
        };
        let entry = fresh_entry(
            (&raw const job).cast(),
            run_stack_job::<B, RB> as unsafe fn(*const ()),
        );
        slot.push_join(TaskRef::from_arc(entry.clone()));
        let ra = catch_unwind(AssertUnwindSafe(a));
        if entry.claim() {
            // Not stolen: still on top of our join deque (joins inside `a`
            // took theirs off). Take it off, so the entry is ours to reuse.
            worker::pop_join_if(|top| top.is(&entry));
            entry.run_claimed();
        } else {
            wait_for_thief(&entry);
        }
        keep_entry(entry);
        // SAFETY: `b` ran (here, or on a thief that then set DONE, which we
        // saw with Acquire): the outcome is written and nobody touches it.
        let rb = unsafe { (*job.out.get()).take() };
        both(
            ra,
            rb.unwrap_or_else(|| unreachable!("a finished join job has its result")),
        )
    }
}

/// Both results, or the first panic (`a`'s before `b`'s).
fn both<RA, RB>(ra: Outcome<RA>, rb: Outcome<RB>) -> (RA, RB) {
    let ra = value_or_resume(ra);
    (ra, rb.unwrap_or_else(|p| resume_unwind(p)))
}

/// Until a thief has run `job`: run other tasks, then park.
fn wait_for_thief(job: &JoinEntry) {
    let mut idle = 0;
    // Acquire: pairs with the thief's swap to DONE, publishing `out`.
    while job.state.load(Ordering::Acquire) != DONE {
        if running_depth() < super::blocking::MAX_INLINE_DEPTH && worker::help_one() {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < SPINS {
            crate::sync::yield_now();
            continue;
        }
        // SAFETY: only the joiner writes `waiter`, and the thief reads it
        // only after seeing WAITING, which we have not set yet.
        job.waiter
            .with_mut(|p| unsafe { *p = Some(crate::sync::current_thread()) });
        // Release: publishes `waiter` to the thief's AcqRel swap.
        if job
            .state
            .compare_exchange(
                RUNNING,
                RUNNING | WAITING,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue; // DONE meanwhile
        }
        blocking(|| {
            // Acquire: as above.
            while job.state.load(Ordering::Acquire) != DONE {
                crate::sync::park();
            }
        });
    }
}
