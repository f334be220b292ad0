//! The lifecycle word of a future.
//!
//! ```text
//!            try_start                 begin_set          publish
//!  PENDING ────────────► RUNNING ─────────────► SETTING ─────────► FINISHED
//!     │  └──────────────── begin_set ────────────►┘                   ▲
//!     │ cancel               └──── publish (the task that started it) ─┘
//!     ▼
//!  CANCELLED
//! ```
//!
//! A pool task's runner publishes straight from `RUNNING`: it won
//! `try_start`, a pool task has no promise, and a running task cannot be
//! cancelled, so nobody can race it for the slot.
//!
//! Every transition is one CAS from the state it names; callers act on the
//! returned enum and never re-read the word to decide what happened.
//! `SETTING` gives its winner the exclusive right to write the outcome slot;
//! `FINISHED` and `CANCELLED` are published with Release and read with
//! Acquire, so a reader that sees them also sees the outcome.

use crate::sync::{AtomicU8, Ordering};

/// Not started; can be cancelled.
const PENDING: u8 = 0;
/// Started (a worker or `set_running_or_notify_cancel` claimed it).
const RUNNING: u8 = 1;
/// A writer won the right to store the outcome and is storing it.
const SETTING: u8 = 2;
/// The outcome is stored and visible.
const FINISHED: u8 = 3;
/// Cancelled before it started; there is no outcome.
const CANCELLED: u8 = 4;

/// A snapshot of the lifecycle, for readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not started.
    Pending,
    /// Started, no outcome yet (includes an outcome being written).
    Running,
    /// The outcome is visible.
    Finished,
    /// Cancelled.
    Cancelled,
}

/// What `try_start` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// This caller moved it to running: it must produce the outcome.
    Started,
    /// It was cancelled: do not run it.
    Cancelled,
    /// Someone else started or finished it.
    AlreadyStarted,
}

/// What `begin_set` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BeginSet {
    /// This caller may write the outcome, then must call `publish`.
    Won,
    /// An outcome was already set.
    AlreadyFinished,
    /// The future was cancelled.
    Cancelled,
}

/// What `cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// This call cancelled it: the caller must complete the stacks.
    Cancelled,
    /// It was already cancelled (Python: `cancel()` returns true again).
    AlreadyCancelled,
    /// It is running or finished: not cancelled.
    Refused,
}

/// The lifecycle word.
pub(crate) struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle(AtomicU8::new(PENDING))
    }

    /// Reads the phase. Acquire: pairs with `publish`/`cancel`, so a reader
    /// that sees `Finished` sees the outcome.
    pub(crate) fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            PENDING => Phase::Pending,
            RUNNING | SETTING => Phase::Running,
            FINISHED => Phase::Finished,
            _ => Phase::Cancelled,
        }
    }

    /// Whether the outcome (or the cancellation) is visible.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase(), Phase::Finished | Phase::Cancelled)
    }

    /// `PENDING -> RUNNING` (Python's `set_running_or_notify_cancel`).
    pub(crate) fn try_start(&self) -> Start {
        // Relaxed: a claim; nothing is published by starting, and the
        // outcome the starter later writes is published by `publish`.
        match self
            .0
            .compare_exchange(PENDING, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Start::Started,
            Err(CANCELLED) => Start::Cancelled,
            Err(_) => Start::AlreadyStarted,
        }
    }

    /// `PENDING -> CANCELLED`.
    pub(crate) fn cancel(&self) -> Cancel {
        // Release: pairs with readers' Acquire in `phase`. No data of ours
        // depends on it (a cancelled outcome is a constant); it is the
        // users' guarantee that a thread seeing the future cancelled sees
        // what the canceller did before, as one seeing it finished sees
        // what the setter did. No model can fail on it for that reason.
        match self
            .0
            .compare_exchange(PENDING, CANCELLED, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Cancel::Cancelled,
            Err(CANCELLED) => Cancel::AlreadyCancelled,
            Err(_) => Cancel::Refused,
        }
    }

    /// `PENDING | RUNNING -> SETTING`: claims the right to write the outcome.
    pub(crate) fn begin_set(&self) -> BeginSet {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            match cur {
                PENDING | RUNNING => {}
                CANCELLED => return BeginSet::Cancelled,
                _ => return BeginSet::AlreadyFinished,
            }
            // Relaxed: the claim makes us the slot's only writer; readers
            // only touch the slot after `publish`'s Release.
            match self
                .0
                .compare_exchange_weak(cur, SETTING, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return BeginSet::Won,
                Err(actual) => cur = actual,
            }
        }
    }

    /// `SETTING -> FINISHED` (or `RUNNING -> FINISHED` by the task's own
    /// runner), after the outcome was written.
    pub(crate) fn publish(&self) {
        // Release: pairs with the Acquire in `phase`; the outcome written
        // before this store is visible to every reader that sees FINISHED.
        self.0.store(FINISHED, Ordering::Release);
    }
}
