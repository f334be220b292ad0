//! The native core of the `ordered_futures` Python package: a drop-in
//! `concurrent.futures.ThreadPoolExecutor` on the `concurrent-futures`
//! crate, whose done-callbacks run exactly once, in the order they were
//! added, never two at a time.
//!
//! Nothing here relies on the GIL for memory safety: outcomes are
//! `Py<PyAny>` behind a `Mutex`, futures and pools are the crate's
//! lock-free types, and every Python call is made attached. The module
//! declares itself free-threading ready (`gil_used = false`); what a
//! free-threaded build changes is in docs/python.md.

mod executor;
mod future;
mod gil;
mod lifecycle;
mod map;
mod outcome;
mod stdlib;
mod waiting;

use pyo3::prelude::*;

/// Module set-up: records the main thread (whose waits run the signal
/// handlers).
#[pyfunction]
fn _set_main_thread(ident: u64) {
    gil::record_main_thread(ident);
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    stdlib::init(m.py())?;
    m.add_class::<future::PyFuture>()?;
    m.add_class::<executor::Executor>()?;
    m.add_class::<map::MapIter>()?;
    m.add_class::<waiting::AsCompleted>()?;
    m.add_class::<lifecycle::WorkerThread>()?;
    m.add_function(wrap_pyfunction!(waiting::wait, m)?)?;
    m.add_function(wrap_pyfunction!(waiting::as_completed, m)?)?;
    m.add_function(wrap_pyfunction!(executor::_set_future_class, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::_python_exit, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(_set_main_thread, m)?)?;
    Ok(())
}
