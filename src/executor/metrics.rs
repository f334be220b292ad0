//! Cheap pool metrics: relaxed per-worker counters, summed on read.

use super::task::Ran;
use crate::sync::{AtomicUsize, Ordering};

/// One worker's counters, on its own cache line so workers never contend.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    /// Closures started here.
    pub(crate) started: AtomicUsize,
    /// Closures finished here (returned or panicked).
    pub(crate) completed: AtomicUsize,
    /// Popped here but cancelled before they started (never run).
    pub(crate) skipped: AtomicUsize,
    /// Closures that panicked here.
    pub(crate) panicked: AtomicUsize,
    /// Tasks taken from another worker's deque.
    pub(crate) stolen: AtomicUsize,
}

impl Counters {
    /// Adds to a counter other threads may also write (outside submitters,
    /// compensating workers).
    pub(crate) fn add(counter: &AtomicUsize, n: usize) {
        // Relaxed: statistics; readers accept a slightly stale sum.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds to a counter only the calling worker writes: a load and a store,
    /// no locked RMW on the hot path.
    pub(crate) fn add_own(counter: &AtomicUsize, n: usize) {
        // Relaxed: single writer; readers accept a slightly stale sum.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// Where a worker counts the end of the task it runs. The task tells it
/// ([`Tally::finish`]) *before* it publishes its outcome, tells its scope,
/// or drops what it holds, so a caller who saw the task end (its handle
/// done, its scope returned) reads counters that include it. A task run
/// inline by a waiter gets [`Tally::NONE`]: its stale queue entry is counted
/// when a worker pops it.
#[derive(Clone, Copy)]
pub(crate) struct Tally<'a> {
    counters: Option<&'a Counters>,
    /// Only the calling worker writes these counters (see `add_own`).
    own: bool,
}

impl<'a> Tally<'a> {
    /// Counts nothing.
    pub(crate) const NONE: Tally<'static> = Tally {
        counters: None,
        own: false,
    };

    /// Counts into `counters`; `own`: only the calling thread writes them.
    pub(crate) fn new(counters: &'a Counters, own: bool) -> Self {
        Tally {
            counters: Some(counters),
            own,
        }
    }

    /// The task ended as `ran`. Once per task run.
    #[inline]
    pub(crate) fn finish(self, ran: Ran) {
        let Some(c) = self.counters else {
            return;
        };
        let add = |counter: &AtomicUsize| match self.own {
            true => Counters::add_own(counter, 1),
            false => Counters::add(counter, 1),
        };
        match ran {
            Ran::Completed | Ran::Claimed => add(&c.completed),
            Ran::Panicked => {
                add(&c.completed);
                add(&c.panicked);
            }
            Ran::Cancelled => add(&c.skipped),
        }
    }
}

/// A snapshot of a pool's counters ([`ThreadPool::metrics`](crate::ThreadPool::metrics)).
///
/// Counters are read one by one without stopping the pool, so under load
/// the figures are approximate (never torn, possibly a few tasks apart).
/// A task is counted finished before its handle (or its scope) sees it
/// end: once `result()` returned, or a [`scope`](crate::ThreadPool::scope)
/// did, it no longer counts as `running`. (A future on the pool counts once
/// per poll, and its last poll settles just after its handle completes.)
///
/// ```
/// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
/// pool.submit(|| ()).unwrap();
/// pool.shutdown(true, false); // let the counters settle
/// let m = pool.metrics();
/// assert_eq!(m.completed, 1);
/// assert_eq!(m.queued, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Tasks waiting in a queue, cancelled ones included until a worker
    /// meets them there (see [`Builder::max_queued`](crate::Builder::max_queued)).
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks finished (returned or panicked). A task a waiter ran inline is
    /// counted when a worker pops its queue entry, so not at all when a
    /// cancelling shutdown drops that entry instead.
    pub completed: usize,
    /// Steals from another worker's deque: each takes one task, or a batch
    /// of up to half that deque (counted once).
    pub stolen: usize,
    /// Tasks that panicked.
    pub panicked: usize,
    /// Worker threads alive: the core workers, plus compensating workers
    /// standing in for blocked ones. A panic in user code never lowers it;
    /// shutdown does, and a compensating worker's exit once it has been
    /// idle for the [`keep_alive`](crate::Builder::keep_alive).
    pub threads: usize,
}

impl Metrics {
    /// Sums the counters; `queued` is what the queues hold now (read from
    /// their lengths, so submits and pops count nothing on the hot path).
    pub(crate) fn sum(counters: &[Counters], queued: usize) -> Metrics {
        let total = |f: fn(&Counters) -> &AtomicUsize| -> usize {
            counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
        };
        let started = total(|c| &c.started);
        let completed = total(|c| &c.completed);
        let skipped = total(|c| &c.skipped);
        Metrics {
            queued,
            running: started.saturating_sub(completed + skipped),
            completed,
            stolen: total(|c| &c.stolen),
            panicked: total(|c| &c.panicked),
            threads: 0,
        }
    }
}
