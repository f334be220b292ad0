//! How a thread blocks in a wait, without the future knowing about pools.
//!
//! Every blocking wait in the crate (a handle's `result`, `wait`,
//! `as_completed`, `join` waiting for callbacks) goes through [`blocking`]
//! or [`wait_for_task`]. Off a pool they just block. A pool installs a
//! [`WaitHook`] on each of its threads ([`install`]), and the hook decides
//! how that thread waits: refuse a wait that could never end, run the
//! awaited task inline, or keep the pool's capacity while it blocks.
//!
//! This module also keeps the stack of tasks the calling thread is running
//! ([`run_as`]), which both sides need: a handle asks whether its own task
//! is running here, a pool asks which tasks a waiter holds.
//!
//! So the dependency runs one way: the executor uses the future, never the
//! reverse.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use crate::error::TaskError;

/// How the threads of a pool block. Installed per thread by the pool.
pub(crate) trait WaitHook: Send + Sync {
    /// Runs `block` (a blocking wait) on this thread.
    fn blocking(&self, block: &mut dyn FnMut());

    /// Waits for the task at `addr` (see [`wait_for_task`]).
    fn wait_for_task(
        &self,
        addr: usize,
        deadline: Option<Instant>,
        claim: &mut dyn FnMut() -> bool,
        block: &mut dyn FnMut() -> bool,
    ) -> Result<bool, TaskError>;
}

thread_local! {
    /// The hook of the pool this thread belongs to, if any.
    static HOOK: RefCell<Option<Arc<dyn WaitHook>>> = const { RefCell::new(None) };
    /// Addresses of the tasks this thread is running, innermost last (a
    /// waiter that runs a task inline nests it).
    static RUNNING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Installs `hook` on the calling thread until the guard drops.
pub(crate) fn install(hook: Arc<dyn WaitHook>) -> Installed {
    Installed(HOOK.with(|h| h.replace(Some(hook))))
}

/// Restores the thread's previous hook when dropped.
pub(crate) struct Installed(Option<Arc<dyn WaitHook>>);

impl Drop for Installed {
    fn drop(&mut self) {
        let prev = self.0.take();
        // `try_with`: a worker's guard may drop while its thread-locals are
        // being torn down.
        let _ = HOOK.try_with(|h| h.replace(prev));
    }
}

fn hook() -> Option<Arc<dyn WaitHook>> {
    // Cloned out: no borrow is held across the wait, which runs user code.
    // `try_with`: a wait from a thread-local's destructor, after ours is
    // gone, just blocks.
    HOOK.try_with(|h| h.borrow().clone()).ok().flatten()
}

/// Runs `block`, a blocking wait, the way the calling thread must: on a
/// pool thread the pool keeps its capacity meanwhile.
pub(crate) fn blocking<R>(block: impl FnOnce() -> R) -> R {
    let Some(hook) = hook() else {
        return block();
    };
    let (mut block, mut out) = (Some(block), None);
    hook.blocking(&mut || out = block.take().map(|b| b()));
    out.expect("a wait hook runs its block exactly once")
}

/// Waits for the task at `addr`: `claim` runs it inline if nobody started
/// it (true: it ran), `block` waits for it (true: it is done). Off a pool,
/// just `block`. Refuses a wait on a task this thread is running.
pub(crate) fn wait_for_task(
    addr: usize,
    deadline: Option<Instant>,
    mut claim: impl FnMut() -> bool,
    mut block: impl FnMut() -> bool,
) -> Result<bool, TaskError> {
    if is_running_here(addr) {
        return Err(TaskError::WouldDeadlock);
    }
    match hook() {
        Some(hook) => hook.wait_for_task(addr, deadline, &mut claim, &mut block),
        None => Ok(block()),
    }
}

/// Runs `f` as the task at `addr`, catching its panic: while it runs,
/// waits on that task from this thread are refused, and pools see the
/// thread holding it.
pub(crate) fn run_as<R>(addr: usize, f: impl FnOnce() -> R) -> std::thread::Result<R> {
    // `try_with` here and below: a task may run, or be waited on, from a
    // thread-local's destructor after this stack is gone; it then runs
    // unrecorded (nothing can wait on it from this thread any more).
    let pushed = RUNNING.try_with(|r| r.borrow_mut().push(addr)).is_ok();
    let result = catch_unwind(AssertUnwindSafe(f));
    if pushed {
        let _ = RUNNING.try_with(|r| r.borrow_mut().pop());
    }
    result
}

/// Whether the calling thread is running the task at `addr`.
pub(crate) fn is_running_here(addr: usize) -> bool {
    RUNNING
        .try_with(|r| r.borrow().contains(&addr))
        .unwrap_or(false)
}

/// How many tasks the calling thread is running (nesting depth).
pub(crate) fn running_depth() -> usize {
    RUNNING.try_with(|r| r.borrow().len()).unwrap_or(0)
}

/// The tasks the calling thread is running, outermost first.
pub(crate) fn running_snapshot(out: &mut Vec<usize>) {
    let _ = RUNNING.try_with(|r| out.extend_from_slice(&r.borrow()));
}
