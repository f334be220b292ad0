//! Cheap pool metrics: relaxed per-worker counters, summed on read.

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

/// A snapshot of a pool's counters ([`ThreadPool::metrics`](crate::ThreadPool::metrics)).
///
/// Counters are read one by one without stopping the pool, so under load
/// the figures are approximate (never torn, possibly a few tasks apart).
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
    /// Tasks waiting in a queue.
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks finished (returned or panicked).
    pub completed: usize,
    /// Tasks taken from another worker's deque.
    pub stolen: usize,
    /// Tasks that panicked.
    pub panicked: usize,
    /// Worker threads alive: the core workers, plus compensating workers
    /// standing in for blocked ones. A panic in user code never lowers it;
    /// only shutdown does.
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
