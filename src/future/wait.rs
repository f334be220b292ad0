//! How threads and tasks wait for a future: waiter nodes on the future's
//! waiter stack, woken (all of them, before any callback runs) on completion.
//!
//! A waiter that gives up (timeout, dropped async waiter) removes its node,
//! so waits on a future that never completes leave nothing behind: removed
//! nodes are unlinked by compaction and freed by whoever drops the last
//! reference (see `node.rs`).

use std::task::{Context, Poll};
use std::time::Instant;

use super::core::Core;
use super::node::{NodeRef, Payload};
use super::relay::Relay;
use super::stack::Pushed;
use crate::sync::{Thread, WakerSlot};

/// Spins before parking: a hand-off that is about to happen costs tens of
/// nanoseconds spinning against microseconds parked. None under loom, where
/// each spin is a yield that lets the completer finish first: the models
/// then never reached the waiter node, the park or the timeout's removal.
const SPINS: u32 = if cfg!(loom) { 0 } else { 64 };

/// A blocked thread.
struct ThreadWaiter(Thread);

impl Payload<()> for ThreadWaiter {
    unsafe fn fire(&self, _: &()) {
        self.0.unpark();
        // A worker that completed this future may get the waiter's next
        // submit soon: it waits for it (`executor/idle.rs`).
        crate::executor::idle::note_woke_waiter();
    }

    unsafe fn discard(&self) {}
}

/// A parked async task. The slot only ever holds a relay (`relay.rs`): the
/// user's `wake` and `drop` run under guards, so firing or freeing this node
/// cannot unwind through a drain or a compaction.
#[derive(Default)]
struct TaskWaiter(WakerSlot);

impl Payload<()> for TaskWaiter {
    unsafe fn fire(&self, _: &()) {
        self.0.wake();
    }

    // The withdrawing waiter, the only one to remove such a node, has
    // emptied the slot already (`AsyncWait::cancel`).
    unsafe fn discard(&self) {}
}

impl<T> Core<T> {
    /// Blocks until done or until `deadline`; returns whether it is done.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_done() {
            return true;
        }
        let mut clock = Clock::default();
        if deadline.is_some_and(|d| clock.left(d).is_none()) {
            return false; // a zero timeout only looks
        }
        #[cfg_attr(loom, allow(clippy::reversed_empty_ranges))] // none under loom
        for _ in 0..SPINS {
            crate::sync::spin_hint();
            if self.is_done() {
                return true;
            }
        }
        if deadline.is_some_and(|d| clock.left(d).is_none()) {
            return false;
        }
        let (list, mine) = NodeRef::new(ThreadWaiter(crate::sync::current_thread()));
        if self.waiters().push(list, None) == Pushed::Closed {
            return true;
        }
        loop {
            if self.is_done() {
                // Done: withdraw the node if the waker has not reached it, so
                // no stray unpark is left for this thread's next park.
                mine.try_remove();
                return true;
            }
            match deadline {
                None => crate::sync::park(),
                Some(deadline) => match clock.left(deadline) {
                    Some(left) => clock.park(left),
                    None => {
                        if mine.try_remove() {
                            self.waiters().note_removed(&());
                            return self.is_done();
                        }
                        // A completer took the node: the future is done.
                    }
                },
            }
        }
    }
}

/// A timed wait's clock: the real one, or under loom one that moves only
/// when the waiter sleeps, so a model's deadline (loom cannot wait out a
/// real one: its timed park is a yield) passes after the waiter pushed its
/// node, and the model explores the give-up racing the completer.
#[derive(Default)]
struct Clock {
    /// Under loom: the waiter has slept in a timed park.
    #[cfg(loom)]
    slept: bool,
}

impl Clock {
    /// The time left until `deadline`, or `None` once it has passed (one
    /// read of the clock).
    #[cfg(not(loom))]
    fn left(&self, deadline: Instant) -> Option<std::time::Duration> {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Under loom the deadline passes once the waiter has slept; the time
    /// left is nothing a timed park reads there.
    #[cfg(loom)]
    fn left(&self, _deadline: Instant) -> Option<std::time::Duration> {
        (!self.slept).then_some(std::time::Duration::ZERO)
    }

    /// Parks for `left` at most (the time [`left`](Self::left) gave).
    fn park(&mut self, left: std::time::Duration) {
        crate::sync::park_timeout(left);
        #[cfg(loom)]
        {
            self.slept = true;
        }
    }
}

/// The registration of one async waiter; removes itself when dropped.
#[derive(Default)]
pub(crate) struct AsyncWait {
    node: Option<NodeRef<()>>,
    relay: Relay,
}

impl AsyncWait {
    /// Polls for completion, registering `cx`'s waker while pending.
    pub(crate) fn poll_done<T>(&mut self, core: &Core<T>, cx: &mut Context<'_>) -> Poll<()> {
        if core.is_done() {
            return Poll::Ready(());
        }
        // The user's `clone` (when the waker changed) runs here, before
        // anything shared is touched: if it panics, the poll unwinds and
        // nothing is registered.
        let waker = self.relay.waker_for(cx.waker());
        match &self.node {
            Some(node) => {
                // SAFETY: every node on a waiter list made here is a TaskWaiter.
                unsafe { node.payload::<TaskWaiter>() }.0.register(waker);
            }
            None => {
                let (list, mine) = NodeRef::new(TaskWaiter::default());
                // SAFETY: just made as a TaskWaiter.
                unsafe { mine.payload::<TaskWaiter>() }.0.register(waker);
                if core.waiters().push(list, None) == Pushed::Closed {
                    return Poll::Ready(());
                }
                self.node = Some(mine);
            }
        }
        // Re-check after registering: a completion between the first check
        // and the registration would otherwise be missed.
        if core.is_done() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Withdraws the waiter (call when done or giving up).
    pub(crate) fn cancel<T>(&mut self, core: &Core<T>) {
        if let Some(node) = self.node.take()
            && node.try_remove()
        {
            // Nothing fires it now, but the list frees it only at a later
            // compaction or the drain: let go of the relay it holds now,
            // and with it the task's waker (a task on the pool would
            // otherwise stay alive, and hold its pool open, as long as the
            // node does).
            // SAFETY: every node on a waiter list made here is a TaskWaiter.
            unsafe { node.payload::<TaskWaiter>() }.0.clear();
            if !core.is_done() {
                core.waiters().note_removed(&());
            }
        }
    }
}
