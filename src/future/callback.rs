//! Done-callbacks: the closure payload and the removable [`Registration`].

use std::mem::ManuallyDrop;

use super::core::Core;
use super::node::Payload;
use crate::error::TaskError;
use crate::panics::{PanicOrigin, guard};
use crate::sync::UnsafeCell;

/// A serial number unique in the process, for naming a callback node. Each
/// thread takes a block of 2^32 serials from a global counter once per
/// block and hands them out with no atomic operation.
pub(crate) fn next_serial() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BLOCKS: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    NEXT.with(|next| {
        let mut n = next.get();
        if n & 0xFFFF_FFFF == 0 {
            // Relaxed: only uniqueness matters, which one RMW gives.
            n = (BLOCKS.fetch_add(1, Ordering::Relaxed) << 32) | 1;
        }
        next.set(n + 1);
        n
    })
}

/// Runs a callback whose one run the caller owns: it won the node's
/// `TAKEN` claim, or claimed the drain of a done future to run a callback
/// attached then (which never gets a node).
pub(crate) fn run_now<T, F>(f: F, core: &Core<T>)
where
    F: FnOnce(Result<&T, &TaskError>) + Send,
{
    let outcome = core.outcome();
    guard(PanicOrigin::DoneCallback, move || f(outcome));
}

/// A closure stored inline in its node (one allocation per callback).
pub(crate) struct Callback<F>(UnsafeCell<ManuallyDrop<F>>);

impl<F> Callback<F> {
    pub(crate) fn new(f: F) -> Self {
        Callback(UnsafeCell::new(ManuallyDrop::new(f)))
    }
}

// SAFETY: the closure is only touched by the one thread that wins the node's
// status claim (`fire` or `discard`), and `F: Send` lets it move there.
unsafe impl<F: Send> Sync for Callback<F> {}

impl<T, F> Payload<Core<T>> for Callback<F>
where
    F: FnOnce(Result<&T, &TaskError>) + Send,
{
    unsafe fn fire(&self, core: &Core<T>) {
        // SAFETY: the caller won the TAKEN claim: we are the only consumer,
        // and the closure is taken exactly once.
        let f = self.0.with_mut(|p| unsafe { ManuallyDrop::take(&mut *p) });
        // The closure's captures are dropped inside the guarded call too, so
        // a capture that panics on drop is reported like a panicking body.
        run_now(f, core);
    }

    unsafe fn discard(&self) {
        // SAFETY: the caller won the REMOVED claim: we are the only consumer.
        let f = self.0.with_mut(|p| unsafe { ManuallyDrop::take(&mut *p) });
        guard(PanicOrigin::DoneCallback, move || drop(f));
    }
}

/// A done-callback attached with
/// [`FutureHandle::add_done_callback`](crate::FutureHandle::add_done_callback).
///
/// Dropping it leaves the callback attached. Pass it to
/// [`FutureHandle::remove_done_callback`](crate::FutureHandle::remove_done_callback)
/// to detach it.
///
/// ```
/// use concurrent_futures::Promise;
///
/// let promise = Promise::<u8>::new();
/// let handle = promise.handle();
/// let registration = handle.add_done_callback(|_| unreachable!("removed"));
/// assert!(handle.remove_done_callback(registration));
/// promise.set_result(1).unwrap();
/// ```
pub struct Registration<T> {
    /// The node's address and process-unique serial. The address alone is
    /// unique among the list's nodes while the callback can still be removed
    /// (the list owns the node until it runs or a tombstone naming it is
    /// resolved); the serial keeps a stale registration, used on a new
    /// future that reuses the old one's memory, from naming a new node.
    pub(crate) target: (usize, u64),
    /// The future it was attached to (its process-unique id).
    pub(crate) future: u64,
    pub(crate) _future: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Registration<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}
