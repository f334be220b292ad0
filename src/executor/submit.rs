//! Queueing a task and waking a worker for it.
//!
//! A submit from outside the pool goes to the injector and is counted in
//! flight while it pushes, so a shutdown racing it either refuses it or
//! waits for it (`Registry::begin_submit`). A submit from one of the
//! pool's own workers goes to that worker's deque: it needs no count, since
//! a worker drains its own deque before it can exit.
//!
//! After the push, a worker is woken if none is searching, and if none can
//! be woken while a pool thread is blocked in a wait, a compensating worker
//! is started ([`notify_after_push`]). A join's second half gets a cheaper
//! hint ([`hint_after_join_push`]), since its owner runs it if nobody does;
//! but a pool thread blocked in a wait still gets its capacity back.

use std::sync::Arc;

use crate::sync::Ordering;

use super::registry::Registry;
use super::sleep::Notified;
use super::task::TaskRef;
use super::worker::{OnWorker, on_worker_of, spawn_compensating};

/// A claimed right to push one task (the pool counts it as in flight, so
/// shutdown cannot strand it). Pushing consumes it.
pub(crate) struct SubmitSlot<'a> {
    registry: &'a Arc<Registry>,
    /// On one of the pool's own threads: where its pushes go, looked up
    /// once with the claim.
    local: Option<OnWorker>,
    /// An outside submit counted in flight (`begin_submit`), to end on push.
    counted: bool,
}

impl<'a> SubmitSlot<'a> {
    /// Claims a slot; `None` if the pool is shut down.
    pub(crate) fn claim(registry: &'a Arc<Registry>) -> Option<Self> {
        Self::claim_from(registry, on_worker_of(registry))
    }

    /// [`SubmitSlot::claim`] for a caller that already knows whether it
    /// runs on one of the pool's own threads (`local`, from the worker's
    /// context).
    pub(crate) fn claim_from(registry: &'a Arc<Registry>, local: Option<OnWorker>) -> Option<Self> {
        let open = if local.is_some() {
            !registry.is_shutdown()
        } else {
            registry.begin_submit()
        };
        open.then_some(SubmitSlot {
            registry,
            local,
            counted: local.is_none(),
        })
    }

    /// A slot to queue a live future again (woken). Never refused: the
    /// future holds the pool open ([`Registry::try_hold`]), so workers are
    /// alive to run it even after shutdown.
    pub(crate) fn requeue(registry: &'a Arc<Registry>) -> Self {
        Self::requeue_from(registry, on_worker_of(registry))
    }

    /// [`SubmitSlot::requeue`] for a caller that already knows whether it
    /// runs on one of the pool's own threads (`local`).
    pub(crate) fn requeue_from(registry: &'a Arc<Registry>, local: Option<OnWorker>) -> Self {
        SubmitSlot {
            registry,
            local,
            counted: false,
        }
    }

    /// The pool the slot is of.
    pub(crate) fn registry(&self) -> &'a Arc<Registry> {
        self.registry
    }

    /// Pushes to the calling worker's own deque when called from a worker
    /// of this pool, else to the injector; then wakes a worker if needed.
    pub(crate) fn push(self, task: TaskRef) {
        let registry = self.registry;
        let task = match self.local {
            Some(on) => on.push(registry, task),
            None => Err(task),
        };
        if let Err(task) = task {
            registry.injector.push(task);
        }
        if self.counted {
            registry.end_submit();
        }
        notify_after_push(registry);
    }
}

/// After a push: wakes a worker if none is searching; with every worker
/// blocked in a wait, starts a compensating one.
// Inlined into every push by attribute, not left to the compiler: its
// choice moved with unrelated code (a change to the wait-for graph made
// it call this, 11 instructions more per submit, spawn and re-poll under
// callgrind).
#[inline(always)]
pub(crate) fn notify_after_push(registry: &Arc<Registry>) {
    if registry.wake_after_push() {
        spawn_compensating(registry);
    }
}

/// After a join pushed its second half: wakes a sleeper if none searches,
/// without the submit protocol's fence (the joiner runs the half itself if
/// nobody takes it, so a missed wake costs that join its parallelism, never
/// progress). But when nobody sleeps and a pool thread is blocked in a
/// wait, the pool is short of the capacity it promises (`blocking.rs`):
/// then the full protocol runs, and starts a compensating worker if none
/// searches. Without this, a worker joining while the other was blocked ran
/// every half itself, and a half that waits for its sibling to start (a
/// pipeline stage) never started.
// Inlined into `join`, its one caller, with the rare path out of line:
// called, it cost `join` 12 instructions more (callgrind: 611 against 599;
// 591 before the check of `blocked`).
#[inline(always)]
pub(crate) fn hint_after_join_push(registry: &Arc<Registry>) {
    // Relaxed: `blocked` only chooses the path; `wake_after_push` fences
    // (SeqCst) before it reads `blocked` again for the decision.
    if registry.sleep.hint_one() == Notified::NoSleeper
        && registry.blocked.load(Ordering::Relaxed) > 0
    {
        keep_capacity_after_join_push(registry);
    }
}

/// [`hint_after_join_push`]'s rare path: a pool thread is blocked.
#[cold]
#[inline(never)]
fn keep_capacity_after_join_push(registry: &Arc<Registry>) {
    notify_after_push(registry);
}
