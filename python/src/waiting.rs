//! `wait` and `as_completed` over many futures: one done-callback per
//! future, no lock, the GIL released while blocked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use concurrent_futures::{FutureHandle, Registration, TaskError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PySet;

use crate::future::PyFuture;
use crate::gil;
use crate::outcome::Outcome;
use crate::stdlib::{self, stdlib};

/// Our futures with their native handles.
type Ours<'py> = Vec<(Bound<'py, PyAny>, FutureHandle<Outcome>)>;

/// The distinct futures of `fs`, as the stdlib's `set(fs)`, with their
/// handles; `None` if one is not ours (the stdlib's functions then serve).
fn collect<'py>(fs: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PySet>, Option<Ours<'py>>)> {
    let set = PySet::new(fs.py(), fs.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
    let mut ours = Vec::with_capacity(set.len());
    for f in set.iter() {
        match f.cast::<PyFuture>() {
            Ok(native) => {
                let handle = native.get().handle.clone();
                ours.push((f, handle));
            }
            Err(_) => return Ok((set, None)),
        }
    }
    Ok((set, Some(ours)))
}

/// True if the future finished by raising (what `FIRST_EXCEPTION` waits
/// for; a cancel does not count, as in the stdlib).
fn raised(outcome: Result<&Outcome, &TaskError>) -> bool {
    match outcome {
        Ok(o) => o.is_raised(),
        Err(e) => *e != TaskError::Cancelled,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ReturnWhen {
    FirstCompleted,
    FirstException,
    AllCompleted,
}

/// What the callbacks of one `wait` share with the waiting thread.
struct Watch {
    /// Futures not yet done.
    left: AtomicUsize,
    met: AtomicBool,
    waiter: std::thread::Thread,
}

impl Watch {
    fn finished(&self, when: ReturnWhen, outcome: Result<&Outcome, &TaskError>) {
        // Relaxed: the count only decides who wakes the waiter; what the
        // waiter then reads (the futures' states) is ordered by the
        // futures themselves.
        let last = self.left.fetch_sub(1, Ordering::Relaxed) == 1;
        let met = last
            || when == ReturnWhen::FirstCompleted
            || (when == ReturnWhen::FirstException && raised(outcome));
        // Release pairs with the waiter's Acquire load: it sees `met` and
        // returns; `unpark` wakes it if it sleeps.
        if met && !self.met.swap(true, Ordering::Release) {
            self.waiter.unpark();
        }
    }
}

/// `wait(fs, timeout=None, return_when=ALL_COMPLETED)`: blocks (GIL
/// released, Ctrl-C interrupts) until the condition holds or `timeout`
/// seconds pass; returns `DoneAndNotDoneFutures(done, not_done)`.
#[pyfunction]
#[pyo3(signature = (fs, timeout, return_when))]
pub(crate) fn wait<'py>(
    py: Python<'py>,
    fs: &Bound<'py, PyAny>,
    timeout: Option<f64>,
    return_when: Bound<'py, PyAny>,
) -> PyResult<Py<PyAny>> {
    // Anything else is refused only once there is something to wait for,
    // with the stdlib's error.
    let when = match return_when.extract::<&str>() {
        Ok("FIRST_COMPLETED") => Some(ReturnWhen::FirstCompleted),
        Ok("FIRST_EXCEPTION") => Some(ReturnWhen::FirstException),
        Ok("ALL_COMPLETED") => Some(ReturnWhen::AllCompleted),
        _ => None,
    };
    let deadline = gil::deadline(timeout)?;
    let (set, ours) = collect(fs)?;
    let Some(ours) = ours else {
        return stdlib(py)
            .stdlib_wait
            .call1(py, (set, timeout, return_when));
    };
    let pending: Vec<&FutureHandle<Outcome>> =
        ours.iter().map(|(_, h)| h).filter(|h| !h.done()).collect();
    let Some(when) = when.or(pending.is_empty().then_some(ReturnWhen::AllCompleted)) else {
        return Err(PyValueError::new_err(format!(
            "Invalid return condition: {}",
            return_when.repr()?
        )));
    };
    let met_now = match when {
        _ if pending.is_empty() => true,
        ReturnWhen::FirstCompleted => pending.len() < ours.len(),
        ReturnWhen::FirstException => ours
            .iter()
            .any(|(_, h)| h.try_result().is_some_and(|o| raised(o.as_ref().copied()))),
        ReturnWhen::AllCompleted => false,
    };
    if !met_now && deadline.is_none_or(|d| d > Instant::now()) {
        let watch = Arc::new(Watch {
            left: AtomicUsize::new(pending.len()),
            met: AtomicBool::new(false),
            waiter: std::thread::current(),
        });
        let registrations: Vec<(&FutureHandle<Outcome>, Registration<Outcome>)> = pending
            .iter()
            .map(|h| {
                let w = watch.clone();
                (*h, h.add_done_callback(move |o| w.finished(when, o)))
            })
            .collect();
        let met = || watch.met.load(Ordering::Acquire);
        let waited = gil::wait_interruptibly(py, deadline, met, |until| {
            while !met() {
                match until {
                    None => std::thread::park(),
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                        _ => break,
                    },
                }
            }
            Ok(())
        });
        // A removal may run other callbacks of the future (a compaction
        // that finds it done runs what was queued): `ours` keeps every
        // future alive until after it, which a `Future()`'s callbacks
        // rely on (future.rs, `MadeFuture`).
        for (h, r) in registrations {
            h.remove_done_callback(r);
        }
        waited?;
    }
    let (done, not_done) = (PySet::empty(py)?, PySet::empty(py)?);
    for (f, h) in &ours {
        if h.done() {
            done.add(f)?
        } else {
            not_done.add(f)?
        }
    }
    stdlib(py).done_and_not_done.call1(py, (done, not_done))
}

/// `as_completed(fs, timeout=None)`: an iterator over the distinct futures
/// of `fs`, those already done first, then each as it finishes. Raises
/// `TimeoutError` once `timeout` seconds (counted from the first `next`,
/// as the stdlib's generator does) pass with futures unfinished.
#[pyfunction]
#[pyo3(signature = (fs, timeout=None))]
pub(crate) fn as_completed(
    py: Python<'_>,
    fs: &Bound<'_, PyAny>,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    gil::deadline(timeout)?;
    let (set, ours) = collect(fs)?;
    let Some(ours) = ours else {
        return stdlib(py).stdlib_as_completed.call1(py, (set, timeout));
    };
    let (tx, rx) = channel();
    let mut ready = VecDeque::new();
    let mut registrations = Vec::with_capacity(ours.len());
    let mut slots = Vec::with_capacity(ours.len());
    for (i, (f, h)) in ours.into_iter().enumerate() {
        if h.done() {
            ready.push_back(i);
            registrations.push(None);
        } else {
            let tx: Sender<usize> = tx.clone();
            registrations.push(Some(h.add_done_callback(move |_| {
                let _ = tx.send(i);
            })));
        }
        slots.push(Some((f.unbind(), h)));
    }
    let total = slots.len();
    let iter = AsCompleted {
        slots,
        registrations,
        ready,
        rx: Mutex::new(rx),
        timeout,
        deadline: None,
        yielded: 0,
        total,
        over: false,
    };
    Ok(Py::new(py, iter)?.into_any())
}

/// The iterator `as_completed` returns.
#[pyclass(module = "ordered_futures._core", name = "AsCompletedIterator")]
pub(crate) struct AsCompleted {
    slots: Vec<Option<(Py<PyAny>, FutureHandle<Outcome>)>>,
    registrations: Vec<Option<Registration<Outcome>>>,
    /// Indices of the futures done at the call, yielded first.
    ready: VecDeque<usize>,
    /// Indices the callbacks send as futures finish.
    rx: Mutex<Receiver<usize>>,
    timeout: Option<f64>,
    /// Set at the first `next`.
    deadline: Option<Option<Instant>>,
    yielded: usize,
    total: usize,
    /// True after the timeout was raised.
    over: bool,
}

impl AsCompleted {
    fn take(&mut self, i: usize) -> Option<Py<PyAny>> {
        self.registrations[i] = None;
        let (f, _) = self.slots[i].take()?;
        self.yielded += 1;
        Some(f)
    }

    /// Waits for the next index (GIL released, interruptible); `None` at
    /// the deadline.
    fn next_index(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<Option<usize>> {
        let receiver = || self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(i) = receiver().try_recv() {
            return Ok(Some(i));
        }
        loop {
            let now = Instant::now();
            let until = if gil::on_main_thread() {
                Some(deadline.map_or(now + gil::SLICE, |d| d.min(now + gil::SLICE)))
            } else {
                deadline
            };
            let got = py.detach(|| {
                let rx = receiver();
                match until {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(u) => rx.recv_timeout(u.saturating_duration_since(Instant::now())),
                }
            });
            match got {
                Ok(i) => return Ok(Some(i)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    py.check_signals()?;
                }
            }
        }
    }

    /// The slot's future is dropped only after its callback is removed: a
    /// removal may run other callbacks of the future, which a `Future()`'s
    /// callbacks rely on (future.rs, `MadeFuture`).
    fn detach_all(&mut self) {
        for (slot, reg) in self.slots.iter_mut().zip(self.registrations.iter_mut()) {
            if let (Some((_, h)), Some(r)) = (slot.as_ref(), reg.take()) {
                h.remove_done_callback(r);
            }
            *slot = None;
        }
    }
}

#[pymethods]
impl AsCompleted {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// A `next` from another thread, or from a signal handler, while one
    /// blocks here raises the stdlib generator's `ValueError`.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let mut slf = crate::gil::running_iterator(slf)?;
        if slf.over || slf.yielded == slf.total {
            return Ok(None);
        }
        let deadline = match slf.deadline {
            Some(d) => d,
            None => {
                let d = gil::deadline(slf.timeout)?;
                slf.deadline = Some(d);
                d
            }
        };
        while let Some(i) = slf.ready.pop_front() {
            if let Some(f) = slf.take(i) {
                return Ok(Some(f));
            }
        }
        loop {
            let next = match slf.next_index(py, deadline) {
                Ok(next) => next,
                Err(e) => {
                    // Interrupted (Ctrl-C, a signal handler's exception):
                    // the stdlib's generator is finished by the exception
                    // and its `finally` removes its waiters, so this ends too.
                    slf.over = true;
                    slf.detach_all();
                    return Err(e);
                }
            };
            match next {
                Some(i) => {
                    if let Some(f) = slf.take(i) {
                        return Ok(Some(f));
                    }
                }
                None => {
                    let unfinished = slf.total - slf.yielded;
                    slf.over = true;
                    slf.detach_all();
                    let message = format!("{unfinished} (of {}) futures unfinished", slf.total);
                    return Err(stdlib::error(py, &stdlib(py).timeout_error, (message,)));
                }
            }
        }
    }
}

impl Drop for AsCompleted {
    fn drop(&mut self) {
        self.detach_all();
    }
}
