//! How a panic in user code is contained and where it is reported.
//!
//! The crate calls code it does not control: done-callbacks, strand
//! closures, a waker's `wake` and `drop`, the `Drop` of captures, results
//! and panic payloads, `tracing` subscribers. None of it may unwind through
//! the lock-free machinery (a drain, a compaction, a worker's loop), which
//! would leave a claim held or a worker dead. Every such call goes through
//! [`guard`]: a panic is caught there, its payload is dropped under a second
//! guard (a payload may panic on drop: that is reported too, and a payload
//! that keeps doing so is leaked), and the message is reported to the hook
//! with its [`PanicOrigin`].
//!
//! The hook is the pool's own ([`Builder::callback_panic_hook`]) on that
//! pool's workers, which install it thread-locally when they start, else
//! the process-wide one ([`set_callback_panic_hook`]), else a line on
//! stderr.
//!
//! A task's own panic is not reported here: it is the task's outcome
//! ([`TaskError::Panicked`](crate::TaskError::Panicked)).
//!
//! [`Builder::callback_panic_hook`]: crate::Builder::callback_panic_hook

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use crate::error::PanicMessage;

/// Which kind of user code panicked (see [`CallbackPanic::origin`]).
///
/// ```
/// use concurrent_futures::PanicOrigin;
/// assert_eq!(PanicOrigin::DoneCallback.to_string(), "a done-callback");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PanicOrigin {
    /// A done-callback (inline, routed to a pool, or on a strand), or the
    /// drop of what it captured.
    DoneCallback,
    /// A closure posted to a [`Strand`](crate::Strand).
    StrandClosure,
    /// The `poll` of a future given to
    /// [`spawn_future`](crate::ThreadPool::spawn_future) (for
    /// `submit_future` the panic is the handle's outcome instead).
    FuturePoll,
    /// A `Waker`'s `wake` or `wake_by_ref`, called by the crate.
    Waker,
    /// A `Drop` the crate ran: of a cancelled or removed closure, a
    /// finished future, a waker, a task's result or a panic payload.
    Drop,
    /// A `tracing` subscriber, inside the crate's spans and events.
    Tracing,
}

impl std::fmt::Display for PanicOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PanicOrigin::DoneCallback => "a done-callback",
            PanicOrigin::StrandClosure => "a strand closure",
            PanicOrigin::FuturePoll => "a spawned future's poll",
            PanicOrigin::Waker => "a waker",
            PanicOrigin::Drop => "a drop",
            PanicOrigin::Tracing => "a tracing subscriber",
        })
    }
}

/// What a callback-panic hook receives: a panic in user code that the
/// crate caught so that its machinery, and the other callbacks, go on.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use concurrent_futures::{PanicOrigin, Promise, ThreadPool};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let pool = ThreadPool::builder()
///     .workers(1)
///     .callback_panic_hook(move |p| s.lock().unwrap().push((p.origin(), p.message().to_string())))
///     .build()
///     .unwrap();
/// let promise = Promise::<u8>::new();
/// pool.add_done_callback(&promise.handle(), |_| panic!("callback failed"));
/// promise.set_result(0).unwrap();
/// pool.shutdown(true, false);
/// assert_eq!(*seen.lock().unwrap(), [(PanicOrigin::DoneCallback, "callback failed".to_string())]);
/// ```
#[derive(Clone, Debug)]
pub struct CallbackPanic {
    message: PanicMessage,
    origin: PanicOrigin,
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

    /// Which kind of user code panicked.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::{PanicOrigin, Strand, ThreadPool};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let pool = ThreadPool::builder()
    ///     .workers(1)
    ///     .callback_panic_hook(move |p| tx.lock().unwrap().send(p.origin()).unwrap())
    ///     .build()
    ///     .unwrap();
    /// Strand::new(&pool, ()).post(|_| panic!("in a strand"));
    /// assert_eq!(rx.recv().unwrap(), PanicOrigin::StrandClosure);
    /// ```
    pub fn origin(&self) -> PanicOrigin {
        self.origin
    }
}

/// A callback-panic hook (process-wide, or one pool's).
pub(crate) type Hook = Arc<dyn Fn(&CallbackPanic) + Send + Sync>;

/// Read only when user code panics, written only by the two setters below.
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

std::thread_local! {
    /// The hook of the pool whose worker this thread is, if it has one
    /// (installed by the worker for its lifetime).
    static THREAD_HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Replaces the process-wide hook that reports panics the crate caught in
/// user code (a done-callback, a strand closure, a waker, a `Drop`; see
/// [`PanicOrigin`]).
///
/// Such a panic is caught so that the remaining callbacks still run and no
/// worker dies; it is then reported here (unless it happened on a worker
/// of a pool with its own hook, see
/// [`Builder::callback_panic_hook`](crate::Builder::callback_panic_hook)).
/// The default prints the origin and message to stderr;
/// [`clear_callback_panic_hook`] restores it. A hook that panics itself
/// falls back to the default; its panic (even one whose payload panics on
/// drop) is contained like any user code's, so the drain that reported
/// goes on.
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
    replace_hook(Some(Arc::new(hook)));
}

/// Swaps the process-wide hook, dropping the old one after the lock is
/// released: its drop is user code (what the hook captured), which may
/// complete a future whose callback panics, and that report reads `HOOK`.
fn replace_hook(new: Option<Hook>) {
    let old = std::mem::replace(&mut *HOOK.write().unwrap_or_else(|e| e.into_inner()), new);
    drop(old);
}

/// Restores the default callback-panic hook (print to stderr).
///
/// ```
/// concurrent_futures::set_callback_panic_hook(|_| {});
/// concurrent_futures::clear_callback_panic_hook();
/// ```
pub fn clear_callback_panic_hook() {
    replace_hook(None);
}

/// Makes `hook` the calling thread's hook until the returned guard drops
/// (a worker of a pool with its own hook, for its lifetime).
pub(crate) fn install_thread_hook(hook: Option<Hook>) -> ThreadHook {
    let prev = THREAD_HOOK.with(|h| h.replace(hook));
    ThreadHook(prev)
}

/// Restores the previous thread hook when dropped.
pub(crate) struct ThreadHook(Option<Hook>);

impl Drop for ThreadHook {
    fn drop(&mut self) {
        let prev = self.0.take();
        // `try_with`: a worker's guard may drop while its thread-locals are
        // being torn down.
        let _ = THREAD_HOOK.try_with(|h| h.replace(prev));
    }
}

/// Runs `f`; a panic is caught and reported as coming from `origin`.
/// Returns whether `f` returned normally.
#[inline]
pub(crate) fn guard(origin: PanicOrigin, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(payload) => {
            report(origin, payload);
            false
        }
    }
}

/// Both values, or the first outcome's panic, else the second's, resumed
/// once the other outcome is dropped under a guard: a payload's or a
/// value's `Drop` may panic, which during the unwind would abort the
/// process (reported as [`PanicOrigin::Drop`] instead). For work that ran
/// in two parts (a `join`'s halves, a scope's body and its tasks).
pub(crate) fn first_panic<A, B>(
    first: std::thread::Result<A>,
    second: std::thread::Result<B>,
) -> (A, B) {
    match (first, second) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(payload), other) => {
            discard(other);
            std::panic::resume_unwind(payload)
        }
        (Ok(a), Err(payload)) => {
            discard::<A>(Ok(a));
            std::panic::resume_unwind(payload)
        }
    }
}

/// Drops an outcome nobody will see, its value or its payload, under a
/// guard.
fn discard<T>(outcome: std::thread::Result<T>) {
    match outcome {
        Ok(value) => {
            guard(PanicOrigin::Drop, move || drop(value));
        }
        Err(payload) => drop(panic_message(payload)),
    }
}

/// Drops a panic's payload that will not be resumed, under a guard (its
/// own `Drop` may panic: reported as [`PanicOrigin::Drop`]).
pub(crate) fn discard_payload(payload: Box<dyn Any + Send>) {
    discard::<()>(Err(payload));
}

/// Reports a caught panic's payload as coming from `origin`.
pub(crate) fn report(origin: PanicOrigin, payload: Box<dyn Any + Send>) {
    let message = panic_message(payload);
    deliver(&CallbackPanic { message, origin });
}

/// The message of a caught panic. The payload is dropped under a guard: its
/// own `Drop` may panic, which is reported too ([`PanicOrigin::Drop`]); a
/// payload that keeps panicking on drop is leaked after a few rounds rather
/// than let unwind into the caller.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> PanicMessage {
    let message = PanicMessage::from_payload(payload.as_ref());
    drop_payload(payload, |again| {
        let message = PanicMessage::from_payload(again);
        deliver(&CallbackPanic {
            message,
            origin: PanicOrigin::Drop,
        });
    });
    message
}

/// Drops a caught panic's payload, catching a panic in its `Drop`:
/// `on_panic` sees each such panic's own payload, which is dropped the same
/// way, up to [`PAYLOAD_DROP_ROUNDS`] rounds; then the last is leaked
/// rather than let unwind into the caller.
fn drop_payload(payload: Box<dyn Any + Send>, mut on_panic: impl FnMut(&(dyn Any + Send))) {
    let mut payload = payload;
    for _ in 0..PAYLOAD_DROP_ROUNDS {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => {
                on_panic(again.as_ref());
                payload = again;
            }
        }
    }
    std::mem::forget(payload);
}

/// Payloads that panic on drop, each in the last one's drop, tolerated
/// before the last is leaked.
const PAYLOAD_DROP_ROUNDS: usize = 4;

fn deliver(info: &CallbackPanic) {
    let hook = THREAD_HOOK
        .try_with(|h| h.borrow().clone())
        .ok()
        .flatten()
        .or_else(|| HOOK.read().unwrap_or_else(|e| e.into_inner()).clone());
    let reported = hook.is_some_and(|hook| {
        // The hook is user code like any other: its panic, its payload's
        // drop and the drop of the last reference to it (when it was
        // replaced meanwhile) must not unwind into a drain. Their panics go
        // to stderr, never to a hook again (no recursion).
        let called = catch_unwind(AssertUnwindSafe(|| hook(info)));
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(hook))) {
            drop_payload(payload, |_| {});
        }
        match called {
            Ok(()) => true,
            Err(payload) => {
                drop_payload(payload, |_| {});
                false
            }
        }
    });
    if !reported {
        // The default, and the fallback when the hook itself panicked. A
        // failed write (closed stderr) is ignored: `eprintln!` would panic
        // in the middle of a drain.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "concurrent-futures: {} panicked: {}",
            info.origin,
            info.message
        );
    }
}
