//! Fork-join: [`ThreadPool::join`].
//!
//! `join(a, b)` on a core worker keeps `b` and its outcome in a `StackJob`
//! on its own stack and pushes a [`JobRef`] to it on the worker's join
//! deque (LIFO; thieves take the oldest entry from the other end). It runs
//! `a`, then pops: the deque hands each entry out once, so getting its own
//! entry back means nobody stole it, and it runs `b` inline. If a thief
//! took it, the joiner runs other work meanwhile (its own join deque first,
//! then anything, as a rayon worker does); finding none, it naps, looking
//! for work again between naps of at most a millisecond.
//!
//! # Why `b` may borrow, and why the stack job outlives its readers
//! The stack job is reached only through the one `JobRef`, by the one
//! thread the deque hands it to. A thief that runs it stores the outcome,
//! then sets `DONE`; the joiner does not return (or read the outcome)
//! before it sees `DONE`. If the joiner parked (`WAITING`), the thief takes
//! the joiner's thread handle after setting `DONE` and sets `RELEASED`
//! last; a joiner that parked waits for `RELEASED`, so no thread touches
//! the job after its frame is gone. Nothing is allocated per join.
//!
//! Why a second deque: a worker's task deque is FIFO (a task's submits run
//! in order, as Python users expect), so the joiner could not pop `b` back.

use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::Result as Outcome;

use crossbeam_deque::Worker;

use super::pool::ThreadPool;
use super::submit;
use super::task::JobRef;
use super::worker;
use crate::future::blocking::{Held, held, run_lent, running_depth};
use crate::panics::first_panic;
use crate::sync::{AtomicU8, Lifetime, Ordering, Thread, UnsafeCell};

/// A thief ran the job; its outcome is stored.
const DONE: u8 = 1;
/// The joiner parked: the thief must wake it.
const WAITING: u8 = 2;
/// Set last by a thief that found `WAITING`: it no longer touches the job.
const RELEASED: u8 = 4;

/// Empty looks for work before a joiner whose `b` was stolen parks (one
/// under loom, whose yields would multiply the schedules to explore).
const SPINS: u32 = if cfg!(loom) { 1 } else { 16 };

/// `b`, its outcome, and how its joiner waits, on the joiner's stack.
///
/// No drop glue: by the time the frame ends `b` was taken (by the joiner or
/// a thief), the outcome taken by the joiner, and the waiter's handle taken
/// by the thief or the joiner; `ManuallyDrop` skips re-checking all three
/// (callgrind: 28 instructions per join).
struct StackJob<B, R> {
    f: UnsafeCell<ManuallyDrop<Option<B>>>,
    out: UnsafeCell<ManuallyDrop<Option<Outcome<R>>>>,
    state: AtomicU8,
    /// The joiner's thread, written before it sets `WAITING`.
    waiter: UnsafeCell<ManuallyDrop<Option<Thread>>>,
    /// What the joiner holds: `b` holds it too, wherever it runs, so a wait
    /// in `b` on the joiner's task is refused as it is when `b` runs on the
    /// joiner's own thread.
    lender: Held,
    /// For the loom model: a thief touches the job until its last state
    /// update, the joiner's frame ends after (see [`Lifetime`]).
    life: Lifetime,
}

impl<B: FnOnce() -> R, R> StackJob<B, R> {
    /// `b`, taken by the one thread the deque handed the entry to: the
    /// joiner (it popped its own entry back) or a thief.
    fn take_b(&self) -> B {
        // SAFETY: the deque hands the entry out once: nobody else runs it.
        let f = self.f.with_mut(|p| unsafe { (*p).take() });
        f.unwrap_or_else(|| unreachable!("a join's second half runs once"))
    }

    /// The outcome a thief stored. Only after `DONE` was seen (Acquire).
    fn stolen_outcome(&self) -> Outcome<R> {
        // SAFETY: the thief wrote it before its Release of DONE, which we
        // acquired, and does not touch it again.
        let out = self.out.with_mut(|p| unsafe { (*p).take() });
        out.unwrap_or_else(|| unreachable!("a done join job has its outcome"))
    }
}

/// What a thief (or a helping worker) runs: the `JobRef`'s function.
///
/// # Safety
/// `job` is a live `StackJob<B, R>` whose entry the caller took from a
/// deque; its joiner waits for `DONE` (and `RELEASED`, if it parked).
unsafe fn run_stolen<B: FnOnce() -> R, R>(job: *const ()) {
    let job = job.cast::<StackJob<B, R>>();
    // SAFETY: live (contract); the deque handed the entry to us alone. The
    // reference ends with the call, before DONE.
    let f = unsafe {
        (*job).life.touch();
        (*job).take_b()
    };
    // SAFETY: as above: the joiner, and so its frames, wait for DONE.
    let out = unsafe { run_lent(job.addr(), (*job).lender, false, f) };
    // SAFETY: as above; the joiner reads it only after DONE.
    unsafe { (*job).out.with_mut(|p| *p = ManuallyDrop::new(Some(out))) };
    // SAFETY: alive until we set DONE (the joiner waits for it).
    let state = unsafe { &(*job).state };
    // AcqRel: Release publishes `out` to the joiner's Acquire load of DONE;
    // Acquire pairs with its Release CAS to WAITING, so `waiter` is set.
    if state.fetch_or(DONE, Ordering::AcqRel) & WAITING == 0 {
        return; // the joiner did not park: it may be gone already
    }
    // The joiner parked and waits for RELEASED: the job is still alive.
    // SAFETY: written before WAITING; the joiner no longer touches it.
    let waiter = unsafe {
        (*job).life.touch();
        (*job).waiter.with_mut(|p| (*p).take())
    };
    // Release: our last touch of the job happens before the joiner
    // returns; pairs with its Acquire load of RELEASED.
    state.fetch_or(RELEASED, Ordering::Release);
    if let Some(t) = waiter {
        crate::sync::unpark(&t);
    }
}

impl ThreadPool {
    /// Runs `a` and `b`, potentially in parallel, and returns both results
    /// (rayon's `join`). On a worker of this pool, `b` is offered to idle
    /// workers while this thread runs `a`; if nobody took it, this thread
    /// runs `b` itself afterwards. If somebody did, this thread runs other
    /// queued work of the pool until `b` is done (as a rayon worker does:
    /// do not hold a lock across `join` that such work takes), napping
    /// when there is none. Called from outside the pool (a worker of
    /// another pool included), both run on this pool while the caller
    /// blocks (as [`install`](ThreadPool::install)). `b` holds what the
    /// joiner holds, wherever it runs: a wait in `b` on the task that
    /// called `join` is refused with
    /// [`TaskError::WouldDeadlock`](crate::TaskError::WouldDeadlock).
    /// On a compensating worker (one started while others block), and
    /// after shutdown from outside, `a` then `b` run on the calling thread.
    ///
    /// Work run while waiting for a stolen `b` runs on top of the joiner's
    /// task, on its stack, and cannot return to it until that work
    /// returns: it holds what the joiner holds. A wait in it on the task
    /// that called `join` is refused with `WouldDeadlock` (it would wait
    /// on its own thread), though the same task run by another worker
    /// would be let through; and a wait in it on anything outside the
    /// wait-for graph (a [`Promise`](crate::Promise), a channel) that only
    /// the joiner's task goes on to complete waits for good. Tasks that
    /// block on such things are better not left queued on a pool that
    /// joins.
    ///
    /// Both always run. If either panics, the panic is resumed once both
    /// are over (`a`'s if both panic). A join allocates nothing.
    ///
    /// Stack: in a release build a level of join recursion takes about 160
    /// bytes of the worker's stack (x86-64, a small recursive function
    /// included; rayon's `join` about 255), so some 6,000 levels fit per
    /// MiB ([`Builder::stack_size`](crate::Builder::stack_size); the
    /// default is 2 MiB). A debug build takes several times more.
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
        if let Some(deque) = worker::join_deque(self.registry()) {
            // SAFETY: a core worker's own deque, used on its own thread
            // while its loop (which owns the deque) is below us on the stack.
            return self.join_on(unsafe { &*deque }, a, b);
        }
        self.join_off_core(a, b)
    }

    /// `join` anywhere but on a core worker. Out of line, so that the
    /// recursion of `join_on` (one frame a level) does not carry this
    /// path's stack slots (the scope behind `install`): a level costs less
    /// stack than rayon's.
    #[cold]
    #[inline(never)]
    fn join_off_core<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        if worker::is_worker_of(self.registry()) || self.is_shutdown() {
            // A compensating worker, or a pool that takes no more work.
            return then_b(catch_unwind(AssertUnwindSafe(a)), b);
        }
        self.install(|| self.join(a, b))
    }

    /// `join` on a core worker whose join deque is `deque`.
    #[inline(always)]
    fn join_on<A, B, RA, RB>(&self, deque: &Worker<JobRef>, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let job = StackJob {
            f: UnsafeCell::new(ManuallyDrop::new(Some(b))),
            out: UnsafeCell::new(ManuallyDrop::new(None)),
            state: AtomicU8::new(0),
            waiter: UnsafeCell::new(ManuallyDrop::new(None)),
            lender: held(),
            life: Lifetime::new(),
        };
        // SAFETY: `run_stolen::<B, RB>` matches the job's type, and we do
        // not return before whoever takes the entry is done (see below).
        let entry = unsafe { JobRef::new((&raw const job).cast(), run_stolen::<B, RB>) };
        deque.push(entry);
        self.registry().note_produced();
        // A hint, not the submit protocol: if nobody takes `b`, we run it.
        submit::hint_after_join_push(self.registry());
        let ra = catch_unwind(AssertUnwindSafe(a));
        // Joins inside `a` took their entries off (or had them stolen), so
        // ours is on top unless a thief (or this thread, helping inside
        // `a`) took it. Stealing takes the oldest first, so with ours gone
        // everything below went before it: a pop gives ours or nothing.
        if !stolen_done(&job.state) {
            match deque.pop() {
                Some(top) if top.is(entry) => return then_b(ra, job.take_b()),
                other => wait_for_stolen(other, &job.state, &job.waiter),
            }
        }
        let rb = job.stolen_outcome();
        job.life.end();
        first_panic(ra, rb)
    }
}

/// Whether whoever took the job has run `b`: the joiner's first look,
/// after `a`. The loom model below makes it too, before it waits.
#[inline(always)]
fn stolen_done(state: &AtomicU8) -> bool {
    // Acquire: pairs with the Release of DONE by whoever ran it, which
    // publishes `out` to the `stolen_outcome` read that follows.
    state.load(Ordering::Acquire) & DONE != 0
}

/// After the joiner's pop did not give its own entry back (`popped`: what
/// it gave instead, if anything): wait until the thief has run `b`.
#[cold]
#[inline(never)]
fn wait_for_stolen(
    popped: Option<JobRef>,
    state: &AtomicU8,
    waiter: &UnsafeCell<ManuallyDrop<Option<Thread>>>,
) {
    if let Some(other) = popped {
        // Not reachable by the argument in `join_on`; if it were, the entry
        // is ours now and must run.
        // SAFETY: taken from the deque; its joiner waits.
        unsafe { other.execute() };
    }
    wait_for_thief(state, waiter);
}

/// `a`'s outcome, then `b` run here: both values; `a`'s panic (after `b`
/// ran, whose outcome is dropped under a guard) or `b`'s, unwinding
/// straight out (nothing is left to wait for).
fn then_b<RA, RB>(ra: Outcome<RA>, b: impl FnOnce() -> RB) -> (RA, RB) {
    match ra {
        Ok(ra) => (ra, b()),
        Err(payload) => first_panic(Err(payload), catch_unwind(AssertUnwindSafe(b))),
    }
}

/// Until whoever took the job has run it: run other work, then park, and
/// look for work again between naps.
///
/// Not a blocking wait in the wait hook's sense: a joiner parked there
/// would count as blocked, and every join entry its thief pushed would
/// start a compensating worker (a sort on 2 workers grew to 9 threads).
/// The joiner is the capacity: it naps at most [`MAX_NAP`] between looks.
fn wait_for_thief(state: &AtomicU8, waiter: &UnsafeCell<ManuallyDrop<Option<Thread>>>) {
    let helps = || running_depth() < super::blocking::MAX_INLINE_DEPTH && worker::help_one();
    let mut idle = 0;
    // Acquire: pairs with the thief's Release of DONE, publishing `out`.
    while state.load(Ordering::Acquire) & DONE == 0 {
        if helps() {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < SPINS {
            crate::sync::yield_now();
            continue;
        }
        // SAFETY: only we write `waiter`, and the thief reads it only after
        // seeing WAITING, which we have not set yet.
        waiter.with_mut(|p| unsafe { **p = Some(crate::sync::current_thread()) });
        // Release: publishes `waiter` to the thief's AcqRel `fetch_or`.
        if state
            .compare_exchange(0, WAITING, Ordering::Release, Ordering::Acquire)
            .is_err()
        {
            // DONE meanwhile, and the thief will not look at `waiter`: the
            // handle is ours to drop.
            // SAFETY: as above.
            drop(waiter.with_mut(|p| unsafe { (*p).take() }));
            return;
        }
        let mut nap = MIN_NAP;
        // Acquire: pairs with the thief's Release of RELEASED (after which
        // it touches nothing of ours; DONE came before it).
        while state.load(Ordering::Acquire) & RELEASED == 0 {
            if helps() {
                nap = MIN_NAP;
                continue;
            }
            crate::sync::park_timeout(nap);
            nap = (nap * 2).min(MAX_NAP);
        }
        return;
    }
}

/// The first nap of a parked joiner, and the longest.
const MIN_NAP: std::time::Duration = std::time::Duration::from_micros(50);
const MAX_NAP: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(all(test, loom))]
mod model {
    use std::mem::ManuallyDrop;
    use std::sync::Arc;

    use loom::sync::atomic::AtomicBool;

    use super::{StackJob, run_stolen, stolen_done, wait_for_thief};
    use crate::future::blocking::Held;
    use crate::sync::{AtomicU8, Lifetime, Ordering, UnsafeCell, join_all_when_finished};

    fn seven() -> u8 {
        7
    }

    /// A thief runs a join's stolen half against its joiner, which looks
    /// as `join_on` does after `a` (`stolen_done`), then waits: looks
    /// once more, then parks (`WAITING`) or sees `DONE` first. The joiner
    /// reads the outcome (loom's cells flag a read not ordered after the
    /// thief's write) and then its frame ends (the job's `Lifetime`:
    /// flagged if the thief may still touch the job). Fails if `DONE`
    /// loses its Release, either load of `DONE` its Acquire, the CAS to
    /// `WAITING` its Release (the thief would read the joiner's handle
    /// unordered), or `RELEASED` its Release or the joiner's load of it
    /// its Acquire.
    #[test]
    fn the_joiner_returns_after_the_thief_and_never_before() {
        loom::model(|| {
            let job = StackJob::<fn() -> u8, u8> {
                f: UnsafeCell::new(ManuallyDrop::new(Some(seven as fn() -> u8))),
                out: UnsafeCell::new(ManuallyDrop::new(None)),
                state: AtomicU8::new(0),
                waiter: UnsafeCell::new(ManuallyDrop::new(None)),
                lender: Held::NONE,
                life: Lifetime::new(),
            };
            let addr = (&raw const job).expose_provenance();
            let finished = Arc::new(AtomicBool::new(false));
            let thief = loom::thread::spawn({
                let finished = finished.clone();
                move || {
                    // SAFETY: the job outlives the thief's use: the joiner
                    // waits below, as `join_on` does.
                    unsafe {
                        run_stolen::<fn() -> u8, u8>(std::ptr::with_exposed_provenance(addr))
                    };
                    finished.store(true, Ordering::Release);
                }
            });
            if !stolen_done(&job.state) {
                wait_for_thief(&job.state, &job.waiter);
            }
            assert_eq!(job.stolen_outcome().ok(), Some(7));
            job.life.end();
            join_all_when_finished(vec![(finished, thief)]);
        });
    }
}
