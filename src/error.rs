//! The crate's typed errors.
//!
//! [`TaskError`] is the one enum a reader of a [`FutureHandle`] sees: why a
//! future holds no value (cancelled, panicked, abandoned, refused by a shut
//! down pool) or why a wait gave up (timed out, would deadlock). A task whose
//! own logic can fail returns a `Result` as its value; `TaskError` never
//! carries user errors.
//!
//! [`FutureHandle`]: crate::FutureHandle

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Why a future has no value, or why waiting for it gave up.
///
/// The Python names are `CancelledError`, `TimeoutError`, `BrokenExecutor`
/// and the exception raised inside the task (here: a panic).
///
/// ```
/// use concurrent_futures::{Promise, TaskError};
///
/// let promise = Promise::<u32>::new();
/// let handle = promise.handle();
/// drop(promise); // nobody will ever set it
/// assert_eq!(handle.result(), Err(TaskError::Abandoned));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskError {
    /// The future was cancelled before it started running.
    Cancelled,
    /// The task panicked; holds the panic message.
    Panicked(PanicMessage),
    /// The writing side was dropped without setting a value (for a pool
    /// task: the pool dropped it without running it).
    Abandoned,
    /// A wait with a timeout gave up before the future finished.
    Timeout,
    /// Waiting would deadlock: the waiter is the task it waits for, or a
    /// task the awaited one (transitively) waits for.
    ///
    /// Checked waits: a wait on a pool task's handle (`wait`, `result`,
    /// `join`, `try_join`, with or without a timeout) from a thread of any
    /// pool. A timeout that has already passed (zero, say) only looks, and
    /// reports [`Timeout`](TaskError::Timeout) if the task is not done. The waiter holds the tasks it runs, inline ones included, and
    /// so does work its caller blocks on: a [`join`](crate::ThreadPool::join)
    /// half, a [`scope`](crate::ThreadPool::scope)'s task, an
    /// [`install`](crate::ThreadPool::install)ed closure hold what their
    /// caller holds, on whatever thread they run. A cycle is followed
    /// through tasks blocked in such waits on every pool in the process.
    /// Tasks blocked in module-level [`wait`](fn@crate::wait) and
    /// [`as_completed`](crate::as_completed) are followed too: a wait for
    /// all of several is stuck if any one is, a wait for any one only if
    /// all are, and a wait with a deadline never (it ends). So are tasks
    /// blocked in an untimed [`shutdown`](crate::ThreadPool::shutdown) of
    /// another pool (or a `shutdown_timeout` whose timeout is too long for
    /// a deadline), which waits for every thread of that pool: a task of
    /// that pool waiting on such a task gets this error, though the task
    /// it waits on waits on no future.
    /// Not seen: waits on a [`Promise`](crate::Promise)'s handle (nobody is
    /// known to hold it), which includes the handles of a
    /// [`Strand`](crate::Strand)'s `submit` and of
    /// [`submit_future`](crate::ThreadPool::submit_future) (a closure of a
    /// strand waiting on its own strand's `submit` waits for good: the
    /// strand runs one closure at a time), and through channels, locks or
    /// async tasks.
    WouldDeadlock,
    /// The pool was shut down before the work could be submitted
    /// (Python's `RuntimeError: cannot schedule new futures after shutdown`).
    Shutdown,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("the future was cancelled"),
            TaskError::Panicked(msg) => write!(f, "the task panicked: {msg}"),
            TaskError::Abandoned => {
                f.write_str("the future was abandoned: its writer was dropped without a result")
            }
            TaskError::Timeout => f.write_str("timed out waiting for the future"),
            TaskError::WouldDeadlock => {
                f.write_str("waiting would deadlock: the waiter is part of the awaited work")
            }
            TaskError::Shutdown => {
                f.write_str("the pool was shut down before the work was submitted")
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// The message of a caught panic, cheap to clone.
///
/// ```
/// use concurrent_futures::PanicMessage;
///
/// let payload: Box<dyn std::any::Any + Send> = Box::new("boom");
/// assert_eq!(PanicMessage::from_payload(payload.as_ref()).as_str(), "boom");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PanicMessage(Arc<String>);

impl PanicMessage {
    /// Extracts the message from a panic payload (`&str` or `String`; any
    /// other payload becomes a fixed placeholder).
    ///
    /// ```
    /// let payload = std::panic::catch_unwind(|| panic!("lost {}", 3)).unwrap_err();
    /// assert_eq!(concurrent_futures::PanicMessage::from_payload(payload.as_ref()).as_str(), "lost 3");
    /// ```
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let text: &str = if let Some(s) = payload.downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s
        } else {
            "<non-string panic payload>"
        };
        PanicMessage(Arc::new(text.to_owned()))
    }

    /// The message text.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    /// let h = pool.submit(|| -> u8 { panic!("no input") }).unwrap();
    /// match h.result() {
    ///     Err(concurrent_futures::TaskError::Panicked(m)) => assert_eq!(m.as_str(), "no input"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a [`Promise`](crate::Promise) refused to set a result: the future was
/// already finished or cancelled. Holds the rejected value so nothing is lost
/// (Python's `InvalidStateError`).
///
/// ```
/// use concurrent_futures::{Promise, InvalidState};
///
/// let promise = Promise::new();
/// promise.set_result(1).unwrap();
/// let err = promise.set_result(2).unwrap_err();
/// assert!(matches!(err, InvalidState::AlreadyFinished(2)));
/// assert_eq!(err.into_inner(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidState<T> {
    /// A result was already set.
    AlreadyFinished(T),
    /// The future was cancelled before the result arrived.
    Cancelled(T),
}

impl<T> InvalidState<T> {
    /// The value that was refused.
    ///
    /// ```
    /// let promise = concurrent_futures::Promise::new();
    /// promise.set_result(1).unwrap();
    /// assert_eq!(promise.set_result(2).unwrap_err().into_inner(), 2);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            InvalidState::AlreadyFinished(v) | InvalidState::Cancelled(v) => v,
        }
    }
}

impl<T> fmt::Display for InvalidState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidState::AlreadyFinished(_) => f.write_str("the future already has a result"),
            InvalidState::Cancelled(_) => f.write_str("the future was cancelled"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for InvalidState<T> {}

/// Why `set_running_or_notify_cancel` refused: the future already runs or is
/// finished (Python raises `InvalidStateError` there).
///
/// ```
/// use concurrent_futures::{Promise, AlreadyStarted};
///
/// let promise = Promise::<()>::new();
/// assert_eq!(promise.set_running_or_notify_cancel(), Ok(true));
/// assert_eq!(promise.set_running_or_notify_cancel(), Err(AlreadyStarted));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyStarted;

impl fmt::Display for AlreadyStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the future is already running or finished")
    }
}

impl std::error::Error for AlreadyStarted {}

/// `as_completed` gave up: its deadline passed with futures unfinished
/// (Python: `TimeoutError: N (of M) futures unfinished`).
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{Promise, as_completed};
///
/// let promise = Promise::<u8>::new();
/// let mut it = as_completed([promise.handle()], Some(Duration::ZERO));
/// let err = it.next().unwrap().unwrap_err();
/// assert_eq!((err.unfinished, err.total), (1, 1));
/// assert_eq!(err.to_string(), "1 (of 1) futures unfinished");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimedOut {
    /// Futures not yet yielded when the deadline passed.
    pub unfinished: usize,
    /// Distinct futures given.
    pub total: usize,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (of {}) futures unfinished",
            self.unfinished, self.total
        )
    }
}

impl std::error::Error for TimedOut {}
