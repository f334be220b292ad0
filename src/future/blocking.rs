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
//! ([`run_lent`]), which both sides need: a handle asks whether its own task
//! is running here, a pool asks which tasks a waiter holds.
//!
//! So the dependency runs one way: the executor uses the future, never the
//! reverse.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use crate::error::TaskError;

/// How the threads of a pool block. Installed per thread by the pool.
pub(crate) trait WaitHook: Send + Sync {
    /// Runs `block` (a blocking wait) on this thread.
    fn blocking(&self, block: &mut dyn FnMut());

    /// Waits for the task at `addr` of the pool tagged `pool` (see
    /// [`wait_for_task`]).
    fn wait_for_task(
        &self,
        addr: usize,
        pool: u16,
        deadline: Option<Instant>,
        claim: &mut dyn FnMut(Claim) -> bool,
        block: &mut dyn FnMut() -> bool,
    ) -> Result<bool, TaskError>;

    /// Enters this thread's wait on the futures at `targets` in the
    /// pool's wait-for graph (see [`watch`]): which of them cannot finish
    /// while it waits, and its edge, which stands until the guard drops.
    fn watch(&self, targets: &[usize], wait: WaitOn) -> (Vec<bool>, Option<Box<dyn Any>>);
}

/// How a wait on several futures waits (see [`watch`]).
#[derive(Clone, Copy)]
pub(crate) struct WaitOn {
    /// It needs every one of them (else any one).
    pub(crate) all: bool,
    /// It has a deadline.
    pub(crate) timed: bool,
    /// Its edge lists the futures that cannot finish too: it blocks on
    /// them anyway (`as_completed`), where `wait` leaves them out.
    pub(crate) stuck_listed: bool,
}

thread_local! {
    /// The hook of the pool this thread belongs to, if any.
    static HOOK: RefCell<Option<Arc<dyn WaitHook>>> = const { RefCell::new(None) };
    /// The innermost task this thread is running (a waiter that runs a task
    /// inline nests it); null when none.
    static TOP: Cell<*const Frame> = const { Cell::new(std::ptr::null()) };
}

/// One task on a thread's running stack: a frame on the stack of the call
/// that runs it ([`run_lent`]), linked to the frame below it
/// on the same thread and, for work a blocked thread waits on without
/// being able to run it (a stolen `join` half, a scoped task, an
/// `install`), to that thread's frames: it *lends* them. What such work
/// waits on, its lender waits on too, so the work holds what its lender
/// holds: a wait on any of those tasks could never end.
///
/// Fields are written once, before the frame is reachable from another
/// thread, and a frame outlives every reader: this thread's own frames
/// are below the current call, and a lender's frames stay put while it
/// waits for the work that links to them (it returns only after that work
/// is over).
pub(crate) struct Frame {
    addr: usize,
    /// In a pool thread's base frame ([`enter_pool_thread`]), the tag of
    /// its pool; 0 in a task's frame (its thread's base frame says).
    pool: u16,
    /// Tasks on this thread's own stack up to here, counting task frames
    /// only (a lent frame adds none): how deep inline runs nest.
    depth: usize,
    below: *const Frame,
    lent: *const Frame,
}

/// The tasks a thread holds, as a link another thread may keep while the
/// holder waits for it (see [`Frame`]). Null: none.
#[derive(Clone, Copy)]
pub(crate) struct Held(*const Frame);

// SAFETY: a `Held` is read only while its thread waits for the reader's
// work (the contract of `run_lent`), and frames are immutable once linked.
unsafe impl Send for Held {}
// SAFETY: as above.
unsafe impl Sync for Held {}

impl Held {
    /// Nothing held: work nobody waits on.
    pub(crate) const NONE: Held = Held(std::ptr::null());
}

/// What the calling thread holds, to lend to work it will wait for.
#[inline]
pub(crate) fn held() -> Held {
    Held(TOP.try_with(Cell::get).unwrap_or(std::ptr::null()))
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

/// Whether this thread is a pool's (its waits go through a hook): only
/// then is a [`watch`]'s list of targets read.
pub(crate) fn on_pool_thread() -> bool {
    HOOK.try_with(|h| h.borrow().is_some()).unwrap_or(false)
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
    match hook() {
        Some(hook) => block_through(&*hook, block),
        None => block(),
    }
}

/// Runs `block` through `hook`'s [`WaitHook::blocking`], returning its
/// value.
fn block_through<R>(hook: &dyn WaitHook, block: impl FnOnce() -> R) -> R {
    let (mut block, mut out) = (Some(block), None);
    hook.blocking(&mut || out = block.take().map(|b| b()));
    out.expect("a wait hook runs its block exactly once")
}

/// What a waiter on a task of its own pool does with the task if nobody
/// started it ([`wait_for_task`]'s `claim`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Claim {
    /// Runs it inline.
    Run,
    /// Cancels it: the pool is shutting down with `cancel_pending`, and a
    /// worker that popped the task would cancel it too.
    Cancel,
}

/// Waits for the task at `addr` of the pool tagged `pool`: `claim` runs
/// or cancels it if nobody started it (true: it is done; only a thread of
/// that pool may), `block` waits for it (true: it is done). Off a pool,
/// just `block`. Refuses a wait on a task this thread holds.
pub(crate) fn wait_for_task(
    addr: usize,
    pool: u16,
    deadline: Option<Instant>,
    mut claim: impl FnMut(Claim) -> bool,
    mut block: impl FnMut() -> bool,
) -> Result<bool, TaskError> {
    // A deadline already passed (a zero timeout, say) only looks, even at a
    // task this thread holds: it cannot block, so it cannot deadlock, and
    // it reports `Timeout` if the task is not done (`TaskError::WouldDeadlock`).
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Ok(block());
    }
    if is_running_here(addr) {
        return Err(TaskError::WouldDeadlock);
    }
    match hook() {
        Some(hook) => hook.wait_for_task(addr, pool, deadline, &mut claim, &mut block),
        None => Ok(block()),
    }
}

/// A wait on several futures, entered in the wait-for graph of the
/// caller's pool while it lasts ([`watch`]).
pub(crate) struct Watching {
    hook: Option<Arc<dyn WaitHook>>,
    stuck: Vec<bool>,
    /// The edge; dropped with the guard.
    _edge: Option<Box<dyn Any>>,
}

/// Enters a wait on the futures at `targets` (their cores' addresses) in
/// the wait-for graph of the caller's pool, and says which of them cannot
/// finish while the caller waits: on a pool thread, those whose tasks wait
/// (through blocked pool threads) on a task the caller holds. While the
/// guard lives, a wait that would need the caller to resume first is
/// refused. Call it with nothing that could run user code between it and
/// the block (attach callbacks before, remove them after the guard): a
/// wait in such code would be a second edge of the thread. Off a pool
/// nothing is known (the slice is empty) and nothing is entered.
pub(crate) fn watch(targets: &[usize], wait: WaitOn) -> Watching {
    match hook() {
        None => Watching {
            hook: None,
            stuck: Vec::new(),
            _edge: None,
        },
        Some(hook) => {
            let (stuck, edge) = hook.watch(targets, wait);
            Watching {
                hook: Some(hook),
                stuck,
                _edge: edge,
            }
        }
    }
}

impl Watching {
    /// Which targets cannot finish (empty off a pool).
    pub(crate) fn stuck(&self) -> &[bool] {
        &self.stuck
    }

    /// Runs `block`, the wait itself, keeping the pool's capacity (as
    /// [`blocking`]).
    pub(crate) fn block<R>(&self, block: impl FnOnce() -> R) -> R {
        match &self.hook {
            Some(hook) => block_through(&**hook, block),
            None => block(),
        }
    }
}

/// Runs `f` as the work at `addr`, catching its panic: while it runs, waits
/// on it from this thread are refused, and pools see the thread holding
/// it. If a thread waits for this work (holding `lender`, else
/// [`Held::NONE`]), the work holds what that thread holds too. `task`:
/// it counts as a task in the nesting depth (a scoped task does, a join's
/// half does not: helping joiners nest those without limit, as before).
///
/// # Safety
/// The frames behind `lender` stay alive until `f` returns: their thread
/// waits for this work to be over.
pub(crate) unsafe fn run_lent<R>(
    addr: usize,
    lender: Held,
    task: bool,
    f: impl FnOnce() -> R,
) -> std::thread::Result<R> {
    // `try_with` here and below: a task may run, or be waited on, from a
    // thread-local's destructor after this slot is gone; it then runs
    // unrecorded (nothing can wait on it from this thread any more).
    let below = held().0;
    // SAFETY: `below` is null or this thread's current frame, alive below
    // this call (or its base frame, alive for the thread's life).
    let depth = unsafe { below.as_ref() }.map_or(0, |b| b.depth) + usize::from(task);
    let frame = Frame {
        addr,
        pool: 0,
        depth,
        below,
        lent: lender.0,
    };
    let pushed = TOP.try_with(|t| t.set(&raw const frame)).is_ok();
    let result = catch_unwind(AssertUnwindSafe(f));
    if pushed {
        let _ = TOP.try_with(|t| t.set(below));
    }
    result
}

/// Makes the calling thread a thread of the pool tagged `pool` (0: none
/// known) until the guard drops: a base frame under every task it runs, so
/// whatever it holds, and whatever work it lends holds, names the pool.
/// Every blocked thread of a pool then holds that pool, whatever it runs
/// (a task, a `spawn`, a routed callback, a strand drain, a poll): a
/// shutdown of the pool waits for it (`deadlock.rs`).
pub(crate) fn enter_pool_thread(pool: u16) -> PoolThread {
    let below = held().0;
    // A raw pointer from the start: the frame must not move, and the guard
    // that frees it does (a `Box` moved would claim it unaliased).
    let frame = Box::into_raw(Box::new(Frame {
        addr: 0,
        pool,
        depth: 0,
        below,
        lent: std::ptr::null(),
    }));
    let pushed = TOP.try_with(|t| t.set(frame)).is_ok();
    PoolThread {
        frame,
        below: pushed.then_some(below),
    }
}

/// A pool thread's base frame; see [`enter_pool_thread`].
pub(crate) struct PoolThread {
    /// From `Box::into_raw`, freed by the drop.
    frame: *mut Frame,
    /// What `TOP` was before, if the frame was pushed.
    below: Option<*const Frame>,
}

impl Drop for PoolThread {
    fn drop(&mut self) {
        if let Some(below) = self.below {
            // Only this thread's own frames sit above the base, and they
            // are gone: every one is popped by the call that pushed it.
            let _ = TOP.try_with(|t| {
                debug_assert!(std::ptr::eq(t.get(), self.frame));
                t.set(below);
            });
        }
        // SAFETY: from `Box::into_raw` in `enter_pool_thread`, freed once,
        // here. No other thread reads it any more: one reads a lender's
        // frames only while running work that lender waits for, and this
        // thread is past its last task.
        drop(unsafe { Box::from_raw(self.frame) });
    }
}

/// Calls `visit` with each task the calling thread holds (its own frames
/// and what they were lent) and its pool's tag, until it returns true;
/// returns whether one did. A frame reached twice (two lenders sharing
/// frames below) is visited once.
fn any_held(mut visit: impl FnMut(usize, u16) -> bool) -> bool {
    let mut todo = vec![held().0];
    let mut seen: Vec<*const Frame> = Vec::new();
    while let Some(mut f) = todo.pop() {
        while !f.is_null() && !seen.contains(&f) {
            seen.push(f);
            // SAFETY: this thread's frames are alive below this call (its
            // base frame, on the heap, for the thread's life); lent ones
            // while their thread waits for ours (see `Frame`).
            let frame = unsafe { &*f };
            if visit(frame.addr, frame.pool) {
                return true;
            }
            todo.push(frame.lent);
            f = frame.below;
        }
    }
    false
}

/// Whether the calling thread holds the task at `addr`: runs it, or runs
/// work a thread holding it waits for.
pub(crate) fn is_running_here(addr: usize) -> bool {
    any_held(|a, _| a == addr)
}

/// How many tasks the calling thread is running (nesting depth).
pub(crate) fn running_depth() -> usize {
    // SAFETY: null or this thread's current frame, alive below this call
    // (or its base frame, alive for the thread's life).
    unsafe { held().0.as_ref() }.map_or(0, |f| f.depth)
}

/// What a thread holds (see [`is_running_here`]): the tasks, and the
/// tags of the pools whose threads it runs on or lends from, each once:
/// a shutdown of one of those pools waits for this thread.
#[derive(Default)]
pub(crate) struct Holds {
    pub(crate) tasks: Vec<usize>,
    pub(crate) pools: Vec<u16>,
}

impl Holds {
    /// Tasks of no known pool (for the graph's unit tests, which loom
    /// does not build).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn tasks(tasks: Vec<usize>) -> Holds {
        Holds {
            tasks,
            pools: Vec::new(),
        }
    }
}

/// What the calling thread holds (see [`is_running_here`]).
pub(crate) fn running_snapshot() -> Holds {
    let mut out = Holds::default();
    any_held(|a, pool| {
        if a != 0 {
            out.tasks.push(a);
        }
        if pool != 0 && !out.pools.contains(&pool) {
            out.pools.push(pool);
        }
        false
    });
    out
}
