//! Scoped tasks: [`ThreadPool::scope`] and [`ThreadPool::install`]. Tasks
//! that borrow the caller's data.
//!
//! # Why a borrow cannot dangle
//! A scope counts its tasks (`ScopeState::pending`, one more for the body)
//! and does not return until the count is zero. A task leaves the count
//! only when it is *over*: its outcome (or cancellation) is published with
//! the done-callbacks that completion runs, and its closure is consumed
//! (run, or dropped unrun). Those two events can happen on two threads (a
//! handle's `cancel` publishes, and the worker that later pops the task
//! drops the closure), so each scoped task counts them (`ScopeToken`) and
//! the second one leaves the scope. After that nothing can reach the
//! closure or the scope: the closure slot is empty, no event is left, a
//! handle can no longer cancel, start or run it. What may outlive the
//! scope (a forgotten handle, a stale queue entry, a removed callback's
//! registration) holds no borrow: outcomes are `'static`.
//!
//! The scope waits on tasks, not on handles, so `mem::forget` of a handle
//! neither hangs the scope nor lets a task outlive it.

use std::any::Any;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::time::Duration;

use super::metrics::Tally;
use super::pool::{SubmitError, ThreadPool};
use super::submit::SubmitSlot;
use super::task::{Finish, OwnedRunnable, Ran, TaskRef};
use super::worker;
use crate::blocks::BlockBox;
use crate::error::TaskError;
use crate::future::blocking::{Held, held, run_lent};
use crate::future::{FutureHandle, Join, Registration, WaitAsync};
use crate::panics::{PanicOrigin, discard_payload, first_panic, guard};
use crate::sync::{AtomicU8, AtomicUsize, Lifetime, Ordering, Thread};

/// What a scope shares with its tasks. Lives on the stack of
/// [`ThreadPool::scope`]; tasks reach it through a pointer that the count
/// keeps valid.
pub(crate) struct ScopeState {
    /// Tasks not over yet, plus one while the scope body runs.
    pending: AtomicUsize,
    /// Set (to 1) by the thread that brings `pending` to zero once it no
    /// longer touches this state: the owner may free it then.
    released: AtomicU8,
    /// The thread that waits for the count.
    owner: Thread,
    /// What the owner holds while it waits: every task of the scope holds
    /// it too (a wait on one of those could never end).
    owner_held: Held,
    /// The first panic of a task that has no handle to carry it (`spawn`).
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// For the loom model: tasks touch the state until `released`, the
    /// owner frees it after (see [`Lifetime`]).
    life: Lifetime,
}

impl Drop for ScopeState {
    fn drop(&mut self) {
        self.life.end();
    }
}

impl ScopeState {
    pub(crate) fn new() -> Self {
        ScopeState {
            pending: AtomicUsize::new(1),
            released: AtomicU8::new(0),
            owner: crate::sync::current_thread(),
            owner_held: held(),
            panic: Mutex::new(None),
            life: Lifetime::new(),
        }
    }

    /// A task joins the scope. Only from inside the scope (the body, or a
    /// task of it), whose own count keeps `pending` above zero meanwhile.
    pub(crate) fn add(&self) {
        // Relaxed: as `Arc::clone`; the count cannot reach zero now.
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A task is over. The last one wakes the owner.
    ///
    /// A raw pointer, not `&self`: the owner may free the state as soon as
    /// `released` is stored, while this call is still running, and a
    /// reference argument must stay valid for the whole call (Miri flagged
    /// that). Only the atomics are borrowed, each up to its last use.
    ///
    /// # Safety
    /// `this` is alive: the caller's task is counted and not over yet.
    pub(crate) unsafe fn task_over(this: *const ScopeState) {
        // SAFETY: alive by contract.
        let pending = unsafe { &(*this).pending };
        // Release: everything the task did (its closure, its callbacks)
        // happens before the owner returns; pairs with its Acquire.
        if pending.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with the other tasks' Release decrements, so that
        // what they did reaches the owner through our Release store below
        // (the owner acquires `released`, not `pending`). A load, not a
        // fence, which ThreadSanitizer cannot see. Found by the loom model
        // below: without it the owner could read a task's writes unordered.
        pending.load(Ordering::Acquire);
        // The owner may be waiting: wake it. Clone its handle first: once
        // `released` is set the owner may free this state.
        // SAFETY: alive until the store below.
        let owner = unsafe {
            (*this).life.touch();
            (*this).owner.clone()
        };
        // SAFETY: as above.
        let released = unsafe { &(*this).released };
        // Release: our last touch of the state happens before the owner
        // frees it; pairs with the Acquire load in `wait`.
        released.store(1, Ordering::Release);
        crate::sync::unpark(&owner);
    }

    /// The body is over: leave the count, then wait until every task is.
    /// On a pool thread the pool keeps its capacity meanwhile.
    pub(crate) fn wait(&self) {
        // AcqRel: Acquire pairs with every task's Release decrement (a
        // release sequence on `pending`), so their effects are visible.
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            return;
        }
        crate::future::blocking::blocking(|| {
            // Acquire: pairs with the last task's Release store.
            while self.released.load(Ordering::Acquire) == 0 {
                crate::sync::park();
            }
        });
    }

    /// Keeps the first; a later one is dropped under a guard (its `Drop`
    /// may panic, which would unwind out of the worker before the task is
    /// counted over, and the scope would wait for good).
    fn record_panic(&self, payload: Box<dyn Any + Send>) {
        let later = {
            let mut first = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            match first.is_none() {
                true => {
                    *first = Some(payload);
                    None
                }
                false => Some(payload),
            }
        };
        if let Some(payload) = later {
            discard_payload(payload);
        }
    }

    fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A scoped task's part in the count: the task leaves the scope when both
/// of its events (see [`Finish`]) have happened.
pub(crate) struct ScopeToken {
    scope: *const ScopeState,
    /// Events still to come (2, then 1, then 0).
    left: AtomicU8,
}

impl ScopeToken {
    /// Joins `scope` (see [`ScopeState::add`]).
    pub(crate) fn new(scope: &ScopeState) -> Self {
        scope.add();
        ScopeToken {
            scope,
            left: AtomicU8::new(2),
        }
    }
}

// SAFETY: the pointer is only dereferenced by the last event, while the
// scope is alive (its count includes this task); the atomics are shared.
unsafe impl Send for ScopeToken {}
// SAFETY: as above.
unsafe impl Sync for ScopeToken {}

impl Finish for ScopeToken {
    const LENDS: bool = true;

    fn lender(&self) -> Held {
        // SAFETY: asked only while the task is not over (it is running), so
        // the scope waits and its state is alive.
        unsafe { (*self.scope).owner_held }
    }

    fn event(&self, both: bool) {
        // AcqRel: the first event's effects (a dropped closure, callbacks
        // run elsewhere) happen before the second's thread leaves the
        // scope; pairs with each other.
        if both || self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the task is not over until now, so the scope waits
            // and its state is alive.
            unsafe { ScopeState::task_over(self.scope) }
        }
    }
}

/// A scope of tasks that may borrow from outside it: see
/// [`ThreadPool::scope`].
///
/// `'scope` is the scope itself: tasks, handles and callbacks live at most
/// that long. `'env` is what they may borrow: anything that outlives the
/// scope.
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'env ThreadPool,
    state: ScopeState,
    /// Invariant in both lifetimes, as `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("pending", &self.state.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Schedules `f`, which may borrow anything that outlives the scope,
    /// and returns a handle to its result that cannot outlive the scope.
    /// After shutdown the closure is handed back in
    /// [`SubmitError::Shutdown`].
    ///
    /// ```
    /// use concurrent_futures::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let words = vec!["a", "bb", "ccc"];
    /// let total = pool.scope(|s| {
    ///     let handles: Vec<_> = words.iter().map(|w| s.submit(|| w.len()).unwrap()).collect();
    ///     handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    /// });
    /// assert_eq!(total, 6);
    /// ```
    pub fn submit<F, T>(&'scope self, f: F) -> Result<ScopedHandle<'scope, T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + Sync + 'static,
    {
        // Claim first, so that a refusal still has the closure.
        match SubmitSlot::claim(self.pool.registry()) {
            Some(slot) => Ok(self.push(slot, f)),
            None => Err(SubmitError::Shutdown(f)),
        }
    }

    fn push<F, T>(&'scope self, slot: SubmitSlot<'_>, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + Sync + 'static,
    {
        // SAFETY: `ThreadPool::scope` returns (ending `'scope`) only once
        // every task's token has seen both events.
        let token = ScopeToken::new(&self.state);
        let (task, shared) = unsafe { TaskRef::scoped(f, token, self.pool.registry().tag.0) };
        slot.push(task);
        ScopedHandle {
            inner: FutureHandle::from_shared(shared),
            _scope: PhantomData,
        }
    }

    /// Schedules `f` without a handle. The scope waits for it like any
    /// task; if it panics, [`ThreadPool::scope`] resumes the first such
    /// panic once every task is over (as `std::thread::scope` does).
    /// After shutdown the closure is handed back in
    /// [`SubmitError::Shutdown`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use concurrent_futures::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let hits = AtomicUsize::new(0);
    /// pool.scope(|s| {
    ///     for _ in 0..10 {
    ///         s.spawn(|| { hits.fetch_add(1, Ordering::Relaxed); }).unwrap();
    ///     }
    /// });
    /// assert_eq!(hits.into_inner(), 10);
    /// ```
    pub fn spawn<F>(&'scope self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'scope,
    {
        let Some(slot) = SubmitSlot::claim(self.pool.registry()) else {
            return Err(SubmitError::Shutdown(f));
        };
        // No future: just the closure and the scope's token, owned by the
        // one queue entry.
        let task = BlockBox::new(ScopedSpawn {
            f: Some(f),
            token: ScopeToken::new(&self.state),
        });
        // SAFETY: the scope outlives `'scope` only once the token has seen
        // the task over, and after that the entry holds no closure (see
        // `ScopedSpawn`).
        slot.push(unsafe { TaskRef::from_box_unchecked(task) });
        Ok(())
    }
}

/// A handle-less scoped task: the closure and the scope's token, no
/// future, owned by its one queue entry (a `BlockBox`). It is over in one step,
/// when that entry runs or drops it; its panic goes to the scope.
struct ScopedSpawn<F> {
    f: Option<F>,
    token: ScopeToken,
}

impl<F: FnOnce() + Send> OwnedRunnable for ScopedSpawn<F> {
    fn run(mut this: BlockBox<Self>, tally: Tally<'_>) -> Ran {
        let Some(f) = this.f.take() else {
            tally.finish(Ran::Cancelled);
            return Ran::Cancelled;
        };
        // The box stays allocated while the closure runs, so its address
        // names this task alone in the wait-for graph.
        let addr = std::ptr::from_ref::<Self>(&*this).addr();
        // SAFETY: the scope's owner waits until this task is over, which is
        // after the closure returns.
        let ran = match unsafe { run_lent(addr, this.token.lender(), true, f) } {
            Ok(()) => Ran::Completed,
            Err(payload) => {
                // SAFETY: the task is not over, so the scope is alive.
                unsafe { (*this.token.scope).record_panic(payload) };
                Ran::Panicked
            }
        };
        tally.finish(ran);
        this.token.event(true);
        ran
    }

    fn cancel(mut this: BlockBox<Self>) {
        if let Some(f) = this.f.take() {
            guard(PanicOrigin::Drop, move || drop(f));
            this.token.event(true);
        }
    }

    fn essential(&self) -> bool {
        false
    }
}

/// A handle to a scoped task's result: a [`FutureHandle`] that cannot
/// outlive its scope, and whose done-callbacks may borrow what the scope's
/// tasks may borrow.
///
/// ```
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let mut seen = Vec::new();
/// let input = [1, 2, 3];
/// pool.scope(|s| {
///     let h = s.submit(|| input.iter().sum::<i32>()).unwrap();
///     let seen = &mut seen;
///     h.add_done_callback(move |r| seen.push(*r.unwrap()));
///     assert_eq!(h.result(), Ok(&6));
/// });
/// assert_eq!(seen, [6]);
/// ```
pub struct ScopedHandle<'scope, T> {
    inner: FutureHandle<T>,
    /// Invariant: a handle cannot pose as one of a shorter scope, whose
    /// callbacks could then borrow what dies before the tasks are over.
    _scope: PhantomData<&'scope mut &'scope ()>,
}

impl<T> std::fmt::Debug for ScopedHandle<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedHandle")
            .field("done", &self.inner.done())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for ScopedHandle<'_, T> {
    fn clone(&self) -> Self {
        ScopedHandle {
            inner: self.inner.clone(),
            _scope: PhantomData,
        }
    }
}

impl<'scope, T> ScopedHandle<'scope, T> {
    /// [`FutureHandle::done`].
    pub fn done(&self) -> bool {
        self.inner.done()
    }

    /// [`FutureHandle::running`].
    pub fn running(&self) -> bool {
        self.inner.running()
    }

    /// [`FutureHandle::cancelled`].
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }

    /// [`FutureHandle::cancel`]: a task cancelled before it starts never
    /// runs. Its closure, which may borrow the scope's data, is dropped
    /// when a thread of the pool meets its queue entry, and the scope waits
    /// for that: a scope whose workers are all blocked on something its
    /// caller does only after the scope returns waits for good, cancelled
    /// tasks or not.
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }

    /// [`FutureHandle::wait`]: on a thread of the scope's pool, a task
    /// nobody started yet runs inline on the waiting thread.
    pub fn wait(&self) -> Result<(), TaskError> {
        self.inner.wait()
    }

    /// [`FutureHandle::wait_timeout`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), TaskError> {
        self.inner.wait_timeout(timeout)
    }

    /// [`FutureHandle::result`].
    pub fn result(&self) -> Result<&T, TaskError> {
        self.inner.result()
    }

    /// [`FutureHandle::result_timeout`].
    pub fn result_timeout(&self, timeout: Duration) -> Result<&T, TaskError> {
        self.inner.result_timeout(timeout)
    }

    /// [`FutureHandle::try_result`].
    pub fn try_result(&self) -> Option<Result<&T, TaskError>> {
        self.inner.try_result()
    }

    /// [`FutureHandle::add_done_callback`], for a closure that may borrow
    /// anything that outlives the scope: it runs (or, removed, is dropped)
    /// before the scope returns.
    pub fn add_done_callback<F>(&self, f: F) -> Registration<T>
    where
        F: FnOnce(Result<&T, &TaskError>) + Send + 'scope,
    {
        // SAFETY: the task is over, and so its callbacks have run or been
        // dropped, before the scope returns: they do not outlive `'scope`.
        unsafe { self.inner.add_done_callback_unbounded(f) }
    }

    /// [`FutureHandle::remove_done_callback`].
    pub fn remove_done_callback(&self, registration: Registration<T>) -> bool {
        self.inner.remove_done_callback(registration)
    }

    /// [`FutureHandle::wait_async`].
    pub fn wait_async(&self) -> WaitAsync<'_, T> {
        self.inner.wait_async()
    }

    /// [`FutureHandle::try_join`], giving back a scoped handle.
    pub fn try_join(self) -> Result<Result<T, TaskError>, Self> {
        self.inner.try_join().map_err(|inner| ScopedHandle {
            inner,
            _scope: PhantomData,
        })
    }

    /// [`FutureHandle::join`].
    pub fn join(self) -> Result<T, TaskError>
    where
        T: Clone,
    {
        self.inner.join()
    }
}

/// `.await` a scoped handle (inside the scope): [`FutureHandle`]'s
/// [`Join`], tied to the scope.
impl<'scope, T: Clone> IntoFuture for ScopedHandle<'scope, T> {
    type Output = Result<T, TaskError>;
    type IntoFuture = ScopedJoin<'scope, T>;

    fn into_future(self) -> ScopedJoin<'scope, T> {
        ScopedJoin {
            inner: self.inner.into_future(),
            _scope: PhantomData,
        }
    }
}

/// The future of `scoped_handle.await`: resolves to the task's outcome.
pub struct ScopedJoin<'scope, T> {
    inner: Join<T>,
    _scope: PhantomData<&'scope mut &'scope ()>,
}

impl<T> std::fmt::Debug for ScopedJoin<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedJoin").finish_non_exhaustive()
    }
}

impl<T: Clone> std::future::Future for ScopedJoin<'_, T> {
    type Output = Result<T, TaskError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.inner).poll(cx)
    }
}

/// Resumes the panic in `outcome`, or gives its value.
pub(crate) fn value_or_resume<R>(outcome: std::thread::Result<R>) -> R {
    outcome.unwrap_or_else(|payload| resume_unwind(payload))
}

impl ThreadPool {
    /// Runs `f` with a [`Scope`] whose tasks may borrow anything that
    /// outlives the call, and returns once every task submitted in it has
    /// finished, or been cancelled and had its closure dropped (Python's `with ThreadPoolExecutor() as
    /// ex:` over local data; `std::thread::scope` on the pool's threads).
    ///
    /// - Scopes nest, and can be entered from outside the pool or from
    ///   inside a task. Waiting at the end keeps the pool's capacity the
    ///   way other waits do: on a worker, another worker is woken or a
    ///   compensating one started while this one waits.
    /// - The scope's tasks hold what its caller holds: a wait in one of them
    ///   on the task that opened the scope is refused with
    ///   [`TaskError::WouldDeadlock`],
    ///   whichever thread runs it.
    /// - A panic in a task with a handle is carried to its handle, as for
    ///   [`submit`](ThreadPool::submit). A panic in `f` itself, or else the
    ///   first panic of a handle-less [`spawn`](Scope::spawn)ed task, is
    ///   resumed once every task is over.
    /// - The scope waits on tasks, not handles: forgetting a handle neither
    ///   hangs it nor lets a task outlive it.
    /// - After [`shutdown`](ThreadPool::shutdown), submits in a scope hand
    ///   their closure back ([`SubmitError::Shutdown`]); tasks queued
    ///   before a cancelling shutdown resolve as cancelled.
    ///
    /// Task outcomes must be `'static` (they may be kept by a handle or a
    /// queue entry after the scope ends); closures and done-callbacks may
    /// borrow.
    ///
    /// ```
    /// use concurrent_futures::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let mut data = vec![1u64, 2, 3, 4];
    /// let (left, right) = data.split_at_mut(2);
    /// pool.scope(|s| {
    ///     s.spawn(|| left.iter_mut().for_each(|x| *x *= 10)).unwrap();
    ///     s.spawn(|| right.iter_mut().for_each(|x| *x += 1)).unwrap();
    /// });
    /// assert_eq!(data, [10, 20, 4, 5]);
    /// ```
    pub fn scope<'env, F, R>(&'env self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            pool: self,
            state: ScopeState::new(),
            scope: PhantomData,
            env: PhantomData,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&scope)));
        scope.state.wait();
        // `f`'s panic first, else a task's.
        let tasks = scope.state.take_panic().map_or(Ok(()), Err);
        first_panic(outcome, tasks).0
    }

    /// Runs `f` on one of the pool's workers and returns its result; the
    /// caller blocks meanwhile (rayon's `install`). From a worker of this
    /// pool, `f` runs right here; from anywhere else (a worker of another
    /// pool included) on a worker of this one, so `f` sees this pool's
    /// thread-locals and counts against its size. `f` may borrow. A panic
    /// in `f` is resumed on the caller. After shutdown `f` runs on the
    /// calling thread, and so it does where a cancelling shutdown cancels
    /// it before a worker took it.
    ///
    /// `f` holds what its caller holds: inside `f`, a wait on the task that
    /// called `install` is refused with
    /// [`TaskError::WouldDeadlock`], as it
    /// is for a scope's tasks and a `join`'s halves.
    ///
    /// ```
    /// use concurrent_futures::ThreadPool;
    ///
    /// let pool = ThreadPool::new(1).unwrap();
    /// let name = String::from("worker");
    /// let ran_on = pool.install(|| format!("{name} {:?}", std::thread::current().name()));
    /// assert!(ran_on.starts_with("worker Some("));
    /// ```
    pub fn install<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        if worker::is_worker_of(self.registry()) {
            return f();
        }
        // `f` stays here until the task takes it: a cancelling shutdown may
        // cancel the task while it is queued, and `f` then runs here, as
        // after shutdown.
        let (mut f, mut out) = (Some(f), None);
        self.scope(|s| {
            let (f, slot) = (&mut f, &mut out);
            let task = move || *slot = f.take().map(|f| catch_unwind(AssertUnwindSafe(f)));
            match s.submit(task) {
                // Off the pool a wait never runs the task inline.
                Ok(handle) => drop(handle.wait()),
                Err(refused) => refused.into_inner()(),
            }
        });
        if let Some(f) = f {
            out = Some(catch_unwind(AssertUnwindSafe(f)));
        }
        value_or_resume(out.unwrap_or_else(|| unreachable!("f ran or was left here")))
    }
}

#[cfg(all(test, loom))]
mod model {
    use std::sync::Arc;

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;

    use super::{ScopeState, ScopeToken};
    use crate::executor::task::Finish;
    use crate::sync::{Ordering, join_all_when_finished};

    /// The scope's count against its last task finishing. Two tasks: one
    /// over in one step (ran on a worker), one over in two events on two
    /// threads (cancelled by a handle on one, its closure dropped by the
    /// queue's holder on another). Each writes a cell before its events;
    /// the owner reads both after `wait` (loom flags a read that is not
    /// ordered after the write) and then frees the state (its `Lifetime`),
    /// which a task's touch not ordered before `released` races with. Fails
    /// if the last task's `released` store or the owner's load of it is
    /// Relaxed, or without the last decrement's Acquire load.
    #[test]
    fn the_scope_returns_after_its_last_task_and_never_before() {
        loom::model(|| {
            let state = Box::new(ScopeState::new());
            let cells = Box::new([UnsafeCell::new(0u8), UnsafeCell::new(0u8)]);
            let tokens = Box::new([ScopeToken::new(&state), ScopeToken::new(&state)]);
            struct Shared(*const [UnsafeCell<u8>; 2], *const [ScopeToken; 2]);
            // SAFETY: the model's threads touch disjoint cells and tokens'
            // atomics; the owner reads only after the scope's wait.
            unsafe impl Send for Shared {}
            let shared = || Shared(&*cells, &*tokens);
            // Task 0 is over in one step (ran on a worker); task 1 is
            // cancelled by a handle on another thread (its first event).
            let threads: Vec<_> = [(0, true), (1, false)]
                .into_iter()
                .map(|(i, both)| {
                    let s = shared();
                    let finished = Arc::new(AtomicBool::new(false));
                    let f = finished.clone();
                    let t = loom::thread::spawn(move || {
                        let s = s;
                        // SAFETY: alive until the owner's wait returns.
                        let (cells, tokens) = unsafe { (&*s.0, &*s.1) };
                        cells[i].with_mut(|p| unsafe { *p = 1 });
                        tokens[i].event(both);
                        f.store(true, Ordering::Release);
                    });
                    (finished, t)
                })
                .collect();
            // The queue's holder drops the cancelled closure, here.
            tokens[1].event(false);
            state.wait();
            // SAFETY: both tasks are over: their writes happen before.
            let sum: u8 = cells.iter().map(|c| c.with(|p| unsafe { *p })).sum();
            assert_eq!(sum, 2);
            drop(state);
            join_all_when_finished(threads);
        });
    }
}
