//! The executor: `ThreadPoolExecutor`'s native half, a `ThreadPool` whose
//! tasks take the GIL only to run Python code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use concurrent_futures::{FutureHandle, Strand, ThreadPool};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFrozenSet, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::future::PyFuture;
use crate::lifecycle::WorkerThread;
use crate::map::MapIter;
use crate::outcome::Outcome;
use crate::stdlib::{self, stdlib};
use crate::{gil, lifecycle};

/// The Python `Future` class that `submit` returns (set at import).
static FUTURE_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Sets the class `submit` makes its futures of: the package's `Future`,
/// which derives from the native one and from the stdlib's.
#[pyfunction]
pub(crate) fn _set_future_class(py: Python<'_>, class: Bound<'_, PyType>) -> PyResult<()> {
    if !class.is_subclass_of::<PyFuture>()? {
        return Err(PyTypeError::new_err(
            "the future class must derive from _core.Future",
        ));
    }
    let _ = FUTURE_CLASS.set(py, class.unbind());
    Ok(())
}

/// Numbers the default thread-name prefixes, as the stdlib's counter does
/// (only executors given no prefix take a number).
static UNNAMED: AtomicU64 = AtomicU64::new(0);

/// Numbers every executor, for `SERVING` (0: none yet).
static EXECUTORS: AtomicU64 = AtomicU64::new(1);

const BROKEN: &str = "A thread initializer failed, the thread pool is not usable anymore";

/// An initializer and its arguments.
type Initializer = (Py<PyAny>, Py<PyTuple>);

/// What the tasks of one executor share.
struct Shared {
    /// Tells a worker's first task which executor it serves.
    id: u64,
    /// Behind a lock so that the collector can take it (`__clear__`): an
    /// initializer that is a method of an object holding the executor
    /// makes a cycle.
    initializer: Mutex<Option<Initializer>>,
    /// Set once an initializer failed: later calls fail with
    /// `BrokenThreadPool`, as the stdlib's do.
    broken: OnceLock<()>,
}

/// The last clone may be a worker's, dropped after its last task without
/// the GIL: the initializer and its arguments are released under it, so
/// that they are freed then (see `Outcome`'s drop).
impl Drop for Shared {
    fn drop(&mut self) {
        let initializer = self
            .initializer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(initializer) = initializer.take() {
            gil::drop_attached(initializer);
        }
    }
}

thread_local! {
    /// The executor whose tasks this worker thread has set itself up for.
    static SERVING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Shared {
    /// A worker's first task: keep a thread state for the thread's life,
    /// take the stdlib's thread name and install `threading`'s trace and
    /// profile hooks, in that order, as a stdlib worker does when it
    /// starts; run the initializer.
    fn set_up_thread(&self, py: Python<'_>) {
        gil::anchor(py);
        if SERVING.with(|s| s.replace(self.id)) == self.id {
            return;
        }
        if let Some(name) = std::thread::current().name() {
            // `prefix-3` is the stdlib's `prefix_3`.
            let name = match name.rsplit_once('-') {
                Some((prefix, index)) => format!("{prefix}_{index}"),
                None => name.to_owned(),
            };
            if let Ok(thread) = stdlib(py).current_thread.bind(py).call0() {
                let _ = thread.setattr("name", name);
            }
        }
        // After the name, as the stdlib's worker is named before it starts:
        // the hooks see the calls, not our set-up.
        stdlib::install_thread_hooks(py);
        // Not once the pool is broken: the stdlib's workers stop taking
        // work then, and start no more initializers.
        if self.broken.get().is_some() {
            return;
        }
        let initializer = self
            .initializer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(init, args)| (init.clone_ref(py), args.clone_ref(py)));
        if let Some((init, args)) = initializer
            && let Err(e) = init.bind(py).call1(args.bind(py))
        {
            stdlib::log_error(py, "critical", ("Exception in initializer:",), e, None);
            let _ = self.broken.set(());
        }
    }

    /// The initializer's slot, if only the executor holds this state (no
    /// call queued or running does, so no worker can still need it; a new
    /// call needs the GIL, which the collector holds while it asks) and
    /// nobody has the slot now (no worker does while the collector holds
    /// the GIL; `try_lock` keeps the collector from ever waiting).
    fn initializer_if_sole(
        self: &Arc<Self>,
    ) -> Option<std::sync::MutexGuard<'_, Option<Initializer>>> {
        if Arc::strong_count(self) != 1 {
            return None;
        }
        self.initializer.try_lock().ok()
    }

    /// Stored as a call's outcome, so made with no `__context__`: it is
    /// chained when `result()` raises it, as the stdlib's stored exceptions
    /// are (built here, inside a waiting caller's handler, it would carry
    /// that handler's exception for good).
    fn broken_error(py: Python<'_>) -> PyErr {
        stdlib::stored_error(py, &stdlib(py).broken_thread_pool, (BROKEN,))
    }
}

/// One submitted call.
pub(crate) struct Call {
    pub f: Py<PyAny>,
    pub args: Py<PyTuple>,
    pub kwargs: Option<Py<PyDict>>,
}

/// A call in the pool's queue. Run, it drops its references under the GIL
/// it ran with. Dropped unrun (cancelled, or thrown away with a pool's
/// queue), it is dropped by whoever holds the queue entry, often a worker
/// without the GIL: it takes the GIL for that, so that its function and
/// arguments are freed then, as the stdlib's worker frees a cancelled work
/// item it pops (see `Outcome`'s drop).
struct Queued(Option<Call>);

impl Queued {
    fn run(mut self, shared: &Shared) -> Outcome {
        match self.0.take() {
            Some(call) => call.run(shared),
            // Only `run`, which consumes the entry, and `drop` take it.
            None => unreachable!("a queued call runs once"),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            gil::drop_attached(call);
        }
    }
}

impl Call {
    /// Runs on a worker: takes the GIL, calls, drops the call's references
    /// under the GIL, lets the GIL go.
    fn run(self, shared: &Shared) -> Outcome {
        Python::attach(|py| {
            shared.set_up_thread(py);
            let outcome = if shared.broken.get().is_some() {
                Outcome::raised(py, Shared::broken_error(py))
            } else {
                match self
                    .f
                    .bind(py)
                    .call(self.args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py)))
                {
                    Ok(v) => Outcome::returned(v.unbind()),
                    Err(e) => Outcome::raised(py, e),
                }
            };
            drop(self);
            outcome
        })
    }
}

/// The native half of `ordered_futures.ThreadPoolExecutor`. The pool is
/// made by `_start`, which the Python class's `__init__` calls, so that a
/// subclass's `__init__` chooses the arguments, as with the stdlib.
#[pyclass(subclass, frozen, module = "ordered_futures._core", name = "Executor")]
pub(crate) struct Executor {
    started: OnceLock<Started>,
}

/// An executor's state once `__init__` ran.
struct Started {
    pool: ThreadPool,
    serial: Option<Strand<()>>,
    shared: Arc<Shared>,
    future_class: Py<PyType>,
    /// The fork generation the pool's threads live in.
    generation: u64,
    max_workers: usize,
    prefix: String,
}

impl Executor {
    fn started(&self) -> PyResult<&Started> {
        self.started
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("ThreadPoolExecutor.__init__ was not called"))
    }

    /// Queues `call`; the refusals of `submit`.
    pub(crate) fn spawn(&self, py: Python<'_>, call: Call) -> PyResult<FutureHandle<Outcome>> {
        self.started()?.spawn(py, call)
    }
}

impl Started {
    fn refuse_new_work(&self, py: Python<'_>) -> PyResult<()> {
        if self.generation != lifecycle::generation() {
            return Err(stdlib::error(
                py,
                &stdlib(py).broken_thread_pool,
                ("this executor was created before os.fork(); its threads are not in this process",),
            ));
        }
        if self.shared.broken.get().is_some() {
            return Err(stdlib::error(py, &stdlib(py).broken_thread_pool, (BROKEN,)));
        }
        // The exit hook shuts the pools down: say why first.
        if gil::exiting() {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after interpreter shutdown",
            ));
        }
        if self.pool.is_shutdown() {
            return Err(after_shutdown());
        }
        Ok(())
    }

    fn spawn(&self, py: Python<'_>, call: Call) -> PyResult<FutureHandle<Outcome>> {
        self.refuse_new_work(py)?;
        let shared = self.shared.clone();
        let queued = Queued(Some(call));
        self.pool
            .submit(move || queued.run(&shared))
            .map_err(|_| after_shutdown())
    }
}

fn after_shutdown() -> PyErr {
    PyRuntimeError::new_err("cannot schedule new futures after shutdown")
}

#[pymethods]
impl Executor {
    /// An executor not yet started: `__init__` starts it. Arguments are
    /// left to `__init__`, as `object.__new__` leaves them.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Executor {
            started: OnceLock::new(),
        }
    }

    /// Starts a pool of `max_workers` threads (default `min(32,
    /// os.cpu_count() + 4)`, with `os.process_cpu_count()` where it exists,
    /// as 3.13 does), all at once. `initializer(*initargs)` runs once on
    /// each thread, before its first call; if it raises, the executor is broken (pending
    /// and later calls fail with `BrokenThreadPool`). With
    /// `serial_callbacks=True`, the done-callbacks of all this executor's
    /// futures run one at a time, each on the thread that completes its
    /// future or on the thread running the executor's callbacks then.
    #[pyo3(signature = (max_workers=None, thread_name_prefix=None, initializer=None, initargs=None, serial_callbacks=false))]
    fn _start(
        &self,
        py: Python<'_>,
        max_workers: Option<Bound<'_, PyAny>>,
        thread_name_prefix: Option<Bound<'_, PyAny>>,
        initializer: Option<Py<PyAny>>,
        initargs: Option<Bound<'_, PyAny>>,
        serial_callbacks: bool,
    ) -> PyResult<()> {
        if self.started.get().is_some() {
            return Err(PyRuntimeError::new_err("this executor was already started"));
        }
        let max_workers = match max_workers.filter(|n| !n.is_none()) {
            // Past an `i64` is past the crate's limit too: the crate's
            // error, with the number asked for.
            Some(n) => match n.extract::<i64>() {
                Err(e) if e.is_instance_of::<PyOverflowError>(py) => {
                    if n.gt(0)? {
                        return Err(PyValueError::new_err(format!(
                            "{n} workers asked for; a pool has at most {}",
                            concurrent_futures::MAX_WORKERS
                        )));
                    }
                    0
                }
                other => other?,
            },
            None => {
                // 3.13 counts the CPUs this process may use; 3.11 all.
                let os = py.import("os")?;
                let count = match os.getattr("process_cpu_count") {
                    Ok(f) => f,
                    Err(_) => os.getattr("cpu_count")?,
                };
                let cpus: Option<i64> = count.call0()?.extract()?;
                32.min(cpus.unwrap_or(1) + 4)
            }
        };
        if max_workers <= 0 {
            return Err(PyValueError::new_err("max_workers must be greater than 0"));
        }
        let initializer = initializer.filter(|i| !i.is_none(py));
        if let Some(i) = &initializer
            && !i.bind(py).is_callable()
        {
            return Err(PyTypeError::new_err("initializer must be a callable"));
        }
        // The wrapper always passes them (`()` by default): `None` is
        // `initargs=None`, as iterable as any other non-iterable.
        let initargs = match initargs {
            None => return Err(PyTypeError::new_err("'NoneType' object is not iterable")),
            Some(a) => PyTuple::new(py, a.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
        };
        // The stdlib's `thread_name_prefix or "ThreadPoolExecutor-%d"`: any
        // true object names the threads as `str` gives it.
        let prefix = match thread_name_prefix {
            Some(p) if p.is_truthy()? => p.str()?.to_cow()?.into_owned(),
            _ => format!(
                "ThreadPoolExecutor-{}",
                UNNAMED.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let future_class = FUTURE_CLASS
            .get(py)
            .ok_or_else(|| PyRuntimeError::new_err("import ordered_futures, not its _core"))?
            .clone_ref(py);
        let workers = usize::try_from(max_workers).unwrap_or(usize::MAX);
        // No compensating workers: `max_workers` bounds the calls running
        // at once, as the stdlib's does (a call blocked in `result()` holds
        // its thread; one may still run the call it waits for inline). One
        // queue, as the stdlib's: a call submitted from a worker cannot
        // overtake one submitted before it from outside, which, with no
        // stand-ins, could leave it waiting on that one for good.
        let pool = ThreadPool::builder()
            .workers(workers)
            .max_blocking(0)
            .shared_queue(true)
            .thread_name(prefix.clone())
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let serial = serial_callbacks.then(|| Strand::new(&pool, ()));
        let started = Started {
            pool,
            serial,
            shared: Arc::new(Shared {
                id: EXECUTORS.fetch_add(1, Ordering::Relaxed),
                initializer: Mutex::new(initializer.map(|i| (i, initargs.unbind()))),
                broken: OnceLock::new(),
            }),
            future_class,
            generation: lifecycle::generation(),
            max_workers: workers,
            prefix,
        };
        lifecycle::register(py, &started.pool);
        if let Err(refused) = self.started.set(started) {
            // Two threads raced through `__init__`: this one's pool goes.
            refused.pool.shutdown(false, false);
            return Err(PyRuntimeError::new_err("this executor was already started"));
        }
        Ok(())
    }

    /// Schedules `fn(*args, **kwargs)` and returns its `Future`. Raises
    /// `RuntimeError` after `shutdown` (or once the interpreter exits) and
    /// `BrokenThreadPool` once an initializer failed.
    #[pyo3(signature = (r#fn, /, *args, **kwargs))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        r#fn: Py<PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let me = self.started()?;
        let call = Call {
            f: r#fn,
            args: args.unbind(),
            kwargs: kwargs.filter(|k| !k.is_empty()).map(Bound::unbind),
        };
        let handle = me.spawn(py, call)?;
        PyFuture::make(me.future_class.bind(py), handle, me.serial.clone())
    }

    /// `map(fn, *iterables, timeout=None, chunksize=1, buffersize=None)`:
    /// calls `fn` on the items of the iterables taken in parallel, and
    /// yields the results in order. All calls are queued at once, unless
    /// `buffersize` (Python 3.14's) bounds how many run ahead of the
    /// consumer. `timeout` counts from this call; a result not ready by
    /// then raises `TimeoutError`. An exception ends the iteration and
    /// cancels the calls not yet started, as does dropping or closing a
    /// started iterator. `chunksize` is accepted and ignored, as by the
    /// stdlib's thread pool.
    #[pyo3(signature = (r#fn, *iterables, timeout=None, chunksize=None, buffersize=None))]
    fn map(
        slf: &Bound<'_, Self>,
        r#fn: Py<PyAny>,
        iterables: Bound<'_, PyTuple>,
        timeout: Option<f64>,
        chunksize: Option<Bound<'_, PyAny>>,
        buffersize: Option<Bound<'_, PyAny>>,
    ) -> PyResult<MapIter> {
        let _ = chunksize;
        slf.get().started()?;
        MapIter::start(slf, r#fn, iterables, timeout, buffersize)
    }

    /// Stops taking new calls. With `cancel_futures`, cancels the calls not
    /// yet started; with `wait`, blocks until the others finish, GIL
    /// released (Ctrl-C interrupts the wait; the calls still finish).
    /// From a thread of this executor, `wait=True` raises `RuntimeError`
    /// (as the stdlib's: a thread cannot join itself) after shutting down.
    #[pyo3(signature = (wait=Truthy(true), *, cancel_futures=Truthy(false)))]
    fn shutdown(&self, py: Python<'_>, wait: Truthy, cancel_futures: Truthy) -> PyResult<()> {
        let (Truthy(wait), Truthy(cancel_futures)) = (wait, cancel_futures);
        let Some(me) = self.started.get() else {
            return Ok(());
        };
        if me.generation != lifecycle::generation() {
            return Ok(());
        }
        // The calls it cancels have their callbacks run here.
        crate::future::raising_from_callbacks(|| {
            if wait {
                lifecycle::join(py, &me.pool, cancel_futures)
            } else {
                me.pool.shutdown(false, cancel_futures);
                Ok(())
            }
        })
    }

    /// The workers, for code that reads the stdlib's private set to name
    /// or join them: one `WorkerThread` per thread (all started with the
    /// executor), whose `join` waits for the threads to end.
    #[getter]
    fn _threads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyFrozenSet>> {
        let me = self.started()?;
        let workers = (0..me.max_workers)
            .map(|i| {
                Py::new(
                    py,
                    WorkerThread::new(format!("{}_{i}", me.prefix), me.pool.clone(), me.generation),
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyFrozenSet::new(py, workers)
    }

    /// The number of worker threads (the stdlib's field).
    #[getter]
    fn _max_workers(&self) -> PyResult<usize> {
        Ok(self.started()?.max_workers)
    }

    /// The threads' name prefix (the stdlib's field).
    #[getter]
    fn _thread_name_prefix(&self) -> PyResult<String> {
        Ok(self.started()?.prefix.clone())
    }

    /// The collector's view: the future class, and the initializer with
    /// its arguments while no call holds them. While calls hold the shared
    /// state, a worker may still run the initializer, so the executor
    /// does not claim it then (a stdlib executor's threads hold theirs
    /// too); once they are done it does, and an executor in a cycle
    /// through its initializer (a method of an object that holds the
    /// executor) is collected, its threads ended.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(me) = self.started.get() else {
            return Ok(());
        };
        visit.call(&me.future_class)?;
        if let Some(initializer) = me.shared.initializer_if_sole()
            && let Some((init, args)) = initializer.as_ref()
        {
            visit.call(init)?;
            visit.call(args)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(me) = self.started.get() {
            // Dropped once the slot's lock is let go: a `__del__` it runs
            // may reach the executor.
            let taken = me
                .shared
                .initializer_if_sole()
                .and_then(|mut slot| slot.take());
            drop(taken);
        }
    }

    /// True once `shutdown` was called (the stdlib's field).
    #[getter]
    fn _shutdown(&self) -> bool {
        self.started.get().is_some_and(|s| s.pool.is_shutdown())
    }

    /// The broken-pool message once an initializer failed, else False
    /// (the stdlib's field).
    #[getter]
    fn _broken(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(
            match self.started.get().and_then(|s| s.shared.broken.get()) {
                Some(()) => BROKEN.into_pyobject(py)?.into_any().unbind(),
                None => false.into_pyobject(py)?.to_owned().into_any().unbind(),
            },
        )
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // As the stdlib's: the queued calls still run, then the threads
        // end. The registry's clone keeps this drop from joining them. In
        // a child after fork the pool's threads are in the parent: the
        // registry's clone was forgotten there, so this drop frees nothing
        // shared, and nothing is stopped (a lock a parent thread held at
        // the fork would never be released).
        if let Some(me) = self.started.get()
            && me.generation == lifecycle::generation()
        {
            me.pool.shutdown(false, false);
        }
    }
}

/// A flag Python tests for truth, as the stdlib's `if wait:` does: `0`,
/// `None` or an empty list are false, where a `bool` parameter would
/// refuse them.
pub(crate) struct Truthy(bool);

impl<'a, 'py> FromPyObject<'a, 'py> for Truthy {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        obj.is_truthy().map(Truthy)
    }
}
