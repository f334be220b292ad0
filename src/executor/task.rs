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
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use super::metrics::Tally;
use crate::blocks::BlockBox;
use crate::error::TaskError;
use crate::future::blocking::{Claim, Held, run_lent, wait_for_task};
use crate::future::core::{Body, Cell, Core, Shared};
use crate::future::state::{Cancel, Start};
use crate::panics::{PanicOrigin, guard, panic_message};
use crate::sync::{Ordering, UnsafeCell};

/// What a task reports when it is over, to whoever must know (a scope
/// waiting for its tasks; nothing for a plain task). A task is over when
/// two events have both happened, in either order and possibly on two
/// threads: its outcome (or cancellation) is published, with the callbacks
/// that completion runs; and its closure is consumed (run or dropped).
pub(crate) trait Finish: Send + Sync {
    /// Whether a thread waits for the task to be over, lending it what it
    /// holds ([`Finish::lender`]): known per type, so a plain task's
    /// completion has no branch for it.
    const LENDS: bool = false;

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
///
/// The closure is not an `Option`: whether it was taken is marked in the
/// core's spare byte ([`Core::body_mark`]), which keeps a task with a
/// closure of no niche (one capturing nothing, or an integer) 8 bytes
/// smaller. The cell never drops it: every way a queue entry is consumed
/// takes it (run, cancelled, abandoned), and a take it made is the only
/// one, since one thread owns the closure at a time (the `Sync` impl).
pub(crate) struct Job<F, D = ()> {
    f: UnsafeCell<ManuallyDrop<F>>,
    done: D,
}

/// The `body_mark` of a task whose closure was taken.
const TAKEN: u8 = 1;

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
    fn new(f: F, done: D) -> Self {
        Job {
            f: UnsafeCell::new(ManuallyDrop::new(f)),
            done,
        }
    }

    /// Takes the closure, or `None` if it was taken. Only by the winner of
    /// the start claim or the holder of the queue entry once nobody can
    /// start it (see the Sync impl), with the task's own `core`.
    fn take<T>(&self, core: &Core<T>) -> Option<F> {
        let mark = core.body_mark();
        // Relaxed: one thread ever takes a given closure (the start
        // claim's winner, or, when nobody can start it, the queue entry's
        // holder), so no other thread touches the mark; what the closure
        // and the mark were made with reaches that thread through the queue
        // push or the handle hand-off (loom:
        // `the_closure_is_taken_once_by_its_owner`).
        if mark.load(Ordering::Relaxed) == TAKEN {
            return None;
        }
        mark.store(TAKEN, Ordering::Relaxed);
        // SAFETY: this thread owns the closure (see above), so no other
        // thread touches the cell; the mark says it is still there, and now
        // says it is not, so it is moved out once.
        Some(self.f.with_mut(|p| unsafe { ManuallyDrop::take(&mut *p) }))
    }

    /// Runs the closure and stores its outcome. The caller won the start.
    fn execute<T>(&self, core: &Core<T>, addr: usize, tally: Tally<'_>) -> Ran
    where
        F: FnOnce() -> T,
    {
        let Some(f) = self.take(core) else {
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
        if !D::LENDS {
            core.set_started(outcome);
        } else {
            let lender = self.done.lender();
            // The callbacks the completion runs are waited for too (the
            // event comes after them): they hold what the waiter holds, so
            // a wait or a shutdown in one that would close a cycle through
            // it is refused, as in the task. A frame naming no task.
            // SAFETY: the lender waits until the event below, after this.
            let _ = unsafe { run_lent(0, lender, false, || core.set_started(outcome)) };
        }
        self.done.event(true);
        ran
    }

    /// Drops the closure of a task nobody will run, catching a panicking
    /// drop. Only by the queue entry's holder, once nobody can start it.
    /// `published`: this thread also published the cancellation.
    fn discard<T>(&self, core: &Core<T>, published: bool) {
        if let Some(f) = self.take(core) {
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
        let claim = |claim| match claim {
            Claim::Run => {
                core.try_start() == Start::Started && {
                    // Counted when a worker pops the stale entry (`Claimed`).
                    self.execute(core, addr_of(core), Tally::NONE);
                    true
                }
            }
            // As a handle's cancel: the queue entry's holder drops the
            // closure when it meets the task.
            Claim::Cancel => core.cancel_for(self),
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

/// What a reference-counted task does when its queue entry is taken (the
/// entry holds one reference: [`TaskRef::from_arc`]).
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
    fn cancel_from_drain(self: Arc<Self>) -> Option<Arc<Self>> {
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
                self.body.discard(&self.core, false);
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
            Cancel::Cancelled => self.body.discard(&self.core, true),
            Cancel::AlreadyCancelled => self.body.discard(&self.core, false),
            Cancel::Refused => {}
        }
        drop_guarded(self);
    }

    fn abandon(self: Arc<Self>) {
        match self.core.try_start() {
            Start::Started => {
                self.body.discard(&self.core, false);
                let _ = self.core.set_with(TaskError::Abandoned, Err);
                self.body.done.event(false);
            }
            // Cancelled: the closure is still ours to drop.
            Start::Cancelled => self.body.discard(&self.core, false),
            Start::AlreadyStarted => {}
        }
        drop_guarded(self);
    }
}

/// A queued task. Dropping it unrun resolves its future as abandoned.
///
/// The address of the task's allocation and a table of the functions that
/// consume it, made for its type and for how it is owned (rayon's `JobRef`
/// and tokio's raw task do the same): 16 bytes, as `Arc<dyn Runnable>`
/// was, and a task only its queue entry owns (fire and forget) can be a
/// [`BlockBox`], with no reference count to take and drop. An `Arc`'s last
/// drop costs two locked read-modify-writes (strong, then weak count), paid
/// per spawned task for nothing: nobody else ever held a reference. And a
/// block, unlike `malloc`'s memory, is cheap to free on another thread
/// than the one that made it, as a stolen task or one spawned from outside
/// is (`blocks.rs`).
pub(crate) struct TaskRef {
    ptr: NonNull<()>,
    vtable: &'static VTable,
}

// SAFETY: every constructor takes a task that may move to another thread
// (`Runnable: Send + Sync` behind an `Arc`, `OwnedRunnable: Send` in a
// `BlockBox`), and the entry is the only way to reach the pointer it holds.
unsafe impl Send for TaskRef {}

/// How to consume a [`TaskRef`]'s pointer. Each function takes the entry's
/// ownership (one `Arc` reference, or the `BlockBox`) and must be called at most
/// once per entry.
struct VTable {
    run: unsafe fn(NonNull<()>, Tally<'_>) -> Ran,
    cancel: unsafe fn(NonNull<()>),
    cancel_from_drain: unsafe fn(NonNull<()>) -> Option<TaskRef>,
    abandon: unsafe fn(NonNull<()>),
}

/// The table for an `Arc<R>` entry.
fn arc_vtable<R: Runnable>() -> &'static VTable {
    /// # Safety (each)
    /// `ptr` is an `Arc<R>` reference given up by `Arc::into_raw` in
    /// [`TaskRef::from_arc_unchecked`], taken back once.
    unsafe fn run<R: Runnable>(ptr: NonNull<()>, tally: Tally<'_>) -> Ran {
        // SAFETY: see above.
        unsafe { Arc::from_raw(ptr.as_ptr().cast::<R>()) }.run(tally)
    }
    unsafe fn cancel<R: Runnable>(ptr: NonNull<()>) {
        // SAFETY: see above.
        unsafe { Arc::from_raw(ptr.as_ptr().cast::<R>()) }.cancel()
    }
    unsafe fn cancel_from_drain<R: Runnable>(ptr: NonNull<()>) -> Option<TaskRef> {
        // SAFETY: see above.
        let task = unsafe { Arc::from_raw(ptr.as_ptr().cast::<R>()) };
        // SAFETY: the same task, queued again under the contract it was
        // first queued with (whatever it borrows outlives every entry).
        task.cancel_from_drain()
            .map(|again| unsafe { TaskRef::from_arc_unchecked(again) })
    }
    unsafe fn abandon<R: Runnable>(ptr: NonNull<()>) {
        // SAFETY: see above.
        unsafe { Arc::from_raw(ptr.as_ptr().cast::<R>()) }.abandon()
    }
    &VTable {
        run: run::<R>,
        cancel: cancel::<R>,
        cancel_from_drain: cancel_from_drain::<R>,
        abandon: abandon::<R>,
    }
}

/// The table for a [`BlockBox<R>`] entry.
fn box_vtable<R: OwnedRunnable>() -> &'static VTable {
    /// # Safety (each)
    /// `ptr` is a `BlockBox<R>` given up by `BlockBox::into_raw` in
    /// [`TaskRef::from_box_unchecked`], taken back once.
    unsafe fn take<R>(ptr: NonNull<()>) -> BlockBox<R> {
        // SAFETY: see above.
        unsafe { BlockBox::from_raw(ptr) }
    }
    unsafe fn run<R: OwnedRunnable>(ptr: NonNull<()>, tally: Tally<'_>) -> Ran {
        // SAFETY: forwarded.
        R::run(unsafe { take::<R>(ptr) }, tally)
    }
    unsafe fn cancel<R: OwnedRunnable>(ptr: NonNull<()>) {
        // SAFETY: forwarded.
        R::cancel(unsafe { take::<R>(ptr) })
    }
    unsafe fn cancel_from_drain<R: OwnedRunnable>(ptr: NonNull<()>) -> Option<TaskRef> {
        // SAFETY: forwarded.
        let task = unsafe { take::<R>(ptr) };
        if task.essential() {
            // SAFETY: the same task, queued again under the contract it was
            // first queued with.
            return Some(unsafe { TaskRef::from_box_unchecked(task) });
        }
        R::cancel(task);
        None
    }
    &VTable {
        run: run::<R>,
        cancel: cancel::<R>,
        cancel_from_drain: cancel_from_drain::<R>,
        // Nothing waits on an owned task: dropped unrun, it is cancelled.
        abandon: cancel::<R>,
    }
}

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
            body: Job::new(f, ()),
        });
        (TaskRef::from_arc(cell.clone()), cell)
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
            body: Job::new(f, done),
        });
        // SAFETY: the contract above is the entry's.
        let entry = unsafe { TaskRef::from_arc_unchecked(cell.clone()) };
        let shared: Arc<Cell<T, dyn Body<T> + 'a>> = cell;
        // SAFETY: the cast changes only the trait object's lifetime bound
        // (same layout, same vtable); the contract above is what makes the
        // longer bound sound.
        let shared = unsafe {
            std::mem::transmute::<Arc<Cell<T, dyn Body<T> + 'a>>, Arc<Shared<T>>>(shared)
        };
        (entry, shared)
    }

    /// Makes a task nobody holds a handle to (fire and forget): no future,
    /// just the closure. With `essential`, the task runs even when shutdown
    /// cancels queued work or drops the queue (the crate's own strand drains
    /// and routed callbacks, which must never be lost).
    pub(crate) fn detached<F>(f: F, essential: bool) -> TaskRef
    where
        F: FnOnce() + Send + 'static,
    {
        TaskRef::from_box(BlockBox::new(Detached { f, essential }))
    }

    /// Queues a reference-counted task (an async task, woken, queues itself
    /// again this way: no allocation).
    pub(crate) fn from_arc<R: Runnable + 'static>(task: Arc<R>) -> TaskRef {
        // SAFETY: `'static`: the task borrows nothing.
        unsafe { TaskRef::from_arc_unchecked(task) }
    }

    /// [`TaskRef::from_arc`] for a task that may borrow.
    ///
    /// # Safety
    /// Whatever `R` borrows outlives every use of the entry: the entry's
    /// consumer runs or drops the task while it is still valid (a scope
    /// waits for its tasks; see [`TaskRef::scoped`]).
    pub(crate) unsafe fn from_arc_unchecked<R: Runnable>(task: Arc<R>) -> TaskRef {
        let ptr = Arc::into_raw(task).cast_mut().cast::<()>();
        TaskRef {
            // SAFETY: `Arc::into_raw` never gives null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            vtable: arc_vtable::<R>(),
        }
    }

    fn from_box<R: OwnedRunnable + 'static>(task: BlockBox<R>) -> TaskRef {
        // SAFETY: `'static`: the task borrows nothing.
        unsafe { TaskRef::from_box_unchecked(task) }
    }

    /// [`TaskRef::from_box`] for a task that may borrow.
    ///
    /// # Safety
    /// As for [`TaskRef::from_arc_unchecked`].
    pub(crate) unsafe fn from_box_unchecked<R: OwnedRunnable>(task: BlockBox<R>) -> TaskRef {
        TaskRef {
            ptr: BlockBox::into_raw(task),
            vtable: box_vtable::<R>(),
        }
    }

    /// Runs it (or skips it if cancelled or claimed by a waiter), counting
    /// its end in `tally`.
    pub(crate) fn run(self, tally: Tally<'_>) -> Ran {
        let (ptr, vtable) = self.into_raw();
        // SAFETY: the entry's one consuming call.
        unsafe { (vtable.run)(ptr, tally) }
    }

    /// Cancels it instead of running it (an essential task runs instead).
    pub(crate) fn cancel(self) {
        let (ptr, vtable) = self.into_raw();
        // SAFETY: the entry's one consuming call.
        unsafe { (vtable.cancel)(ptr) }
    }

    /// Cancels it from shutdown's injector drain (see `Runnable`); a task
    /// that must still run on a worker comes back.
    pub(crate) fn cancel_from_drain(self) -> Option<TaskRef> {
        let (ptr, vtable) = self.into_raw();
        // SAFETY: the entry's one consuming call.
        unsafe { (vtable.cancel_from_drain)(ptr) }
    }

    /// The pointer and its table, the entry forgotten (its one consuming
    /// call is the caller's to make).
    fn into_raw(self) -> (NonNull<()>, &'static VTable) {
        let this = ManuallyDrop::new(self);
        (this.ptr, this.vtable)
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
        // SAFETY: the entry's one consuming call: it is never used again.
        unsafe { (self.vtable.abandon)(self.ptr) }
    }
}

/// What a task only its queue entry owns does when the entry is taken.
pub(crate) trait OwnedRunnable: Send + Sized {
    /// Runs the task, telling `tally` how it ended.
    fn run(this: BlockBox<Self>, tally: Tally<'_>) -> Ran;
    /// Drops the closure unrun, guarded; an essential task runs instead.
    fn cancel(this: BlockBox<Self>);
    /// Whether it must run even when shutdown cancels queued work.
    fn essential(&self) -> bool;
}

/// A fire-and-forget task: only its closure, no future.
struct Detached<F> {
    f: F,
    essential: bool,
}

impl<F: FnOnce() + Send> OwnedRunnable for Detached<F> {
    fn run(this: BlockBox<Self>, tally: Tally<'_>) -> Ran {
        // Out of the box first: its memory is free again before the
        // closure runs (a task spawning its successor reuses it).
        let Detached { f, .. } = BlockBox::into_inner(this);
        let ran = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => Ran::Completed,
            Err(payload) => {
                // Counted, not reported (`spawn`'s contract); the payload's
                // own drop is guarded.
                panic_message(payload);
                Ran::Panicked
            }
        };
        tally.finish(ran);
        ran
    }

    fn cancel(this: BlockBox<Self>) {
        if this.essential {
            Self::run(this, Tally::NONE);
            return;
        }
        let Detached { f, .. } = BlockBox::into_inner(this);
        guard(PanicOrigin::Drop, move || drop(f));
    }

    fn essential(&self) -> bool {
        self.essential
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

#[cfg(all(test, not(loom), target_pointer_width = "64"))]
mod tests {
    use super::Job;
    use crate::future::core::{Cell, Core};
    use std::mem::size_of_val;

    fn cell<F: FnOnce() -> u8>(f: F) -> Cell<u8, Job<F>> {
        Cell {
            core: Core::new(),
            body: Job::new(f, ()),
        }
    }

    /// A task's closure costs its own size and nothing more: the mark that
    /// it was taken lives in the core's padding. (An `Option` flag after
    /// the core cost 8 bytes for every closure without a niche, and was
    /// what kept a pending task over 128 bytes.)
    #[test]
    fn a_closure_adds_only_its_own_size_to_the_task() {
        let core = size_of::<Core<u8>>();
        assert_eq!(core, 64);
        assert_eq!(size_of_val(&cell(|| 1)), core);
        let word = 7u64;
        assert_eq!(size_of_val(&cell(move || word as u8)), core + 8);
        let pair = (1u64, 2u32);
        assert_eq!(
            size_of_val(&cell(move || (pair.0 + pair.1 as u64) as u8)),
            core + 16
        );
    }

    /// The closure is dropped once, by the take, and a second take finds
    /// nothing (the mark), so a cell dropped afterwards drops nothing more.
    #[test]
    fn the_closure_is_taken_and_dropped_once() {
        use std::rc::Rc;
        let token = Rc::new(());
        let held = token.clone();
        let c = cell(move || {
            let _ = &held;
            1
        });
        assert_eq!(Rc::strong_count(&token), 2);
        let f = c.body.take(&c.core).expect("the closure is there");
        assert!(c.body.take(&c.core).is_none());
        drop(f);
        assert_eq!(Rc::strong_count(&token), 1);
        drop(c);
        assert_eq!(Rc::strong_count(&token), 1);
    }
}

#[cfg(all(test, loom))]
mod model {
    use std::sync::Arc;
    // Plain std atomics for the probe: no loom switch point inside the
    // closure, whose run is bookkept in a thread-local (`run_lent`).
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Job, TaskRef, addr_of};
    use crate::executor::metrics::Tally;
    use crate::future::core::{Body, Cell, Core};
    use crate::future::state::{Cancel, Start};

    /// Counts its own drop.
    struct Probe(Arc<AtomicUsize>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A pool task's closure is moved out once, by its owner of the moment,
    /// with all three threads that can reach it racing: the queue entry's
    /// holder running it, a waiter claiming it inline (as `Job::wait` does)
    /// and a handle cancelling it. The closure's cell is loom's, so a take
    /// not ordered after the claim that made its thread the owner is a
    /// flagged race; the counts say the closure ran at most once, exactly
    /// when somebody won the start, and its captures were dropped exactly
    /// once. Fails if the holder takes the closure of a task another thread
    /// started (`run`'s `AlreadyStarted` arm discarding it: a flagged
    /// race), or if it leaves a cancelled task's closure behind (the
    /// `Cancelled` arm not discarding it: never dropped).
    #[test]
    fn the_closure_is_taken_once_by_its_owner() {
        loom::model(|| {
            let (runs, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let probe = Probe(drops.clone());
            let counter = runs.clone();
            let cell = Arc::new(Cell {
                core: Core::<u8>::of_pool(0),
                body: Job::new(
                    move || {
                        let _probe = probe;
                        counter.fetch_add(1, Ordering::Relaxed);
                        7u8
                    },
                    (),
                ),
            });
            let entry = TaskRef::from_arc(cell.clone());
            let holder = loom::thread::spawn(move || {
                entry.run(Tally::NONE);
            });
            let handle = {
                let cell = cell.clone();
                loom::thread::spawn(move || {
                    let won = cell.core.cancel_now() == Cancel::Cancelled;
                    if won {
                        Body::<u8>::cancelled(&cell.body);
                    }
                    won
                })
            };
            // The inline claimant.
            let claimed = cell.core.try_start() == Start::Started;
            if claimed {
                cell.body
                    .execute(&cell.core, addr_of(&cell.core), Tally::NONE);
            }
            holder.join().unwrap();
            let cancelled = handle.join().unwrap();
            let ran = runs.load(Ordering::Relaxed);
            assert!(ran <= 1, "the closure ran {ran} times");
            assert_eq!(
                ran == 1,
                !cancelled,
                "it ran exactly when nobody cancelled it"
            );
            assert!(!(claimed && cancelled), "claimed and cancelled both");
            assert_eq!(
                drops.load(Ordering::Relaxed),
                1,
                "its captures dropped once"
            );
        });
    }
}
