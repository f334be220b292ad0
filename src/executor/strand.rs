//! [`Strand`]: a serial context on the pool that owns a state.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crossbeam_deque::Injector;

use super::pool::{ThreadPool, spawn_on};
use super::registry::Registry;
use super::schedule::Schedule;
use crate::error::TaskError;
use crate::future::{FutureHandle, Promise};
use crate::panics::{PanicOrigin, guard, panic_message};
use crate::sync::UnsafeCell;

/// Jobs a drain runs before it yields its worker to other tasks.
const BUDGET: usize = 128;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

struct Inner<S> {
    registry: Arc<Registry>,
    queue: Injector<Job<S>>,
    schedule: Schedule,
    /// Only touched by the drainer that owns the scheduled flag.
    state: UnsafeCell<S>,
}

// SAFETY: `state` is only accessed by the one drainer that owns the
// scheduled flag (see `schedule.rs`), and the flag's AcqRel swaps order one
// drain's accesses before the next; `S: Send` lets the state move between
// the threads that drain it (workers, and dispatching threads).
unsafe impl<S: Send> Sync for Inner<S> {}

/// A serial context on a [`ThreadPool`]: closures posted to it run one at a
/// time, in post order, on pool workers, with no lock (a lock-free queue and
/// a scheduled flag). It owns a state `S` that each closure gets as `&mut S`.
/// A closure [`dispatch`](Self::dispatch)ed to an idle strand runs on the
/// dispatching thread instead, in the same order, and that thread also runs
/// whatever is queued behind it meanwhile, posted closures included: a
/// closure that depends on running on the pool (its thread-locals, the
/// ambient [`spawn`](crate::spawn), the pool's panic hook) must not share a
/// strand with dispatches.
///
/// This answers "can my done-callbacks update shared totals safely?": route
/// them to a strand with [`Strand::add_done_callback`] and they mutate the
/// state without a `Mutex`.
///
/// A panicking closure is caught and reported through the callback-panic
/// hook ([`set_callback_panic_hook`](crate::set_callback_panic_hook)); the
/// next closures still run. If the pool is shut down, a post runs the
/// queued closures on the posting thread instead (they are never lost),
/// so what depends on the thread sees that one: an ambient
/// [`spawn`](crate::spawn) there goes to the poster's pool, if it is a
/// pool thread, or is refused off a pool.
///
/// ```
/// use concurrent_futures::{Strand, ThreadPool};
///
/// let pool = ThreadPool::new(2).unwrap();
/// let strand = Strand::new(&pool, Vec::new());
/// for i in 0..5 {
///     strand.post(move |log: &mut Vec<i32>| log.push(i));
/// }
/// assert_eq!(strand.submit(|log| log.clone()).join(), Ok(vec![0, 1, 2, 3, 4]));
/// ```
pub struct Strand<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Strand<S> {
    fn clone(&self) -> Self {
        Strand {
            inner: self.inner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Strand<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strand").finish_non_exhaustive()
    }
}

impl<S: Send + 'static> Strand<S> {
    /// A strand on `pool` owning `state`.
    ///
    /// ```
    /// use concurrent_futures::{Strand, ThreadPool};
    /// let pool = ThreadPool::new(2).unwrap();
    /// let names = Strand::new(&pool, Vec::<String>::new());
    /// names.post(|v| v.push("first".into()));
    /// assert_eq!(names.submit(|v| v.len()).join(), Ok(1));
    /// ```
    pub fn new(pool: &ThreadPool, state: S) -> Self {
        Strand {
            inner: Arc::new(Inner {
                registry: pool.registry().clone(),
                queue: Injector::new(),
                schedule: Schedule::default(),
                state: UnsafeCell::new(state),
            }),
        }
    }

    /// Queues `f` to run after every closure posted before it.
    ///
    /// ```
    /// use concurrent_futures::{Strand, ThreadPool};
    /// let pool = ThreadPool::new(2).unwrap();
    /// let total = Strand::new(&pool, 0u64);
    /// for i in 1..=100 {
    ///     total.post(move |t| *t += i);
    /// }
    /// assert_eq!(total.submit(|t| *t).join(), Ok(5050));
    /// ```
    pub fn post(&self, f: impl FnOnce(&mut S) + Send + 'static) {
        self.post_job(Box::new(f));
    }

    fn post_job(&self, job: Job<S>) {
        self.inner.queue.push(job);
        if self.inner.schedule.claim_after_push() {
            schedule_drain(self.inner.clone());
        }
    }

    /// Runs `f` on this thread now if the strand is idle, else queues it
    /// behind the closures already posted, for the drain under way.
    ///
    /// Where the strand was idle, this thread drains it: it runs `f`, then
    /// whatever other threads post meanwhile, and returns once the queue is
    /// empty. It never hands the drain to the pool, so where every closure
    /// of a strand is dispatched, none needs a free worker: each runs here
    /// or on the thread already draining. That is what a done-callback that
    /// a busy worker waits on needs (see
    /// [`dispatch_done_callback`](Self::dispatch_done_callback)). A
    /// [`post`](Self::post)ed closure waits for a worker, and so does a
    /// closure dispatched while a posted one's drain is still queued on the
    /// pool (it queues behind it).
    ///
    /// Order and exclusion are those of `post`: closures run one at a time,
    /// in the order they were queued, whichever thread runs them. A closure
    /// that dispatches to its own strand queues its closure behind itself.
    /// A dispatched closure runs on whichever thread drains, so what it
    /// calls that depends on the thread (the ambient
    /// [`spawn`](crate::spawn), thread-locals) sees that thread, not the
    /// strand's pool. The dispatching thread may run other threads'
    /// closures before it returns, for as long as they keep coming: don't
    /// dispatch holding a lock the strand's closures take. They run on top
    /// of what the dispatcher is running (a pool task, say) and hold it: a
    /// wait in one of them on the dispatching task is refused with
    /// [`TaskError::WouldDeadlock`].
    /// A panicking closure is reported as a posted one is, and the drain
    /// goes on.
    ///
    /// ```
    /// use concurrent_futures::{Strand, ThreadPool};
    /// let pool = ThreadPool::new(1).unwrap();
    /// let log = Strand::new(&pool, Vec::new());
    /// let here = std::thread::current().id();
    /// // The strand is idle: the closure runs before `dispatch` returns.
    /// log.dispatch(move |v| v.push(std::thread::current().id() == here));
    /// assert_eq!(log.submit(|v| v.clone()).join(), Ok(vec![true]));
    /// ```
    pub fn dispatch(&self, f: impl FnOnce(&mut S) + Send + 'static) {
        self.dispatch_job(Box::new(f));
    }

    fn dispatch_job(&self, job: Job<S>) {
        self.inner.queue.push(job);
        if self.inner.schedule.claim_after_push() {
            drain_jobs(&self.inner, Drainer::Caller);
        }
    }

    /// Queues `f` and returns a handle to its result. A panic in `f` is
    /// the handle's outcome, [`TaskError::Panicked`]
    /// with its message, as for a pool's [`submit`](ThreadPool::submit),
    /// and is not reported to the callback-panic hook (a [`post`](Self::post)ed
    /// closure's is: nobody else would see it). The handle is a
    /// [`Promise`]'s: a wait on it is not in the wait-for
    /// graph, so a closure of this strand that waits on it (it queues
    /// behind the closure that waits) waits for good. As for a pool task,
    /// [`cancel`](FutureHandle::cancel) succeeds only while `f` is queued
    /// (then `f` never runs), and the handle reads
    /// [`running`](FutureHandle::running) while it runs.
    ///
    /// ```
    /// # use concurrent_futures::{Strand, ThreadPool};
    /// let pool = ThreadPool::new(1).unwrap();
    /// let counter = Strand::new(&pool, 0u64);
    /// counter.post(|n| *n += 41);
    /// assert_eq!(counter.submit(|n| { *n += 1; *n }).join(), Ok(42));
    /// ```
    pub fn submit<R>(&self, f: impl FnOnce(&mut S) -> R + Send + 'static) -> FutureHandle<R>
    where
        R: Send + Sync + 'static,
    {
        let promise = Promise::new();
        let handle = promise.handle();
        self.post(move |s| {
            // Cancelled while queued: `f` never runs (dropped here, on the
            // strand); otherwise the handle reads running from now on, and
            // a cancel is refused, as for a pool task.
            if promise.set_running_or_notify_cancel() != Ok(true) {
                return;
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| f(s)))
                .map_err(|payload| TaskError::Panicked(panic_message(payload)));
            let _ = promise.complete(outcome);
        });
        handle
    }

    /// Attaches a done-callback to `handle` that runs on this strand with
    /// `&mut S`. It is posted when the future completes (after the
    /// future's waiters are woken), so it runs after the closures posted
    /// before that moment.
    ///
    /// ```
    /// use concurrent_futures::{Promise, Strand, ThreadPool};
    /// let pool = ThreadPool::new(2).unwrap();
    /// let totals = Strand::new(&pool, (0u64, 0u64)); // (ok, failed)
    /// let all_counted = std::sync::Arc::new(Promise::new());
    /// let report = all_counted.handle();
    /// for x in 0..10u64 {
    ///     let h = pool.submit(move || if x % 3 == 0 { Err(x) } else { Ok(x) }).unwrap();
    ///     let all_counted = all_counted.clone();
    ///     totals.add_done_callback(&h, move |t, r| {
    ///         match r {
    ///             Ok(Ok(_)) => t.0 += 1,
    ///             _ => t.1 += 1,
    ///         }
    ///         if t.0 + t.1 == 10 {
    ///             all_counted.set_result(*t).unwrap();
    ///         }
    ///     });
    /// }
    /// assert_eq!(report.result(), Ok(&(6, 4)));
    /// ```
    pub fn add_done_callback<T, F>(&self, handle: &FutureHandle<T>, f: F)
    where
        T: Send + Sync + 'static,
        F: FnOnce(&mut S, Result<&T, &TaskError>) + Send + 'static,
    {
        self.route_done_callback(handle, f, Self::post_job);
    }

    /// Attaches a done-callback to `handle` that is
    /// [`dispatch`](Self::dispatch)ed to this strand when the future
    /// completes: it runs on the completing thread if the strand is idle
    /// then (on this thread, before this returns, if the future is done,
    /// no other thread is still running its callbacks and the strand is
    /// idle), else on the thread draining the strand. Where the strand's
    /// closures are all dispatched, it needs no free worker, as the
    /// callbacks of a future without a strand: a task may wait on what it
    /// does while every worker is busy. A closure
    /// [`post`](Self::post)ed or [`submit`](Self::submit)ted to the strand
    /// (or a callback added with [`add_done_callback`](Self::add_done_callback))
    /// starts a drain on the pool, and a dispatched callback queued behind
    /// that drain waits for a worker like it.
    ///
    /// ```
    /// use concurrent_futures::{Promise, Strand, ThreadPool};
    /// let pool = ThreadPool::new(1).unwrap();
    /// let seen = Strand::new(&pool, Vec::new());
    /// let promise = Promise::new();
    /// promise.set_result(7).unwrap(); // its callbacks ran here: none
    /// // Done, no thread running its callbacks, and the strand idle: the
    /// // callback runs here, inside the call.
    /// seen.dispatch_done_callback(&promise.handle(), |v, r| v.push(*r.unwrap()));
    /// assert_eq!(seen.submit(|v| v.clone()).join(), Ok(vec![7]));
    /// ```
    pub fn dispatch_done_callback<T, F>(&self, handle: &FutureHandle<T>, f: F)
    where
        T: Send + Sync + 'static,
        F: FnOnce(&mut S, Result<&T, &TaskError>) + Send + 'static,
    {
        self.route_done_callback(handle, f, Self::dispatch_job);
    }

    /// Attaches a callback that queues `f` on this strand with `queue`
    /// (`post_job` or `dispatch_job`) when `handle`'s future completes.
    fn route_done_callback<T, F>(&self, handle: &FutureHandle<T>, f: F, queue: fn(&Self, Job<S>))
    where
        T: Send + Sync + 'static,
        F: FnOnce(&mut S, Result<&T, &TaskError>) + Send + 'static,
    {
        let strand = self.clone();
        let reader = handle.clone();
        let _ = handle.add_done_callback(move |_| {
            queue(&strand, Box::new(move |s| f(s, reader.outcome_ref())));
            // This may be the strand's last clone, and a dispatch drains
            // with it rather than with a clone of its own: the state's
            // `Drop` then runs here, under the guard a drain's runs under.
            guard(PanicOrigin::Drop, move || drop(strand));
        });
    }
}

/// Who runs a drain, which decides what it does past its budget.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drainer {
    /// A pool task: past its budget it yields the worker to other tasks.
    Pool,
    /// The thread that dispatched: it drains until the queue is empty, as
    /// a hand-off to the pool would make the queued closures wait for a
    /// free worker.
    Caller,
}

/// Starts a drain on the pool, or here if the pool refuses. The drain is
/// essential: a shutdown that cancels queued work still runs it.
fn schedule_drain<S: Send + 'static>(inner: Arc<Inner<S>>) {
    let registry = inner.registry.clone();
    if let Err(drain_here) = spawn_on(&registry, move || drain(inner), true) {
        drain_here();
    }
}

/// Runs queued closures while owning the scheduled flag, then lets go of
/// the strand: if that was the last reference, the state's `Drop` runs
/// here, under a guard.
fn drain<S: Send + 'static>(inner: Arc<Inner<S>>) {
    drain_jobs(&inner, Drainer::Pool);
    guard(PanicOrigin::Drop, move || drop(inner));
}

fn drain_jobs<S: Send + 'static>(inner: &Arc<Inner<S>>, drainer: Drainer) {
    loop {
        for _ in 0..BUDGET {
            let Some(job) = inner.queue.steal().success() else {
                break;
            };
            // SAFETY: we own the scheduled flag: no other thread touches the
            // state until we release it (see `schedule.rs`).
            let result = inner
                .state
                .with_mut(|s| catch_unwind(AssertUnwindSafe(|| job(unsafe { &mut *s }))));
            if let Err(payload) = result {
                crate::panics::report(PanicOrigin::StrandClosure, payload);
            }
        }
        if !inner.queue.is_empty() {
            if drainer == Drainer::Caller {
                continue;
            }
            // Over budget: yield the worker, keep the flag, continue later.
            // If the pool refuses (shut down), keep draining here.
            let registry = inner.registry.clone();
            let again = inner.clone();
            if spawn_on(&registry, move || drain(again), true).is_ok() {
                return;
            }
            continue;
        }
        if !inner.schedule.release(|| inner.queue.is_empty()) {
            return;
        }
    }
}
