//! How a pool thread waits: the [`WaitHook`] every worker installs.
//!
//! A task that waits on another task (`result()`, `wait()`):
//! 1. is refused with `WouldDeadlock` if it would wait on itself or close a
//!    cycle of waits (`deadlock.rs`);
//! 2. runs the awaited task inline if nobody started it yet (the same start
//!    CAS a worker uses) and it is a task of this pool ([`PoolTag`]), up to
//!    [`MAX_INLINE_DEPTH`] nested. Only an
//!    untimed wait does: a run inline cannot end at a deadline, so a timed
//!    wait never runs another task, and a zero timeout only looks;
//! 3. otherwise blocks, and the pool keeps its capacity: a sleeping worker
//!    is woken, or, with none to wake, a compensating worker is started if
//!    fewer are alive than threads are blocked (at most `max_blocking` at
//!    once; see `worker.rs` for its life). Capacity, not more: a stand-in
//!    busy with a task counts as the pool's capacity, as in Java's managed
//!    blocking, so work queued behind it waits for a thread, like work on
//!    a pool with no blocked thread. A cycle that runs through such a task's
//!    wait outside the crate (a channel, a lock) waits for good, as any
//!    such cycle does; the old rule, a stand-in for every push that found
//!    the stand-ins busy, hid some of those at the cost of up to
//!    `max_blocking` threads for one blocked worker.
//!
//! Any other blocking wait on a pool thread (a promise's handle, `wait`,
//! `as_completed`, `join` waiting for callbacks) keeps the capacity the
//! same way. A waiting worker never runs unrelated tasks, so it cannot
//! re-enter code that holds a lock the waiter holds (rayon's re-entrancy
//! problem).

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::deadlock::WAITS;
use super::registry::Registry;
use crate::error::TaskError;
use crate::future::blocking::{Claim, WaitHook, WaitOn, running_depth, running_snapshot};

/// A number naming one live pool, carried by its tasks (in two bytes of
/// their future that were padding) so that a waiter runs a task inline only
/// on a thread of the task's own pool: a task submitted to another pool, or
/// an `install` there, runs on that pool's threads, with its thread-locals
/// and within its size. Numbers are unique among live pools and reused
/// once a pool is gone (its queues dropped, so no task of it is pending);
/// past 65,535 pools alive at once a pool gets 0, and its tasks are never
/// run inline (waits on them block, as off the pool).
pub(crate) struct PoolTag(pub(crate) u16);

/// The next never-used number, and numbers given back.
static TAGS: Mutex<(u16, Vec<u16>)> = Mutex::new((0, Vec::new()));

impl PoolTag {
    pub(crate) fn new() -> PoolTag {
        let mut tags = TAGS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = tags.1.pop() {
            return PoolTag(n);
        }
        match tags.0.checked_add(1) {
            Some(n) => {
                tags.0 = n;
                PoolTag(n)
            }
            None => PoolTag(0),
        }
    }
}

impl Drop for PoolTag {
    fn drop(&mut self) {
        if self.0 != 0 {
            TAGS.lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .push(self.0);
        }
    }
}

/// Deepest nesting of tasks run inline by waiters on one thread.
pub(crate) const MAX_INLINE_DEPTH: usize = 64;

/// The hook a worker installs: the pool it keeps the capacity of, and how
/// that pool starts a compensating worker (given by the worker module, so
/// this one needs nothing from it).
pub(crate) struct PoolWait {
    pub(crate) registry: Arc<Registry>,
    pub(crate) compensate: fn(&Arc<Registry>),
}

impl WaitHook for PoolWait {
    fn blocking(&self, block: &mut dyn FnMut()) {
        self.keep_capacity(block);
    }

    fn wait_for_task(
        &self,
        addr: usize,
        pool: u16,
        deadline: Option<Instant>,
        claim: &mut dyn FnMut(Claim) -> bool,
        block: &mut dyn FnMut() -> bool,
    ) -> Result<bool, TaskError> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(block()); // returns at once: it only looks
        }
        let ours = pool != 0 && pool == self.registry.tag.0;
        // A cancelling shutdown cancels what nobody started, wherever it
        // is queued: a task in a worker's own deque, which the shutdown's
        // drain of the injector does not reach, is cancelled by its waiter
        // as by the worker that pops it, timed wait or not (one whose
        // deadline has passed returned above: it only looks).
        if ours && self.registry.is_cancelling() && claim(Claim::Cancel) {
            return Ok(true);
        }
        if deadline.is_none() && ours && running_depth() < MAX_INLINE_DEPTH && claim(Claim::Run) {
            return Ok(true);
        }
        let Some(_registered) = WAITS.register(running_snapshot(), addr, deadline.is_some()) else {
            return Err(TaskError::WouldDeadlock);
        };
        Ok(self.keep_capacity(block))
    }

    fn watch(&self, targets: &[usize], wait: WaitOn) -> (Vec<bool>, Option<Box<dyn Any>>) {
        let (edge, stuck) = WAITS.watch(running_snapshot(), targets, wait);
        (stuck, edge.map(|e| Box::new(e) as Box<dyn Any>))
    }
}

impl PoolWait {
    /// Runs `block` while the thread counts as blocked: work queued
    /// meanwhile (or already) gets a sleeping worker woken or a
    /// compensating one started.
    fn keep_capacity<R>(&self, block: impl FnOnce() -> R) -> R {
        let blocked = self.registry.begin_blocking();
        if blocked.work_queued() && self.registry.wake_after_push() {
            (self.compensate)(&self.registry);
        }
        block()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::PoolTag;

    /// Past 65,535 pools made over the process's life, a tag comes from
    /// those given back: a long-running process that makes and drops pools
    /// keeps running tasks inline (a tag of 0 never does).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "70,000 rounds of a lock: slow under Miri, and no unsafe code"
    )]
    fn tags_are_reused_once_their_pool_is_gone() {
        for _ in 0..70_000 {
            assert_ne!(PoolTag::new().0, 0);
        }
    }
}
