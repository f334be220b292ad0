//! Spawning onto the pool that runs the caller, with no handle to it.
//!
//! A task that queues more work (a crawler following links, a tree walk,
//! a chain of steps) would otherwise carry a [`ThreadPool`] clone for its
//! children: one reference count taken and dropped per task, on a line the
//! pool's handles share (about a sixth of a spawn tree's time, a seventh of
//! a chain's). rayon's `rayon::spawn` and tokio's `tokio::spawn` find their
//! pool from the calling thread instead; [`spawn`] and [`submit`] do the
//! same, through the worker's own reference to its pool, and refuse with
//! the closure handed back where no pool runs the caller
//! ([`CurrentPoolError::NotInPool`]): this crate has no global pool to fall
//! back on.
//!
//! [`ThreadPool`]: super::ThreadPool

use std::fmt;

use super::pool::{spawn_in, submit_in};
use super::submit::SubmitSlot;
use super::worker::with_current_registry;
use crate::future::FutureHandle;

/// Why [`spawn`] or [`submit`] refused a closure. Holds the closure, so no
/// work is lost.
///
/// ```
/// use concurrent_futures::CurrentPoolError;
///
/// // Not on a pool's thread: the closure comes back.
/// let err = concurrent_futures::spawn(|| ()).unwrap_err();
/// assert!(matches!(err, CurrentPoolError::NotInPool(_)));
/// err.into_inner()(); // runs here instead
/// ```
pub enum CurrentPoolError<F> {
    /// The calling thread is no pool's worker (nor a thread a pool started
    /// to keep its capacity while a worker waits).
    NotInPool(F),
    /// The calling worker's pool is shut down (Python: `RuntimeError`
    /// after `shutdown`).
    Shutdown(F),
}

impl<F> CurrentPoolError<F> {
    /// The refused closure.
    ///
    /// ```
    /// let f = concurrent_futures::submit(|| 7).unwrap_err().into_inner();
    /// assert_eq!(f(), 7);
    /// ```
    pub fn into_inner(self) -> F {
        match self {
            CurrentPoolError::NotInPool(f) | CurrentPoolError::Shutdown(f) => f,
        }
    }
}

impl<F> fmt::Debug for CurrentPoolError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentPoolError::NotInPool(_) => f.write_str("NotInPool(..)"),
            CurrentPoolError::Shutdown(_) => f.write_str("Shutdown(..)"),
        }
    }
}

impl<F> fmt::Display for CurrentPoolError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentPoolError::NotInPool(_) => {
                f.write_str("cannot spawn: the calling thread is not a pool's worker")
            }
            CurrentPoolError::Shutdown(_) => {
                f.write_str("cannot spawn: the calling worker's pool is shut down")
            }
        }
    }
}

impl<F> std::error::Error for CurrentPoolError<F> {}

/// Schedules `f` on the pool whose thread calls this, without a handle
/// (fire and forget), as [`ThreadPool::spawn`] does: onto the calling
/// worker's own deque, where it runs in turn after what that worker queued
/// before it, unless an idle worker steals it (a thread the pool started
/// to keep its capacity while a worker waits has no deque: its work goes
/// to the pool's shared queue). Called from a task, a done-callback or a
/// polled future running on a pool's thread. A panic in `f` is counted in
/// [`Metrics::panicked`].
///
/// Refused, with `f` handed back, on a thread no pool runs
/// ([`CurrentPoolError::NotInPool`]) and after the pool's shutdown
/// ([`CurrentPoolError::Shutdown`]).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::mpsc;
///
/// // Each step queues the next; none carries a handle to the pool.
/// fn step(left: u32, tx: mpsc::Sender<u32>) {
///     if left == 0 {
///         return tx.send(0).unwrap();
///     }
///     concurrent_futures::spawn(move || step(left - 1, tx)).unwrap();
/// }
/// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
/// let (tx, rx) = mpsc::channel();
/// pool.spawn(move || step(1000, tx)).unwrap();
/// assert_eq!(rx.recv(), Ok(0));
/// ```
///
/// [`ThreadPool::spawn`]: super::ThreadPool::spawn
/// [`Metrics::panicked`]: super::Metrics::panicked
pub fn spawn<F>(f: F) -> Result<(), CurrentPoolError<F>>
where
    F: FnOnce() + Send + 'static,
{
    with_current_registry(|here| match here {
        None => Err(CurrentPoolError::NotInPool(f)),
        // Its own worker: no second look at the thread's context.
        Some((registry, on)) => spawn_in(SubmitSlot::claim_from(registry, Some(on)), f, false)
            .map_err(CurrentPoolError::Shutdown),
    })
}

/// Schedules `f` on the pool whose thread calls this and returns a handle
/// to its result, as [`ThreadPool::submit`] does. Refused like [`spawn`].
///
/// ```
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let outer = pool
///     .submit(|| {
///         let inner = concurrent_futures::submit(|| 20).unwrap();
///         inner.add_done_callback(|r| assert_eq!(r, Ok(&20)));
///         inner
///     })
///     .unwrap();
/// let inner = outer.join().unwrap();
/// assert_eq!(inner.join(), Ok(20));
/// ```
///
/// [`ThreadPool::submit`]: super::ThreadPool::submit
pub fn submit<F, T>(f: F) -> Result<FutureHandle<T>, CurrentPoolError<F>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + Sync + 'static,
{
    with_current_registry(|here| match here {
        None => Err(CurrentPoolError::NotInPool(f)),
        Some((registry, on)) => submit_in(SubmitSlot::claim_from(registry, Some(on)), f)
            .map_err(CurrentPoolError::Shutdown),
    })
}
