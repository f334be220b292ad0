//! [`Promise`]: the writing side of a future.

use std::sync::Arc;

use super::core::{Cell, Shared};
use super::handle::FutureHandle;
use super::state::{Phase, Start};
use crate::error::{AlreadyStarted, InvalidState, TaskError};

/// The writing side of a future: sets its result exactly once.
///
/// Dropping a promise that never set a result resolves its handles with
/// [`TaskError::Abandoned`], so no waiter can hang on a forgotten writer.
///
/// ```
/// use concurrent_futures::Promise;
///
/// let promise = Promise::new();
/// let handle = promise.handle();
/// let worker = std::thread::spawn(move || {
///     if promise.set_running_or_notify_cancel() == Ok(true) {
///         promise.set_result(2 + 2).unwrap();
///     }
/// });
/// assert_eq!(handle.result(), Ok(&4));
/// worker.join().unwrap();
/// ```
pub struct Promise<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + Sync + 'static> Promise<T> {
    /// A new, pending future's writer. Get readers with [`Promise::handle`].
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// promise.set_result("set").unwrap();
    /// assert_eq!(promise.handle().result(), Ok(&"set"));
    /// ```
    pub fn new() -> Self {
        let shared = Cell::without_body();
        // The promise counts as a reader: it can make new handles, so the
        // last handle may not move the value out while it lives.
        shared.core.add_handle();
        Promise { shared }
    }
}

impl<T: Send + Sync + 'static> Default for Promise<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Promise<T> {
    /// A new handle to this promise's future.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// let (a, b) = (promise.handle(), promise.handle());
    /// promise.set_result(5).unwrap();
    /// assert_eq!((a.result(), b.result()), (Ok(&5), Ok(&5)));
    /// ```
    pub fn handle(&self) -> FutureHandle<T> {
        FutureHandle::from_shared(self.shared.clone())
    }

    /// Marks the future running, unless it was cancelled (Python's
    /// `set_running_or_notify_cancel`): `Ok(true)` if it now runs, `Ok(false)`
    /// if it was cancelled (do not do the work), and [`AlreadyStarted`] if it
    /// already runs or has a result.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<()>::new();
    /// promise.handle().cancel();
    /// assert_eq!(promise.set_running_or_notify_cancel(), Ok(false));
    /// ```
    pub fn set_running_or_notify_cancel(&self) -> Result<bool, AlreadyStarted> {
        match self.shared.core.try_start() {
            Start::Started => Ok(true),
            Start::Cancelled => Ok(false),
            Start::AlreadyStarted => Err(AlreadyStarted),
        }
    }

    /// Sets the value, wakes every waiter and runs the done-callbacks in
    /// registration order (on this thread, unless another thread is
    /// compacting the callback list at that instant: it then runs them). A second set, or a set after cancel,
    /// is refused and hands the value back.
    ///
    /// ```
    /// use concurrent_futures::{InvalidState, Promise};
    /// let promise = Promise::new();
    /// assert_eq!(promise.set_result(1), Ok(()));
    /// assert_eq!(promise.set_result(2), Err(InvalidState::AlreadyFinished(2)));
    /// ```
    pub fn set_result(&self, value: T) -> Result<(), InvalidState<T>> {
        self.shared.core.set_with(value, Ok)
    }

    /// Sets the outcome: a value or an error (for example
    /// [`TaskError::Panicked`] when the work panicked). Refused, handing the
    /// outcome back, if the future already has one or was cancelled.
    ///
    /// ```
    /// use concurrent_futures::{Promise, TaskError};
    /// let promise = Promise::<u8>::new();
    /// promise.complete(Err(TaskError::Abandoned)).unwrap();
    /// assert_eq!(promise.handle().result(), Err(TaskError::Abandoned));
    /// ```
    pub fn complete(
        &self,
        outcome: Result<T, TaskError>,
    ) -> Result<(), InvalidState<Result<T, TaskError>>> {
        self.shared.core.set_with(outcome, |o| o)
    }

    /// True if the future was cancelled (the work need not be done).
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::<u8>::new();
    /// assert!(!promise.is_cancelled());
    /// promise.handle().cancel();
    /// assert!(promise.is_cancelled()); // the work need not be done
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.shared.core.phase() == Phase::Cancelled
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        // Refused if it already has an outcome or was cancelled: fine.
        let _ = self.shared.core.set_with(TaskError::Abandoned, Err);
        self.shared.core.drop_handle();
    }
}

impl<T> std::fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise")
            .field("phase", &self.shared.core.phase())
            .finish()
    }
}
