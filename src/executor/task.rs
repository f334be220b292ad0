//! A pool task: the closure lives in its future's allocation (one allocation
//! per task), and the queues carry [`TaskRef`]s to it.
//!
//! Whoever wins the future's `PENDING -> RUNNING` CAS runs the closure: the
//! worker that pops the task, or a thread waiting on it that claims it
//! inline. A cancelled or claimed task popped later is skipped. A `TaskRef`
//! dropped without running resolves its future as abandoned, so no handle
//! is left pending when a queue is thrown away.

use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::metrics::Tally;
use crate::error::TaskError;
use crate::future::blocking::{Held, run_lent, wait_for_task};
use crate::future::core::{Body, Cell, Core, Shared};
use crate::future::state::{Cancel, Start};
use crate::panics::{PanicOrigin, guard, panic_message};
use crate::sync::UnsafeCell;

/// What a task reports when it is over, to whoever must know (a scope
/// waiting for its tasks; nothing for a plain task). A task is over when
/// two events have both happened, in either order and possibly on two
/// threads: its outcome (or cancellation) is published, with the callbacks
/// that completion runs; and its closure is consumed (run or dropped).
pub(crate) trait Finish: Send + Sync {
    /// One of the two events happened; `both` says this thread saw both.
    fn event(&self, both: bool);

    /// What the thread waiting for the task to be over holds: the task
    /// holds it too (see [`Held`]). Valid until the task is over.
    fn lender(&self) -> Held {
        Held::NONE
    }
}

/// A plain task: nobody is told.
impl Finish for () {
    #[inline]
    fn event(&self, _both: bool) {}
}

/// The closure of a task, taken by whoever wins the start claim, and what
/// to tell when the task is over.
pub(crate) struct Job<F, D = ()> {
    f: UnsafeCell<Option<F>>,
    done: D,
}

// SAFETY: the closure is only touched by the thread that won the future's
// start claim (or, when nobody can start it any more, by the holder of the
// one queue entry), and `F: Send` lets it move there; `D` is `Sync`.
unsafe impl<F: Send, D: Sync> Sync for Job<F, D> {}

/// What running a popped task did, for the worker's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ran {
    /// The closure ran and returned.
    Completed,
    /// The closure ran and panicked.
    Panicked,
    /// A waiter claimed and ran it inline: it completed elsewhere.
    Claimed,
    /// Cancelled (or, unreachably, left without a closure): it never ran.
    Cancelled,
}

impl<F, D: Finish> Job<F, D> {
    fn take(&self) -> Option<F> {
        // SAFETY: only called by the winner of the start claim or the holder
        // of the queue entry once nobody can start it (see the Sync impl),
        // so no other thread touches the cell.
        self.f.with_mut(|p| unsafe { (*p).take() })
    }

    /// Runs the closure and stores its outcome. The caller won the start.
    fn execute<T>(&self, core: &Core<T>, addr: usize, tally: Tally<'_>) -> Ran
    where
        F: FnOnce() -> T,
    {
        let Some(f) = self.take() else {
            // Unreachable by the claim protocol; resolve rather than hang.
            tally.finish(Ran::Cancelled);
            core.set_started(Err(TaskError::Abandoned));
            self.done.event(true);
            return Ran::Cancelled;
        };
        // SAFETY: the lender (if any) waits until the task is over, which
        // is after the closure returns.
        let result = unsafe { run_lent(addr, self.done.lender(), true, f) };
        let (outcome, ran) = match result {
            Ok(v) => (Ok(v), Ran::Completed),
            Err(payload) => (
                Err(TaskError::Panicked(panic_message(payload))),
                Ran::Panicked,
            ),
        };
        tally.finish(ran);
        core.set_started(outcome);
        self.done.event(true);
        ran
    }

    /// Drops the closure of a task nobody will run, catching a panicking
    /// drop. Only by the queue entry's holder, once nobody can start it.
    /// `published`: this thread also published the cancellation.
    fn discard(&self, published: bool) {
        if let Some(f) = self.take() {
            guard(PanicOrigin::Drop, move || drop(f));
            self.done.event(published);
        } else if published {
            self.done.event(false);
        }
    }
}

impl<T, F, D> Body<T> for Job<F, D>
where
    F: FnOnce() -> T + Send,
    D: Finish,
{
    fn wait(&self, core: &Core<T>, deadline: Option<Instant>) -> Result<bool, TaskError> {
        if core.is_done() {
            return Ok(true);
        }
        let claim = || {
            core.try_start() == Start::Started && {
                // Counted when a worker pops the stale entry (`Claimed`).
                self.execute(core, addr_of(core), Tally::NONE);
                true
            }
        };
        let (addr, pool) = (addr_of(core), core.pool());
        wait_for_task(addr, pool, deadline, claim, || core.wait_until(deadline))
    }

    fn cancelled(&self) {
        // A handle's cancel published it; the queue entry's holder drops
        // the closure when it meets the task.
        self.done.event(false);
    }
}

/// Identity of a task: the address of its future's core.
pub(crate) fn addr_of<T>(core: &Core<T>) -> usize {
    (core as *const Core<T>).addr()
}

/// The type-erased face of a task, as the queues see it.
pub(crate) trait Runnable: Send + Sync {
    /// Runs the task if nobody started or cancelled it, telling `tally` how
    /// it ended before anything else learns it (see [`Tally`]).
    fn run(self: Arc<Self>, tally: Tally<'_>) -> Ran;
    /// Cancels the task if it has not started (Python's `cancel_futures`).
    fn cancel(self: Arc<Self>);
    /// Resolves a task that will never run as abandoned.
    fn abandon(self: Arc<Self>);
    /// `cancel`, from the thread draining the injector for a cancelling
    /// shutdown: that thread may hold a lock the pool's work takes, so it
    /// must not run work meant for a worker. A task that must still run (a
    /// polled future, a strand drain, a routed callback) is handed back,
    /// for the caller to queue again for the workers.
    fn cancel_from_drain(self: Arc<Self>) -> Option<Arc<dyn Runnable>> {
        self.cancel();
        None
    }
}

// Each method consumes the queue's reference and drops it guarded, so an
// async task can reuse it instead (as its waker, and to queue itself
// again: a wake allocates nothing).
impl<T, F, D> Runnable for Cell<T, Job<F, D>>
where
    T: Send + Sync,
    F: FnOnce() -> T + Send,
    D: Finish,
{
    fn run(self: Arc<Self>, tally: Tally<'_>) -> Ran {
        let ran = match self.core.try_start() {
            Start::Started => self.body.execute(&self.core, addr_of(&self.core), tally),
            Start::Cancelled => {
                // Whoever cancelled published it; the closure is ours.
                tally.finish(Ran::Cancelled);
                self.body.discard(false);
                Ran::Cancelled
            }
            Start::AlreadyStarted => {
                tally.finish(Ran::Claimed);
                Ran::Claimed
            }
        };
        drop_guarded(self);
        ran
    }

    fn cancel(self: Arc<Self>) {
        match self.core.cancel_now() {
            // Cancelled (now or before): nobody can start it, and the one
            // queue entry is ours, so dropping the closure here is exclusive.
            Cancel::Cancelled => self.body.discard(true),
            Cancel::AlreadyCancelled => self.body.discard(false),
            Cancel::Refused => {}
        }
        drop_guarded(self);
    }

    fn abandon(self: Arc<Self>) {
        match self.core.try_start() {
            Start::Started => {
                self.body.discard(false);
                let _ = self.core.set_with(TaskError::Abandoned, Err);
                self.body.done.event(false);
            }
            // Cancelled: the closure is still ours to drop.
            Start::Cancelled => self.body.discard(false),
            Start::AlreadyStarted => {}
        }
        drop_guarded(self);
    }
}

/// A queued task. Dropping it unrun resolves its future as abandoned.
pub(crate) struct TaskRef(ManuallyDrop<Arc<dyn Runnable>>);

impl TaskRef {
    /// Makes a task for `f` of the pool tagged `pool`: one allocation
    /// holding the closure and the future; returns the queue entry and the future's shared state.
    pub(crate) fn new<T, F>(f: F, pool: u16) -> (TaskRef, Arc<Shared<T>>)
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let cell = Arc::new(Cell {
            core: Core::of_pool(pool),
            body: Job {
                f: UnsafeCell::new(Some(f)),
                done: (),
            },
        });
        let runnable: Arc<dyn Runnable> = cell.clone();
        (TaskRef(ManuallyDrop::new(runnable)), cell)
    }

    /// Makes a task whose closure may borrow for `'a`: like
    /// [`TaskRef::new`], and `done` is told when the task is over.
    ///
    /// # Safety
    /// Nothing `f` or `done` borrows may end before `done` has seen both of
    /// the task's events (see [`Finish`]): a scope waits for that. After it,
    /// nothing reaches the closure (consumed) or `done` (its events are
    /// spent), so the references left (a queue entry, a handle) are safe to
    /// keep and drop at any time. The outcome is `'static`.
    pub(crate) unsafe fn scoped<'a, T, F, D>(f: F, done: D, pool: u16) -> (TaskRef, Arc<Shared<T>>)
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'a,
        D: Finish + 'a,
    {
        let cell = Arc::new(Cell {
            core: Core::of_pool(pool),
            body: Job {
                f: UnsafeCell::new(Some(f)),
                done,
            },
        });
        let runnable: Arc<dyn Runnable + 'a> = cell.clone();
        let shared: Arc<Cell<T, dyn Body<T> + 'a>> = cell;
        // SAFETY: the two casts change only the trait objects' lifetime
        // bound (same layout, same vtables); the contract above is what
        // makes the longer bound sound.
        let (runnable, shared) = unsafe {
            (
                std::mem::transmute::<Arc<dyn Runnable + 'a>, Arc<dyn Runnable>>(runnable),
                std::mem::transmute::<Arc<Cell<T, dyn Body<T> + 'a>>, Arc<Shared<T>>>(shared),
            )
        };
        (TaskRef(ManuallyDrop::new(runnable)), shared)
    }

    /// Makes a task nobody holds a handle to (fire and forget): no future,
    /// just the closure. With `essential`, the task runs even when shutdown
    /// cancels queued work or drops the queue (the crate's own strand drains
    /// and routed callbacks, which must never be lost).
    pub(crate) fn detached<F>(f: F, essential: bool) -> TaskRef
    where
        F: FnOnce() + Send + 'static,
    {
        let task: Arc<dyn Runnable> = Arc::new(Detached {
            f: UnsafeCell::new(Some(f)),
            essential,
        });
        TaskRef(ManuallyDrop::new(task))
    }

    /// Queues an existing task again (an async task, woken): no allocation.
    pub(crate) fn from_arc(task: Arc<dyn Runnable>) -> TaskRef {
        TaskRef(ManuallyDrop::new(task))
    }

    /// Runs it (or skips it if cancelled or claimed by a waiter), counting
    /// its end in `tally`.
    pub(crate) fn run(self, tally: Tally<'_>) -> Ran {
        self.into_arc().run(tally)
    }

    /// Cancels it instead of running it (an essential task runs instead).
    pub(crate) fn cancel(self) {
        self.into_arc().cancel();
    }

    /// Cancels it from shutdown's injector drain (see `Runnable`); a task
    /// that must still run on a worker comes back.
    pub(crate) fn cancel_from_drain(self) -> Option<TaskRef> {
        self.into_arc().cancel_from_drain().map(TaskRef::from_arc)
    }

    fn into_arc(self) -> Arc<dyn Runnable> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again.
        unsafe { ManuallyDrop::take(&mut this.0) }
    }
}

/// Drops a task's allocation. If this was the last reference, the task's
/// value is dropped here, on a worker: a panicking `Drop` must not unwind
/// the worker.
pub(crate) fn drop_guarded<R: ?Sized>(task: Arc<R>) {
    guard(PanicOrigin::Drop, move || drop(task));
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: in `drop`, the field is never used again.
        unsafe { ManuallyDrop::take(&mut self.0) }.abandon();
    }
}

/// A fire-and-forget task: only its closure, no future.
struct Detached<F> {
    f: UnsafeCell<Option<F>>,
    essential: bool,
}

// SAFETY: the closure is taken by the one owner of the single queue entry
// (there are no handles), and `F: Send` lets it move there.
unsafe impl<F: Send> Sync for Detached<F> {}

impl<F: FnOnce() + Send> Detached<F> {
    fn take(&self) -> Option<F> {
        // SAFETY: see the Sync impl: one queue entry, one consumer.
        self.f.with_mut(|p| unsafe { (*p).take() })
    }
}

impl<F: FnOnce() + Send + 'static> Runnable for Detached<F> {
    fn run(self: Arc<Self>, tally: Tally<'_>) -> Ran {
        let ran = match self.take() {
            Some(f) => match catch_unwind(AssertUnwindSafe(f)) {
                Ok(()) => Ran::Completed,
                Err(payload) => {
                    // Counted, not reported (`spawn`'s contract); the
                    // payload's own drop is guarded.
                    panic_message(payload);
                    Ran::Panicked
                }
            },
            None => Ran::Cancelled,
        };
        tally.finish(ran);
        drop_guarded(self);
        ran
    }

    fn cancel(self: Arc<Self>) {
        if self.essential {
            self.run(Tally::NONE);
            return;
        }
        if let Some(f) = self.take() {
            guard(PanicOrigin::Drop, move || drop(f));
        }
        drop_guarded(self);
    }

    fn cancel_from_drain(self: Arc<Self>) -> Option<Arc<dyn Runnable>> {
        if self.essential {
            return Some(self);
        }
        self.cancel();
        None
    }

    fn abandon(self: Arc<Self>) {
        self.cancel();
    }
}

/// A join's second half as the join deques carry it (`join.rs`): the
/// address of a job on the joiner's stack and the one function that runs
/// it. The deque hands each entry out once (to the joiner's pop or to one
/// thief), and that is the claim: no reference count, no allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobRef {
    data: *const (),
    call: unsafe fn(*const ()),
}

// SAFETY: the job behind `data` holds only `Send` values (`join`'s bounds),
// and is touched by the one thread the deque hands the entry to.
unsafe impl Send for JobRef {}

impl JobRef {
    /// # Safety
    /// `call(data)` is sound to run once, on any thread, until the job's
    /// owner sees it done.
    pub(crate) unsafe fn new(data: *const (), call: unsafe fn(*const ())) -> JobRef {
        JobRef { data, call }
    }

    /// Whether both name the same job (a live job's address is unique).
    pub(crate) fn is(self, other: JobRef) -> bool {
        std::ptr::eq(self.data, other.data)
    }

    /// Runs the job. Does not unwind (a job catches its closure's panic).
    ///
    /// # Safety
    /// The caller took this entry from a deque (so runs it once), and the
    /// job's owner is still waiting for it.
    pub(crate) unsafe fn execute(self) {
        // SAFETY: forwarded contract.
        unsafe { (self.call)(self.data) }
    }
}
