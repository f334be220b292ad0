//! The work-stealing executor.
//!
//! - [`pool`]: [`ThreadPool`] and its [`Builder`]: submit, shutdown, metrics.
//! - [`current`]: spawning onto the pool that runs the caller.
//! - [`map`]: the lazy, ordered, bounded `map`.
//! - [`scope`]: scoped tasks that borrow, and `install`.
//! - [`join`]: fork-join, a worker helping while it waits.
//! - [`registry`]: what the pool shares with its workers (queues, state).
//! - [`worker`]: the worker loops (core and compensating), their context.
//! - [`submit`](mod@submit): queueing a task and waking a worker for it.
//! - [`blocking`]: how a pool thread waits (inline, or keeping capacity).
//! - [`sleep`]: parking idle workers without lost wakeups.
//! - [`idle`]: whether a worker that ran dry spins first or sleeps at once.
//! - [`strand`] and [`schedule`]: serial contexts owning a state.
//! - [`task`]: one allocation per task, closure and future together.
//! - [`async_task`]: `std::future::Future`s polled on the workers.
//! - [`deadlock`]: refusing waits on oneself or in a cycle.
//! - [`metrics`]: relaxed per-worker counters.

pub(crate) mod async_task;
pub(crate) mod blocking;
pub(crate) mod current;
pub(crate) mod deadlock;
pub(crate) mod idle;
pub(crate) mod join;
pub(crate) mod map;
pub(crate) mod metrics;
pub(crate) mod pool;
pub(crate) mod registry;
pub(crate) mod sched_policy;
pub(crate) mod schedule;
pub(crate) mod scope;
pub(crate) mod sleep;
pub(crate) mod strand;
pub(crate) mod submit;
pub(crate) mod task;
pub(crate) mod worker;

pub use current::{CurrentPoolError, spawn, submit};
pub use map::Map;
pub use metrics::Metrics;
pub use pool::{
    BuildError, Builder, MAX_WORKERS, MIN_STACK_SIZE, ShutdownReport, SubmitError, ThreadPool,
};
pub use scope::{Scope, ScopedHandle, ScopedJoin};
pub use strand::Strand;
