//! The worker loop, the thread-local worker context, and how a worker that
//! waits on a task keeps the pool's capacity.
//!
//! # Order
//! A worker's own deque is FIFO: tasks a task submits run in submission
//! order, as Python users expect of an executor, and a stolen batch is the
//! oldest work. Every [`FAIR_TICK`]th task comes from the injector first, so
//! a task that keeps resubmitting itself cannot starve outside submits.
//!
//! # Waiting inside the pool
//! A task that waits on another task (`result()`, `wait()`):
//! 1. is refused with `WouldDeadlock` if it would wait on itself or close a
//!    cycle of waits (`deadlock.rs`);
//! 2. runs the awaited task inline if nobody started it yet (the same start
//!    CAS a worker uses), up to [`MAX_INLINE_DEPTH`] nested;
//! 3. otherwise blocks, and the pool keeps its capacity: a sleeping worker
//!    is woken, or, with none to wake, a compensating worker is started (at
//!    most `max_blocking` at once), which then searches and sleeps like any
//!    worker and exits after [`KEEP_ALIVE`] asleep without work. Any other
//!    blocking wait on a pool thread (a promise's handle, `wait`,
//!    `as_completed`, `join` waiting for callbacks) keeps the capacity the
//!    same way. A timed wait never runs the task inline (step 2): a run
//!    inline cannot end at its deadline.
//!
//! A waiting worker never runs unrelated tasks, so it cannot re-enter code
//! that holds a lock the waiter holds (rayon's re-entrancy problem).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_deque::Worker;

use super::metrics::Counters;
use super::registry::Registry;
use super::sleep::Woke;
use super::task::{Ran, TaskRef, held_depth, held_here, held_snapshot};
use crate::error::TaskError;
use crate::sync::Ordering;
use crate::trace::{trace_event, trace_span};

/// Every this many tasks a worker looks at the injector before its own deque.
pub(crate) const FAIR_TICK: u32 = 61;
/// Deepest nesting of tasks run inline by waiters on one thread.
pub(crate) const MAX_INLINE_DEPTH: usize = 64;
/// Look-ups a worker makes before it parks.
const SPIN_ROUNDS: u32 = 32;

/// What a worker thread knows about itself.
struct Context {
    registry: Arc<Registry>,
    /// The core worker's index; `None` for a compensating worker.
    index: Option<usize>,
    local: Option<Worker<TaskRef>>,
    tick: Cell<u32>,
}

thread_local! {
    static CONTEXT: Cell<*const Context> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with the calling thread's worker context, if it is a worker.
fn with_context<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
    let ptr = CONTEXT.with(Cell::get);
    // SAFETY: the pointer is set by `run_worker` to a context on its own
    // stack, and cleared before that frame ends; it is only read on the
    // same thread.
    f(unsafe { ptr.as_ref() })
}

impl Context {
    fn counters(&self) -> &Counters {
        match self.index {
            Some(i) => &self.registry.counters[i],
            None => self.registry.shared_counters(),
        }
    }

    fn find_task(&self) -> Option<TaskRef> {
        let reg = &self.registry;
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick.is_multiple_of(FAIR_TICK)
            && let Some(t) = reg.injector.steal().success()
        {
            return Some(t);
        }
        if let Some(local) = &self.local
            && let Some(t) = local.pop()
        {
            return Some(t);
        }
        reg.steal(
            self.local.as_ref(),
            self.index.unwrap_or(usize::MAX),
            self.counters(),
        )
    }

    /// Bumps one of this worker's counters.
    fn count(&self, counter: impl Fn(&Counters) -> &crate::sync::AtomicUsize) {
        match self.index {
            Some(i) => Counters::add_own(counter(&self.registry.counters[i]), 1),
            None => Counters::add(counter(self.registry.shared_counters()), 1),
        }
    }

    fn run(&self, task: TaskRef) {
        self.count(|c| &c.dequeued);
        if self.registry.is_cancelling() {
            task.cancel();
            return;
        }
        self.count(|c| &c.started);
        trace_span!(::tracing::Level::TRACE, "task", worker = self.index);
        // A task a waiter ran inline counts as started and completed here
        // (its panics, if any, are not counted).
        let ran = task.run();
        trace_event!(::tracing::Level::TRACE, outcome = ?ran, "task finished");
        match ran {
            Ran::Completed | Ran::Claimed => self.count(|c| &c.completed),
            Ran::Panicked => {
                self.count(|c| &c.completed);
                self.count(|c| &c.panicked);
            }
            Ran::Cancelled => self.count(|c| &c.skipped),
        }
    }
}

/// A claimed right to push one task (the pool counts it as in flight, so
/// shutdown cannot strand it). Pushing consumes it.
pub(crate) struct SubmitSlot<'a> {
    registry: &'a Arc<Registry>,
    local: bool,
    /// An outside submit counted in flight (`begin_submit`), to end on push.
    counted: bool,
}

impl<'a> SubmitSlot<'a> {
    /// Claims a slot; `None` if the pool is shut down.
    ///
    /// A worker of this pool pushing to its own deque needs no in-flight
    /// count: it drains its own deque before it can exit. Only outside
    /// submits are counted, so shutdown cannot strand them.
    pub(crate) fn claim(registry: &'a Arc<Registry>) -> Option<Self> {
        let local = is_worker_of(registry);
        let open = if local {
            !registry.is_shutdown()
        } else {
            registry.begin_submit()
        };
        open.then_some(SubmitSlot {
            registry,
            local,
            counted: !local,
        })
    }

    /// A slot to queue a live future again (woken). Never refused: the
    /// future holds the pool open ([`Registry::hold`]), so workers are
    /// alive to run it even after shutdown.
    pub(crate) fn requeue(registry: &'a Arc<Registry>) -> Self {
        SubmitSlot {
            registry,
            local: is_worker_of(registry),
            counted: false,
        }
    }

    /// Pushes to the calling worker's own deque when called from a worker
    /// of this pool, else to the injector; then wakes a worker if needed.
    pub(crate) fn push(self, task: TaskRef) {
        let registry = self.registry;
        if self.local {
            with_context(|ctx| {
                if let Some(ctx) = ctx
                    && let Some(local) = &ctx.local
                {
                    ctx.count(|c| &c.submitted);
                    local.push(task);
                } else {
                    // A compensating worker has no deque: use the injector.
                    Counters::add(&registry.shared_counters().submitted, 1);
                    registry.injector.push(task);
                }
            });
            registry.notify_after_push();
        } else {
            Counters::add(&registry.shared_counters().submitted, 1);
            registry.injector.push(task);
            if self.counted {
                registry.end_submit();
            } else {
                registry.notify_after_push();
            }
        }
    }
}

/// Counts a panic caught inside a task (a future's `poll`, whose task
/// itself completes normally) on the calling worker's counters.
pub(crate) fn count_panic() {
    with_context(|ctx| {
        if let Some(ctx) = ctx {
            ctx.count(|c| &c.panicked);
        }
    });
}

/// Whether the calling thread is a worker of `registry`.
pub(crate) fn is_worker_of(registry: &Registry) -> bool {
    with_context(|ctx| ctx.is_some_and(|c| std::ptr::eq(&*c.registry, registry)))
}

/// Reports a worker thread's end even if it unwinds, so shutdown never
/// waits for a thread that is gone.
struct ExitGuard {
    registry: Arc<Registry>,
    /// A compensating worker still counted in `extra` (it leaves the count
    /// itself when it decides to exit; this covers an unwind).
    extra: Cell<bool>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        trace_event!(
            ::tracing::Level::DEBUG,
            compensating = self.extra.get(),
            "worker exited"
        );
        if self.extra.get() {
            self.registry.extra.fetch_sub(1, Ordering::SeqCst);
        }
        self.registry.thread_exited();
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Before the fields go: dropping leftover tasks may run callbacks
        // that submit, and those must not see this context any more.
        CONTEXT.with(|c| c.set(std::ptr::null()));
    }
}

/// The main loop of core worker `index`.
pub(crate) fn run_worker(registry: Arc<Registry>, index: usize, local: Worker<TaskRef>) {
    let _exit = ExitGuard {
        registry: registry.clone(),
        extra: Cell::new(false),
    };
    trace_event!(::tracing::Level::DEBUG, worker = index, "worker started");
    let ctx = Context {
        registry,
        index: Some(index),
        local: Some(local),
        tick: Cell::new(0),
    };
    CONTEXT.with(|c| c.set(&ctx));
    let _hook = crate::panics::install_thread_hook(ctx.registry.config.panic_hook.clone());
    let reg = &*ctx.registry;
    reg.sleep.register(index);
    let mut search = Search::start(reg);
    loop {
        if ctx.run_one(&mut search) {
            continue;
        }
        if reg.may_exit() {
            break;
        }
        if !search.spun_out() {
            continue;
        }
        reg.sleep
            .sleep(index, || !reg.queues_empty() || reg.may_exit());
    }
    reg.sleep.stop_searching();
}

/// Where a worker stands in the sleep protocol between tasks.
struct Search {
    /// Counted in `Sleep::searching` (looking for work, not found yet).
    searching: bool,
    /// Empty looks since the last task.
    idle_rounds: u32,
}

impl Search {
    /// A worker that starts out searching.
    fn start(registry: &Registry) -> Search {
        registry.sleep.start_searching();
        Search {
            searching: true,
            idle_rounds: 0,
        }
    }

    /// After an empty look: yields the core for [`SPIN_ROUNDS`] looks, then
    /// says the worker should sleep (true).
    fn spun_out(&mut self) -> bool {
        self.idle_rounds += 1;
        if self.idle_rounds < SPIN_ROUNDS {
            idle_pause();
            return false;
        }
        self.idle_rounds = 0;
        true
    }
}

impl Context {
    /// One look for work: runs a task if there is one (a searching worker
    /// that finds one stops searching, waking another if work may remain)
    /// and returns true; otherwise the worker is searching again, false.
    // Forced: left to the compiler, sharing this step between the two
    // loops cost ~10 instructions per task and per re-poll (callgrind).
    #[inline(always)]
    fn run_one(&self, search: &mut Search) -> bool {
        let reg = &*self.registry;
        let Some(task) = self.find_task() else {
            if !search.searching {
                search.searching = true;
                reg.sleep.start_searching();
            }
            return false;
        };
        if search.searching {
            search.searching = false;
            reg.sleep.found_work(|| !reg.queues_empty());
        }
        search.idle_rounds = 0;
        self.run(task);
        true
    }
}

/// Between two empty looks for work: yield the core. A busy spin would be
/// faster on an idle machine, but steals the core from the submitter and the
/// worker that has the task when threads outnumber cores (measured: hot
/// submit->callback p50 1.6 us spinning against 0.5 us yielding on 2 cores).
fn idle_pause() {
    std::thread::yield_now();
}

/// The loop of a compensating worker: runs tasks until it finds none.
fn run_compensating(registry: Arc<Registry>) {
    let exit = ExitGuard {
        registry: registry.clone(),
        extra: Cell::new(true),
    };
    trace_event!(::tracing::Level::DEBUG, "compensating worker started");
    let ctx = Context {
        registry,
        index: None,
        local: None,
        tick: Cell::new(0),
    };
    CONTEXT.with(|c| c.set(&ctx));
    let _hook = crate::panics::install_thread_hook(ctx.registry.config.panic_hook.clone());
    let reg = &*ctx.registry;
    let slot = ExtraSlot::claim(reg);
    let mut search = Search::start(reg);
    loop {
        if ctx.run_one(&mut search) {
            continue;
        }
        if !reg.may_exit() && !search.spun_out() {
            continue;
        }
        // Idle: sleep in our slot until woken or the keep-alive passes
        // (without a slot, or at shutdown, leave at once).
        let stay = match slot.index {
            Some(index) if !reg.may_exit() => {
                let deadline = Instant::now().checked_add(KEEP_ALIVE);
                reg.sleep
                    .sleep_until(index, deadline, || !reg.queues_empty() || reg.may_exit())
                    == Woke::Wake
                    && !reg.may_exit()
            }
            _ => false,
        };
        if stay {
            continue;
        }
        if reg.retire_extra() {
            exit.extra.set(false);
            return;
        }
    }
}

/// How long an idle compensating worker stays, asleep in its slot, for a
/// submit to wake it before it exits (tokio's blocking pool keeps idle
/// threads as long). A pool whose workers block again and again reuses
/// the same threads instead of starting one per block.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A compensating worker's sleep slot, given back when it exits.
struct ExtraSlot<'a> {
    registry: &'a Registry,
    index: Option<usize>,
}

impl<'a> ExtraSlot<'a> {
    fn claim(registry: &'a Registry) -> Self {
        ExtraSlot {
            registry,
            index: registry.sleep.claim_extra_slot(),
        }
    }
}

impl Drop for ExtraSlot<'_> {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            self.registry.sleep.release_extra_slot(index);
        }
    }
}

/// Starts a compensating worker if the bound allows. The caller pushed its
/// task and issued a SeqCst fence since (`Sleep::notify_one`): see
/// [`Registry::retire_extra`].
pub(crate) fn spawn_compensating(registry: &Arc<Registry>) {
    if !registry.claim_extra() {
        return;
    }
    let name = format!("{}-extra", registry.config.name_prefix);
    if registry.spawn_thread(name, run_compensating).is_err() {
        registry.extra.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits for the task at `addr` the way a pool thread must: refuse a wait on
/// itself or a cycle, run it inline if nobody started it (`claim`, only for
/// an untimed wait: a run inline cannot be bounded by a deadline), else
/// `block` until `deadline` while the pool keeps its capacity. A deadline
/// already passed (a zero timeout) only looks. Off the pool, just `block`.
pub(crate) fn wait_for_task(
    addr: usize,
    deadline: Option<Instant>,
    claim: impl FnOnce() -> bool,
    block: impl FnOnce() -> bool,
) -> Result<bool, TaskError> {
    if held_here(addr) {
        return Err(TaskError::WouldDeadlock);
    }
    let Some(registry) = with_context(|ctx| ctx.map(|c| c.registry.clone())) else {
        return Ok(block());
    };
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Ok(block()); // returns at once: it only looks
    }
    if deadline.is_none() && held_depth() < MAX_INLINE_DEPTH && claim() {
        return Ok(true);
    }
    let mut holds = Vec::new();
    held_snapshot(&mut holds);
    let Some(_registered) = super::deadlock::WAITS.register(holds, addr) else {
        return Err(TaskError::WouldDeadlock);
    };
    Ok(keep_capacity(&registry, block))
}

/// Runs `block` (a blocking wait) on a pool thread while keeping the pool's
/// capacity: counts the thread as blocked and wakes or starts a worker for
/// queued work. Off the pool, just runs `block`.
pub(crate) fn blocking<R>(block: impl FnOnce() -> R) -> R {
    match with_context(|ctx| ctx.map(|c| c.registry.clone())) {
        Some(registry) => keep_capacity(&registry, block),
        None => block(),
    }
}

fn keep_capacity<R>(registry: &Arc<Registry>, block: impl FnOnce() -> R) -> R {
    let blocked = registry.begin_blocking();
    if blocked.work_queued() && !registry.sleep.notify_one() {
        spawn_compensating(registry);
    }
    block()
}
