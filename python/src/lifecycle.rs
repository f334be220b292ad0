//! The pools' lives around the interpreter's: every pool is joined when
//! the interpreter exits (as the stdlib joins its workers), none is touched
//! in a child after `os.fork()` (its threads are not there).
//!
//! The registry's lock is only ever taken while holding the GIL and never
//! held across a wait, so no other thread can hold it at a `fork` (which
//! runs under the GIL). On a free-threaded build that argument is gone:
//! see docs/python.md.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPool;
use pyo3::prelude::*;

use crate::gil;

/// A clone of every pool not yet known to have ended, numbered. Dropping
/// the last clone of a pool joins its threads, which need the GIL to free
/// their thread states: a clone is only dropped with the GIL released, or
/// once its threads were joined.
static POOLS: Mutex<Vec<(u64, ThreadPool)>> = Mutex::new(Vec::new());

/// Numbers the registry's entries.
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// Counts `fork`s: a pool made in an earlier generation has no threads
/// in this process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The current fork generation.
pub(crate) fn generation() -> u64 {
    // Relaxed: written in the child right after fork, before any other
    // thread exists there.
    GENERATION.load(Ordering::Relaxed)
}

fn pools() -> std::sync::MutexGuard<'static, Vec<(u64, ThreadPool)>> {
    POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a clone of `pool` until it is shut down and its threads ended;
/// first forgets the pools that have. Only pools whose threads were joined
/// leave the registry: the exit hook, which may run while this waits with
/// the GIL released, still finds every other one there.
pub(crate) fn register(py: Python<'_>, pool: &ThreadPool) {
    let candidates: Vec<(u64, ThreadPool)> = pools()
        .iter()
        .filter(|(_, p)| p.is_shutdown())
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    let ended: Vec<u64> = py.detach(move || {
        candidates
            .into_iter()
            .filter(|(_, p)| p.shutdown_timeout(Duration::ZERO, false).finished)
            .map(|(id, _)| id)
            .collect()
    });
    // Relaxed: only a unique number.
    let id = REGISTERED.fetch_add(1, Ordering::Relaxed);
    let gone: Vec<(u64, ThreadPool)> = {
        let mut all = pools();
        let (gone, kept): (Vec<_>, Vec<_>) = all.drain(..).partition(|(id, _)| ended.contains(id));
        *all = kept;
        all.push((id, pool.clone()));
        gone
    };
    // Their threads were joined: dropping even a last clone waits for
    // nothing.
    drop(gone);
}

/// Shuts down `pool` and waits for its threads (GIL released, Ctrl-C
/// interrupts on the main thread). With `cancel`, queued calls are
/// cancelled first.
pub(crate) fn join(py: Python<'_>, pool: &ThreadPool, cancel: bool) -> PyResult<()> {
    pool.shutdown(false, cancel);
    if pool.is_worker_thread() {
        return Err(cannot_join_current_thread());
    }
    // A wait that could never end (the crate's wait-for graph) is not
    // made: the stdlib would hang there.
    wait_in_slices(py, None, |slice| {
        let report = pool.shutdown_timeout(slice, false);
        report.finished || report.would_deadlock
    })?;
    Ok(())
}

/// Calls `ended(slice)` with the GIL released, in slices of at most
/// [`gil::SLICE`], until it says the threads ended (true) or `deadline`
/// passes (false); on the main thread the signal handlers run between
/// slices. `ended` may join threads, which take the GIL as they exit:
/// that is why it never runs attached.
fn wait_in_slices(
    py: Python<'_>,
    deadline: Option<Instant>,
    ended: impl Fn(Duration) -> bool + Send + Sync,
) -> PyResult<bool> {
    loop {
        let now = Instant::now();
        let slice = deadline.map_or(gil::SLICE, |d| {
            d.saturating_duration_since(now).min(gil::SLICE)
        });
        if py.detach(|| ended(slice)) {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        if gil::on_main_thread() {
            py.check_signals()?;
        }
    }
}

/// The stdlib's answer to a thread that would wait for itself to end.
fn cannot_join_current_thread() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("cannot join current thread")
}

/// The exit hook (registered with `threading._register_atexit`, as the
/// stdlib's is): refuses new submits and waits for every pool's queued
/// and running calls, so no worker touches the interpreter as it
/// finalizes.
#[pyfunction]
pub(crate) fn _python_exit(py: Python<'_>) -> PyResult<()> {
    gil::set_exiting();
    let all = std::mem::take(&mut *pools());
    // What a worker lets go of during this wait is still dropped under the
    // GIL (`gil::drop_attached`); after it, not.
    let interrupted = all.iter().find_map(|(_, pool)| join(py, pool, false).err());
    gil::set_finalizing();
    if let Some(err) = interrupted {
        // Interrupted (Ctrl-C): the clones go back unjoined. Dropped here,
        // with the GIL held, the last clone of a pool still running would
        // wait for its workers, which need the GIL.
        pools().extend(all);
        return Err(err);
    }
    py.detach(move || drop(all));
    Ok(())
}

/// `os.register_at_fork(after_in_child=...)`: the parent's pools have no
/// threads here. Their clones are forgotten (dropping one would join
/// threads that do not exist), and executors made before the fork refuse
/// new work. The forking thread is the child's main thread (the one whose
/// waits run the signal handlers).
#[pyfunction]
pub(crate) fn _after_fork_in_child(main_thread: u64) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    std::mem::forget(std::mem::take(&mut *pools()));
    gil::record_main_thread(main_thread);
}

/// One worker of an executor, as the stdlib's `executor._threads` shows
/// it: its name, and `join`, which waits for the executor's threads to
/// end (they end together, once it is shut down and its calls are done).
#[pyclass(frozen, module = "ordered_futures._core", name = "WorkerThread")]
pub(crate) struct WorkerThread {
    name: String,
    pool: ThreadPool,
    generation: u64,
}

impl WorkerThread {
    /// A thread of `pool`, whose threads live in fork `generation` (the
    /// executor's: read in a fork's child, they are not in this process).
    pub(crate) fn new(name: String, pool: ThreadPool, generation: u64) -> Self {
        WorkerThread {
            name,
            pool,
            generation,
        }
    }

    /// Waits at most `limit` for the threads to end; call it detached
    /// (a finished wait joins them, and they take the GIL as they exit).
    fn wait_ended(&self, limit: Duration) -> bool {
        if self.generation != generation() {
            // After a fork the threads are not in this process.
            return true;
        }
        if self.pool.is_shutdown() {
            self.pool.shutdown_timeout(limit, false).finished
        } else {
            // Not shut down: the threads cannot end yet.
            std::thread::sleep(limit);
            false
        }
    }
}

#[pymethods]
impl WorkerThread {
    /// The thread's name, `<thread_name_prefix>_<index>`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Waits (GIL released, interruptible) until the thread ends or
    /// `timeout` seconds pass, as `threading.Thread.join`.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        if self.generation == generation() && self.pool.is_worker_thread() {
            return Err(cannot_join_current_thread());
        }
        wait_in_slices(py, gil::deadline(timeout)?, |slice| self.wait_ended(slice))?;
        Ok(())
    }

    /// True until the thread ended.
    fn is_alive(&self, py: Python<'_>) -> bool {
        // After a fork the threads are not in this process (the stdlib
        // marks a parent's threads stopped in the child too).
        self.generation == generation()
            && !py.detach(|| self.pool.is_shutdown() && self.wait_ended(Duration::ZERO))
    }

    fn __repr__(&self) -> String {
        format!("<WorkerThread({})>", self.name)
    }
}
