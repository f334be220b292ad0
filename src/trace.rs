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

//!
//! A subscriber is user code: a panic in it is caught and reported
//! ([`PanicOrigin::Tracing`](crate::PanicOrigin::Tracing)), never let
//! unwind out of a worker or a shutdown.

/// A `tracing` event (feature `tracing`), or nothing.
macro_rules! trace_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        crate::panics::guard(crate::panics::PanicOrigin::Tracing, || {
            ::tracing::event!(target: "concurrent_futures", $($arg)*);
        });
    };
}

/// Enters a `tracing` span until the end of the enclosing block (feature
/// `tracing`), or nothing.
macro_rules! trace_span {
    ($level:expr, $name:expr $(, $($field:tt)*)?) => {
        #[cfg(feature = "tracing")]
        let _entered = crate::trace::GuardedSpan::enter(|| {
            ::tracing::span!(target: "concurrent_futures", $level, $name $(, $($field)*)?)
        });
    };
}

pub(crate) use {trace_event, trace_span};

/// An entered span whose enter, exit and close (subscriber code) run under
/// guards.
#[cfg(feature = "tracing")]
pub(crate) struct GuardedSpan(Option<::tracing::span::EnteredSpan>);

#[cfg(feature = "tracing")]
impl GuardedSpan {
    pub(crate) fn enter(make: impl FnOnce() -> ::tracing::Span) -> Self {
        let mut entered = None;
        crate::panics::guard(crate::panics::PanicOrigin::Tracing, || {
            entered = Some(make().entered());
        });
        GuardedSpan(entered)
    }
}

#[cfg(feature = "tracing")]
impl Drop for GuardedSpan {
    fn drop(&mut self) {
        if let Some(entered) = self.0.take() {
            crate::panics::guard(crate::panics::PanicOrigin::Tracing, move || drop(entered));
        }
    }
}
