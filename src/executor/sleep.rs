//! How idle workers park and how submitters wake them, with no lost wakeup
//! and no thundering herd.
//!
//! State: one bit per worker in `sleepers` (set: parked or about to park)
//! and `searching`, the number of awake workers looking for work that have
//! not found any yet.
//!
//! - A worker going to sleep sets its bit, stops counting as searching,
//!   issues a SeqCst fence, and re-checks every queue before parking.
//! - A submitter pushes its task, issues a SeqCst fence, and then, if no
//!   worker is searching, counts one sleeper as searching, clears its
//!   bit, and unparks it (counted first: the sleeper may see its bit gone
//!   and run on before the unpark).
//!
//! The two fences are ordered one way or the other: either the worker's
//! re-check sees the task, or the submitter sees the worker's bit (and its
//! searching count gone) and wakes it. A searcher seen by the submitter will
//! itself re-check before it sleeps. So a task is never left queued while
//! every worker sleeps.
//!
//! Only as many workers wake as there is work for: a submit wakes at most
//! one, and only when nobody is searching; a woken worker that finds work
//! while it was the last searcher wakes the next one (work may remain).
//!
//! A searcher is trusted only while it shows it is on a core. A spinning
//! worker stamps the time at each look, and a wake stamps it for the woken
//! worker; a submit that finds searchers whose last stamp is older than
//! [`STALE`] wakes a sleeper as if nobody searched, unless as many core
//! workers are awake as the process has cores (a worker woken then would
//! wait for a core behind them). The scheduler may take
//! a spinner off its core (its yield handed the core to another thread
//! and the slice went on), and a submit that trusted it would leave its
//! task queued, with a worker asleep, until the spinner came back: issue
//! 21 measured medians of 1.4-27 ms at 94% of a server's peak rate from
//! exactly that, against about 1 ms for a mutex pool. The stamp is a hint
//! outside the protocol: a stale searcher still re-checks the queues
//! before it sleeps, so trusting one never loses a task, and waking past
//! one only wakes a worker more. A pool whose workers run under
//! `SCHED_BATCH` trusts no searcher at all ([`Sleep::untrusting`]).
//!
//! Slots: one per core worker (`0..workers`), then up to [`EXTRA_SLOTS`]
//! for compensating workers, which claim a free slot when they start and
//! give it back when they exit. An idle compensating worker sleeps in its
//! slot like a core worker, with a deadline (its keep-alive): a submit wakes
//! it instead of starting a new thread. A wake picks the lowest slot, so
//! core workers are woken first.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, AtomicUsize, Ordering, Thread, fence};

const BITS: usize = usize::BITS as usize;

/// How long a searcher may go without a look before a submit stops
/// trusting it to take the task: two spin windows. A spinner on its core
/// looks every microsecond or so (one yield); one that has not looked for
/// this long was put off its core. Longer than a futex hand-off (4-9 µs
/// on the VM BENCHMARKS.md measures), so a worker just woken is trusted
/// while it gets going.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const STALE: Duration =
    Duration::from_micros(2 * super::idle::SPIN_WINDOW.as_micros() as u64);

/// Most compensating workers that can sleep in a slot at once; beyond
/// these, an idle compensating worker exits instead of sleeping. One word
/// of slots: 64 on a 64-bit target, 32 on a 32-bit one (where 64 asked
/// for a shift past the word, a panic in a debug build).
pub(crate) const EXTRA_SLOTS: usize = BITS;

/// The sleep state of one pool.
pub(crate) struct Sleep {
    sleepers: Box<[AtomicUsize]>,
    searching: AtomicUsize,
    /// Core workers' threads, set once each.
    threads: Box<[OnceLock<Thread>]>,
    /// Compensating workers' threads: a slot's thread changes as workers
    /// come and go. Locked only to store a thread and to wake it.
    extra_threads: Box<[Mutex<Option<Thread>>]>,
    /// Free compensating slots (bit set: free).
    extra_free: AtomicUsize,
    /// `extra_free` with every slot free.
    all_free: usize,
    /// Words of `sleepers` holding a core worker's bit (the rest hold only
    /// compensating slots).
    core_words: usize,
    /// When a searcher last showed it is on a core (a look of a spin, or
    /// its wake), in microseconds since `epoch`; see [`STALE`].
    looked: Stamp,
    epoch: Instant,
    /// Cores the process may run on (`available_parallelism`): while as
    /// many core workers are awake, a submit trusts the searchers without
    /// judging their stamp (`Sleep::trusts_searchers`).
    #[cfg_attr(loom, allow(dead_code))]
    cores: usize,
    /// Whether a submit may leave its task to a searcher at all: false
    /// for a pool whose workers run under `SCHED_BATCH` ([`Sleep::untrusting`]).
    /// Under loom, models run both ways (a model has no clock to judge a
    /// stamp by, so this alone decides there).
    trust_searchers: bool,
}

/// `Sleep::looked`, on a cache line of its own: spinners write it as they
/// look, and the fields beside it (`searching`, `extra_free`) are read by
/// every submit, which would otherwise miss in cache on each look.
#[repr(align(128))]
struct Stamp(AtomicU64);

/// A spinner rewrites its stamp only once it is this many microseconds old:
/// a look comes about every microsecond, and a stamp that lags by this much
/// is still far inside [`STALE`].
const STAMP_STEP_US: u64 = 4;

/// Clears the lowest set bit of `word` and returns its index, or `None` if
/// no bit is set. `order` is that of the load and of the CAS.
fn take_lowest_bit(word: &AtomicUsize, order: Ordering) -> Option<usize> {
    let mut bits = word.load(order);
    while bits != 0 {
        let bit = bits & bits.wrapping_neg();
        match word.compare_exchange_weak(bits, bits & !bit, order, order) {
            Ok(_) => return Some(bit.trailing_zeros() as usize),
            Err(actual) => bits = actual,
        }
    }
    None
}

/// Whether some worker in `words` sleeps or is about to (its bit is set).
/// On every push: one word (a pool of up to 64 workers with no
/// compensating worker alive) is read without a loop.
#[inline]
fn any_bit(words: &[AtomicUsize]) -> bool {
    // SeqCst: see `Sleep::found_work` and `Sleep::notify_one`.
    match words {
        [word] => word.load(Ordering::SeqCst) != 0,
        _ => words.iter().any(|w| w.load(Ordering::SeqCst) != 0),
    }
}

/// What [`Sleep::notify_one`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notified {
    /// It woke a sleeper, which now counts as searching.
    Woken,
    /// Someone sleeps, but a worker is searching: it will find the task.
    Searching,
    /// Nobody sleeps (or the sleeper was taken by another waker).
    NoSleeper,
}

/// What [`Sleep::sleep_until`] ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken by a notifier, or `should_wake` held: look for work.
    Wake,
    /// The deadline passed with nobody waking us.
    TimedOut,
}

impl Sleep {
    /// Sleep state for `workers` core workers and `extras` compensating
    /// slots (at most [`EXTRA_SLOTS`]).
    pub(crate) fn new(workers: usize, extras: usize) -> Self {
        let extras = extras.min(EXTRA_SLOTS);
        let all_free = if extras == BITS {
            usize::MAX
        } else {
            (1 << extras) - 1
        };
        Sleep {
            sleepers: (0..(workers + extras).div_ceil(BITS))
                .map(|_| AtomicUsize::new(0))
                .collect(),
            searching: AtomicUsize::new(0),
            threads: (0..workers).map(|_| OnceLock::new()).collect(),
            extra_threads: (0..extras).map(|_| Mutex::new(None)).collect(),
            extra_free: AtomicUsize::new(all_free),
            all_free,
            core_words: workers.div_ceil(BITS),
            looked: Stamp(AtomicU64::new(0)),
            epoch: Instant::now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            trust_searchers: true,
        }
    }

    /// Sleep state whose submits never trust a searcher: a push wakes a
    /// sleeper whenever one sleeps, as a `Condvar` pool's notify does. For
    /// workers under `SCHED_BATCH` (`Builder::batch_scheduling`), whose
    /// wake-ups never preempt: a searcher on the submitter's core (where
    /// the kernel puts a woken thread, on the VM BENCHMARKS.md measures)
    /// gets the core only when the submitter blocks, while a wake costs
    /// the submitter only its `futex` call. Issue 21, the example server,
    /// with [`IdleSpin::replies_only`](super::idle::IdleSpin::replies_only),
    /// alternating with the pool that trusted searchers and spun: more
    /// requests under `wrk` in 5 of 6 rounds, a lower median at 95% of
    /// the peak rate in 4 of 6 (docs/BENCHMARKS.md, "A worker that
    /// preempted the I/O thread"). Under loom, as when every searcher's
    /// stamp is stale.
    pub(crate) fn untrusting(workers: usize, extras: usize) -> Self {
        Sleep {
            trust_searchers: false,
            ..Sleep::new(workers, extras)
        }
    }

    /// Called by worker `index` on its own thread before it first sleeps.
    pub(crate) fn register(&self, index: usize) {
        let _ = self.threads[index].set(crate::sync::current_thread());
    }

    /// A compensating worker takes a free slot, on its own thread; `None`
    /// if all are taken (it will exit when idle instead of sleeping).
    pub(crate) fn claim_extra_slot(&self) -> Option<usize> {
        // Relaxed: the slot's thread is published by its mutex.
        let slot = take_lowest_bit(&self.extra_free, Ordering::Relaxed)?;
        *self.extra_threads[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(crate::sync::current_thread());
        Some(self.threads.len() + slot)
    }

    /// Gives back a compensating worker's slot (it is not asleep in it).
    pub(crate) fn release_extra_slot(&self, index: usize) {
        let slot = index - self.threads.len();
        *self.extra_threads[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        // Relaxed: as in `claim_extra_slot`.
        self.extra_free.fetch_or(1 << slot, Ordering::Relaxed);
    }

    fn unpark(&self, index: usize) {
        match self.threads.get(index) {
            Some(t) => {
                if let Some(t) = t.get() {
                    t.unpark();
                }
            }
            None => {
                let slot = &self.extra_threads[index - self.threads.len()];
                if let Some(t) = &*slot.lock().unwrap_or_else(|e| e.into_inner()) {
                    t.unpark();
                }
            }
        }
    }

    fn word(&self, index: usize) -> (&AtomicUsize, usize) {
        (&self.sleepers[index / BITS], 1 << (index % BITS))
    }

    /// Whether some core worker is neither asleep nor searching (running a
    /// task, or blocked in a wait) while at most one worker searches: the
    /// caller, a searcher deciding whether to spin. What the spin rule
    /// asks (`idle.rs`): a worker that runs may push or finish work any
    /// moment, and a pool with one running is being fed; but one searcher
    /// is enough to catch it, and on a pool with more workers than cores
    /// every other spinner takes a core from the runner. (Issue 21, 8
    /// workers on 2 cores against 2 workers, 3 compare runs each: the
    /// spawn tree 0.52x-1.01x without this condition, 0.86x-1.06x with
    /// it; submit+wait stayed at 0.66x-0.82x and 0.74x-0.82x.)
    ///
    /// A hint, read only by an idle worker: relaxed loads, a word per 64
    /// workers. Compensating workers searching count against it, so with
    /// them about it errs towards "nobody", which only means a sleep.
    pub(crate) fn another_runs_unwatched(&self) -> bool {
        // Relaxed: a hint, ordered with nothing (see above).
        let searching = self.searching.load(Ordering::Relaxed);
        if searching > 1 {
            return false;
        }
        self.core_asleep() + searching < self.threads.len()
    }

    /// How many core workers sleep or are about to (their bit is set). A
    /// hint: relaxed loads, read with nothing to order them against; the
    /// callers decide only whether to spin or whether to trust searchers.
    fn core_asleep(&self) -> usize {
        let workers = self.threads.len();
        let mut asleep = 0;
        for (w, word) in self.sleepers[..self.core_words].iter().enumerate() {
            // Relaxed: a hint, ordered with nothing (see above).
            let bits = word.load(Ordering::Relaxed);
            // The last core word also holds compensating slots: mask them.
            let core = match workers - w * BITS {
                n if n >= BITS => usize::MAX,
                n => (1 << n) - 1,
            };
            asleep += (bits & core).count_ones() as usize;
        }
        asleep
    }

    /// A worker woke by itself and starts searching for work.
    pub(crate) fn start_searching(&self) {
        self.searching.fetch_add(1, Ordering::SeqCst);
    }

    /// A searching worker stops searching without work (it exits).
    pub(crate) fn stop_searching(&self) {
        self.searching.fetch_sub(1, Ordering::SeqCst);
    }

    /// A searching worker found work. If it was the last searcher and a
    /// worker sleeps, wakes one in case more work is queued (`more_work`).
    ///
    /// Sleepers are looked at first: in a busy pool nobody sleeps, and the
    /// queues (which the other threads write all the time) are not touched.
    /// All SeqCst, so this misses no sleeper a submitter trusted us with: a
    /// submit that saw us searching read `searching` before our decrement,
    /// and a worker that went to sleep before that submit's fence set its
    /// bit before it too.
    ///
    /// True if it was the last searcher and nobody sleeps: a submit that
    /// trusted it may have left a task the caller cannot wake anyone for,
    /// and if a thread is blocked the pool owes a stand-in (the caller
    /// looks: `Registry::owes_stand_in`).
    #[must_use]
    pub(crate) fn found_work(&self, more_work: impl FnOnce() -> bool) -> bool {
        if self.searching.fetch_sub(1, Ordering::SeqCst) != 1 {
            return false;
        }
        if !any_bit(self.words()) {
            return true;
        }
        if more_work() {
            self.notify_one();
        }
        false
    }

    /// Parks worker `index` (currently searching) until woken, unless
    /// `should_wake` (work queued, or shutdown) holds after the worker has
    /// announced itself. Returns with the worker searching again.
    pub(crate) fn sleep(&self, index: usize, should_wake: impl Fn() -> bool) {
        self.sleep_until(index, None, should_wake);
    }

    /// [`Sleep::sleep`] with a deadline: past it, the worker withdraws
    /// (searching again) and is told so.
    pub(crate) fn sleep_until(
        &self,
        index: usize,
        deadline: Option<Instant>,
        should_wake: impl Fn() -> bool,
    ) -> Woke {
        let (word, bit) = self.word(index);
        // SeqCst (bit, searching, fence): the store-buffer pattern against
        // `notify_one`'s push + fence + loads; see the module docs.
        word.fetch_or(bit, Ordering::SeqCst);
        self.searching.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if should_wake() {
            self.withdraw(word, bit);
            return Woke::Wake;
        }
        loop {
            match deadline {
                None => crate::sync::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Withdrawing races a notifier that cleared the bit
                        // meanwhile: then it counted us searching and we
                        // owe its task a look.
                        return match self.withdraw(word, bit) {
                            true => Woke::TimedOut,
                            false => Woke::Wake,
                        };
                    }
                    crate::sync::park_timeout(d - now);
                }
            }
            // Acquire: pairs with the notifier's clearing CAS.
            if word.load(Ordering::Acquire) & bit == 0 {
                return Woke::Wake; // woken: the notifier counted us as searching
            }
            if should_wake() {
                self.withdraw(word, bit);
                return Woke::Wake;
            }
        }
    }

    /// Clears our bit and counts us searching again. True if the bit was
    /// still ours; false if a notifier cleared it first (it counted us).
    fn withdraw(&self, word: &AtomicUsize, bit: usize) -> bool {
        let ours = word.fetch_and(!bit, Ordering::SeqCst) & bit != 0;
        if ours {
            self.start_searching();
        }
        ours
    }

    /// After a push: wakes one sleeper unless a worker is already searching.
    ///
    /// The sleep words are read first and `searching` only if someone
    /// sleeps: in a busy pool nobody does, and the submit path then reads
    /// only lines that change when a worker parks, never the counter that
    /// workers write as they run dry and find work. The order of the two
    /// reads does not matter to the protocol: both follow the fence.
    pub(crate) fn notify_one(&self) -> Notified {
        // SeqCst: pairs with the fence in `sleep` (see the module docs); the
        // caller's push is ordered before this by its own SeqCst fence.
        fence(Ordering::SeqCst);
        self.hint_one()
    }

    /// [`Sleep::notify_one`] without its fence: a best-effort wake, for
    /// work whose owner runs it anyway if nobody takes it (a join's second
    /// half). Without the fence, a sleeper going to sleep at this moment
    /// may miss the push and the push miss the sleeper: that costs
    /// parallelism for one join, never progress. Saves a full fence per
    /// join.
    ///
    /// Inlined into each push, with the path that finds a sleeper out of
    /// line: a busy pool has nobody asleep, and every push pays this check.
    #[inline]
    pub(crate) fn hint_one(&self) -> Notified {
        let words = self.words();
        if !any_bit(words) {
            return Notified::NoSleeper;
        }
        self.hint_sleeper(words)
    }

    /// [`Sleep::hint_one`] once someone sleeps: leave the task to a
    /// searcher, or wake a sleeper.
    #[inline(never)]
    fn hint_sleeper(&self, words: &[AtomicUsize]) -> Notified {
        if self.is_searching() && self.trusts_searchers() {
            return Notified::Searching;
        }
        match self.wake_one(words) {
            true => Notified::Woken,
            false => Notified::NoSleeper,
        }
    }

    /// A searching worker looked for work at `now` (a look of its spin):
    /// it is on a core.
    pub(crate) fn note_look(&self, now: Instant) {
        let now = self.micros(now);
        // Relaxed: a hint (see `STALE`); nothing is published with it. Read
        // first, so that most looks leave the line shared.
        if now.saturating_sub(self.looked.0.load(Ordering::Relaxed)) >= STAMP_STEP_US {
            self.looked.0.store(now, Ordering::Relaxed);
        }
    }

    /// `now` in microseconds since the pool's epoch.
    fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Whether a submit that finds someone searching and someone asleep
    /// may leave its task to the searchers: while as many core workers are
    /// awake as the process has cores, or while the searchers have shown
    /// within [`STALE`] that they are on a core.
    ///
    /// The cores come first. A worker woken past a searcher the scheduler
    /// put off its core is only worth its wake if it can get a core, and
    /// with every core's worth of workers awake it would queue behind them.
    /// And the stamp costs: a clock read and a line the spinners write,
    /// paid by every submit while one worker sleeps and one searches,
    /// which on a pool with more workers than cores is nearly every submit
    /// (issue 21, alternating runs: submit+wait on 8 workers on 2 cores
    /// fell from 1.01x-1.06x of 2 workers' speed to 0.75x-0.88x with the
    /// stamp alone, and came back to 0.97x-0.98x with the cores first; 4
    /// workers 0.99x-1.02x, 0.78x-1.09x and 0.96x-1.10x).
    #[cfg(not(loom))]
    fn trusts_searchers(&self) -> bool {
        if !self.trust_searchers {
            return false;
        }
        self.threads.len() - self.core_asleep() >= self.cores || {
            // Relaxed: a hint (see `STALE`).
            let looked = self.looked.0.load(Ordering::Relaxed);
            self.micros(Instant::now()).saturating_sub(looked) < STALE.as_micros() as u64
        }
    }

    #[cfg(loom)]
    fn trusts_searchers(&self) -> bool {
        self.trust_searchers
    }

    /// Whether submits may trust searchers at all (false for
    /// [`Sleep::untrusting`]).
    #[cfg(all(test, not(loom), not(miri)))]
    pub(crate) fn trusts_at_all(&self) -> bool {
        self.trust_searchers
    }

    /// Whether a worker is searching (awake, looking for work).
    pub(crate) fn is_searching(&self) -> bool {
        self.searching.load(Ordering::SeqCst) != 0
    }

    /// The sleep words a wake must look at. The words past the core
    /// workers' hold only compensating slots: they count only while some
    /// slot is claimed. A compensating worker claims its slot before it
    /// sets its bit and fences in `sleep_until`; a SeqCst load that comes
    /// after that fence in the SeqCst order sees the claim. SeqCst: that is
    /// the case for `notify_one` (its own fence came later, else the
    /// sleeper's re-check sees the task) and for `found_work` (see there).
    fn words(&self) -> &[AtomicUsize] {
        match self.extra_free.load(Ordering::SeqCst) == self.all_free {
            true => &self.sleepers[..self.core_words],
            false => &self.sleepers,
        }
    }

    /// Wakes the sleeper with the lowest bit in `words` (from
    /// [`Sleep::words`]), counting it as searching; false if none sleeps.
    ///
    /// Counted before its bit is cleared: a sleeper that sees its bit gone
    /// (its re-check before parking, a timed-out or spurious return) runs
    /// on as counted, and may find work and stop searching at once. Were
    /// the bit cleared first, that stop could come before this count, the
    /// count wrap past zero, and a submit meanwhile take the phantom for a
    /// searcher and wake nobody (loom:
    /// `a_wake_counts_the_sleeper_before_it_can_run`).
    fn wake_one<'a>(&'a self, mut words: &'a [AtomicUsize]) -> bool {
        loop {
            self.start_searching();
            for (w, word) in words.iter().enumerate() {
                // SeqCst: the store-buffer pattern with the sleeper's
                // bit + fence + re-check (module docs); the Release half
                // publishes the count above to the sleeper whose Acquire
                // load sees the bit gone.
                if let Some(bit) = take_lowest_bit(word, Ordering::SeqCst) {
                    // The woken worker searches before it runs: trusted
                    // for `STALE` while it gets going. No clock under loom.
                    #[cfg(not(loom))]
                    self.note_look(Instant::now());
                    self.unpark(w * BITS + bit);
                    return true;
                }
            }
            // Nobody to wake: the count was a phantom, and a submit may
            // have trusted it. Uncounted as a searcher that found work is
            // (`found_work`): the last one out wakes a sleeper that came
            // meanwhile, since that submit's task may be all it missed. The
            // words are read again, after the decrement (SeqCst, as in
            // `found_work`: it then sees every bit set before a submit that
            // trusted the phantom): the caller's were read before, and a
            // compensating worker may since have claimed a slot in a word
            // they left out (`words`), and gone to sleep there.
            if self.searching.fetch_sub(1, Ordering::SeqCst) != 1 {
                return false;
            }
            words = self.words();
            if !any_bit(words) {
                return false;
            }
        }
    }

    /// Wakes every sleeper (shutdown).
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        while self.wake_one(self.words()) {}
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::Sleep;
    use crate::sync::{AtomicUsize, Ordering};
    use loom::thread;
    use std::sync::Arc;

    /// A worker that sleeps when the queue is empty, and a submitter: the
    /// task is always taken (no lost wakeup), and the worker ends.
    #[test]
    fn park_vs_submit() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1, 0));
            let queue = Arc::new(AtomicUsize::new(0));
            let (s, q) = (sleep.clone(), queue.clone());
            let worker = thread::spawn(move || {
                s.register(0);
                s.start_searching();
                loop {
                    if q.load(Ordering::SeqCst) == 1 {
                        q.store(2, Ordering::SeqCst);
                        let _ = s.found_work(|| false);
                        return;
                    }
                    s.sleep(0, || q.load(Ordering::SeqCst) == 1);
                }
            });
            queue.store(1, Ordering::SeqCst);
            sleep.notify_one();
            worker.join().unwrap();
            assert_eq!(queue.load(Ordering::SeqCst), 2);
        });
    }

    /// A worker of the models: core worker `core` (`None`: a compensating
    /// worker, which claims a slot), taking tasks from the stand-in queue
    /// and sleeping when it is empty. After each take `after_take` says
    /// whether to go on; `finished` (checked when idle, and by the sleep)
    /// ends the loop.
    fn spawn_taker(
        sleep: &Arc<Sleep>,
        queue: &Arc<AtomicUsize>,
        core: Option<usize>,
        after_take: impl Fn(&Sleep) -> bool + Send + Sync + 'static,
        finished: impl Fn() -> bool + Send + Sync + 'static,
    ) -> thread::JoinHandle<()> {
        let (s, q) = (sleep.clone(), queue.clone());
        thread::spawn(move || {
            let index = match core {
                Some(index) => {
                    s.register(index);
                    index
                }
                None => s.claim_extra_slot().expect("a free slot"),
            };
            s.start_searching();
            loop {
                let n = q.load(Ordering::SeqCst);
                if n > 0 {
                    if q.compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        let _ = s.found_work(|| q.load(Ordering::SeqCst) > 0);
                        if !after_take(&s) {
                            return;
                        }
                        s.start_searching();
                    }
                    continue;
                }
                if finished() {
                    return;
                }
                s.sleep(index, || q.load(Ordering::SeqCst) > 0 || finished());
            }
        })
    }

    /// Two submits (push, `notify_one`), one on a thread of its own, so
    /// that either can land inside the other.
    fn submit_from_two_threads(sleep: &Arc<Sleep>, queue: &Arc<AtomicUsize>) {
        let (s, q) = (sleep.clone(), queue.clone());
        let other = thread::spawn(move || {
            q.fetch_add(1, Ordering::SeqCst);
            s.notify_one();
        });
        queue.fetch_add(1, Ordering::SeqCst);
        sleep.notify_one();
        other.join().unwrap();
    }

    /// Two submits (push, `notify_one`), then the workers' ends.
    fn push_two_and_join(sleep: &Sleep, queue: &AtomicUsize, workers: Vec<thread::JoinHandle<()>>) {
        for _ in 0..2 {
            queue.fetch_add(1, Ordering::SeqCst);
            sleep.notify_one();
        }
        for w in workers {
            w.join().unwrap();
        }
    }

    /// Two submits to two workers that each take one task and then keep
    /// it (a long task: they never look again). The second task must still
    /// be taken: when the submit for it saw a worker searching and woke
    /// nobody, that searcher, finding the first task while it was the last
    /// searcher, owes the wake (`found_work`). A worker left asleep with
    /// the task queued is a loom deadlock. Fails if `found_work` wakes
    /// nobody.
    #[test]
    fn a_searcher_that_finds_work_wakes_the_next() {
        two_keepers_two_submits(|| Sleep::new(2, 0));
    }

    /// Two workers that each keep the first task they take, two submits:
    /// both tasks are taken, and once both workers hold theirs nobody
    /// searches or sleeps.
    fn two_keepers_two_submits(new: fn() -> Sleep) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(move || {
            let sleep = Arc::new(new());
            let queue = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..2)
                .map(|i| spawn_taker(&sleep, &queue, Some(i), |_| false, || false))
                .collect();
            push_two_and_join(&sleep, &queue, workers);
            assert_eq!(queue.load(Ordering::SeqCst), 0);
            assert_eq!(sleep.searching.load(Ordering::SeqCst), 0);
            assert_eq!(sleep.sleepers[0].load(Ordering::SeqCst), 0);
        });
    }

    /// [`a_searcher_that_finds_work_wakes_the_next`] with submits that
    /// trust no searcher (every stamp stale): a submit that wakes past a
    /// searcher, so two search at once and the first to find work passes
    /// no wake on, still leaves no task behind, and the counts balance:
    /// once both workers have their task, nobody searches or sleeps.
    /// (Trusting a stale searcher is safe by the protocol, so this models
    /// the other way: waking past one.)
    #[test]
    fn untrusted_searchers_lose_no_task() {
        two_keepers_two_submits(|| Sleep::untrusting(2, 0));
    }

    /// [`a_searcher_that_finds_work_wakes_the_next`] with each task
    /// submitted from a thread of its own, so a submit can land while
    /// another is between clearing a sleeper's bit and counting it as
    /// searching. A worker that sees its bit gone in that gap (in its
    /// re-check before parking) takes the first task and stops searching
    /// before the count has it: counted the other way round, the count
    /// wraps past zero, the second submit trusts that phantom searcher and
    /// wakes nobody, and its task stays queued with the other worker
    /// asleep (a loom deadlock). Fails if `wake_one` clears the bit before
    /// it counts.
    #[test]
    fn a_wake_counts_the_sleeper_before_it_can_run() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let sleep = Arc::new(Sleep::new(2, 0));
            let queue = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..2)
                .map(|i| spawn_taker(&sleep, &queue, Some(i), |_| false, || false))
                .collect();
            submit_from_two_threads(&sleep, &queue);
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!(queue.load(Ordering::SeqCst), 0);
            assert_eq!(sleep.searching.load(Ordering::SeqCst), 0);
        });
    }

    /// A wake that finds no bit to clear (its sleeper withdrew) leaves a
    /// phantom count a submit may trust; its retry looks for a sleeper in
    /// every word after its decrement. Here the core word is full (64
    /// workers), so a compensating worker's slot is a word of its own,
    /// which the first submit's words left out (no slot was claimed when
    /// it read them). The keeper core worker takes the first task; the
    /// compensating worker claims its slot and sleeps; the second submit
    /// sees it asleep and the phantom searching, and wakes nobody. Fails
    /// (a loom deadlock) if the retry reads the words before its
    /// decrement, or keeps the caller's.
    #[test]
    fn a_phantom_wake_looks_again_at_every_word() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(4);
        b.check(|| {
            let sleep = Arc::new(Sleep::new(super::BITS, 1));
            let queue = Arc::new(AtomicUsize::new(0));
            let core = spawn_taker(&sleep, &queue, Some(0), |_| false, || false);
            let comp = spawn_taker(&sleep, &queue, None, |_| false, || false);
            submit_from_two_threads(&sleep, &queue);
            core.join().unwrap();
            comp.join().unwrap();
            assert_eq!(queue.load(Ordering::SeqCst), 0);
        });
    }

    /// Two workers, two tasks: both are taken; nobody sleeps on work.
    #[test]
    fn two_workers_two_submits() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let sleep = Arc::new(Sleep::new(2, 0));
            let queue = Arc::new(AtomicUsize::new(0));
            let taken = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..2)
                .map(|i| {
                    let (t, done) = (taken.clone(), taken.clone());
                    spawn_taker(
                        &sleep,
                        &queue,
                        Some(i),
                        move |s| {
                            if t.fetch_add(1, Ordering::SeqCst) == 1 {
                                s.notify_all(); // both tasks done: let the other end
                            }
                            true
                        },
                        move || done.load(Ordering::SeqCst) == 2,
                    )
                })
                .collect();
            push_two_and_join(&sleep, &queue, workers);
            assert_eq!(taken.load(Ordering::SeqCst), 2);
        });
    }
}

// Plain reads of the counters, no protocol: off under loom.
#[cfg(all(test, not(loom)))]
mod hint_tests {
    use super::*;

    /// A submit passes over a searcher whose last look is stale and wakes
    /// a sleeper, and the wake stamps for the woken worker; a searcher
    /// whose look is fresh is trusted. No timing: the stamps are set
    /// an hour apart from the clock, either way.
    #[test]
    fn a_submit_trusts_only_a_searcher_seen_on_its_core() {
        let mut sleep = Sleep::new(2, 0);
        sleep.cores = 2; // a core free whenever a worker sleeps
        // The pool started an hour ago and nobody has looked since.
        sleep.epoch -= Duration::from_secs(3600);
        sleep.sleepers[0].store(0b01, Ordering::Relaxed); // worker 0 asleep
        sleep.start_searching(); // worker 1 searches
        assert_eq!(sleep.hint_one(), Notified::Woken, "a stale searcher");
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0);
        assert_eq!(sleep.searching.load(Ordering::Relaxed), 2);
        assert!(
            sleep.looked.0.load(Ordering::Relaxed) >= 3_600_000_000,
            "the wake stamps for the woken worker"
        );
        // Worker 0 asleep again, worker 1 searching, its look fresh.
        sleep.sleepers[0].store(0b01, Ordering::Relaxed);
        sleep.stop_searching();
        sleep.note_look(Instant::now() + Duration::from_secs(3600));
        assert_eq!(sleep.hint_one(), Notified::Searching, "a fresh searcher");
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0b01);
        // And stale again.
        sleep.looked.0.store(0, Ordering::Relaxed);
        assert_eq!(sleep.hint_one(), Notified::Woken);
    }

    /// With as many core workers awake as there are cores, a stale
    /// searcher is trusted (a worker woken past it would have no core);
    /// with a core free, it is not.
    #[test]
    fn a_submit_trusts_stale_searchers_while_no_core_is_free() {
        let mut sleep = Sleep::new(4, 0);
        sleep.cores = 2;
        // The pool started an hour ago and nobody has looked since.
        sleep.epoch -= Duration::from_secs(3600);
        // Workers 0 and 1 asleep, 2 searching, 3 running: two awake.
        sleep.sleepers[0].store(0b0011, Ordering::Relaxed);
        sleep.start_searching();
        assert_eq!(sleep.hint_one(), Notified::Searching, "no core free");
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0b0011);
        // Worker 3 goes to sleep too: one awake, a core free.
        sleep.sleepers[0].store(0b1011, Ordering::Relaxed);
        assert_eq!(sleep.hint_one(), Notified::Woken, "a core free");
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0b1010);
        assert_eq!(sleep.searching.load(Ordering::Relaxed), 2);
    }

    /// A pool under `SCHED_BATCH` wakes a sleeper whenever one sleeps:
    /// neither a fresh look nor a full set of cores makes a searcher
    /// trusted there.
    #[test]
    fn an_untrusting_submit_wakes_a_sleeper_past_any_searcher() {
        let mut sleep = Sleep::untrusting(4, 0);
        sleep.cores = 2;
        // Workers 0 and 1 asleep, 2 searching and fresh, 3 running: the
        // case each rule of a trusting pool leaves to the searcher.
        sleep.sleepers[0].store(0b0011, Ordering::Relaxed);
        sleep.start_searching();
        sleep.note_look(Instant::now() + Duration::from_secs(3600));
        assert_eq!(sleep.hint_one(), Notified::Woken);
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0b0010);
        assert_eq!(sleep.notify_one(), Notified::Woken);
        assert_eq!(sleep.sleepers[0].load(Ordering::Relaxed), 0);
        assert_eq!(sleep.searching.load(Ordering::Relaxed), 3);
        // Nobody left asleep: nothing to wake.
        assert_eq!(sleep.notify_one(), Notified::NoSleeper);
        // The same state trusts the searcher in a pool that trusts.
        let mut trusting = Sleep::new(4, 0);
        trusting.cores = 2;
        trusting.sleepers[0].store(0b0011, Ordering::Relaxed);
        trusting.start_searching();
        assert_eq!(trusting.hint_one(), Notified::Searching);
    }

    #[test]
    fn another_runs_unwatched_counts_core_workers_neither_asleep_nor_searching() {
        let sleep = Sleep::new(2, EXTRA_SLOTS);
        assert!(
            sleep.another_runs_unwatched(),
            "two workers, neither asleep nor searching"
        );
        sleep.start_searching();
        assert!(
            sleep.another_runs_unwatched(),
            "one searches, the other runs"
        );
        sleep.start_searching();
        assert!(!sleep.another_runs_unwatched(), "both search");
        sleep.stop_searching();
        // Worker 0 asleep, and the compensating slot that shares its word
        // (index 2): only the core bit counts, so worker 1 (searching)
        // leaves nobody running...
        sleep.sleepers[0].store(0b101, Ordering::Relaxed);
        assert!(!sleep.another_runs_unwatched());
        // ...and with worker 1 not searching, it runs: the compensating
        // sleeper must not be taken for it.
        sleep.stop_searching();
        assert!(sleep.another_runs_unwatched());
    }

    #[test]
    fn one_searcher_is_enough_to_watch_the_runners() {
        let sleep = Sleep::new(4, 0);
        sleep.start_searching();
        assert!(
            sleep.another_runs_unwatched(),
            "the caller searches alone, three run"
        );
        sleep.start_searching();
        assert!(
            !sleep.another_runs_unwatched(),
            "two search: the caller's spin adds nothing, though two run"
        );
    }
}
