//! The future Python sees: a `concurrent.futures.Future` whose state and
//! done-callbacks live in the crate's lock-free future, so they run
//! exactly once, in the order they were added, never two at a time.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Instant;

use concurrent_futures::{FutureHandle, Promise, Strand, TaskError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::gil;
use crate::outcome::Outcome;
use crate::stdlib::{self, stdlib};

/// The native half of `ordered_futures.Future` (which also derives from
/// `concurrent.futures.Future`, so `isinstance` checks hold).
#[pyclass(subclass, frozen, module = "ordered_futures._core", name = "Future")]
pub(crate) struct PyFuture {
    pub(crate) handle: FutureHandle<Outcome>,
    /// The writer, for a future made by Python code (`Future()`); `None`
    /// for a task's future, which its executor completes.
    promise: Option<Promise<Outcome>>,
    /// The executor's serial callback context, if it has one.
    serial: Option<Strand<()>>,
    /// The stdlib's private `_result` and `_exception` fields as written
    /// on a pending future, which `_state = FINISHED` then completes it
    /// with (code written against the stdlib's internals writes them
    /// first).
    staged: Mutex<Staged>,
}

/// `_result` and `_exception` written before the future finished.
type Staged = (Option<Py<PyAny>>, Option<Py<PyAny>>);

/// Where a future stands, as the stdlib names it.
#[derive(Clone, Copy)]
enum State {
    Pending,
    Running,
    /// Cancelled; waiters are told at once (the stdlib's
    /// `CANCELLED_AND_NOTIFIED`).
    Cancelled,
    Finished,
}

impl State {
    /// The name in the stdlib's messages (`InvalidStateError`), upper case.
    fn name(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Cancelled => "CANCELLED",
            State::Finished => "FINISHED",
        }
    }
}

thread_local! {
    /// The future `make` is building, handed to `__new__` on this thread.
    static SEED: Cell<Option<PyFuture>> = const { Cell::new(None) };
}

impl PyFuture {
    /// An object of the Python class `class` (a subclass of this one) over
    /// a task's `handle`.
    pub(crate) fn make<'py>(
        class: &Bound<'py, PyType>,
        handle: FutureHandle<Outcome>,
        serial: Option<Strand<()>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = class.py();
        SEED.with(|s| {
            s.set(Some(PyFuture {
                handle,
                promise: None,
                serial,
                staged: Mutex::default(),
            }))
        });
        let args = PyTuple::empty(py);
        let tp = class.as_type_ptr();
        // SAFETY: `class` is a live type object (we hold a reference), and
        // every subclass of this pyclass inherits its `tp_new`, which takes
        // a type and an argument tuple and returns a new reference or null
        // with an exception set. Calling `tp_new` rather than the class
        // skips `__init__`, as `object.__new__` callers do.
        let made = unsafe {
            match (*tp).tp_new {
                Some(new) => {
                    Bound::from_owned_ptr_or_err(py, new(tp, args.as_ptr(), std::ptr::null_mut()))
                }
                None => Err(PyRuntimeError::new_err(
                    "the Future class cannot be instantiated",
                )),
            }
        };
        // `__new__` took the seed unless it failed first.
        SEED.with(|s| drop(s.take()));
        made
    }

    fn promise(&self) -> PyResult<&Promise<Outcome>> {
        self.promise.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err("a future returned by submit is completed by its executor")
        })
    }

    fn state(&self) -> State {
        if self.handle.cancelled() {
            State::Cancelled
        } else if self.handle.done() {
            State::Finished
        } else if self.handle.running() {
            State::Running
        } else {
            State::Pending
        }
    }

    /// The stdlib's `_result` (`raised` false) or `_exception` field.
    fn field(&self, py: Python<'_>, raised: bool) -> Py<PyAny> {
        match self.handle.try_result() {
            Some(Ok(o)) => o.value_if(py, raised),
            Some(Err(_)) => py.None(),
            None => {
                let staged = self.staged();
                let field = if raised { &staged.1 } else { &staged.0 };
                field
                    .as_ref()
                    .map_or_else(|| py.None(), |v| v.clone_ref(py))
            }
        }
    }

    /// The fields staged on a pending future. Touched only under the GIL,
    /// so never contended; the lock makes the frozen class writable.
    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(slf: &Bound<'_, Self>) -> PyErr {
        let py = slf.py();
        let repr = slf.repr().map(|r| r.to_string()).unwrap_or_default();
        stdlib::error(
            py,
            &stdlib(py).invalid_state_error,
            (format!("{}: {repr}", slf.get().state().name()),),
        )
    }

    fn set(slf: &Bound<'_, Self>, outcome: Outcome) -> PyResult<()> {
        let promise = slf.get().promise()?;
        raising_from_callbacks(|| match promise.set_result(outcome) {
            Ok(()) => Ok(()),
            Err(_) => Err(Self::refuse(slf)),
        })
    }
}

/// Waits (GIL released, interruptible) until `handle` is done or
/// `deadline` passes; then its outcome, or the stdlib's error for a
/// cancelled future or a timeout.
pub(crate) fn outcome_of<'h>(
    py: Python<'_>,
    handle: &'h FutureHandle<Outcome>,
    deadline: Option<Instant>,
) -> PyResult<&'h Outcome> {
    let done = gil::wait_interruptibly(
        py,
        deadline,
        || handle.done(),
        |until| block_on(handle, until),
    )?;
    match handle.try_result() {
        _ if !done => Err(stdlib::timeout(py)),
        Some(Ok(outcome)) => Ok(outcome),
        Some(Err(TaskError::Cancelled)) => Err(stdlib::cancelled(py)),
        Some(Err(e)) => Err(stdlib::error(
            py,
            &stdlib(py).broken_thread_pool,
            (e.to_string(),),
        )),
        None => Err(stdlib::timeout(py)),
    }
}

/// [`outcome_of`], then the value, or the call's exception raised.
pub(crate) fn value_of(
    py: Python<'_>,
    handle: &FutureHandle<Outcome>,
    deadline: Option<Instant>,
) -> PyResult<Py<PyAny>> {
    let outcome = outcome_of(py, handle, deadline)?;
    raise_or_return(py, outcome.get(py))
}

/// [`value_of`], with the value moved out of the outcome rather than
/// copied: for a handle no other code reads (`map`'s), so that once the
/// caller drops the value nothing else holds it.
pub(crate) fn take_value_of(
    py: Python<'_>,
    handle: &FutureHandle<Outcome>,
    deadline: Option<Instant>,
) -> PyResult<Py<PyAny>> {
    let outcome = outcome_of(py, handle, deadline)?;
    raise_or_return(py, outcome.take(py))
}

/// The value, or the exception raised, as `get` or `take` returned them.
fn raise_or_return(py: Python<'_>, (raised, value): (bool, Py<PyAny>)) -> PyResult<Py<PyAny>> {
    if raised {
        Err(stdlib::raise(value.into_bound(py)))
    } else {
        Ok(value)
    }
}

/// Blocks (GIL released) until `handle` is done or `until` passes.
///
/// A wait the pool refuses (its task cannot finish while this thread
/// waits) raises only where CPython would hang for good, an untimed one.
/// A timed one is waited out, as CPython does, and then times out: code
/// that breaks a cycle of waits with a timeout runs as it does there.
pub(crate) fn block_on(handle: &FutureHandle<Outcome>, until: Option<Instant>) -> PyResult<()> {
    let waited = match until {
        None => handle.wait(),
        Some(d) => handle.wait_timeout(d.saturating_duration_since(Instant::now())),
    };
    match (waited, until) {
        (Err(TaskError::WouldDeadlock), None) => Err(gil::would_deadlock()),
        (Err(TaskError::WouldDeadlock), Some(d)) => {
            // Refused only on a pool thread, which gets its whole
            // deadline here (the main thread's slices are not refused).
            std::thread::sleep(d.saturating_duration_since(Instant::now()));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The future a done-callback is called with, as its callback holds it.
enum Subject {
    /// A task's future, held as the stdlib's work item holds its future:
    /// the executor completes it, and its callbacks run, whatever Python
    /// still holds.
    Task(Py<PyAny>),
    /// A future made by `Future()`, not held. A reference from its own
    /// callback list, which the garbage collector cannot walk, would be a
    /// cycle nobody sees: any callback would keep a future dropped while
    /// pending alive forever, with all its callbacks hold. (A weak
    /// reference would do too, but costs a Python object per future: 2.0x
    /// the stdlib's `add_done_callback` where this keeps 5-7x.)
    Made(MadeFuture),
}

/// The address of a future made by `Future()`. Every thread that can
/// run such a future's callbacks holds a strong reference to it while it
/// does:
/// - a thread completing or cancelling it, or adding a callback to it,
///   does so inside one of its methods (`set_result`, `set_exception`,
///   `cancel`, the `_state` setter, `add_done_callback`), whose caller
///   holds it; its drain also runs the callbacks added meanwhile;
/// - a thread removing a callback (`wait` and `as_completed` in
///   `waiting.rs`, which may compact the list and then run what was
///   queued, or take over a drain with an attach of their own) holds the
///   future in `ours` or `slots` until after `remove_done_callback`;
/// - no promise's callbacks are handed to a pool (a strand routes only a
///   task's, whose subject is held strongly).
///
/// The one exception is the drop of its promise, inside the future's own
/// deallocation, which completes it as [`TaskError::Abandoned`] (nothing
/// else does, for a promise): then the future is gone, and its callbacks
/// are skipped, as the stdlib never runs a dropped future's callbacks.
struct MadeFuture(NonNull<ffi::PyObject>);

// SAFETY: the address is only read, under the GIL, by `Subject::get`.
unsafe impl Send for MadeFuture {}

impl Subject {
    fn of(slf: &Bound<'_, PyFuture>) -> Subject {
        match slf.get().promise {
            Some(_) => Subject::Made(MadeFuture(
                NonNull::new(slf.as_ptr()).unwrap_or_else(|| unreachable!("a live object")),
            )),
            None => Subject::Task(slf.clone().into_any().unbind()),
        }
    }

    /// The future to call the callback with, given how it ended; `None` for
    /// a future dropped pending.
    fn get<'py>(
        &self,
        py: Python<'py>,
        ended: Result<&Outcome, &TaskError>,
    ) -> Option<Bound<'py, PyAny>> {
        match self {
            Subject::Task(f) => Some(f.bind(py).clone()),
            Subject::Made(_) if matches!(ended, Err(TaskError::Abandoned)) => None,
            // SAFETY: not abandoned, so this callback runs on a thread that
            // holds a reference to the future (see `MadeFuture`), under the
            // GIL (`py`): the object is alive, and borrowing it takes a
            // reference of our own.
            Subject::Made(MadeFuture(p)) => {
                Some(unsafe { Bound::from_borrowed_ptr(py, p.as_ptr()) })
            }
        }
    }
}

thread_local! {
    /// For each call on this thread that runs done-callbacks and raises
    /// what they raise (innermost last; [`raising_from_callbacks`]): the
    /// first `BaseException` not an `Exception` that one of them raised.
    static RAISED: std::cell::RefCell<Vec<Option<PyErr>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Pops its call's entry of [`RAISED`], unwinding or not.
struct RaisedScope;

impl RaisedScope {
    fn enter() -> RaisedScope {
        RAISED.with(|r| r.borrow_mut().push(None));
        RaisedScope
    }

    /// What a callback raised for this call, if anything.
    fn take(self) -> Option<PyErr> {
        let raised = RAISED.with(|r| r.borrow_mut().last_mut().and_then(Option::take));
        drop(self);
        raised
    }
}

impl Drop for RaisedScope {
    fn drop(&mut self) {
        RAISED.with(|r| r.borrow_mut().pop());
    }
}

/// Runs `f`, a call that may run done-callbacks on this thread (a future's
/// `set_result`, `cancel`, `add_done_callback` on a done one, ...): a
/// `KeyboardInterrupt`, `SystemExit` or other `BaseException` that is not
/// an `Exception`, raised by one of them, is raised out of the call once
/// every callback has run, as the stdlib lets it out of the call (where it
/// skips the callbacks after it). An `Exception` is logged. If the call
/// fails too, the callback's exception wins: in the stdlib it would have
/// left the call before the failure (a `shutdown` that cancels queued
/// futures, then fails to join its own thread, raises the `SystemExit`
/// of a cancelled future's callback).
pub(crate) fn raising_from_callbacks<R>(f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    let scope = RaisedScope::enter();
    let out = f();
    match scope.take() {
        Some(raised) => Err(raised),
        None => out,
    }
}

/// Keeps `e` for the innermost [`raising_from_callbacks`] call on this
/// thread, if there is one and it holds nothing yet; else hands it back.
fn keep_raised(e: PyErr) -> Result<(), PyErr> {
    RAISED.with(|r| match r.borrow_mut().last_mut() {
        Some(slot @ None) => {
            *slot = Some(e);
            Ok(())
        }
        _ => Err(e),
    })
}

/// Runs a done-callback `f(future)`; an exception it raises is logged to
/// the `concurrent.futures` logger, as the stdlib does, and the next
/// callbacks still run. A `BaseException` that is not an `Exception`
/// (Ctrl-C's `KeyboardInterrupt`, `SystemExit`) is raised out of the call
/// that ran the callbacks on this thread, if it raises them
/// ([`raising_from_callbacks`]); on a worker it is logged.
fn run_callback(future: Subject, ended: Result<&Outcome, &TaskError>, f: Py<PyAny>) {
    Python::attach(|py| {
        if let Some(future) = future.get(py, ended)
            && let Err(e) = f.call1(py, (future.clone(),))
            && let Err(e) = if e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                Err(e)
            } else {
                keep_raised(e)
            }
        {
            stdlib::log_error(
                py,
                "exception",
                ("exception calling callback for %r", &future),
                e,
                Some(&future),
            );
        }
        drop(f);
        drop(future);
    });
}

#[pymethods]
impl PyFuture {
    /// A pending future, completed by `set_result` / `set_exception`.
    /// Arguments are left to a subclass's `__init__`, as `object.__new__`
    /// leaves them.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        SEED.with(|s| s.take()).unwrap_or_else(|| {
            let promise = Promise::new();
            PyFuture {
                handle: promise.handle(),
                promise: Some(promise),
                serial: None,
                staged: Mutex::default(),
            }
        })
    }

    /// Cancels the call if it has not started: True if it is cancelled
    /// (now or before), False if it runs or is done. A cancel runs the
    /// done-callbacks.
    fn cancel(&self) -> PyResult<bool> {
        raising_from_callbacks(|| Ok(self.handle.cancel()))
    }

    /// True if the future was cancelled.
    fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// True while the call runs.
    fn running(&self) -> bool {
        self.handle.running()
    }

    /// True if the call finished or was cancelled.
    fn done(&self) -> bool {
        self.handle.done()
    }

    /// The call's return value, waiting up to `timeout` seconds (None: no
    /// limit). Raises `CancelledError`, `TimeoutError`, or the exception
    /// the call raised. The GIL is released while waiting, and Ctrl-C
    /// interrupts the wait.
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        value_of(py, &self.handle, gil::deadline(timeout)?)
    }

    /// The exception the call raised (None if it returned), waiting up to
    /// `timeout` seconds. Raises `CancelledError` or `TimeoutError`.
    #[pyo3(signature = (timeout=None))]
    fn exception(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        Ok(outcome_of(py, &self.handle, gil::deadline(timeout)?)?.value_if(py, true))
    }

    /// Attaches `fn`, called as `fn(future)` once the future is done, on
    /// the thread that completes it (if it already is: at once, on this
    /// thread, unless another thread is still running the future's
    /// callbacks, which then runs it after them). The callbacks of a future
    /// run exactly once, in the order they were added, never two at a
    /// time, even when one is added while the future completes. With an
    /// executor's `serial_callbacks=True`, no two callbacks of any of its
    /// futures run at a time: one that comes due while another thread is
    /// running the executor's callbacks runs on that thread, after those
    /// before it (so possibly after this returns). An exception `fn` raises
    /// is logged to the `concurrent.futures` logger; the others still run.
    fn add_done_callback(slf: &Bound<'_, Self>, r#fn: Py<PyAny>) -> PyResult<()> {
        let me = slf.get();
        let future = Subject::of(slf);
        raising_from_callbacks(|| {
            match &me.serial {
                Some(strand) => strand
                    .dispatch_done_callback(&me.handle, move |_, o| run_callback(future, o, r#fn)),
                None => {
                    let _ = me
                        .handle
                        .add_done_callback(move |o| run_callback(future, o, r#fn));
                }
            }
            Ok(())
        })
    }

    /// Like `add_done_callback`, but never routed through the executor's
    /// serial context (for the stdlib-compatibility mirror, which only
    /// wakes stdlib waiters).
    fn _add_done_callback_unserialized(slf: &Bound<'_, Self>, r#fn: Py<PyAny>) {
        let future = Subject::of(slf);
        let _ = slf
            .get()
            .handle
            .add_done_callback(move |o| run_callback(future, o, r#fn));
    }

    /// For code that runs the work itself: False if the future was
    /// cancelled (skip the work), True after marking it running. Raises
    /// `RuntimeError` if it already runs or is done.
    fn set_running_or_notify_cancel(&self) -> PyResult<bool> {
        self.promise()?
            .set_running_or_notify_cancel()
            .map_err(|_| PyRuntimeError::new_err("Future in unexpected state"))
    }

    /// Completes the future with `result`: wakes waiters, runs callbacks.
    /// Raises `InvalidStateError` if it is done or cancelled.
    fn set_result(slf: &Bound<'_, Self>, result: Py<PyAny>) -> PyResult<()> {
        Self::set(slf, Outcome::returned(result))
    }

    /// Completes the future with the exception `exception`. Raises
    /// `InvalidStateError` if it is done or cancelled.
    fn set_exception(slf: &Bound<'_, Self>, exception: Py<PyAny>) -> PyResult<()> {
        Self::set(slf, Outcome::raised_value(exception))
    }

    /// The stdlib's state name (`PENDING`, `RUNNING`,
    /// `CANCELLED_AND_NOTIFIED` or `FINISHED`), read from the native
    /// state, for code that reads the stdlib's private field.
    #[getter]
    fn _state(&self, py: Python<'_>) -> Py<PyAny> {
        let s = stdlib(py);
        match self.state() {
            State::Cancelled => &s.cancelled_and_notified,
            State::Finished => &s.finished,
            State::Running => &s.running,
            State::Pending => &s.pending,
        }
        .clone_ref(py)
    }

    /// The return value once finished, else None (the stdlib's field).
    #[getter]
    fn _result(&self, py: Python<'_>) -> Py<PyAny> {
        self.field(py, false)
    }

    /// The exception once finished with one, else None (the stdlib's
    /// field).
    #[getter]
    fn _exception(&self, py: Python<'_>) -> Py<PyAny> {
        self.field(py, true)
    }

    /// Writing the stdlib's private state field, as code written against
    /// the stdlib's internals does (CPython's own tests build finished
    /// futures this way): `RUNNING` starts, `CANCELLED*` cancels,
    /// `FINISHED` completes a future of one's own with what `_result` /
    /// `_exception` were given while it was pending (the exception if one
    /// was), else None (`_result` / `_exception` writes that follow then
    /// set its outcome).
    #[setter(_state)]
    fn set_state_field(slf: &Bound<'_, Self>, state: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let s = stdlib(py);
        if state.eq(&s.running)? {
            me.set_running_or_notify_cancel()?;
        } else if state.eq(&s.cancelled_and_notified)? || state.eq("CANCELLED")? {
            raising_from_callbacks(|| Ok(me.handle.cancel()))?;
        } else if state.eq(&s.finished)? {
            if !me.handle.done() {
                // What `_result` / `_exception` held: the exception if one
                // was written (the stdlib's `result()` looks at it first).
                let (result, exception) = std::mem::take(&mut *me.staged());
                let outcome = match exception.filter(|e| !e.is_none(py)) {
                    Some(e) => Outcome::raised_value(e),
                    None => Outcome::returned(result.unwrap_or_else(|| py.None())),
                };
                Self::set(slf, outcome)?;
            }
        } else if !state.eq(&s.pending)? {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "not a future state: {state}"
            )));
        }
        Ok(())
    }

    /// Writing the stdlib's private result field: of a finished future,
    /// its value; of a pending `Future()`, what `_state = FINISHED`
    /// completes it with (of a task's pending future: ignored).
    #[setter(_result)]
    fn set_result_field(&self, value: Py<PyAny>) {
        match self.handle.try_result() {
            Some(Ok(o)) => drop(o.set_result_field(value)),
            // Staged only on a future of one's own: a task's is its
            // executor's to complete.
            None if self.promise.is_some() => {
                // Dropped after the lock: a `__del__` may read the field.
                let old = self.staged().0.replace(value);
                drop(old);
            }
            _ => {}
        }
    }

    /// Writing the stdlib's private exception field: of a finished
    /// future, its exception; of a pending `Future()`, what
    /// `_state = FINISHED` completes it with (of a task's pending future:
    /// ignored).
    #[setter(_exception)]
    fn set_exception_field(&self, py: Python<'_>, value: Py<PyAny>) {
        match self.handle.try_result() {
            Some(Ok(o)) => drop(o.set_exception_field(py, value)),
            None if self.promise.is_some() => {
                let old = self.staged().1.replace(value);
                drop(old);
            }
            _ => {}
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let me = slf.get();
        let name = slf.get_type().name()?;
        let at = slf.as_ptr() as usize;
        let state = me.state().name().to_lowercase();
        Ok(match me.handle.try_result() {
            Some(Ok(o)) => {
                let (raised, value) = o.get(py);
                let class = value.bind(py).get_type().name()?;
                let verb = if raised { "raised" } else { "returned" };
                format!("<{name} at {at:#x} state={state} {verb} {class}>")
            }
            _ => format!("<{name} at {at:#x} state={state}>"),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(Ok(outcome)) = self.handle.try_result() {
            outcome.traverse(&visit)?;
        }
        // Never contended: only GIL holders lock it, and the collector
        // holds the GIL; `try_lock` so that it could never wait.
        if let Ok(staged) = self.staged.try_lock() {
            for v in [&staged.0, &staged.1].into_iter().flatten() {
                visit.call(v)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(Ok(outcome)) = self.handle.try_result() {
            drop(outcome.clear());
        }
        let staged = std::mem::take(&mut *self.staged());
        drop(staged);
    }
}
