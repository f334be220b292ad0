//! The spawn tree that `compare` times and `tree_modes` takes apart: every
//! task spawns two children until the depth runs out, on our pool, on
//! rayon's and on tokio's, each child cloning the shared [`Leaves`].
//!
//! [`time`] times a tree. The waiter parks until the last leaf unparks
//! it, as a user's wait does; `tree_modes` also waits by yielding in a
//! loop, as `compare`'s trees did until `2000fb0`:
//! on two cores that third runnable thread makes where the scheduler puts
//! the two workers, side by side or stacked on one core, a draw, and the
//! mode tends to stick for the process (BENCHMARKS.md, "What picks the
//! spawn tree's mode"). [`time_with_cpu`] reads the cores a pool's
//! workers used for it, from the per-thread run time that `compare`'s
//! idle rows read too ([`threads_cpu_ns`]).

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long after a tree a CPU reading waits, so that the workers have
/// parked: the kernel brings a running thread's run time up to date only
/// at its ticks and switches, a parked thread's is exact.
const SETTLE: Duration = Duration::from_millis(5);

/// Nanoseconds on a CPU so far (`/proc/self/task/*/schedstat`) of this
/// process's threads that `keep` picks by name and id, summed, with how
/// many there were; `None` where the OS does not say. A thread that exits
/// during the walk is skipped.
pub fn threads_cpu_ns(mut keep: impl FnMut(&str, &OsStr) -> bool) -> Option<(u64, usize)> {
    let (mut sum, mut found) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !keep(&name, &entry.file_name()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        // The first field of schedstat: time spent on a CPU, in ns.
        sum += stat.split(' ').next()?.parse::<u64>().ok()?;
        found += 1;
    }
    Some((sum, found))
}

/// Nanoseconds on a CPU so far of the `workers` threads whose names start
/// with `prefix`, summed; `None` where the OS does not say, or where it
/// does not find exactly that many such threads.
fn workers_cpu_ns(prefix: &str, workers: usize) -> Option<u64> {
    let (sum, found) = threads_cpu_ns(|name, _| name.starts_with(prefix))?;
    (found == workers && sum > 0).then_some(sum)
}

/// Runs `timed` (one tree, returning its time) between two readings of the
/// CPU time of the `workers` threads named `prefix`, both with the workers
/// parked (the second after [`SETTLE`], so it counts the tree and the
/// short look for more work each worker makes before it parks). Returns
/// the time and that CPU time, `None` where it could not be read.
pub fn time_with_cpu(
    prefix: &str,
    workers: usize,
    timed: impl FnOnce() -> Duration,
) -> (Duration, Option<u64>) {
    let before = workers_cpu_ns(prefix, workers);
    let took = timed();
    std::thread::sleep(SETTLE);
    let after = workers_cpu_ns(prefix, workers);
    (took, after.zip(before).and_then(|(b, a)| b.checked_sub(a)))
}

/// Times one tree of `all` leaves that `start` begins, until its last leaf
/// ran; the caller parks meanwhile, or with `yielding` yields in a loop.
pub fn time(all: usize, yielding: bool, start: impl FnOnce(Arc<Leaves>)) -> Duration {
    let leaves = Leaves::new(all);
    let t0 = Instant::now();
    start(leaves.clone());
    match yielding {
        false => leaves.wait(),
        true => leaves.wait_yielding(),
    }
    t0.elapsed()
}

/// A tree's leaves, counted, and the thread waiting for the last.
pub struct Leaves {
    count: AtomicUsize,
    all: usize,
    waiter: Thread,
}

impl Leaves {
    /// `all` leaves to come, awaited by the calling thread.
    fn new(all: usize) -> Arc<Self> {
        Arc::new(Leaves {
            count: AtomicUsize::new(0),
            all,
            waiter: std::thread::current(),
        })
    }

    /// One leaf ran; the last wakes the waiter.
    fn leaf(&self) {
        // Release: pairs with the waits' Acquire, so the waiter sees the
        // tree done (the unpark alone orders nothing).
        if self.count.fetch_add(1, Ordering::Release) + 1 == self.all {
            self.waiter.unpark();
        }
    }

    /// Parks until every leaf ran (rechecking after a spurious wake).
    fn wait(&self) {
        while self.count.load(Ordering::Acquire) < self.all {
            std::thread::park();
        }
    }

    /// Yields in a loop until every leaf ran (the last leaf's unpark is
    /// then left over: a later park returns at once and rechecks).
    fn wait_yielding(&self) {
        while self.count.load(Ordering::Acquire) < self.all {
            std::thread::yield_now();
        }
    }
}

/// One node of a tree on our pool, on a worker: spawns its two children
/// onto the pool running it (`concurrent_futures::spawn`, as `rayon::spawn`
/// does), so no task carries a pool handle.
pub fn ours(d: u32, leaves: Arc<Leaves>) {
    if d == 0 {
        leaves.leaf();
        return;
    }
    for _ in 0..2 {
        let c = leaves.clone();
        concurrent_futures::spawn(move || ours(d - 1, c)).unwrap();
    }
}

/// One node of a tree on rayon (inside its pool).
pub fn rayon(d: u32, leaves: Arc<Leaves>) {
    if d == 0 {
        leaves.leaf();
        return;
    }
    for _ in 0..2 {
        let c = leaves.clone();
        rayon::spawn(move || self::rayon(d - 1, c));
    }
}

/// One node of a tree on tokio (inside its runtime).
#[allow(dead_code)] // `tree_modes` compares with rayon only
pub fn tokio(d: u32, leaves: Arc<Leaves>) {
    if d == 0 {
        leaves.leaf();
        return;
    }
    for _ in 0..2 {
        let c = leaves.clone();
        tokio::spawn(async move { self::tokio(d - 1, c) });
    }
}
