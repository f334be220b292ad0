//! The spawn tree that `compare` times and `tree_modes` takes apart: every
//! task spawns two children until the depth runs out, on our pool, on
//! rayon's and on tokio's, each child cloning the shared [`Leaves`].
//!
//! The waiter parks until the last leaf unparks it, as a user's wait
//! does ([`Leaves::wait`]). `tree_modes` also waits by yielding in a loop
//! ([`Leaves::wait_yielding`]), as `compare`'s trees did until `2000fb0`:
//! on two cores that third runnable thread makes where the scheduler puts
//! the two workers, side by side or stacked on one core, a draw, and the
//! mode tends to stick for the process (BENCHMARKS.md, "What picks the
//! spawn tree's mode").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

/// How long after a tree a CPU reading waits, so that the workers have
/// parked: the kernel brings a running thread's run time up to date only
/// at its ticks and switches, a parked thread's is exact.
pub const SETTLE: Duration = Duration::from_millis(5);

/// Nanoseconds on a CPU so far of the `workers` threads of this process
/// whose names start with `prefix`, summed (`/proc/self/task/*/schedstat`);
/// `None` where the OS does not say, or where it does not find exactly
/// that many such threads.
pub fn workers_cpu_ns(prefix: &str, workers: usize) -> Option<u64> {
    let (mut sum, mut found) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread that exited meanwhile is not one of the pool's workers.
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        // The first field of schedstat: time spent on a CPU, in ns.
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        sum += stat.split(' ').next()?.parse::<u64>().ok()?;
        found += 1;
    }
    (found == workers && sum > 0).then_some(sum)
}

/// A tree's leaves, counted, and the thread waiting for the last.
pub struct Leaves {
    count: AtomicUsize,
    all: usize,
    waiter: Thread,
}

impl Leaves {
    /// `all` leaves to come, awaited by the calling thread.
    pub fn new(all: usize) -> Arc<Self> {
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
    pub fn wait(&self) {
        while self.count.load(Ordering::Acquire) < self.all {
            std::thread::park();
        }
    }

    /// Yields in a loop until every leaf ran (the last leaf's unpark is
    /// then left over: a later park returns at once and rechecks).
    #[allow(dead_code)] // `compare` only parks
    pub fn wait_yielding(&self) {
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
