//! Whether a worker that ran dry spins or sleeps: it spins only while its
//! recent idle gaps say spinning pays.
//!
//! A worker with nothing to do can look again for a while (spin) or sleep
//! at once. A spin that finds work saves the submitter a futex wake and the
//! worker a sleep and a wake-up. A spin that finds nothing costs its whole
//! window of CPU, taken from the threads that have work: on a server, the
//! I/O thread that feeds the pool and, where they share the machine, the
//! client. While it spins the worker also counts as searching, so a submit
//! wakes nobody, trusting it; if the scheduler has put it off the core,
//! the task waits for it (issue 21 measured both: at 80-95% of the peak
//! rate, workers that always spun gave the server's I/O thread twice the
//! scheduling delay of a mutex pool's, and the pool the worst median).
//!
//! Spinning pays when gaps are short: the submitter is feeding the pool
//! back to back, as under a closed-loop load. It does not when gaps are
//! long, as at a fixed request rate below the peak. So each worker keeps a
//! running score of its gaps, the share of recent ones that ended within
//! [`SPIN_WINDOW`]. Every gap counts, spun or slept: a spin that found work
//! is a short gap, one that ran out is a long one, and a sleep is timed
//! from park to wake. A worker spins (yielding between looks, for at most
//! the window) only while most recent gaps were short; otherwise it sleeps
//! at its first empty look, at no cost to anyone, and the short sleeps that
//! follow when the load tightens bring the spin back.
//!
//! While another core worker is running (neither asleep nor searching)
//! and no other worker searches ([`Sleep::another_runs_unwatched`]), a
//! worker spins one window whatever its score.
//! A running worker is what makes short gaps: it may push work, and on a
//! server its answer is what brings the next request. Under `wrk`'s closed
//! loop that is the spin that saves the I/O thread a futex wake per
//! request (issue 21: 0.79-1.29x `spawn_blocking`'s peak for the score
//! alone over 12 rounds, 1.06-1.39x with this spin). Near the peak rate it
//! spins nearly always, since the other worker nearly always runs; what
//! once made that cost medians of 1.4-27 ms at 94% of the peak was not
//! the spin's CPU but its trust: a spinner the scheduler had put off its
//! core still counted as searching, so submits woke nobody and their tasks
//! waited for it. A submit now trusts a searcher only while it has looked
//! lately (`sleep.rs`, `STALE`), and the same rule measured 0.83-1.6 ms
//! there, with a mutex pool at 0.83-2.6 ms in the same rounds. Either way
//! it is one window per idle episode, and one searcher at a time: a pool
//! with one worker busy on a long task has one other spin a window and
//! the rest sleep at once.
//!
//! Work made inside the pool is the exception: when tasks spawn or join,
//! a spinner that catches nothing usually lost the race to the worker that
//! pushed the work and ran it itself, and sleeping would make that worker
//! pay a futex wake for its next push. So a spin that runs out while some
//! worker pushed to its own deque is not counted against spinning. (Issue 21,
//! chained spawns inside workers against rayon, alternating runs: without
//! this exception 0.57-0.85x; with it 0.61-1.08x, against 0.70-0.96x for
//! the old rule of always spinning.)
//!
//! So is a caller that waits on each result before its next submit (the
//! Python package's `submit(...).result()` in a loop): there the gaps are
//! made by the rule itself, since a worker that sleeps makes the caller's
//! next call wait for a wake-up, the caller parks too, and every gap grows
//! past the window. Measured: 1.2-2.1x the stdlib for that loop, against
//! 22-30x when the worker spun. So after a worker wakes a thread blocked on
//! a future it spins for [`REPLY_WINDOW`] whatever its score, and that spin
//! teaches nothing if it runs out.
//!
//! A worker under `SCHED_BATCH` keeps only the reply spin
//! ([`IdleSpin::replies_only`]): under that policy its wake-up costs the
//! submitter no preemption, which is what every other spin was for.
//!
//! The window is time, not a number of looks: a look and a yield cost
//! different amounts on different machines, and what a spin competes with,
//! a futex hand-off, is itself measured in time.

use std::time::{Duration, Instant};

use crate::sync::{AtomicUsize, Ordering};

#[cfg(doc)]
use super::sleep::Sleep;

/// How long a worker spins before it sleeps, and the gap length that counts
/// as short. Of the order of a futex hand-off on an ordinary machine
/// (BENCHMARKS.md measures one): spinning longer than a sleep and a wake
/// cost saves nothing.
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(10);

/// How long a worker spins after it woke a thread blocked on a future: the
/// thread is likely to answer with its next submit once it runs, which
/// takes a hand-off (4-7 µs on the VM BENCHMARKS.md measures) and whatever
/// the caller does between calls (a GIL reacquisition, for the Python
/// package). Such a spin is not scored: its gap is made by the spin rule
/// itself (a worker that sleeps makes the waiter's next call wait for a
/// wake-up, so the waiter parks too, and every gap grows).
pub(crate) const REPLY_WINDOW: Duration = Duration::from_micros(25);

std::thread_local! {
    /// Set when this thread unparked a thread blocked on a future.
    static WOKE_A_WAITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling thread just unparked a thread blocked on a future
/// (`future/wait.rs`); its next spin, if it is a worker, is a reply spin.
#[inline]
pub(crate) fn note_woke_waiter() {
    WOKE_A_WAITER.with(|w| w.set(true));
}

/// The score's scale: `FULL` is every recent gap short.
const FULL: u32 = 1024;
/// Each gap moves the score by 1/`WEIGHT` of the way to 0 or `FULL`: about
/// the last `WEIGHT` gaps count.
const WEIGHT: u32 = 16;
/// Spin only while the score is at least this: most recent gaps short.
const SPIN_AT: u32 = FULL / 2;

/// One worker's spin-or-sleep state. Touched only by its worker.
#[derive(Debug)]
pub(crate) struct IdleSpin {
    /// Running share of short gaps, 0..=`FULL`.
    score: u32,
    /// When the spin in progress began; `None` when not spinning.
    spinning_since: Option<Instant>,
    /// The spin in progress waits for a woken waiter's answer
    /// ([`REPLY_WINDOW`], unscored).
    reply: bool,
    /// Spin only for a reply ([`IdleSpin::replies_only`]).
    replies_only: bool,
}

impl IdleSpin {
    /// A fresh worker spins: a pool just started is usually about to be fed.
    pub(crate) fn new() -> Self {
        IdleSpin {
            score: FULL,
            spinning_since: None,
            reply: false,
            replies_only: false,
        }
    }

    /// A worker under `SCHED_BATCH` (`Builder::batch_scheduling`): it
    /// spins only for a reply, and otherwise sleeps at its first empty
    /// look. Under that policy a wake-up never preempts, so a sleeping
    /// worker costs its waker only the `futex` call, and the preemption a
    /// spin used to spare the submitter is gone; what a spin still costs
    /// is the CPU it takes from the threads that feed it, which are then
    /// never preempted to give it back. A reply spin stays: the waiter it
    /// awaits runs under the normal policy and takes the core from it at
    /// once. (Issue 21, the example server under `wrk`, alternating, all
    /// under the policy: a build that spun only for replies answered more
    /// than the pool that spun in 4 of 6 rounds, one with no reply spin
    /// either in 10 of 12; with [`Sleep::untrusting`] too, docs/BENCHMARKS.md,
    /// "A worker that preempted the I/O thread".)
    pub(crate) fn replies_only() -> Self {
        IdleSpin {
            replies_only: true,
            ..IdleSpin::new()
        }
    }

    /// Whether this worker spins only for replies.
    #[cfg(all(test, not(loom), not(miri)))]
    pub(crate) fn is_replies_only(&self) -> bool {
        self.replies_only
    }

    /// After an empty look at `now`: true to look again (the caller yields
    /// first), false to sleep now. A spin that has run its window counts as
    /// a long gap, unless `produced` ([`Registry::note_produced`]) says a
    /// worker pushed work to its own deque meanwhile: the pool's work is
    /// then made inside it, by tasks that spawn or join, and the pusher
    /// itself ran what this spin did not catch. That says nothing of the
    /// gaps between outside submits, so it teaches nothing.
    ///
    /// `running` ([`Sleep::another_runs_unwatched`]) is asked only when the
    /// score says sleep: while another worker runs and no other searches,
    /// the worker spins anyway.
    ///
    /// [`Registry::note_produced`]: super::registry::Registry::note_produced
    /// [`Sleep::another_runs_unwatched`]: super::sleep::Sleep::another_runs_unwatched
    pub(crate) fn keep_spinning(
        &mut self,
        now: Instant,
        produced: &AtomicUsize,
        running: impl FnOnce() -> bool,
    ) -> bool {
        let Some(since) = self.spinning_since else {
            self.reply = WOKE_A_WAITER.with(|w| w.replace(false));
            let spin = self.reply || (!self.replies_only && (self.score >= SPIN_AT || running()));
            if !spin {
                return false;
            }
            self.spinning_since = Some(now);
            // Relaxed: a hint (see `note_produced`). Cleared so the end of
            // this spin sees pushes made during it; read first, so a spin
            // does not write a line that is already clear.
            if produced.load(Ordering::Relaxed) != 0 {
                produced.store(0, Ordering::Relaxed);
            }
            return true;
        };
        let window = match self.reply {
            true => REPLY_WINDOW,
            false => SPIN_WINDOW,
        };
        if now.saturating_duration_since(since) < window {
            return true;
        }
        self.spinning_since = None;
        // Relaxed: as above.
        if !self.reply && produced.load(Ordering::Relaxed) == 0 {
            self.learn(false);
        }
        false
    }

    /// The worker found work. Ends a spin in progress, a short gap. Cheap
    /// when not spinning: it is on the path of every task.
    #[inline(always)]
    pub(crate) fn found_work(&mut self) {
        if self.spinning_since.is_some() {
            self.spinning_since = None;
            self.learn(true);
        }
    }

    /// The worker slept for `slept`, from its park to its wake.
    pub(crate) fn slept(&mut self, slept: Duration) {
        self.learn(slept < SPIN_WINDOW);
    }

    fn learn(&mut self, short: bool) {
        self.score -= self.score / WEIGHT;
        if short {
            self.score += FULL / WEIGHT;
        }
    }
}

// Plain logic, no protocol to model: off under loom, whose atomics need a
// model to run in.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// One empty look with no push in the pool and no other worker running.
    fn look(idle: &mut IdleSpin, now: Instant) -> bool {
        idle.keep_spinning(now, &AtomicUsize::new(0), || false)
    }

    /// Spins until `keep_spinning` says sleep, a window's worth of looks
    /// apart by the given step; returns how many looks it spun.
    fn spin_out(idle: &mut IdleSpin, start: Instant, step: Duration) -> u32 {
        let mut looks = 0;
        let mut now = start;
        while look(idle, now) {
            looks += 1;
            now += step;
            assert!(looks < 1_000, "a spin must end within its window");
        }
        looks
    }

    #[test]
    fn a_fresh_worker_spins_for_the_window_then_sleeps() {
        let mut idle = IdleSpin::new();
        let looks = spin_out(&mut idle, Instant::now(), SPIN_WINDOW / 10);
        // The first look starts the spin; ten steps later the window is up.
        assert_eq!(looks, 10);
    }

    #[test]
    fn long_gaps_turn_the_spin_off_and_short_sleeps_turn_it_back_on() {
        let mut idle = IdleSpin::new();
        let t0 = Instant::now();
        // Spins that run out one after another: soon it sleeps at once.
        let mut spun = 0;
        while spin_out(&mut idle, t0, SPIN_WINDOW / 4) > 0 {
            spun += 1;
            assert!(spun < 100, "long gaps must stop the spin");
        }
        assert!(
            spun > 5,
            "one long gap alone must not stop it (spun {spun})"
        );
        // Sleeps past the window keep it off.
        for _ in 0..100 {
            idle.slept(SPIN_WINDOW * 10);
            assert!(!look(&mut idle, t0));
        }
        // Sleeps shorter than the window: the load tightened; it spins again.
        let mut slept = 0;
        while !look(&mut idle, t0) {
            idle.slept(SPIN_WINDOW / 2);
            slept += 1;
            assert!(slept < 100, "short sleeps must bring the spin back");
        }
    }

    #[test]
    fn spins_that_find_work_keep_it_spinning() {
        let mut idle = IdleSpin::new();
        let t0 = Instant::now();
        for _ in 0..1_000 {
            assert!(look(&mut idle, t0), "short gaps keep the spin");
            idle.found_work();
        }
        // Mixed: one gap in three long still leaves most short; it spins.
        for i in 0..300 {
            assert!(look(&mut idle, t0));
            if i % 3 == 0 {
                assert!(!look(&mut idle, t0 + SPIN_WINDOW));
            } else {
                idle.found_work();
            }
        }
        assert!(look(&mut idle, t0));
    }

    #[test]
    fn a_spin_outrun_by_a_pushing_worker_is_not_a_long_gap() {
        let produced = AtomicUsize::new(0);
        let mut idle = IdleSpin::new();
        let t0 = Instant::now();
        for _ in 0..1_000 {
            assert!(
                idle.keep_spinning(t0, &produced, || false),
                "spinning starts"
            );
            // A worker pushes to its own deque during the spin and runs it.
            produced.store(1, Ordering::Relaxed);
            assert!(!idle.keep_spinning(t0 + SPIN_WINDOW, &produced, || false));
        }
        // The same spins without the push: the spin soon turns off.
        let mut spun = 0;
        while idle.keep_spinning(t0, &produced, || false) {
            assert!(!idle.keep_spinning(t0 + SPIN_WINDOW, &produced, || false));
            spun += 1;
            assert!(spun < 100, "spins outrun by nothing must stop the spin");
        }
        assert!(spun > 5);
    }

    #[test]
    fn a_worker_that_woke_a_waiter_spins_for_the_reply_whatever_its_score() {
        let mut idle = IdleSpin::new();
        let t0 = Instant::now();
        for _ in 0..100 {
            idle.slept(SPIN_WINDOW * 10);
        }
        assert!(!look(&mut idle, t0), "long gaps: sleep at once");
        let score = idle.score;
        note_woke_waiter();
        assert!(look(&mut idle, t0), "a woken waiter's reply is awaited");
        assert!(look(&mut idle, t0 + SPIN_WINDOW), "for the longer window");
        assert!(!look(&mut idle, t0 + REPLY_WINDOW));
        assert_eq!(
            idle.score, score,
            "a reply spin that ran out teaches nothing"
        );
        // The flag is spent: the next gap is scored as usual.
        assert!(!look(&mut idle, t0));
    }

    #[test]
    fn a_replies_only_worker_sleeps_at_once_but_awaits_a_reply() {
        let mut idle = IdleSpin::replies_only();
        let t0 = Instant::now();
        // A fresh score, another worker running, work made inside the
        // pool: each would make a normal worker spin, none makes this one.
        let produced = AtomicUsize::new(1);
        assert!(!idle.keep_spinning(t0, &produced, || true));
        for _ in 0..100 {
            idle.found_work();
            idle.slept(Duration::ZERO);
        }
        assert!(!look(&mut idle, t0), "short gaps: still no spin");
        note_woke_waiter();
        assert!(look(&mut idle, t0), "a woken waiter's reply is awaited");
        assert!(look(&mut idle, t0 + SPIN_WINDOW), "for the reply window");
        assert!(!look(&mut idle, t0 + REPLY_WINDOW));
        assert!(!look(&mut idle, t0), "the flag is spent");
        // The same gaps make a normal worker spin.
        assert!(IdleSpin::new().keep_spinning(t0, &produced, || true));
    }

    #[test]
    fn another_running_worker_means_one_window_of_spin_whatever_the_score() {
        let none = AtomicUsize::new(0);
        let mut idle = IdleSpin::new();
        // While the score says spin, nobody is asked.
        assert!(idle.keep_spinning(Instant::now(), &none, || unreachable!()));
        let t0 = Instant::now();
        let mut idle = IdleSpin::new();
        // Long sleeps bring the score to next to nothing: it sleeps at once
        // when nobody runs, and spins one window while another runs.
        for _ in 0..200 {
            idle.slept(SPIN_WINDOW * 10);
        }
        assert!(idle.score < FULL / WEIGHT);
        assert!(!look(&mut idle, t0), "nobody runs: sleep");
        for _ in 0..3 {
            assert!(idle.keep_spinning(t0, &none, || true), "another runs: spin");
            assert!(look(&mut idle, t0 + SPIN_WINDOW / 2));
            assert!(
                !idle.keep_spinning(t0 + SPIN_WINDOW, &none, || true),
                "for the window, no longer"
            );
        }
        // Each spin was the other worker's doing: with nobody running, sleep.
        assert!(!look(&mut idle, t0));
    }

    #[test]
    fn found_work_outside_a_spin_teaches_nothing() {
        let mut idle = IdleSpin::new();
        idle.slept(SPIN_WINDOW * 10);
        let score = idle.score;
        idle.found_work();
        assert_eq!(idle.score, score);
    }
}
