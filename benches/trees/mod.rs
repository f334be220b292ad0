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
