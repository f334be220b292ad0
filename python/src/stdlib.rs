//! The stdlib objects the package answers with: `concurrent.futures`'
//! exception classes, its logger and its state names, looked up once.

use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::IntoPyDict;

/// Python objects from `concurrent.futures` (and `threading`) that the
/// native core raises, logs to or returns.
pub(crate) struct Stdlib {
    pub cancelled_error: Py<PyAny>,
    pub timeout_error: Py<PyAny>,
    pub invalid_state_error: Py<PyAny>,
    pub broken_thread_pool: Py<PyAny>,
    pub logger: Py<PyAny>,
    pub done_and_not_done: Py<PyAny>,
    pub stdlib_wait: Py<PyAny>,
    pub stdlib_as_completed: Py<PyAny>,
    pub current_thread: Py<PyAny>,
    pub pending: Py<PyAny>,
    pub running: Py<PyAny>,
    pub cancelled_and_notified: Py<PyAny>,
    pub finished: Py<PyAny>,
}

static STDLIB: PyOnceLock<Stdlib> = PyOnceLock::new();

/// Looks the stdlib objects up; the module's init calls it, so that a
/// failure fails the import instead of a later call.
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    STDLIB
        .get_or_try_init(py, || -> PyResult<Stdlib> {
            let base = py.import("concurrent.futures._base")?;
            let thread = py.import("concurrent.futures.thread")?;
            let threading = py.import("threading")?;
            let get = |m: &Bound<'_, PyModule>, name: &str| -> PyResult<Py<PyAny>> {
                Ok(m.getattr(name)?.unbind())
            };
            Ok(Stdlib {
                cancelled_error: get(&base, "CancelledError")?,
                timeout_error: get(&base, "TimeoutError")?,
                invalid_state_error: get(&base, "InvalidStateError")?,
                broken_thread_pool: get(&thread, "BrokenThreadPool")?,
                logger: get(&base, "LOGGER")?,
                done_and_not_done: get(&base, "DoneAndNotDoneFutures")?,
                stdlib_wait: get(&base, "wait")?,
                stdlib_as_completed: get(&base, "as_completed")?,
                current_thread: get(&threading, "current_thread")?,
                pending: get(&base, "PENDING")?,
                running: get(&base, "RUNNING")?,
                cancelled_and_notified: get(&base, "CANCELLED_AND_NOTIFIED")?,
                finished: get(&base, "FINISHED")?,
            })
        })
        .map(|_| ())
}

/// The stdlib objects.
pub(crate) fn stdlib(py: Python<'_>) -> &Stdlib {
    // Set by `init` in the module's init, which fails the import if it
    // cannot: nothing of the package runs before it succeeded.
    STDLIB
        .get(py)
        .expect("the module's init looked the stdlib objects up")
}

/// What a stdlib worker does as it starts (`Thread._bootstrap_inner`):
/// installs `threading.settrace` / `threading.setprofile`'s hooks on this
/// thread, so that tracers (coverage.py) and profilers see the calls it
/// runs. Read each time, since they change; a failure is reported as
/// unraisable and the thread runs untraced.
pub(crate) fn install_thread_hooks(py: Python<'_>) {
    let install = || -> PyResult<()> {
        let threading = py.import("threading")?;
        let sys = py.import("sys")?;
        for (hook, setter) in [("_trace_hook", "settrace"), ("_profile_hook", "setprofile")] {
            let hook = threading.getattr(hook)?;
            if hook.is_truthy()? {
                sys.call_method1(setter, (hook,))?;
            }
        }
        Ok(())
    };
    if let Err(e) = install() {
        e.write_unraisable(py, None);
    }
}

/// An exception of class `class`, built with `args`, raised as
/// [`raise`] raises it.
pub(crate) fn error<'py>(py: Python<'py>, class: &Py<PyAny>, args: impl PyCallArgs<'py>) -> PyErr {
    match class.bind(py).call1(args) {
        Ok(instance) => raise(instance),
        Err(e) => e,
    }
}

/// An exception of class `class`, built with `args`, to be stored (a
/// call's outcome) rather than raised now: no `__context__` yet.
pub(crate) fn stored_error<'py>(
    py: Python<'py>,
    class: &Py<PyAny>,
    args: impl PyCallArgs<'py>,
) -> PyErr {
    match class.bind(py).call1(args) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// The exception object `value`, raised as Python's `raise value` raises
/// it: with the exception being handled, if any, as its `__context__`
/// (CPython's `PyErr_SetObject` chains it; restoring an exception object,
/// as PyO3 does, does not), so a traceback shows "During handling of the
/// above exception, another exception occurred". As CPython does, a
/// context chain that already leads back to `value` is cut there, so that
/// no cycle is made.
pub(crate) fn raise(value: Bound<'_, PyAny>) -> PyErr {
    if let Err(e) = set_context(&value) {
        e.write_unraisable(value.py(), Some(&value));
    }
    PyErr::from_value(value)
}

fn set_context(value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = value.py();
    let handled = py.import("sys")?.call_method0("exception")?;
    if handled.is_none()
        || handled.is(value)
        || !value.is_instance_of::<pyo3::exceptions::PyBaseException>()
    {
        return Ok(());
    }
    // Walk `handled`'s context chain; cut it where it meets `value`. A
    // chain that loops without meeting it is left alone (Floyd's check).
    let (mut o, mut slow) = (handled.clone(), handled.clone());
    let mut step_slow = false;
    loop {
        let context = o.getattr("__context__")?;
        if context.is_none() {
            break;
        }
        if context.is(value) {
            o.setattr("__context__", py.None())?;
            break;
        }
        o = context;
        if o.is(&slow) {
            break;
        }
        if step_slow {
            slow = slow.getattr("__context__")?;
        }
        step_slow = !step_slow;
    }
    value.setattr("__context__", handled)
}

/// `CancelledError()`.
pub(crate) fn cancelled(py: Python<'_>) -> PyErr {
    error(py, &stdlib(py).cancelled_error, ())
}

/// `TimeoutError()`.
pub(crate) fn timeout(py: Python<'_>) -> PyErr {
    error(py, &stdlib(py).timeout_error, ())
}

/// Logs `err` with its traceback to the `concurrent.futures` logger, as
/// the stdlib does for a failing callback (`level` "exception") or
/// initializer ("critical"): `logger.<level>(*args, exc_info=err)`. If
/// logging itself fails, that error is reported as unraisable (about
/// `obj`, if given).
pub(crate) fn log_error<'py>(
    py: Python<'py>,
    level: &str,
    args: impl PyCallArgs<'py>,
    err: PyErr,
    obj: Option<&Bound<'py, PyAny>>,
) {
    let kwargs = [("exc_info", err.into_value(py))].into_py_dict(py);
    let logged = kwargs.and_then(|kwargs| {
        stdlib(py)
            .logger
            .bind(py)
            .call_method(level, args, Some(&kwargs))
    });
    if let Err(e) = logged {
        e.write_unraisable(py, obj);
    }
}
