//! The worker loop, the thread-local worker context, and how a worker that
//! waits on a task keeps the pool's capacity.
//!
//! # Order
//! A worker's own deque is FIFO: tasks a task submits run in submission
//! order, as Python users expect of an executor, and a stolen batch is the
//! oldest work. Every [`FAIR_TICK`]th task a batch of outside submits joins
//! the back of the deque, so a task that keeps resubmitting itself cannot
//! starve them, and a one-worker pool runs outside submits in submission
//! order, as Python's `ThreadPoolExecutor(max_workers=1)` does.
//!
//! # Compensating workers
//! A worker that blocks in a wait keeps the pool's capacity
//! (`blocking.rs`): with no sleeper to wake, a compensating worker starts.
//! It searches and sleeps like any worker, in a sleep slot of its own, and
//! exits after its pool's keep-alive (by default [`KEEP_ALIVE`]) asleep
//! without work, so a pool whose workers block again and again reuses the
//! same threads.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_deque::Worker;

use super::blocking::PoolWait;
use super::idle::IdleSpin;
use super::metrics::{Counters, Tally};
use super::registry::{Deques, Registry};
use super::task::{JobRef, TaskRef};
use crate::future::blocking as wait_hook;
use crate::sync::Ordering;
use crate::trace::{trace_event, trace_span};

/// Every this many tasks a worker moves a batch from the injector to the
/// back of its own deque, so a task that keeps resubmitting itself cannot
/// starve outside submits.
pub(crate) const FAIR_TICK: u32 = 61;

/// What a worker finds to do.
enum Work {
    Task(TaskRef),
    Join(JobRef),
}

/// What a worker thread knows about itself.
struct Context {
    registry: Arc<Registry>,
    /// The core worker's index; `None` for a compensating worker.
    index: Option<usize>,
    local: Option<Worker<TaskRef>>,
    /// The second halves of this worker's joins in progress (`join.rs`).
    joins: Option<Worker<JobRef>>,
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
        if tick.is_multiple_of(FAIR_TICK) {
            match &self.local {
                // The injector's oldest go behind what the deque holds: they
                // run in turn, and outside submits keep their order (taking
                // one ahead of the deque ran a one-worker pool's tasks out
                // of submission order, 59, 63, 60).
                Some(local) => drop(reg.injector.steal_batch(local)),
                None => {
                    if let Some(t) = reg.injector.steal().success() {
                        return Some(t);
                    }
                }
            }
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

    /// A task, else a join's second half stolen from another worker.
    // Forced, like `run_one`: out of line, this step and `run_work` cost
    // ~26 instructions per task (callgrind, `spawn`).
    #[inline(always)]
    fn find_work(&self) -> Option<Work> {
        if let Some(task) = self.find_task() {
            return Some(Work::Task(task));
        }
        let index = self.index.unwrap_or(usize::MAX);
        self.registry
            .steal_join(index, self.counters())
            .map(Work::Join)
    }

    #[inline(always)]
    fn run_work(&self, work: Work) {
        match work {
            Work::Task(task) => self.run(task),
            Work::Join(job) => self.run_join(job),
        }
    }

    /// Runs a join's second half taken from a deque. Never cancelled: its
    /// joiner waits for it.
    #[inline(never)]
    fn run_join(&self, job: JobRef) {
        self.count(|c| &c.started);
        // SAFETY: taken from a deque just now, so run once, and its joiner
        // waits for it.
        unsafe { job.execute() };
        self.count(|c| &c.completed);
    }

    /// Bumps one of this worker's counters.
    fn count(&self, counter: impl Fn(&Counters) -> &crate::sync::AtomicUsize) {
        match self.index {
            Some(i) => Counters::add_own(counter(&self.registry.counters[i]), 1),
            None => Counters::add(counter(self.registry.shared_counters()), 1),
        }
    }

    fn run(&self, task: TaskRef) {
        if self.registry.is_cancelling() {
            task.cancel();
            return;
        }
        self.count(|c| &c.started);
        trace_span!(::tracing::Level::TRACE, "task", worker = self.index);
        // A task a waiter ran inline counts as started and completed here
        // (its panics, if any, are not counted). The task counts its own
        // end, before its handle or scope learns it (`Tally`).
        let tally = match self.index {
            Some(i) => Tally::new(&self.registry.counters[i], true),
            None => Tally::new(self.registry.shared_counters(), false),
        };
        let ran = task.run(tally);
        trace_event!(::tracing::Level::TRACE, outcome = ?ran, "task finished");
        let _ = ran; // read only by the trace event
    }
}

/// The calling thread as one of a pool's own threads, found once per push
/// (`submit.rs`): its own deque if it is a core worker, none if it is a
/// compensating worker.
///
/// A raw pointer, as [`join_deque`]'s: the deque lives in the worker's
/// context, on the stack of its loop, which outlives every task run on
/// that thread, and the pointer is not `Send`, so only that thread uses it.
/// Context::drop clears the thread-local before the deque goes, so nothing
/// finds it then.
#[derive(Clone, Copy)]
pub(crate) struct OnWorker(Option<NonNull<Worker<TaskRef>>>);

impl OnWorker {
    fn of(ctx: &Context) -> OnWorker {
        OnWorker(ctx.local.as_ref().map(NonNull::from))
    }

    /// Pushes `task` to the calling worker's own deque; gives it back if the
    /// thread has none (a compensating worker).
    pub(crate) fn push(self, registry: &Registry, task: TaskRef) -> Result<(), TaskRef> {
        let Some(deque) = self.0 else {
            return Err(task);
        };
        // SAFETY: see the type: this thread's live deque.
        unsafe { deque.as_ref() }.push(task);
        registry.note_produced();
        Ok(())
    }
}

/// The calling thread's join deque, if it is a core worker of `registry`
/// (`join.rs`). A compensating worker has none.
///
/// A raw pointer: the deque lives in the worker's context, on the stack of
/// its loop, which outlives every task and join run on that thread; only
/// that thread may use it.
pub(crate) fn join_deque(registry: &Registry) -> Option<*const Worker<JobRef>> {
    with_context(|ctx| {
        ctx.filter(|c| std::ptr::eq(&*c.registry, registry))
            .and_then(|c| c.joins.as_ref())
            .map(std::ptr::from_ref)
    })
}

/// Runs one piece of work on the calling worker if it finds one (true):
/// what a worker waiting in `join` does instead of blocking, as rayon's
/// do. The worker's own join deque comes first (outer joins' halves).
pub(crate) fn help_one() -> bool {
    with_context(|ctx| {
        let Some(ctx) = ctx else {
            return false;
        };
        if let Some(job) = ctx.joins.as_ref().and_then(Worker::pop) {
            ctx.run_join(job);
            return true;
        }
        match ctx.find_work() {
            Some(work) => {
                ctx.run_work(work);
                true
            }
            None => false,
        }
    })
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
    on_worker_of(registry).is_some()
}

/// The calling thread as a worker of `registry`, if it is one.
pub(crate) fn on_worker_of(registry: &Registry) -> Option<OnWorker> {
    with_own_registry(registry, |own| own.map(|(_, on)| on))
}

/// Runs `f` with the calling worker's own reference to the registry at
/// `registry` (compared by address, never read through) and where its
/// pushes go, if the calling thread is one of that pool's workers, else
/// with `None`. The worker's context holds that reference for as long as
/// the thread runs, so `f` may give away whatever else kept the pool alive.
pub(crate) fn with_own_registry<R>(
    registry: *const Registry,
    f: impl FnOnce(Option<(&Arc<Registry>, OnWorker)>) -> R,
) -> R {
    with_context(|ctx| {
        f(ctx
            .filter(|c| std::ptr::eq(Arc::as_ptr(&c.registry), registry))
            .map(|c| (&c.registry, OnWorker::of(c))))
    })
}

/// Runs `f` with the calling thread's own reference to the registry of the
/// pool it works for (a core or compensating worker) and where its pushes
/// go, else with `None`.
pub(crate) fn with_current_registry<R>(
    f: impl FnOnce(Option<(&Arc<Registry>, OnWorker)>) -> R,
) -> R {
    with_context(|ctx| f(ctx.map(|c| (&c.registry, OnWorker::of(c)))))
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

/// A worker thread's installed context and hooks; see [`Context::enter`].
struct Entered {
    _panics: crate::panics::ThreadHook,
    _waits: wait_hook::Installed,
    _base: wait_hook::PoolThread,
}

impl Context {
    /// Makes the calling thread a worker of this context's pool: submits
    /// from it go to its own deque, the pool's panic hook reports its
    /// callbacks' panics, and its blocking waits keep the pool's capacity.
    /// The hooks go when the guard drops, the context when it drops.
    fn enter(&self) -> Entered {
        CONTEXT.with(|c| c.set(self));
        let registry = &self.registry;
        Entered {
            _panics: crate::panics::install_thread_hook(registry.config.panic_hook.clone()),
            _waits: wait_hook::install(Arc::new(PoolWait {
                registry: registry.clone(),
                compensate: spawn_compensating,
            })),
            _base: wait_hook::enter_pool_thread(registry.tag.0),
        }
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
pub(crate) fn run_worker(registry: Arc<Registry>, index: usize, deques: Deques) {
    let _exit = ExitGuard {
        registry: registry.clone(),
        extra: Cell::new(false),
    };
    trace_event!(::tracing::Level::DEBUG, worker = index, "worker started");
    let ctx = Context {
        registry,
        index: Some(index),
        local: Some(deques.tasks),
        joins: Some(deques.joins),
        tick: Cell::new(0),
    };
    let _entered = ctx.enter();
    let reg = &*ctx.registry;
    reg.sleep.register(index);
    let mut search = Search::start(reg);
    loop {
        if ctx.run_one(&mut search) {
            continue;
        }
        if reg.may_exit() && reg.exit_core_worker() {
            break;
        }
        if !search.spun_out(reg) {
            continue;
        }
        search.park(|_| {
            reg.sleep
                .sleep(index, || !reg.queues_empty() || reg.may_exit())
        });
    }
}

/// Where a worker stands in the sleep protocol between tasks.
struct Search {
    /// Counted in `Sleep::searching` (looking for work, not found yet).
    searching: bool,
    /// Whether to spin or sleep when no work is found (`idle.rs`).
    idle: IdleSpin,
}

impl Search {
    /// A worker that starts out searching.
    fn start(registry: &Registry) -> Search {
        registry.sleep.start_searching();
        Search {
            searching: true,
            // Under `SCHED_BATCH` a spin competes with the thread that
            // feeds the worker and spares it nothing (`IdleSpin::replies_only`).
            idle: match registry.config.batch_rules() {
                true => IdleSpin::replies_only(),
                false => IdleSpin::new(),
            },
        }
    }

    /// After an empty look: yields the core and says to look again while
    /// the worker spins (false), or says it should sleep now (true).
    fn spun_out(&mut self, registry: &Registry) -> bool {
        let running = || registry.sleep.another_runs_unwatched();
        let now = Instant::now();
        if self.idle.keep_spinning(now, registry.produced(), running) {
            // On its core: submits may trust it (`sleep::STALE`).
            registry.sleep.note_look(now);
            idle_pause();
            return false;
        }
        true
    }

    /// Parks through `park` (given the time it starts) and scores the gap
    /// from park to wake, so no sleep escapes the spin rule.
    fn park<R>(&mut self, park: impl FnOnce(Instant) -> R) -> R {
        let parked = Instant::now();
        let woke = park(parked);
        self.idle.slept(parked.elapsed());
        woke
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
        let Some(work) = self.find_work() else {
            if !search.searching {
                search.searching = true;
                reg.sleep.start_searching();
            }
            return false;
        };
        if search.searching {
            search.searching = false;
            if reg.sleep.found_work(|| !reg.queues_empty()) && reg.owes_stand_in() {
                spawn_compensating(&self.registry);
            }
        }
        search.idle.found_work();
        self.run_work(work);
        true
    }
}

/// Between two empty looks of a spin: yield the core. A busy spin would be
/// faster on an idle machine, but steals the core from the submitter and the
/// worker that has the task when threads outnumber cores (measured: hot
/// submit->callback p50 1.6 us spinning against 0.5 us yielding on 2 cores;
/// at fixed server rates, a 5 us busy spin gave a 13 ms median at 94% of
/// the peak, issue 21).
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
        joins: None,
        tick: Cell::new(0),
    };
    let _entered = ctx.enter();
    let reg = &*ctx.registry;
    let slot = ExtraSlot::claim(reg);
    let mut search = Search::start(reg);
    loop {
        if ctx.run_one(&mut search) {
            continue;
        }
        if !reg.may_exit() && !search.spun_out(reg) {
            continue;
        }
        if search
            .park(|parked| reg.idle_extra(slot.index, parked.checked_add(reg.config.keep_alive)))
        {
            exit.extra.set(false);
            return;
        }
    }
}

/// How long an idle compensating worker stays by default, asleep in its
/// slot, for a submit to wake it before it exits (tokio's blocking pool
/// keeps idle threads as long; `Builder::keep_alive`). A pool whose workers block again and again reuses
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
/// [`Registry::retire_extra_with`].
pub(crate) fn spawn_compensating(registry: &Arc<Registry>) {
    if !registry.claim_extra_for_blocked() {
        return;
    }
    let name = format!("{}-extra", registry.config.name_prefix);
    if registry.spawn_thread(name, run_compensating).is_err() {
        registry.extra.fetch_sub(1, Ordering::SeqCst);
    }
}

// Wiring, not a protocol: off under loom, and under Miri, whose `--lib`
// run keeps to Stacked Borrows, which crossbeam's deques break.
#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;
    use crate::executor::registry::Config;

    fn registry(batch_scheduling: bool) -> Arc<Registry> {
        Registry::new(Config {
            batch_scheduling,
            ..Config::for_tests(2, 0)
        })
        .0
    }

    /// Whether the pool took each idle rule of `SCHED_BATCH`: no spin but
    /// for replies, and no trust in searchers.
    fn batch_rules_taken(reg: &Registry) -> [bool; 3] {
        [
            reg.config.batch_rules(),
            !reg.sleep.trusts_at_all(),
            Search::start(reg).idle.is_replies_only(),
        ]
    }

    /// Whether a thread started here ends under `SCHED_BATCH` once it asks
    /// (or keeps a quiet policy), found with the system calls themselves,
    /// not through `sched_policy`, which is under test.
    #[cfg(target_os = "linux")]
    fn policy_takes_here() -> bool {
        std::thread::spawn(|| {
            // The system calls themselves (musl's wrappers are stubs).
            let get = libc::c_long::from(libc::SYS_sched_getscheduler);
            let set = libc::c_long::from(libc::SYS_sched_setscheduler);
            // SAFETY: reads the calling thread's policy.
            let policy = unsafe { libc::syscall(get, 0) } & !0x4000_0000;
            // SAFETY: all zeros is a valid `sched_param` (see sched_policy).
            let param: libc::sched_param = unsafe { std::mem::zeroed() };
            match libc::c_int::try_from(policy) {
                Ok(libc::SCHED_BATCH | libc::SCHED_IDLE) => true,
                // SAFETY: `param` is valid and outlives the call; it changes
                // only this short-lived thread.
                Ok(libc::SCHED_OTHER) => unsafe {
                    libc::syscall(set, 0, libc::SCHED_BATCH, &raw const param) == 0
                },
                _ => false,
            }
        })
        .join()
        .unwrap()
    }

    #[cfg(not(target_os = "linux"))]
    fn policy_takes_here() -> bool {
        false
    }

    /// The option takes both idle rules of `SCHED_BATCH` where the workers
    /// will run under it, and neither where it is off or the system has
    /// no such policy.
    #[test]
    fn batch_scheduling_takes_the_batch_idle_rules_where_the_policy_exists() {
        let takes = policy_takes_here();
        for on in [false, true] {
            let expected = on && takes;
            assert_eq!(
                batch_rules_taken(&registry(on)),
                [expected; 3],
                "option {on}"
            );
        }
    }

    /// Where the policy does not take, the option keeps the normal idle
    /// rules: here under a real-time builder, whose workers would inherit
    /// its policy and keep it (a refused call ends the same way). Needs
    /// the privilege to make a thread real-time; where that is refused,
    /// it says so and checks nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_batch_pool_where_the_policy_does_not_take_keeps_the_normal_idle_rules() {
        std::thread::spawn(|| {
            // Changes only this thread, which builds a registry (no
            // workers) and exits.
            if !crate::executor::sched_policy::set_policy(libc::SCHED_FIFO, 1) {
                eprintln!("SCHED_FIFO refused here: nothing to check");
                return;
            }
            assert_eq!(batch_rules_taken(&registry(true)), [false; 3]);
        })
        .join()
        .unwrap();
    }
}
