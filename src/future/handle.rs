//! [`FutureHandle`]: the reading side of a future.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::callback::Registration;
use super::core::{Core, Shared};
use super::state::Phase;
use super::wait::AsyncWait;
use crate::error::TaskError;

/// A shared, cloneable handle to a result computed elsewhere: Python's
/// `concurrent.futures.Future`.
///
/// A handle comes from [`Promise::handle`](crate::Promise::handle) or from
/// submitting work to a [`ThreadPool`](crate::ThreadPool). Any number of
/// clones may wait, read, attach callbacks or be awaited, from any thread.
///
/// # Done-callbacks
/// [`add_done_callback`](FutureHandle::add_done_callback) is lock-free (one
/// CAS in the uncontended case) and promises more than Python does:
/// 1. every callback runs exactly once (unless removed first);
/// 2. if one registration happens before another, its callback finishes
///    before the other's starts (registration order);
/// 3. two callbacks of one future never run at the same time;
/// 4. this holds for callbacks attached while completion is running
///    callbacks: they run after the earlier ones, on the draining thread or
///    on the attaching thread once the drain is over. A callback attached
///    after that runs at once on the attaching thread.
///
/// These cover callbacks attached here. Callbacks routed to a pool with
/// [`ThreadPool::add_done_callback`](crate::ThreadPool::add_done_callback)
/// are queued in this order but then run as independent pool tasks, which
/// may overlap; [`Strand::add_done_callback`](crate::Strand::add_done_callback)
/// keeps routed callbacks ordered and one at a time.
///
/// Cost: one list node per callback, holding the closure, taken from the
/// attaching thread's cache of node blocks: at most one global allocation
/// (a slab of 16 nodes) per 16 attaches, and none while the thread reuses
/// nodes it freed itself; nodes freed on another thread, or more than a
/// few slabs' worth pending at once, make new slabs; a node over 128
/// bytes (a closure capturing more than about 80) comes from the global
/// allocator (a callback attached to a done future needs no node at all);
/// one CAS to attach; completion runs and frees it with no further atomic
/// operation per callback (the list owns the node alone). A thread that
/// attaches to a done future may run callbacks other threads attach
/// meanwhile (that is what keeps them ordered and never concurrent).
///
/// ```
/// use concurrent_futures::Promise;
///
/// let promise = Promise::new();
/// let handle = promise.handle();
/// std::thread::spawn(move || promise.set_result(6 * 7).unwrap());
/// assert_eq!(handle.result(), Ok(&42));
/// ```
pub struct FutureHandle<T> {
    shared: Arc<Shared<T>>,
}

impl<T> FutureHandle<T> {
    pub(crate) fn from_shared(shared: Arc<Shared<T>>) -> Self {
        shared.core.add_handle();
        FutureHandle { shared }
    }

    fn core(&self) -> &Core<T> {
        &self.shared.core
    }

    /// The outcome; only once done (callbacks and routed callbacks).
    pub(crate) fn outcome_ref(&self) -> Result<&T, &TaskError> {
        self.core().outcome()
    }

    /// Identity of the future (for de-duplicating handles).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared).addr()
    }

    /// The future's address as the wait-for graph names it (a task's is
    /// the address its waits and its running frame use).
    pub(crate) fn core_addr(&self) -> usize {
        (self.core() as *const Core<T>).addr()
    }

    /// Whether the calling thread is running this future's task (a wait
    /// for it here could never end).
    pub(crate) fn held_by_caller(&self) -> bool {
        super::blocking::is_running_here(self.core_addr())
    }

    /// Whether two handles refer to the same future.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<u8>::new();
    /// let (a, b) = (promise.handle(), promise.handle());
    /// assert!(a.ptr_eq(&b));
    /// assert!(!a.ptr_eq(&concurrent_futures::Promise::<u8>::new().handle()));
    /// ```
    pub fn ptr_eq(&self, other: &FutureHandle<T>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.shared), Arc::as_ptr(&other.shared))
    }

    /// True once the future has a result or was cancelled.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// assert!(!handle.done());
    /// promise.set_result(()).unwrap();
    /// assert!(handle.done());
    /// ```
    pub fn done(&self) -> bool {
        self.core().is_done()
    }

    /// True if the future was cancelled.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<()>::new();
    /// let handle = promise.handle();
    /// assert!(handle.cancel());
    /// assert!(handle.cancelled());
    /// ```
    pub fn cancelled(&self) -> bool {
        self.core().phase() == Phase::Cancelled
    }

    /// True while the work runs (started, no result yet).
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<()>::new();
    /// let handle = promise.handle();
    /// assert!(!handle.running());
    /// promise.set_running_or_notify_cancel().unwrap();
    /// assert!(handle.running());
    /// ```
    pub fn running(&self) -> bool {
        self.core().phase() == Phase::Running
    }

    /// Cancels the future if it has not started. Returns true if it is
    /// cancelled (also when it already was), false if it is running or done.
    /// A successful cancel wakes waiters and runs the done-callbacks.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<()>::new();
    /// let handle = promise.handle();
    /// assert!(handle.cancel());
    /// assert!(handle.cancel()); // true again
    /// assert!(promise.set_result(()).is_err());
    /// ```
    pub fn cancel(&self) -> bool {
        self.core().cancel_for(&self.shared.body)
    }

    /// Blocks until the future is done.
    ///
    /// Inside a pool task, waiting on a task of the same pool that has not
    /// started runs it inline on this thread (a task of another pool runs
    /// on that pool's threads), and a wait that could never end (on the
    /// calling task itself, on one whose `join`, scope or `install` this
    /// work is part of, or around a cycle of tasks waiting on each other)
    /// is refused with [`TaskError::WouldDeadlock`].
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// std::thread::spawn(move || promise.set_result(1).unwrap());
    /// handle.wait().unwrap();
    /// assert!(handle.done());
    /// ```
    pub fn wait(&self) -> Result<(), TaskError> {
        self.wait_until(None)
    }

    /// Blocks until the future is done or `timeout` passes
    /// ([`TaskError::Timeout`]). A zero timeout only checks;
    /// `Duration::MAX` waits forever.
    ///
    /// Inside a pool task, a timed wait never runs the awaited task inline,
    /// as [`wait`](FutureHandle::wait) does (an inline run could not stop at
    /// the deadline; `Duration::MAX`, which is no deadline, waits as `wait`
    /// does): it blocks, and the pool keeps its capacity with a
    /// compensating worker, at most [`max_blocking`](crate::Builder::max_blocking)
    /// of them (512 by default). A chain of timed waits deeper than that,
    /// each task waiting on one queued behind it, has no worker left for
    /// the last task and times out at its deadlines: wait without a
    /// timeout there, or raise `max_blocking`.
    ///
    /// A wait that gives up withdraws its waiter, which may compact the
    /// waiter list; a future completing meanwhile then leaves the wake-up of
    /// its other waiters to this thread (see
    /// [`remove_done_callback`](FutureHandle::remove_done_callback)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::TaskError;
    /// let promise = concurrent_futures::Promise::<()>::new();
    /// let handle = promise.handle();
    /// assert_eq!(handle.wait_timeout(Duration::from_millis(1)), Err(TaskError::Timeout));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), TaskError> {
        self.wait_until(deadline(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<(), TaskError> {
        if self.shared.body.wait(self.core(), deadline)? {
            Ok(())
        } else {
            Err(TaskError::Timeout)
        }
    }

    /// Blocks until done, then returns the value by reference, or why there
    /// is none.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// promise.set_result(String::from("hi")).unwrap();
    /// assert_eq!(promise.handle().result().map(String::as_str), Ok("hi"));
    /// ```
    pub fn result(&self) -> Result<&T, TaskError> {
        self.wait()?;
        self.core().outcome().map_err(TaskError::clone)
    }

    /// Like [`result`](FutureHandle::result), but gives up with
    /// [`TaskError::Timeout`] after `timeout`. Inside a pool task it never
    /// runs the awaited task inline: see
    /// [`wait_timeout`](FutureHandle::wait_timeout) for what that means for
    /// chains of timed waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Promise, TaskError};
    /// let promise = Promise::<u8>::new();
    /// let handle = promise.handle();
    /// assert_eq!(handle.result_timeout(Duration::ZERO), Err(TaskError::Timeout));
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<&T, TaskError> {
        self.wait_timeout(timeout)?;
        self.core().outcome().map_err(TaskError::clone)
    }

    /// The outcome if done, without blocking.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// assert!(handle.try_result().is_none());
    /// promise.set_result(3).unwrap();
    /// assert_eq!(handle.try_result(), Some(Ok(&3)));
    /// ```
    pub fn try_result(&self) -> Option<Result<&T, TaskError>> {
        self.done()
            .then(|| self.core().outcome().map_err(TaskError::clone))
    }

    /// Attaches `f` to run once the future is done, with the outcome. If the
    /// future is done and its callbacks have all run, `f` runs at once on
    /// this thread; if callbacks are running (or the completing thread is
    /// about to run them), `f` runs after them.
    /// See the type docs for the ordering guarantees. A panic in `f` is caught and
    /// reported (see [`set_callback_panic_hook`](crate::set_callback_panic_hook));
    /// the other callbacks still run.
    ///
    /// The returned [`Registration`] can remove the callback; dropping it
    /// leaves the callback attached.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let promise = concurrent_futures::Promise::new();
    /// let (tx, rx) = mpsc::channel();
    /// for i in 0..3 {
    ///     let tx = tx.clone();
    ///     promise.handle().add_done_callback(move |r| tx.send((i, *r.unwrap())).unwrap());
    /// }
    /// promise.set_result(7).unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [(0, 7), (1, 7), (2, 7)]);
    /// ```
    pub fn add_done_callback<F>(&self, f: F) -> Registration<T>
    where
        F: FnOnce(Result<&T, &TaskError>) + Send + 'static,
    {
        // SAFETY: a `'static` closure.
        unsafe { self.core().add_callback(f) }
    }

    /// [`add_done_callback`](FutureHandle::add_done_callback) for a closure
    /// that may borrow.
    ///
    /// # Safety
    /// As for `Core::add_callback`: what `f` borrows outlives the future's
    /// completion and the drop of a removed callback.
    pub(crate) unsafe fn add_done_callback_unbounded<F>(&self, f: F) -> Registration<T>
    where
        F: FnOnce(Result<&T, &TaskError>) + Send,
    {
        // SAFETY: forwarded contract.
        unsafe { self.core().add_callback(f) }
    }

    /// Detaches a callback added to this future (asyncio's
    /// `remove_done_callback`). Returns true if it was removed and will never
    /// run; false if the future completed first (the callback runs or ran),
    /// or if `registration` belongs to another future.
    ///
    /// Lock-free: one CAS pushes a removal request. The closure itself is
    /// dropped, unrun, by the next thread that compacts the callback list
    /// (after a few removals) or completes the future, so what it captures
    /// lives until then.
    ///
    /// The call may compact the list, and a future that completes while a
    /// compaction runs leaves its callbacks to the compacting thread (it
    /// does not wait for it): so this call can run *other* done-callbacks
    /// of this future on the calling thread, in order, before it returns.
    /// Do not call it holding a lock those callbacks take.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// let reg = handle.add_done_callback(|_| {});
    /// promise.set_result(()).unwrap();
    /// assert!(!handle.remove_done_callback(reg)); // already ran
    /// ```
    pub fn remove_done_callback(&self, registration: Registration<T>) -> bool {
        self.core().remove_callback(registration)
    }

    /// A future that resolves, by reference, when this one is done. Any
    /// number of clones may be awaited at once; each is woken. Dropping the
    /// returned future withdraws its waiter, which may wake the future's
    /// other waiters on the dropping thread (see
    /// [`remove_done_callback`](FutureHandle::remove_done_callback)).
    ///
    /// A waker's `wake` and `drop` are called by whichever thread completes
    /// the future or frees the waiter; a panic in them is caught and
    /// reported ([`PanicOrigin::Waker`](crate::PanicOrigin::Waker)), never
    /// let unwind into the completion.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// promise.set_result(5).unwrap();
    /// assert_eq!(block_on(handle.wait_async()), Ok(&5));
    /// ```
    pub fn wait_async(&self) -> WaitAsync<'_, T> {
        WaitAsync {
            handle: self,
            wait: AsyncWait::default(),
        }
    }

    /// Waits, then moves the outcome out if this is the last handle (and the
    /// promise, which could make more, is gone). Otherwise gives the handle
    /// back. Works for any `T`. The last handle also waits for the future's
    /// done-callbacks still running on the thread that completed it (they
    /// read the value this moves out): a callback that waits for something
    /// the caller does only after this returns waits for good, and that
    /// wait is not in the wait-for graph of [`TaskError::WouldDeadlock`].
    /// Called from user code the completion itself runs (one of this
    /// future's done-callbacks, or the waker of an async waiter, which the
    /// completing thread wakes before it runs the callbacks), it does not
    /// wait for what it runs inside: it gives the handle back, and a later
    /// try moves the value. A wait refused as
    /// [`TaskError::WouldDeadlock`] is returned as the outcome. A callback
    /// routed to a pool or a strand keeps a handle of its own until it has
    /// run (it reads the outcome there): until then this gives the handle
    /// back, and a later try succeeds.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// promise.set_result(vec![1, 2]).unwrap();
    /// drop(promise);
    /// let other = handle.clone();
    /// let handle = handle.try_join().unwrap_err(); // `other` still exists
    /// drop(other);
    /// assert_eq!(handle.try_join().unwrap(), Ok(vec![1, 2]));
    /// ```
    pub fn try_join(self) -> Result<Result<T, TaskError>, FutureHandle<T>> {
        if let Err(e) = self.wait() {
            return Ok(Err(e));
        }
        self.core().take_outcome(true).ok_or(self)
    }

    /// Waits, then returns the value: moved out if this is the last handle
    /// and no promise is left (after the done-callbacks still running, as
    /// [`try_join`](FutureHandle::try_join) says), cloned otherwise.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let handle = promise.handle();
    /// std::thread::spawn(move || promise.set_result(String::from("done")).unwrap());
    /// assert_eq!(handle.join().as_deref(), Ok("done"));
    /// ```
    pub fn join(self) -> Result<T, TaskError>
    where
        T: Clone,
    {
        match self.try_join() {
            Ok(outcome) => outcome,
            Err(shared) => shared.core().outcome().cloned().map_err(TaskError::clone),
        }
    }
}

/// `Duration::MAX` (or any timeout that overflows `Instant`) means forever.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> Clone for FutureHandle<T> {
    fn clone(&self) -> Self {
        FutureHandle::from_shared(self.shared.clone())
    }
}

impl<T> Drop for FutureHandle<T> {
    fn drop(&mut self) {
        self.core().drop_handle();
    }
}

impl<T> std::fmt::Debug for FutureHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FutureHandle")
            .field("phase", &self.core().phase())
            .finish()
    }
}

/// The future returned by [`FutureHandle::wait_async`].
///
/// ```
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// // A value that is not `Clone`, read by reference.
/// let promise = concurrent_futures::Promise::new();
/// let handle = promise.handle();
/// promise.set_result(std::sync::Mutex::new(3)).unwrap();
/// let value = block_on(handle.wait_async()).unwrap();
/// assert_eq!(*value.lock().unwrap(), 3);
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct WaitAsync<'a, T> {
    handle: &'a FutureHandle<T>,
    wait: AsyncWait,
}

impl<'a, T> Future for WaitAsync<'a, T> {
    type Output = Result<&'a T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let core = this.handle.core();
        match this.wait.poll_done(core, cx) {
            Poll::Ready(()) => {
                this.wait.cancel(core);
                Poll::Ready(this.handle.core().outcome().map_err(TaskError::clone))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for WaitAsync<'_, T> {
    fn drop(&mut self) {
        self.wait.cancel(self.handle.core());
    }
}

/// The future of `handle.await`: resolves to the value, moved out if this
/// is the last handle and no done-callback of the future is still running
/// (it never waits for one), cloned otherwise.
///
/// # Panics
///
/// If polled again after it returned `Ready` (the value is gone), as
/// std's `async fn` futures and tokio's `JoinHandle` do; `.await` never
/// does so.
///
/// ```
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// use std::future::IntoFuture;
/// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
/// let join: concurrent_futures::Join<u8> = pool.submit(|| 8).unwrap().into_future();
/// assert_eq!(block_on(join), Ok(8));
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct Join<T> {
    handle: Option<FutureHandle<T>>,
    wait: AsyncWait,
}

impl<T: Clone> Future for Join<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(handle) = &this.handle else {
            // Pending would be a hang nobody wakes: say what went wrong, as
            // std's `async fn` and tokio's `JoinHandle` do.
            panic!("`Join` polled after it returned `Ready`");
        };
        // The handle stays in place while user code may run (the waker's
        // `clone`, in `poll_done`): a poll that unwinds leaves the future
        // as it was, to be polled again.
        match this.wait.poll_done(handle.core(), cx) {
            Poll::Ready(()) => {
                let handle = this.handle.take().expect("checked above");
                this.wait.cancel(handle.core());
                // Never block an async worker on other threads' callbacks:
                // move only if that is possible right now.
                Poll::Ready(match handle.core().take_outcome(false) {
                    Some(outcome) => outcome,
                    None => handle.core().outcome().cloned().map_err(TaskError::clone),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Join<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            self.wait.cancel(handle.core());
        }
    }
}

impl<T> Unpin for Join<T> {}

/// `handle.await` yields the value (moved if this is the last handle and
/// no done-callback is still running, cloned otherwise). For a `T` that is not `Clone`, await
/// [`wait_async`](FutureHandle::wait_async) and read by reference.
///
/// ```
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let promise = concurrent_futures::Promise::new();
/// let handle = promise.handle();
/// promise.set_result(9).unwrap();
/// assert_eq!(block_on(async move { handle.await }), Ok(9));
/// ```
impl<T: Clone> IntoFuture for FutureHandle<T> {
    type Output = Result<T, TaskError>;
    type IntoFuture = Join<T>;

    fn into_future(self) -> Join<T> {
        Join {
            handle: Some(self),
            wait: AsyncWait::default(),
        }
    }
}

#[cfg(all(test, loom))]
mod model {
    use std::sync::Arc;

    use super::FutureHandle;
    use crate::future::core::{Cell, Core, NoBody, Shared};
    use crate::sync::{AtomicUsize, Ordering};

    /// A pool task's future counts no promise, so its last handle can
    /// reach `take_outcome` while the completing thread still runs a
    /// callback that reads the value (a promise's future cannot: the
    /// promise's own count keeps the take off until its set returned).
    /// The take waits for that callback: without the wait, loom reports
    /// the slot moved out with the callback's read not ordered before it.
    #[test]
    fn the_last_handle_takes_the_value_only_after_a_callback_read_it() {
        loom::model(|| {
            let shared: Arc<Shared<String>> = Arc::new(Cell {
                core: Core::of_pool(0),
                body: NoBody,
            });
            let handle = FutureHandle::from_shared(shared.clone());
            let seen = Arc::new(AtomicUsize::new(0));
            let s = seen.clone();
            let _ = handle.add_done_callback(move |o| {
                // Relaxed: read after the join below, which orders it.
                s.store(o.map_or(0, String::len), Ordering::Relaxed);
            });
            let completer = loom::thread::spawn(move || {
                let _ = shared.core.set_with(String::from("seven"), Ok);
            });
            let taken = handle.try_join().ok().and_then(Result::ok);
            completer.join().unwrap();
            assert_eq!(taken.as_deref(), Some("seven"));
            assert_eq!(seen.load(Ordering::Relaxed), 5);
        });
    }

    /// Another handle reads the value, then drops, while the last handle
    /// takes it: the take may move the value only once the read is ordered
    /// before it, by the reader's Release decrement and the taker's Acquire
    /// load of the count (`Core::drop_handle`, `Core::take_outcome`).
    /// Without that pairing loom reports the slot moved out unordered with
    /// the read; and a take while the reader still holds its handle gives
    /// the handle back, to be joined once the reader is gone.
    #[test]
    fn the_last_handle_takes_the_value_only_after_another_handle_read_it() {
        loom::model(|| {
            let shared: Arc<Shared<String>> = Arc::new(Cell {
                core: Core::of_pool(0),
                body: NoBody,
            });
            let last = FutureHandle::from_shared(shared.clone());
            let other = last.clone();
            let _ = shared.core.set_with(String::from("seven"), Ok);
            let reader = loom::thread::spawn(move || {
                let n = other.result().map_or(0, String::len);
                drop(other);
                n
            });
            let taken = last.try_join();
            assert_eq!(reader.join().unwrap(), 5);
            let value = match taken {
                Ok(outcome) => outcome,
                Err(last) => last.try_join().ok().expect("the only handle now"),
            };
            assert_eq!(value.as_deref(), Ok("seven"));
        });
    }
}
