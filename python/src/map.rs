//! `Executor.map`'s iterator: the results in input order, each waited for
//! with the GIL released.

use std::collections::VecDeque;
use std::time::Instant;

use concurrent_futures::FutureHandle;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyIterator, PyTuple, PyWeakrefReference};

use crate::executor::{Call, Executor};
use crate::future::take_value_of;
use crate::gil;
use crate::outcome::Outcome;

/// The iterator `ThreadPoolExecutor.map` returns.
#[pyclass(module = "ordered_futures._core", name = "MapIterator")]
pub(crate) struct MapIter {
    /// The calls not yet yielded, oldest first.
    pending: VecDeque<FutureHandle<Outcome>>,
    deadline: Option<Instant>,
    /// With a `buffersize`: what queues one more call per result taken.
    refill: Option<Refill>,
    /// Set by the first `next`. As with the stdlib's generator, only a
    /// started iteration cancels its calls when dropped or closed: an
    /// iterator dropped unread leaves them all to run.
    started: bool,
}

struct Refill {
    f: Py<PyAny>,
    input: Py<PyIterator>,
    /// Weak, as the stdlib's: an unfinished iteration does not keep the
    /// executor alive; once it is gone, no more calls are queued.
    executor: Py<PyWeakrefReference>,
}

impl MapIter {
    /// Queues the calls (all, or the first `buffersize`) and returns the
    /// iterator over their results.
    pub(crate) fn start(
        executor: &Bound<'_, Executor>,
        f: Py<PyAny>,
        iterables: Bound<'_, PyTuple>,
        timeout: Option<f64>,
        buffersize: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = executor.py();
        let deadline = gil::deadline(timeout)?;
        let limit = match buffersize.filter(|b| !b.is_none()) {
            None => None,
            Some(b) => {
                if !b.is_instance_of::<PyInt>() {
                    return Err(PyTypeError::new_err(
                        "buffersize must be an integer or None",
                    ));
                }
                let n: i64 = b.extract()?;
                if n < 1 {
                    return Err(PyValueError::new_err("buffersize must be None or > 0"));
                }
                Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
        };
        let zipped = py.import("builtins")?.getattr("zip")?.call1(iterables)?;
        let mut input = zipped.cast_into::<PyIterator>()?;
        let exe = executor.get();
        let mut pending = VecDeque::new();
        while limit.is_none_or(|n| pending.len() < n) {
            let Some(args) = input.next() else { break };
            let call = Call {
                f: f.clone_ref(py),
                args: args?.cast_into::<PyTuple>()?.unbind(),
                kwargs: None,
            };
            pending.push_back(exe.spawn(py, call)?);
        }
        let refill = match limit {
            None => None,
            Some(_) => Some(Refill {
                f,
                input: input.unbind(),
                executor: PyWeakrefReference::new(executor)?.unbind(),
            }),
        };
        Ok(MapIter {
            pending,
            deadline,
            refill,
            started: false,
        })
    }

    fn refill(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(r) = &self.refill else { return Ok(()) };
        let Some(executor) = r.executor.bind(py).upgrade() else {
            return Ok(());
        };
        let executor = executor.cast_into::<Executor>()?;
        if let Some(args) = r.input.bind(py).clone().next() {
            let call = Call {
                f: r.f.clone_ref(py),
                args: args?.cast_into::<PyTuple>()?.unbind(),
                kwargs: None,
            };
            self.pending.push_back(executor.get().spawn(py, call)?);
        }
        Ok(())
    }

    fn cancel_rest(&mut self) {
        for handle in self.pending.drain(..) {
            handle.cancel();
        }
        self.refill = None;
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Ends the iteration, as a generator's `close`: once started, the
    /// calls not yet started are cancelled.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut me = gil::running_iterator(slf)?;
        if me.started {
            me.cancel_rest();
        }
        me.pending.clear();
        me.refill = None;
        Ok(())
    }

    /// A `next` (or `close`) from another thread, or from a signal handler,
    /// while one blocks here raises the stdlib generator's `ValueError`.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let mut slf = gil::running_iterator(slf)?;
        slf.started = true;
        if let Err(e) = slf.refill(py) {
            slf.cancel_rest();
            return Err(e);
        }
        let Some(handle) = slf.pending.pop_front() else {
            return Ok(None);
        };
        // Moved out: this iterator is the handle's only reader.
        let got = take_value_of(py, &handle, slf.deadline);
        if got.is_err() {
            // As the stdlib's: the call timed out on is cancelled too.
            handle.cancel();
            slf.cancel_rest();
        }
        got.map(Some)
    }
}

impl Drop for MapIter {
    fn drop(&mut self) {
        if self.started {
            self.cancel_rest();
        }
    }
}
