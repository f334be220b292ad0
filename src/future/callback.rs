//! Done-callbacks: the closure payload, the removable [`Registration`], and
//! the hook that reports a panicking callback.

use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use super::core::Core;
use super::node::Payload;
use crate::error::{PanicMessage, TaskError};
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
        let outcome = core.outcome();
        // The closure's captures are dropped inside the guarded call too, so
        // a capture that panics on drop is reported like a panicking body.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || f(outcome))) {
            report_panic_payload(payload);
        }
    }

    unsafe fn discard(&self) {
        // SAFETY: the caller won the REMOVED claim: we are the only consumer.
        let f = self.0.with_mut(|p| unsafe { ManuallyDrop::take(&mut *p) });
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(f))) {
            report_panic_payload(payload);
        }
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

/// What a callback-panic hook receives.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use concurrent_futures::{Promise, ThreadPool};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let pool = ThreadPool::builder()
///     .workers(1)
///     .callback_panic_hook(move |p| s.lock().unwrap().push(p.message().to_string()))
///     .build()
///     .unwrap();
/// let promise = Promise::<u8>::new();
/// pool.add_done_callback(&promise.handle(), |_| panic!("callback failed"));
/// promise.set_result(0).unwrap();
/// pool.shutdown(true, false);
/// assert_eq!(*seen.lock().unwrap(), ["callback failed"]);
/// ```
#[derive(Clone, Debug)]
pub struct CallbackPanic {
    message: PanicMessage,
}

impl CallbackPanic {
    /// The panic message.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::{Promise, ThreadPool};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let pool = ThreadPool::builder()
    ///     .workers(1)
    ///     .callback_panic_hook(move |p| tx.lock().unwrap().send(p.message().clone()).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let promise = Promise::<u8>::new();
    /// pool.add_done_callback(&promise.handle(), |_| panic!("code {}", 7));
    /// promise.set_result(0).unwrap();
    /// assert_eq!(rx.recv().unwrap().as_str(), "code 7");
    /// ```
    pub fn message(&self) -> &PanicMessage {
        &self.message
    }
}

/// A callback-panic hook (process-wide, or one pool's).
pub(crate) type Hook = Arc<dyn Fn(&CallbackPanic) + Send + Sync>;

/// Read only when a callback panics, written only by `set_callback_panic_hook`.
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Replaces the process-wide hook that reports panicking done-callbacks.
///
/// A panic in a done-callback is caught so that the remaining callbacks
/// still run; it is then reported here (unless it ran on a worker of a pool
/// with its own hook, see
/// [`Builder::callback_panic_hook`](crate::Builder::callback_panic_hook)). The default hook prints the message
/// to stderr; [`clear_callback_panic_hook`] restores it.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use concurrent_futures::{Promise, set_callback_panic_hook};
///
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = seen.clone();
/// set_callback_panic_hook(move |p| {
///     assert_eq!(p.message().as_str(), "boom");
///     counter.fetch_add(1, Ordering::SeqCst);
/// });
/// let promise = Promise::<()>::new();
/// promise.handle().add_done_callback(|_| panic!("boom"));
/// promise.handle().add_done_callback(|_| println!("still runs"));
/// promise.set_result(()).unwrap();
/// concurrent_futures::clear_callback_panic_hook();
/// assert_eq!(seen.load(Ordering::SeqCst), 1);
/// ```
pub fn set_callback_panic_hook(hook: impl Fn(&CallbackPanic) + Send + Sync + 'static) {
    *HOOK.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
}

/// Restores the default callback-panic hook (print to stderr).
///
/// ```
/// concurrent_futures::set_callback_panic_hook(|_| {});
/// concurrent_futures::clear_callback_panic_hook();
/// ```
pub fn clear_callback_panic_hook() {
    *HOOK.write().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Reports a caught panic of a callback (or a strand closure) to the hook.
///
/// On a worker of a pool built with
/// [`Builder::callback_panic_hook`](crate::Builder::callback_panic_hook),
/// that pool's hook gets it; otherwise the process-wide one.
pub(crate) fn report_callback_panic(message: PanicMessage) {
    let info = CallbackPanic { message };
    let hook = crate::executor::pool_panic_hook()
        .or_else(|| HOOK.read().unwrap_or_else(|e| e.into_inner()).clone());
    let reported = match hook {
        Some(hook) => catch_unwind(AssertUnwindSafe(|| hook(&info))).is_ok(),
        None => false,
    };
    if !reported {
        // The default, and the fallback when the hook itself panicked. A
        // failed write (closed stderr) is ignored: `eprintln!` would panic
        // in the middle of a drain.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "concurrent-futures: a done-callback panicked: {}",
            info.message
        );
    }
}

/// Reports a caught panic, dropping its payload under a guard: a payload
/// whose own `Drop` panics must not unwind through a drain.
pub(crate) fn report_panic_payload(payload: Box<dyn std::any::Any + Send>) {
    report_callback_panic(panic_message(payload));
}

/// The message of a caught panic; the payload is dropped under a guard
/// (its own `Drop` may panic: keep that off this thread).
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> PanicMessage {
    let message = PanicMessage::from_payload(payload.as_ref());
    contain(move || drop(payload));
    message
}

/// Runs `f`, containing a panic: its payload is dropped under a guard too,
/// and a payload whose `Drop` panics again is leaked rather than let
/// unwind into a drain or a worker.
pub(crate) fn contain(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f))
        && let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload)))
    {
        std::mem::forget(again);
    }
}
