//! A finished call's outcome: the value it returned or the exception it
//! raised, held where the garbage collector can see it and clear it.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::gil;

/// What a call ended with. It sits behind a lock so that `__clear__` can
/// take the object out of a future caught in a reference cycle (an
/// exception whose traceback holds the future, say), and so that code
/// writing the stdlib's private `_result` / `_exception` fields (CPython's
/// own tests do) changes it safely; it is read once or twice per future.
pub(crate) struct Outcome {
    slot: Mutex<Slot>,
}

struct Slot {
    /// True if `value` is an exception the call raised.
    raised: bool,
    value: Option<Py<PyAny>>,
}

impl Outcome {
    fn new(raised: bool, value: Py<PyAny>) -> Self {
        Outcome {
            slot: Mutex::new(Slot {
                raised,
                value: Some(value),
            }),
        }
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

    /// True if the call raised.
    pub fn is_raised(&self) -> bool {
        self.slot().raised
    }

    /// Whether the call raised, and the value or exception (`None` once
    /// the garbage collector cleared it).
    pub fn get(&self, py: Python<'_>) -> (bool, Py<PyAny>) {
        let slot = self.slot();
        let value = slot
            .value
            .as_ref()
            .map_or_else(|| py.None(), |v| v.clone_ref(py));
        (slot.raised, value)
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
        if slot.raised {
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
        slot.raised = true;
        slot.value.replace(value)
    }

    /// Reports the held object to the garbage collector. A lock held
    /// elsewhere only hides the reference, which keeps the object alive:
    /// never the unsafe direction.
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
        (slot.raised, value)
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
