//! The `tracing` feature: spans and events for tasks and the pool's
//! lifecycle. Without the feature these macros expand to nothing, so the
//! instrumentation costs nothing, not even a branch.
//!
//! What is emitted (target `concurrent_futures`):
//! - `DEBUG` events: a pool started (workers, thread name prefix), a
//!   worker started and exited (index; compensating workers too), shutdown
//!   asked (wait, cancel_pending) and its report.
//! - `TRACE`: a `task` span around each task a worker runs (worker index),
//!   so events the task itself emits nest in it, and a `task finished`
//!   event with its outcome (completed, panicked, cancelled, claimed).

/// A `tracing` event (feature `tracing`), or nothing.
macro_rules! trace_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        ::tracing::event!(target: "concurrent_futures", $($arg)*);
    };
}

/// Enters a `tracing` span until the end of the enclosing block (feature
/// `tracing`), or nothing.
macro_rules! trace_span {
    ($level:expr, $name:expr $(, $($field:tt)*)?) => {
        #[cfg(feature = "tracing")]
        let _entered = ::tracing::span!(target: "concurrent_futures", $level, $name $(, $($field)*)?).entered();
    };
}

pub(crate) use {trace_event, trace_span};
