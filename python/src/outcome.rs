//! A finished call's outcome: the value it returned or the exception it
//! raised, held where the garbage collector can see it and clear it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::gil;

/// What a call ended with. It sits behind a lock so that `__clear__` can
/// take the object out of a future caught in a reference cycle (an
/// exception whose traceback holds the future, say), and so that code
/// writing the stdlib's private `_result` / `_exception` fields (CPython's
/// own tests do) changes it safely; it is read once or twice per future.
///
/// Only threads holding the GIL take the lock: a worker that asks whether
/// the call raised (`wait(..., FIRST_EXCEPTION)` on the completing thread)
/// reads `raised` alone. The garbage collector, which runs under the GIL,
/// then always finds the lock free, and sees the same references on each
/// of its passes over the object.
pub(crate) struct Outcome {
    /// True if the value is an exception the call raised. Written under
    /// the lock (with the GIL), so a reader holding the lock sees it with
    /// the value; read alone without either.
    raised: AtomicBool,
    slot: Mutex<Slot>,
}

struct Slot {
    value: Option<Py<PyAny>>,
}

impl Outcome {
    fn new(raised: bool, value: Py<PyAny>) -> Self {
        Outcome {
            raised: AtomicBool::new(raised),
            slot: Mutex::new(Slot { value: Some(value) }),
        }
    }

    /// `raised`, for a reader holding the lock (which orders it).
    fn raised_locked(&self, _slot: &Slot) -> bool {
        // Relaxed: the lock orders it with the writer's store.
        self.raised.load(Ordering::Relaxed)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The call returned `value`.
    pub fn returned(value: Py<PyAny>) -> Self {
        Self::new(false, value)
    }

    /// The call raised `err` (any `BaseException`, as the stdlib stores).
    pub fn raised(py: Python<'_>, err: PyErr) -> Self {
        Self::new(true, err.into_value(py).into_any())
    }

    /// The exception object `value`, set by `Future.set_exception`.
    pub fn raised_value(value: Py<PyAny>) -> Self {
        Self::new(true, value)
    }

    /// True if the call raised. Takes no lock: callable without the GIL.
    pub fn is_raised(&self) -> bool {
        // Relaxed: a flag read for itself; the outcome it belongs to was
        // published by the future's completion (Acquire) before anyone
        // asks, and a later write by Python code (`_exception`) orders
        // with nothing a worker reads.
        self.raised.load(Ordering::Relaxed)
    }

    /// Whether the call raised, and the value or exception (`None` once
    /// the garbage collector cleared it).
    pub fn get(&self, py: Python<'_>) -> (bool, Py<PyAny>) {
        let slot = self.slot();
        let value = slot
            .value
            .as_ref()
            .map_or_else(|| py.None(), |v| v.clone_ref(py));
        (self.raised_locked(&slot), value)
    }

    /// The value if the call `raised` (true: its exception) or returned
    /// (false: its return value) as asked, else None: the stdlib's
    /// `_exception` and `_result` fields.
    pub fn value_if(&self, py: Python<'_>, raised: bool) -> Py<PyAny> {
        match self.get(py) {
            (r, value) if r == raised => value,
            _ => py.None(),
        }
    }

    /// Writes the stdlib's `_result` field: the value, unless the call
    /// raised (the exception wins, as in the stdlib's `result()`). Returns
    /// the object replaced, to drop outside the lock.
    pub fn set_result_field(&self, value: Py<PyAny>) -> Option<Py<PyAny>> {
        let mut slot = self.slot();
        if self.raised_locked(&slot) {
            Some(value)
        } else {
            slot.value.replace(value)
        }
    }

    /// Writes the stdlib's `_exception` field: a non-None exception makes
    /// the outcome raised; None leaves it as it is.
    pub fn set_exception_field(&self, py: Python<'_>, value: Py<PyAny>) -> Option<Py<PyAny>> {
        if value.is_none(py) {
            return Some(value);
        }
        let mut slot = self.slot();
        // Relaxed: under the lock (see `raised`).
        self.raised.store(true, Ordering::Relaxed);
        slot.value.replace(value)
    }

    /// Reports the held object to the garbage collector. Only GIL holders
    /// lock (see [`Outcome`]), none of them across anything that could
    /// start a collection, so the lock is free here; `try_lock` keeps a
    /// mistake from deadlocking the collector.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(slot) = self.slot.try_lock()
            && let Some(v) = &slot.value
        {
            visit.call(v)?;
        }
        Ok(())
    }

    /// Takes the held object out, breaking a cycle through it.
    pub fn clear(&self) -> Option<Py<PyAny>> {
        self.slot().value.take()
    }

    /// Whether the call raised, and the value or exception, moved out
    /// (`None` once taken or cleared): for an owner no other code can
    /// read the outcome through, such as `map`'s iterator.
    pub fn take(&self, py: Python<'_>) -> (bool, Py<PyAny>) {
        let mut slot = self.slot();
        let value = slot.value.take().unwrap_or_else(|| py.None());
        (self.raised_locked(&slot), value)
    }
}

/// The outcome lives in the crate's future, which the worker that ran the
/// call may be the last to let go of, after the caller took the value and
/// dropped its own reference. A reference dropped without the GIL would be
/// left to PyO3's pending list, applied at the next GIL acquisition through
/// PyO3, which may never come: the value would outlive every reference
/// Python holds to it (CPython's `test_free_reference` caught this in `map`).
/// So the value is released here, under the GIL.
impl Drop for Outcome {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = slot.value.take() {
            gil::release(value);
        }
    }
}
