//! The GIL and the interpreter: waits that release the GIL and stay
//! interruptible, and the thread state each worker keeps for its life.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

/// How long a wait on the main thread sleeps before it runs the signal
/// handlers again: Ctrl-C interrupts a wait within this (plus a wake-up).
pub(crate) const SLICE: Duration = Duration::from_millis(20);

/// When a wait with an optional Python timeout (seconds) ends. A negative
/// timeout only checks, as the stdlib's does; one too large for a deadline
/// waits forever; NaN is refused.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() => Err(PyValueError::new_err("timeout must be a number, not NaN")),
        Some(t) => Ok(Duration::try_from_secs_f64(t.max(0.0))
            .ok()
            .and_then(|d| Instant::now().checked_add(d))),
    }
}

unsafe extern "C" {
    /// CPython's identifier of the calling thread (`threading.get_ident()`).
    fn PyThread_get_thread_ident() -> std::ffi::c_ulong;
}

static MAIN_THREAD: AtomicU64 = AtomicU64::new(0);

/// Records which thread is Python's main thread (the one signal handlers
/// run on). Called once at import.
pub(crate) fn record_main_thread(ident: u64) {
    // Relaxed: written at import, before any wait can read it (the import
    // happens before the waits, under the GIL or its free-threaded
    // equivalent, which orders them).
    MAIN_THREAD.store(ident, Ordering::Relaxed);
}

/// True on the thread whose waits must run the signal handlers.
pub(crate) fn on_main_thread() -> bool {
    // SAFETY: reads the calling thread's identifier; no preconditions.
    #[allow(clippy::useless_conversion)] // `c_ulong` is 32 bits on Windows
    let me = u64::from(unsafe { PyThread_get_thread_ident() });
    // Relaxed: see `record_main_thread`.
    me == MAIN_THREAD.load(Ordering::Relaxed)
}

/// Waits, with the GIL released, until `done` says so or `deadline`
/// passes; returns whether it is done. `block(limit)` sleeps until done or
/// `limit` (at most) passes. On the main thread the sleep is cut in slices
/// of [`SLICE`] and the signal handlers run between them, so Ctrl-C raises
/// `KeyboardInterrupt` here; elsewhere `block` is called once with the
/// whole deadline (`None`: wait forever).
pub(crate) fn wait_interruptibly(
    py: Python<'_>,
    deadline: Option<Instant>,
    done: impl Fn() -> bool,
    block: impl Fn(Option<Instant>) -> PyResult<()> + Send + Sync,
) -> PyResult<bool> {
    if done() {
        return Ok(true);
    }
    if !on_main_thread() {
        py.detach(|| block(deadline))?;
        return Ok(done());
    }
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(done());
        }
        let slice = now + SLICE;
        let until = deadline.map_or(slice, |d| d.min(slice));
        py.detach(|| block(Some(until)))?;
        if done() {
            return Ok(true);
        }
        py.check_signals()?;
    }
}

/// The error for a wait the pool refused because it could never end.
pub(crate) fn would_deadlock() -> PyErr {
    PyRuntimeError::new_err(
        "this wait could never end: the awaited future's task waits, directly \
         or through others, on the task that is waiting here",
    )
}

/// Drops `obj` now: under the GIL if this thread holds it, else taking
/// it, so that the object is freed when its last reference goes and not
/// at some later GIL acquisition (a reference PyO3 drops without the GIL
/// waits on its pending list for that). `None` needs no GIL (it is never
/// freed).
pub(crate) fn release<T>(obj: Py<T>) {
    // SAFETY: `Py_None` only takes the address of the `None` singleton;
    // no GIL needed.
    if obj.as_ptr() == unsafe { ffi::Py_None() } {
        return drop(obj);
    }
    drop_attached(obj);
}

/// Drops `value`, which holds Python references, under the GIL (see
/// [`release`]); on a thread that holds it already this only counts one
/// more holder. Through the exit hook's wait the interpreter is whole and
/// the GIL is taken as ever (the hook waits with it released); once that
/// wait is over, or was interrupted, the interpreter may finalize while a
/// pool thread still runs, and the references are left to PyO3's pending
/// list. For a run whose exit hook never came (one registered after ours
/// raised), `try_attach` refuses a finalizing interpreter only on Python
/// 3.13 and later (PyO3 checks `Py_IsFinalizing` there; before, only
/// `Py_IsInitialized`): docs/python.md says so.
pub(crate) fn drop_attached<T>(value: T) {
    if finalizing() {
        return drop(value);
    }
    // Refused, the closure (with `value`) is dropped without the GIL.
    let _ = Python::try_attach(move |_| drop(value));
}

static FINALIZING: AtomicBool = AtomicBool::new(false);

/// Marks the end of the exit hook's wait for the pools (finished or
/// interrupted): from now on the interpreter may finalize.
pub(crate) fn set_finalizing() {
    // Relaxed: a flag read on its own. A worker that misses it is one the
    // hook was still waiting for, or one a finalizing interpreter refuses
    // (`try_attach`).
    FINALIZING.store(true, Ordering::Relaxed);
}

fn finalizing() -> bool {
    // Relaxed: see `set_finalizing`.
    FINALIZING.load(Ordering::Relaxed)
}

static EXITING: AtomicBool = AtomicBool::new(false);

/// Marks the interpreter as exiting (our exit hook ran): no new submits,
/// and threads that end from now on leave their thread state to the
/// interpreter's finalization.
pub(crate) fn set_exiting() {
    // Relaxed: a flag read on its own; the hook's joins order the rest.
    EXITING.store(true, Ordering::Relaxed);
}

/// True once the exit hook ran.
pub(crate) fn exiting() -> bool {
    // Relaxed: see `set_exiting`.
    EXITING.load(Ordering::Relaxed)
}

thread_local! {
    /// Whether this pool thread holds a thread state of its own.
    static ANCHOR: Anchor = const { Anchor(Cell::new(false)) };
}

/// A worker thread's own Python thread state, kept from its first task to
/// its exit. Without it each task would make and drop a thread state, and
/// `threading.local` values (an initializer's database connection, say)
/// would vanish between tasks.
struct Anchor(Cell<bool>);

impl Drop for Anchor {
    fn drop(&mut self) {
        // SAFETY: only reads whether the interpreter is initialized.
        if !self.0.get() || exiting() || unsafe { ffi::Py_IsInitialized() } == 0 {
            // After the exit hook, taking the GIL could race finalization;
            // the interpreter frees every thread state as it finalizes.
            return;
        }
        // SAFETY: this thread holds the one extra count `anchor` took, and
        // not the GIL (thread-local destructors run after the thread's last
        // task). `Ensure` takes the GIL and the count to 2; releasing as
        // LOCKED takes it to 1 and keeps the GIL; the last release, as
        // UNLOCKED, reaches 0, clears and deletes the thread state and
        // drops the GIL: the state's objects are freed under the GIL.
        unsafe {
            let _ = ffi::PyGILState_Ensure();
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_LOCKED);
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_UNLOCKED);
        }
    }
}

/// Makes this pool thread keep its Python thread state until it exits
/// (the first call on a thread; later calls do nothing).
pub(crate) fn anchor(_attached: Python<'_>) {
    let _ = ANCHOR.try_with(|a| {
        if !a.0.get() {
            // SAFETY: this thread is attached (the token says so), so
            // `Ensure` only counts one more holder of its thread state and
            // returns LOCKED: the state now outlives every `Python::attach`
            // of later tasks. `Anchor::drop` gives the count back at exit.
            unsafe {
                let _ = ffi::PyGILState_Ensure();
            }
            a.0.set(true);
        }
    });
}

/// The iterator `slf` borrowed for a `next` or `close`; if a `next` is
/// already under way (it released the GIL to wait, and another thread or
/// a signal handler came in), the error a stdlib generator raises then.
pub(crate) fn running_iterator<
    'py,
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
>(
    slf: &Bound<'py, T>,
) -> PyResult<PyRefMut<'py, T>> {
    slf.try_borrow_mut()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("generator already executing"))
}
