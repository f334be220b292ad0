//! The state one pool shares between its handle and its workers: the
//! queues, the sleep state, the shutdown word, counters and configuration.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::blocking::PoolTag;
use super::metrics::{Counters, Metrics};
use super::sleep::{Notified, Sleep, Woke};
use super::task::{JobRef, TaskRef};
use crate::future::Promise;
use crate::sync::{AtomicUsize, Ordering, fence};

/// `state`: no new submits.
const SHUTDOWN: usize = 0b01;
/// `state`: one outside submit in flight (the count lives above the flag).
const SUBMITTER: usize = 0b10;

/// Keeps a hot atomic on its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// How the pool was built.
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) name_prefix: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) max_queued: Option<usize>,
    pub(crate) max_blocking: usize,
    /// How long an idle compensating worker sleeps before it exits.
    pub(crate) keep_alive: std::time::Duration,
    /// Public submits from workers go to the shared queue too.
    pub(crate) shared_queue: bool,
    /// Workers ask for `SCHED_BATCH` at their start (`sched_policy.rs`):
    /// asked for, and (once the registry is built) found to take.
    pub(crate) batch_scheduling: bool,
    /// Reports panics of callbacks and strand closures run on this pool's
    /// workers; `None`: the process-wide hook.
    pub(crate) panic_hook: Option<crate::panics::Hook>,
}

impl Config {
    /// Whether the workers take the idle rules of `SCHED_BATCH` (no spin
    /// but the reply spin, no trust in searchers): the option, once
    /// [`Registry::new`] has kept it only where the policy takes (which
    /// needs a system that has it: elsewhere the option does nothing).
    pub(crate) fn batch_rules(&self) -> bool {
        self.batch_scheduling
    }
}

/// A pool's config for the tests: `workers` core workers, at most
/// `max_blocking` compensating ones, every option off. For the loom models
/// here and the unit tests of `worker.rs` (off under Miri).
#[cfg(all(test, any(loom, not(miri))))]
impl Config {
    pub(crate) fn for_tests(workers: usize, max_blocking: usize) -> Config {
        Config {
            workers,
            name_prefix: String::new(),
            stack_size: None,
            max_queued: None,
            max_blocking,
            keep_alive: super::worker::KEEP_ALIVE,
            shared_queue: false,
            batch_scheduling: false,
            panic_hook: None,
        }
    }
}

/// Shared pool state.
pub(crate) struct Registry {
    pub(crate) injector: Injector<TaskRef>,
    pub(crate) stealers: Box<[Stealer<TaskRef>]>,
    /// The thieves' ends of the workers' join deques (`join.rs`).
    pub(crate) join_stealers: Box<[Stealer<JobRef>]>,
    pub(crate) sleep: Sleep,
    /// SHUTDOWN | (outside submits in flight + live futures) × SUBMITTER.
    /// Written by outside submitters and futures' holds; workers read it
    /// only when idle.
    state: Padded<AtomicUsize>,
    /// Nonzero once shutdown asked to cancel queued work. Read by workers
    /// for every task, so it lives apart from `state`.
    cancel: Padded<AtomicUsize>,
    /// Nonzero when a worker pushed work to its own deques since an idle
    /// worker last cleared it: work is being made inside the pool
    /// (`idle.rs`). A hint; apart from `cancel`, which every task reads.
    produced: Padded<AtomicUsize>,
    pub(crate) config: Config,
    /// One per core worker, plus one shared by outside threads and
    /// compensating workers (the last).
    pub(crate) counters: Box<[Counters]>,
    /// Workers currently blocked waiting on a running task.
    pub(crate) blocked: AtomicUsize,
    /// Compensating workers alive.
    pub(crate) extra: AtomicUsize,
    /// Worker threads alive; the last one out sets `exited`.
    live: AtomicUsize,
    exited: Promise<()>,
    pub(crate) joins: Mutex<Vec<JoinHandle<()>>>,
    /// Set when a `shutdown_timeout` gave up waiting for the workers.
    gave_up: AtomicUsize,
    /// How many times [`Registry::hold_open`] was called: a worker's exit
    /// check reads it before and after (`may_exit_with`).
    reopened: AtomicUsize,
    /// The number this pool's tasks carry (`blocking.rs`). Last, so that
    /// it is given back only after the injector's tasks were dropped.
    pub(crate) tag: PoolTag,
}

/// A [`Registry::begin_blocking`]: the thread counts as blocked until this
/// drops.
pub(crate) struct Blocked<'a> {
    registry: &'a Registry,
    queued: bool,
}

impl Blocked<'_> {
    /// Whether work was queued when the thread became blocked.
    pub(crate) fn work_queued(&self) -> bool {
        self.queued
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.registry.blocked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A [`Registry::hold_open`]; releases the hold when dropped.
pub(crate) struct Held<'a>(&'a Registry);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release_hold();
    }
}

/// A core worker's own deques: its tasks (FIFO: submits from a task run in
/// order) and its joins' second halves (LIFO: a joiner takes its own back
/// first; thieves take the oldest, the largest piece of work).
pub(crate) struct Deques {
    pub(crate) tasks: Worker<TaskRef>,
    pub(crate) joins: Worker<JobRef>,
}

/// One pass of `steal` over the `n` workers other than `skip`, starting
/// after it: the first success (counted as stolen), else `Retry` if any
/// victim said so, else `Empty`.
fn steal_round<T>(
    n: usize,
    skip: usize,
    counters: &Counters,
    mut steal: impl FnMut(usize) -> Steal<T>,
) -> Steal<T> {
    let mut retry = false;
    for i in 0..n {
        let victim = skip.wrapping_add(1).wrapping_add(i) % n;
        if victim == skip {
            continue;
        }
        match steal(victim) {
            Steal::Success(t) => {
                counters.stolen.fetch_add(1, Ordering::Relaxed);
                return Steal::Success(t);
            }
            Steal::Retry => retry = true,
            Steal::Empty => {}
        }
    }
    if retry { Steal::Retry } else { Steal::Empty }
}

impl Registry {
    pub(crate) fn new(mut config: Config) -> (Arc<Registry>, Vec<Deques>) {
        // The idle rules of `SCHED_BATCH` only where the workers will run
        // under it: not where the kernel refuses it, nor under a real-time
        // builder, whose policy they inherit and keep.
        config.batch_scheduling = config.batch_scheduling && super::sched_policy::takes();
        let locals: Vec<_> = (0..config.workers)
            .map(|_| Deques {
                tasks: Worker::new_fifo(),
                joins: Worker::new_lifo(),
            })
            .collect();
        let registry = Registry {
            injector: Injector::new(),
            stealers: locals.iter().map(|d| d.tasks.stealer()).collect(),
            join_stealers: locals.iter().map(|d| d.joins.stealer()).collect(),
            // Under `SCHED_BATCH` a woken worker waits for its waker's
            // core, so a submit never leaves its task to one (`Sleep::untrusting`).
            sleep: match config.batch_rules() {
                true => Sleep::untrusting(config.workers, config.max_blocking),
                false => Sleep::new(config.workers, config.max_blocking),
            },
            state: Padded(AtomicUsize::new(0)),
            cancel: Padded(AtomicUsize::new(0)),
            produced: Padded(AtomicUsize::new(0)),
            counters: (0..=config.workers).map(|_| Counters::default()).collect(),
            blocked: AtomicUsize::new(0),
            extra: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            exited: Promise::new(),
            joins: Mutex::new(Vec::new()),
            gave_up: AtomicUsize::new(0),
            reopened: AtomicUsize::new(0),
            config,
            tag: PoolTag::new(),
        };
        (Arc::new(registry), locals)
    }

    /// A worker pushed work to its own deques (a task or a join's second
    /// half): tells the spin policy that work is made inside the pool.
    #[inline(always)]
    pub(crate) fn note_produced(&self) {
        // Relaxed: a hint to `idle.rs`, which publishes nothing through it.
        // Read first: in a busy pool the flag stays set and the line stays
        // shared, so a push costs a load, not a write to a shared line.
        if self.produced.0.load(Ordering::Relaxed) == 0 {
            self.produced.0.store(1, Ordering::Relaxed);
        }
    }

    /// The flag [`Registry::note_produced`] sets, for the spin policy.
    pub(crate) fn produced(&self) -> &AtomicUsize {
        &self.produced.0
    }

    /// The counters of outside threads and compensating workers.
    pub(crate) fn shared_counters(&self) -> &Counters {
        &self.counters[self.config.workers]
    }

    /// Starts a submit: false if the pool is shut down. On true the caller
    /// must push and then call [`Registry::end_submit`].
    pub(crate) fn begin_submit(&self) -> bool {
        // Acquire: pairs with `shutdown`'s Release so a refused submit sees it.
        let prev = self.state.0.fetch_add(SUBMITTER, Ordering::Acquire);
        if prev & SHUTDOWN != 0 {
            self.uncount(Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Takes one count off `state`; the last one after shutdown wakes the
    /// workers, which wait for it to exit. Also on a refused submit: its
    /// brief count may be the one a parked worker's last look saw.
    fn uncount(&self, order: Ordering) {
        let prev = self.state.0.fetch_sub(SUBMITTER, order);
        if prev & SHUTDOWN != 0 && prev / SUBMITTER == 1 {
            self.sleep.notify_all();
        }
    }

    /// After a push: wakes a worker if none is searching; true if nobody
    /// could be woken and nobody searches while a thread is blocked in a
    /// wait (a compensating worker is owed: the caller starts one).
    pub(crate) fn wake_after_push(&self) -> bool {
        match self.sleep.notify_one() {
            Notified::Woken | Notified::Searching => false,
            // Relaxed load after `notify_one`'s SeqCst fence: pairs with
            // the fence in `begin_blocking` (see there). `blocked` first:
            // it rarely changes, `searching` changes all the time.
            Notified::NoSleeper => {
                self.blocked.load(Ordering::Relaxed) > 0 && !self.sleep.is_searching()
            }
        }
    }

    /// After the last searcher found work with nobody asleep
    /// ([`Sleep::found_work`](super::sleep::Sleep::found_work) said so):
    /// whether a thread is blocked with no stand-in while work is still
    /// queued. A submit that trusted the searcher left its task queued, and
    /// with nobody asleep only a stand-in can take it before the searcher
    /// comes back: the pool's capacity is owed.
    pub(crate) fn owes_stand_in(&self) -> bool {
        // SeqCst loads (plain loads on x86), after `found_work`'s SeqCst
        // decrement: a thread that blocked after that decrement in the
        // SeqCst order (its fence later than our load) looks at the queues
        // itself and sees the trusting submit's task, whose fence came
        // before ours; one that blocked before is counted here. `blocked`
        // first: it rarely changes, and a busy pool reads 0 and stops.
        self.blocked.load(Ordering::SeqCst) > self.extra.load(Ordering::SeqCst) && {
            // SeqCst: the trusting submit pushed, fenced, then read
            // `searching` before our decrement; our fence after it comes
            // later in the SeqCst order, so the look sees its task.
            fence(Ordering::SeqCst);
            !self.queues_empty()
        }
    }

    /// A pool thread is about to block in a wait: counts it blocked until
    /// the guard drops. The guard says whether work was queued once the
    /// count was visible (the caller must then wake or start a worker).
    ///
    /// Store buffering against a submit: we increment `blocked`, then read
    /// the queues; a submitter pushes, then reads `blocked` (in
    /// `wake_after_push`). With a SeqCst fence between each side's write
    /// and read (ours here, the submitter's in `Sleep::notify_one`), one of
    /// the two fences comes first in their total order, so either we see
    /// the task or the submitter sees us blocked: never both miss.
    pub(crate) fn begin_blocking(&self) -> Blocked<'_> {
        self.begin_blocking_with(|| !self.queues_empty())
    }

    /// [`Registry::begin_blocking`] with the queue check given (loom models
    /// pass a queue it can see; crossbeam's is invisible to it).
    fn begin_blocking_with(&self, queued: impl FnOnce() -> bool) -> Blocked<'_> {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Blocked {
            registry: self,
            queued: queued(),
        }
    }

    /// Claims a compensating worker's place if fewer than `max_blocking`
    /// are alive. SeqCst: the RMW follows the caller's fence (see
    /// `leave_extra_with`).
    pub(crate) fn claim_extra(&self) -> bool {
        self.claim_extra_below(usize::MAX)
    }

    /// [`Registry::claim_extra`] for a new stand-in: only while fewer are
    /// alive than threads are blocked, so the pool keeps its capacity and
    /// no more. The threads not blocked number `workers + extra -
    /// blocked` (a blocked stand-in counts in both), which is below
    /// `workers` exactly while `extra < blocked`. Without this, every push
    /// that found the stand-ins busy started another, up to `max_blocking`
    /// for one blocked worker, and a burst of pushes started several before
    /// the first got going. A retiring stand-in's claim back
    /// (`leave_extra_with`) is not capped: a submit may have trusted it.
    pub(crate) fn claim_extra_for_blocked(&self) -> bool {
        // Relaxed: a cap, read again at each attempt. A thread that blocks
        // after this read starts a stand-in itself if work is queued
        // (`begin_blocking`'s look), so a stale count only defers to it.
        self.claim_extra_below(self.blocked.load(Ordering::Relaxed))
    }

    fn claim_extra_below(&self, cap: usize) -> bool {
        let max = self.config.max_blocking.min(cap);
        self.extra
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A compensating worker (searching) found no work: it sleeps in its
    /// sleep slot (`slot`, if it got one) until a submit wakes it or
    /// `deadline` (its keep-alive) passes, then retires unless woken for
    /// work. At shutdown it does not sleep: it retires once nothing holds
    /// the pool open. True: it has left the count and must exit. False: it
    /// stays, searching.
    pub(crate) fn idle_extra(&self, slot: Option<usize>, deadline: Option<Instant>) -> bool {
        self.idle_extra_with(slot, deadline, || !self.queues_empty())
    }

    /// [`Registry::idle_extra`] with the queue check given (loom models
    /// pass one they can see).
    fn idle_extra_with(
        &self,
        slot: Option<usize>,
        deadline: Option<Instant>,
        queued: impl Fn() -> bool,
    ) -> bool {
        let may_exit = || self.may_exit_with(&queued);
        if let Some(index) = slot
            && !may_exit()
        {
            let woke = self
                .sleep
                .sleep_until(index, deadline, || queued() || may_exit());
            if woke == Woke::Wake && !may_exit() {
                return false;
            }
        }
        self.retire_extra_with(queued)
    }

    /// An idle compensating worker (searching) retires: it stops counting
    /// as a searcher *before* its last look, since a submit that sees a
    /// searcher wakes nobody, trusting it to find the task; then it leaves
    /// the count (`leave_extra_with`). True: it must exit. False:
    /// work came and it got its place back; it is searching again.
    fn retire_extra_with(&self, queued: impl FnOnce() -> bool) -> bool {
        self.sleep.stop_searching();
        if self.leave_extra_with(queued) {
            return true;
        }
        self.sleep.start_searching();
        false
    }

    /// A compensating worker found no work and would exit: it leaves the
    /// count first, then looks once more (`queued`: the queue check, given
    /// so that loom models can pass one they see). True: it has left and must exit.
    /// False: work arrived and it got its place back; it goes on.
    ///
    /// Against a submit that found the cap reached and started nobody (the
    /// lost wakeup of leaving the count only after the loop): the submitter
    /// pushed, fenced (SeqCst, in `notify_one`), then read `extra` in
    /// `claim_extra`; we decrement, fence, then read the queues. Whichever
    /// fence comes first, either the submitter's claim sees our decrement
    /// (and starts a worker) or our look sees its task.
    fn leave_extra_with(&self, queued: impl FnOnce() -> bool) -> bool {
        self.extra.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !queued() || !self.claim_extra() {
            // Empty, or another thread took the place we left to start a
            // worker for the task we saw: that worker will take it.
            return true;
        }
        false
    }

    /// A core worker (searching) found no work and the pool may let it go
    /// ([`Registry::may_exit`]): it stops counting as a searcher, then
    /// looks once more. True: it has left and must exit. False: work came
    /// (or a hold: a submit in flight), and it searches again.
    ///
    /// Against a pool thread that blocks with work queued: that thread
    /// starts a stand-in only if nobody searches (`wake_after_push`), so a
    /// worker on its way out must not count as one while its last look
    /// could still miss what that thread pushed (a `join` half, or a task
    /// on its own deque, queued just before the shutdown). It pushed,
    /// fenced (SeqCst, in `begin_blocking` and `notify_one`), then read
    /// `searching`; we decrement, fence, then read the state and queues.
    /// Whichever fence comes first, either it sees no searcher (and starts
    /// a stand-in) or we see its work. A retiring stand-in does the same
    /// (`retire_extra_with`).
    pub(crate) fn exit_core_worker(&self) -> bool {
        self.exit_core_worker_with(|| !self.queues_empty())
    }

    /// [`Registry::exit_core_worker`] with the queue check given (loom).
    fn exit_core_worker_with(&self, queued: impl FnOnce() -> bool) -> bool {
        self.sleep.stop_searching();
        fence(Ordering::SeqCst);
        if self.may_exit_with(queued) {
            return true;
        }
        self.sleep.start_searching();
        false
    }

    /// Ends a submit begun with [`Registry::begin_submit`]; the caller
    /// then wakes a worker for what it pushed.
    pub(crate) fn end_submit(&self) {
        // Release: the push happens before a worker's exit check that sees
        // the count drop (its SeqCst load in `may_exit`).
        // (Shutdown may have begun while we pushed: workers waiting for
        // in-flight submits to finish then re-check, see `uncount`.)
        self.uncount(Ordering::Release);
    }

    /// A future on the pool becomes live: it holds the pool open like a
    /// submit in flight, so workers stay to poll it after shutdown until it
    /// is dropped ([`Registry::release_hold`]). Refused (false) once the
    /// pool is shut down: the check and the count are one RMW, so no worker
    /// can have exited on a count that missed this hold.
    pub(crate) fn try_hold(&self) -> bool {
        self.begin_submit()
    }

    /// Holds the pool open until the guard drops, even once shut down (a
    /// cancelling shutdown's drain of the injector, which queues some tasks
    /// again). Taken before `shutdown` marks the pool; or after (a second
    /// shutdown, cancelling), where a worker may be deciding to exit: its
    /// exit check reads how many holds were ever taken before and after its
    /// look at the queues, so a task the drain took off before that look
    /// keeps it (`may_exit_with`); or after every worker has exited (then nothing is queued: every push
    /// after shutdown is refused or covered by another hold).
    pub(crate) fn hold_open(&self) -> Held<'_> {
        // Relaxed: a count; the release below publishes what we pushed.
        self.state.0.fetch_add(SUBMITTER, Ordering::Relaxed);
        // After the hold, before the drain's first take (`may_exit_with`):
        // a worker whose first read sees this sees the hold too, and one
        // whose look missed a taken task sees this in its second read.
        self.reopened.fetch_add(1, Ordering::SeqCst);
        Held(self)
    }

    /// The future of a [`Registry::try_hold`] is gone.
    pub(crate) fn release_hold(&self) {
        // Release: the future's drop happens before a worker's exit check
        // that sees the count drop (its SeqCst load in `may_exit`).
        self.uncount(Ordering::Release);
    }

    /// Submits in flight and live futures (each holds the pool open).
    pub(crate) fn holds(&self) -> usize {
        self.state.0.load(Ordering::Relaxed) / SUBMITTER
    }

    /// Marks the pool shut down (and cancelling, if asked).
    pub(crate) fn shutdown(&self, cancel: bool) {
        if cancel {
            // Release: pairs with `is_cancelling`.
            self.cancel.0.store(1, Ordering::Release);
        }
        // SeqCst: ordered before the wake-up below and every worker's
        // exit check.
        self.state.0.fetch_or(SHUTDOWN, Ordering::SeqCst);
        self.sleep.notify_all();
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.state.0.load(Ordering::Acquire) & SHUTDOWN != 0
    }

    /// Records that a timed shutdown stopped waiting for stuck tasks.
    pub(crate) fn give_up_waiting(&self) {
        self.gave_up.store(1, Ordering::Relaxed);
    }

    /// Whether a timed shutdown stopped waiting (so drop must not wait).
    pub(crate) fn gave_up_waiting(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancel.0.load(Ordering::Acquire) != 0
    }

    /// The counters summed, with what the queues hold now.
    pub(crate) fn metrics(&self) -> Metrics {
        let queued = self.injector.len()
            + self.stealers.iter().map(Stealer::len).sum::<usize>()
            + self.join_stealers.iter().map(Stealer::len).sum::<usize>();
        Metrics::sum(&self.counters, queued)
    }

    /// Whether every queue looks empty.
    pub(crate) fn queues_empty(&self) -> bool {
        self.injector.is_empty()
            && self.stealers.iter().all(Stealer::is_empty)
            && self.join_stealers.iter().all(Stealer::is_empty)
    }

    /// Whether a worker may exit: shut down, no submit in flight, no live
    /// future, no work.
    pub(crate) fn may_exit(&self) -> bool {
        self.may_exit_with(|| !self.queues_empty())
    }

    fn may_exit_with(&self, queued: impl FnOnce() -> bool) -> bool {
        // A hold taken after the pool was shut down (a second shutdown,
        // cancelling, whose drain takes tasks off the injector and queues
        // some again) may come and go between our load of the state and
        // our look at the queues, the look missing the task it took: its
        // count is back to zero, so only the number of holds ever taken
        // tells. The hold, then that number, are counted before the take.
        // A first read that sees the number moved sees the hold (or its
        // release, and with it what the drain queued again); a look that
        // missed the task read the queue after the take (SeqCst, in
        // crossbeam), and the second read sees the number moved.
        let reopened = self.reopened.load(Ordering::SeqCst);
        let state = self.state.0.load(Ordering::SeqCst);
        state & SHUTDOWN != 0
            && state / SUBMITTER == 0
            && !queued()
            && self.reopened.load(Ordering::SeqCst) == reopened
    }

    /// Takes one task from the injector or another worker's deque, moving a
    /// batch into `local` when there is one. `skip` is the caller's own index.
    pub(crate) fn steal(
        &self,
        local: Option<&Worker<TaskRef>>,
        skip: usize,
        counters: &Counters,
    ) -> Option<TaskRef> {
        loop {
            let from_injector = match local {
                Some(local) => self.injector.steal_batch_and_pop(local),
                None => self.injector.steal(),
            };
            let retry = match from_injector {
                Steal::Success(t) => return Some(t),
                Steal::Retry => true,
                Steal::Empty => false,
            };
            let from_others =
                steal_round(self.stealers.len(), skip, counters, |victim| match local {
                    Some(local) => self.stealers[victim].steal_batch_and_pop(local),
                    None => self.stealers[victim].steal(),
                });
            match from_others {
                Steal::Success(t) => return Some(t),
                Steal::Empty if !retry => return None,
                _ => {}
            }
        }
    }

    /// Takes one join's second half from another worker's join deque (the
    /// oldest there: the largest piece of a fork-join tree).
    pub(crate) fn steal_join(&self, skip: usize, counters: &Counters) -> Option<JobRef> {
        loop {
            let n = self.join_stealers.len();
            match steal_round(n, skip, counters, |victim| {
                self.join_stealers[victim].steal()
            }) {
                Steal::Success(job) => return Some(job),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    /// Starts a worker thread named `name` running `body`, counted live
    /// until its exit guard reports it gone. A refused start (the OS said
    /// no, or its builder panicked) is an error, and is not counted.
    pub(crate) fn spawn_thread(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce(Arc<Registry>) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        // Counted before the thread runs: it may exit before `spawn` returns.
        self.live.fetch_add(1, Ordering::Relaxed);
        let mut builder = std::thread::Builder::new().name(name);
        if let Some(size) = self.config.stack_size {
            builder = builder.stack_size(size);
        }
        let registry = self.clone();
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            builder.spawn(move || {
                if registry.config.batch_rules() {
                    super::sched_policy::batch_this_thread();
                }
                body(registry)
            })
        }))
        .unwrap_or_else(|payload| {
            let message = crate::panics::panic_message(payload);
            Err(std::io::Error::other(message.as_str().to_owned()))
        });
        if spawned.is_err() {
            self.thread_exited();
        }
        spawned
    }

    /// Worker threads alive now (core and compensating).
    pub(crate) fn live_threads(&self) -> usize {
        // Relaxed: a snapshot for metrics.
        self.live.load(Ordering::Relaxed)
    }

    /// A worker thread has ended; the last one after shutdown resolves
    /// [`Registry::wait_exited`].
    pub(crate) fn thread_exited(&self) {
        // AcqRel: the last one out sees every other worker's work.
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 && self.is_shutdown() {
            let _ = self.exited.set_result(());
        }
    }

    /// Waits until every worker thread has ended (after shutdown), or until
    /// the deadline; returns whether they all ended.
    pub(crate) fn wait_exited(&self, timeout: Option<std::time::Duration>) -> bool {
        if self.live.load(Ordering::Acquire) == 0 {
            return true;
        }
        let handle = self.exited.handle();
        match timeout {
            None => handle.wait().is_ok(),
            Some(t) => handle.wait_timeout(t).is_ok(),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::{Config, Registry};
    use crate::executor::task::TaskRef;
    use crate::sync::{AtomicUsize, Ordering};
    use loom::thread;
    use std::sync::Arc;

    fn one_worker_registry() -> Arc<Registry> {
        registry_with(0)
    }

    /// One core worker, at most `max_blocking` compensating ones.
    fn registry_with(max_blocking: usize) -> Arc<Registry> {
        registry_of(1, max_blocking)
    }

    fn registry_of(workers: usize, max_blocking: usize) -> Arc<Registry> {
        Registry::new(Config::for_tests(workers, max_blocking)).0
    }

    // These two stand in a loom atomic for the queue (crossbeam's reads are
    // invisible to loom, so they could never be stale); the counters,
    // fences and decisions are the real code's.

    /// A task pushed while the only worker becomes blocked in a wait is
    /// never left with nobody owed to it: either the worker, counting
    /// itself blocked, sees the task (and wakes or starts a worker), or the
    /// submitter sees it blocked (and starts one). Fails without the SeqCst
    /// fence in `begin_blocking` (store buffering).
    #[test]
    fn keep_capacity_vs_submit() {
        loom::model(|| {
            let reg = registry_with(0);
            let queue = Arc::new(AtomicUsize::new(0));
            let worker = {
                let (reg, queue) = (reg.clone(), queue.clone());
                thread::spawn(move || {
                    // It stays blocked for the rest of the model.
                    let blocked = reg.begin_blocking_with(|| queue.load(Ordering::Relaxed) != 0);
                    let saw = blocked.work_queued();
                    std::mem::forget(blocked);
                    saw
                })
            };
            queue.store(1, Ordering::Relaxed); // the push
            let submitter_owes = reg.wake_after_push();
            let worker_saw = worker.join().unwrap();
            assert!(
                worker_saw || submitter_owes,
                "a queued task was owed no worker"
            );
        });
    }

    /// A compensating worker exiting while a submit finds the cap reached:
    /// either the worker stays (it saw the task and got its place back) or
    /// the submitter gets the place it left and starts a worker. Fails if
    /// the worker leaves the count only after its last look, if either
    /// fence goes, or if it stops counting as a searcher only after it.
    #[test]
    fn compensating_exit_vs_submit() {
        loom::model(|| {
            let reg = registry_with(1);
            assert!(reg.claim_extra()); // the compensating worker, alive
            let _blocked = reg.begin_blocking(); // the core worker it stands in for
            reg.sleep.start_searching(); // the compensating worker, idle
            let queue = Arc::new(AtomicUsize::new(0));
            let exiting = {
                let (reg, queue) = (reg.clone(), queue.clone());
                thread::spawn(move || reg.retire_extra_with(|| queue.load(Ordering::Relaxed) != 0))
            };
            queue.store(1, Ordering::Relaxed); // the push
            let started = reg.wake_after_push() && reg.claim_extra();
            let left = exiting.join().unwrap();
            assert!(!left || started, "the task was stranded at the cap");
            assert!(left || !started, "two workers for one place");
        });
    }

    /// A core worker leaving at shutdown while another pool thread blocks
    /// with work it pushed to its own deque: either the leaver sees the
    /// work (and stays) or the blocked thread sees no searcher (and starts
    /// a stand-in). Fails if the leaver stops counting as a searcher only
    /// after its last look (the code before), or without its fence.
    #[test]
    fn core_exit_vs_blocking_with_work() {
        loom::model(|| {
            let reg = registry_of(2, 1);
            reg.shutdown(false);
            reg.sleep.start_searching(); // the leaving worker
            let queue = Arc::new(AtomicUsize::new(0));
            let leaving = {
                let (reg, queue) = (reg.clone(), queue.clone());
                thread::spawn(move || {
                    let queued = || queue.load(Ordering::Relaxed) != 0;
                    reg.may_exit_with(queued) && reg.exit_core_worker_with(queued)
                })
            };
            queue.store(1, Ordering::Relaxed); // the push (a join half)
            let blocked = reg.begin_blocking_with(|| queue.load(Ordering::Relaxed) != 0);
            let owed = blocked.work_queued() && reg.wake_after_push();
            std::mem::forget(blocked);
            let left = leaving.join().unwrap();
            assert!(!left || owed, "the work was stranded with nobody to run it");
        });
    }

    /// A compensating worker's life after its start, on the real code: it
    /// takes what the (stand-in) queue holds, and when idle sleeps in its
    /// slot and retires (`idle_extra_with`). Returns how many tasks it ran.
    fn spawn_compensating_worker(
        reg: &Arc<Registry>,
        queue: &Arc<AtomicUsize>,
    ) -> thread::JoinHandle<usize> {
        let (reg, queue) = (reg.clone(), queue.clone());
        thread::spawn(move || {
            let slot = reg.sleep.claim_extra_slot();
            reg.sleep.start_searching();
            let mut ran = 0;
            loop {
                let n = queue.load(Ordering::SeqCst);
                if n > 0 {
                    if queue
                        .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        let _ = reg.sleep.found_work(|| queue.load(Ordering::SeqCst) > 0);
                        ran += 1;
                        reg.sleep.start_searching();
                    }
                    continue;
                }
                if reg.idle_extra_with(slot, None, || queue.load(Ordering::SeqCst) != 0) {
                    if let Some(index) = slot {
                        reg.sleep.release_extra_slot(index);
                    }
                    return ran;
                }
            }
        })
    }

    /// Shutdown against a compensating worker going to sleep in its slot
    /// (a core worker is blocked) and a submit racing both: the worker
    /// always wakes and exits (shutdown's wake-all reaches the compensating
    /// slots), and an accepted task runs exactly once, on it or on the
    /// worker the submit started in its place. 64 core workers (idle in
    /// the model: only their sleep bits count) put the compensating slots
    /// in a word of their own: the model fails if a wake skips that word
    /// while a slot is claimed.
    #[test]
    fn shutdown_vs_compensating_sleep_and_submit() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let reg = registry_of(64, 1);
            let queue = Arc::new(AtomicUsize::new(0));
            // A core worker, blocked for the whole model.
            let blocked = reg.begin_blocking_with(|| false);
            assert!(reg.claim_extra()); // the compensating worker's place
            let comp = spawn_compensating_worker(&reg, &queue);
            let submitter = {
                let (reg, queue) = (reg.clone(), queue.clone());
                thread::spawn(move || {
                    if !reg.begin_submit() {
                        return (false, false);
                    }
                    queue.fetch_add(1, Ordering::SeqCst); // the push
                    reg.end_submit();
                    // Owed a compensating worker, and the place is free.
                    (true, reg.wake_after_push() && reg.claim_extra())
                })
            };
            reg.shutdown(false);
            let (accepted, started) = submitter.join().unwrap();
            let mut ran = comp.join().unwrap();
            if started {
                // The worker the submit started: it takes what is left.
                ran += spawn_compensating_worker(&reg, &queue).join().unwrap();
            }
            assert_eq!(ran, usize::from(accepted), "accepted {accepted}");
            drop(blocked);
        });
    }

    /// A worker's loop, reduced to the exit protocol: run what it steals
    /// (once `pushed` says the push is visible in loom's terms), exit when
    /// `may_exit` says so.
    fn spawn_worker(reg: &Arc<Registry>, pushed: &Arc<AtomicUsize>) -> thread::JoinHandle<()> {
        let (reg, pushed) = (reg.clone(), pushed.clone());
        thread::spawn(move || {
            loop {
                if let Some(task) = reg.injector.steal().success() {
                    while pushed.load(Ordering::Acquire) == 0 {
                        thread::yield_now();
                    }
                    task.run(crate::executor::metrics::Tally::NONE);
                    continue;
                }
                if reg.may_exit() {
                    return;
                }
                thread::yield_now();
            }
        })
    }

    /// A submit racing shutdown is either refused or run: a worker that exits
    /// (shut down, no submit in flight, queues empty) never leaves an
    /// accepted task behind.
    #[test]
    fn shutdown_vs_submit() {
        loom::model(|| {
            let reg = one_worker_registry();
            let ran = Arc::new(AtomicUsize::new(0));
            // crossbeam's injector orders push before steal with its own
            // (std) atomics, which loom cannot see; this flag re-states that
            // edge in loom's terms so the task's cell is not a false race.
            let pushed = Arc::new(AtomicUsize::new(0));
            let submitter = {
                let (reg, ran, pushed) = (reg.clone(), ran.clone(), pushed.clone());
                thread::spawn(move || {
                    if !reg.begin_submit() {
                        return false;
                    }
                    // loom only switches threads at its own operations; the
                    // injector's are not, so give the window between the
                    // count and the push a switch point of its own.
                    thread::yield_now();
                    reg.injector.push(TaskRef::detached(
                        move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                        },
                        false,
                    ));
                    pushed.store(1, Ordering::Release);
                    reg.end_submit();
                    true
                })
            };
            let worker = spawn_worker(&reg, &pushed);
            reg.shutdown(false);
            let accepted = submitter.join().unwrap();
            worker.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), usize::from(accepted));
        });
    }

    /// A second shutdown, cancelling, drains the injector of a pool already
    /// shut down while its worker decides to exit: the drain holds the pool
    /// open, takes a task that must still run, and queues it again. The
    /// worker never exits with it queued: either its look at the queue saw
    /// the task, or its reads of the holds (or of how many were ever taken)
    /// see the drain's. Fails without the count of holds taken (the code
    /// before, or a second read of the holds alone: the hold may be gone).
    #[test]
    fn second_cancelling_shutdown_vs_exit() {
        loom::model(|| {
            let reg = one_worker_registry();
            reg.shutdown(false);
            let queue = Arc::new(AtomicUsize::new(1)); // the task
            let worker = {
                let (reg, queue) = (reg.clone(), queue.clone());
                thread::spawn(move || reg.may_exit_with(|| queue.load(Ordering::SeqCst) != 0))
            };
            let hold = reg.hold_open();
            let taken = queue.swap(0, Ordering::SeqCst); // the drain's steal
            queue.store(taken, Ordering::SeqCst); // queued again
            drop(hold);
            let exited = worker.join().unwrap();
            assert!(!exited, "the worker left a task queued again behind");
        });
    }

    /// A live future holds the pool open: woken while the pool shuts down,
    /// it is queued again (no submit slot: shutdown refuses those) and then
    /// finishes, releasing its hold. The worker never exits before running
    /// it, however the release, the push and the exit check interleave.
    #[test]
    fn a_held_future_requeued_during_shutdown_still_runs() {
        loom::model(|| {
            let reg = one_worker_registry();
            assert!(reg.try_hold()); // spawned while the pool was open
            let ran = Arc::new(AtomicUsize::new(0));
            let pushed = Arc::new(AtomicUsize::new(0));
            let waker = {
                let (reg, ran, pushed) = (reg.clone(), ran.clone(), pushed.clone());
                thread::spawn(move || {
                    reg.injector.push(TaskRef::detached(
                        move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                        },
                        false,
                    ));
                    pushed.store(1, Ordering::Release);
                    // Released as early as it can be in the real code: the
                    // future finished right after it was queued.
                    thread::yield_now();
                    reg.release_hold();
                })
            };
            let worker = spawn_worker(&reg, &pushed);
            reg.shutdown(false);
            waker.join().unwrap();
            worker.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        });
    }
}
