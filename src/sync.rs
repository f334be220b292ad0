//! The synchronisation primitives the crate's atomic protocols are built on.
//!
//! Under `cfg(loom)` every atomic, cell, park and waker here is loom's, so the
//! models in `tests/loom.rs` and beside the code explore every interleaving
//! of our own protocols. `Arc` stays std's in both builds: its reference
//! counting is not one of our protocols, and loom's `Arc` cannot be unsized
//! into the `Arc<Shared<T>>` (a `dyn Body<T>` inside) every handle holds.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::thread::{Thread, current as current_thread, park};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub(crate) use loom::thread::{Thread, current as current_thread, park};

#[cfg(loom)]
pub(crate) use loom::alloc::{alloc, dealloc};
#[cfg(not(loom))]
pub(crate) use std::alloc::{alloc, dealloc};

#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;
#[cfg(loom)]
pub(crate) use loom::future::AtomicWaker;

/// Parks the current thread for at most `dur`.
///
/// Under loom a timed park is a plain yield: the model then explores the
/// waiter giving up at every point of the protocol, which is exactly the
/// race a real timeout creates.
#[cfg(not(loom))]
pub(crate) fn park_timeout(dur: std::time::Duration) {
    std::thread::park_timeout(dur);
}

/// Parks the current thread for at most `dur` (loom: yields, see above).
#[cfg(loom)]
pub(crate) fn park_timeout(_dur: std::time::Duration) {
    loom::thread::yield_now();
}

/// Wakes `thread` (a hand-off's last step, after its last touch of shared
/// state).
#[cfg(not(loom))]
#[inline]
pub(crate) fn unpark(thread: &Thread) {
    thread.unpark();
}

/// Wakes `thread`. loom's `unpark` hands the whole history of the waker
/// to the target at once, even to one that never parked and just polls a
/// flag: a schedule point first lets the model run the target before the
/// unpark, as a real one that lands late would, so a flag stored too
/// weakly is still caught.
#[cfg(loom)]
pub(crate) fn unpark(thread: &Thread) {
    loom::thread::yield_now();
    thread.unpark();
}

/// Joins a model's threads once each has set its flag, spinning until
/// then: loom's `unpark` wakes a thread blocked in `join` as if it had been
/// joined, so a model's owner, which a thread under test may unpark late,
/// must not block in `join` before every such thread is through.
#[cfg(all(test, loom))]
pub(crate) fn join_all_when_finished(
    threads: Vec<(
        std::sync::Arc<loom::sync::atomic::AtomicBool>,
        loom::thread::JoinHandle<()>,
    )>,
) {
    for (finished, _) in &threads {
        while !finished.load(Ordering::Acquire) {
            loom::thread::yield_now();
        }
    }
    for (_, t) in threads {
        t.join().unwrap();
    }
}

/// Gives the core to another thread.
#[cfg(not(loom))]
pub(crate) fn yield_now() {
    std::thread::yield_now();
}

/// Gives the core to another thread (a loom yield).
#[cfg(loom)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

/// Spin-loop hint; under loom a yield so the model makes progress.
#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// Spin-loop hint; under loom a yield so the model makes progress.
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// An `UnsafeCell` with loom's closure-based access API in both builds, so
/// loom can check that no two threads touch a cell at once.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Reads through a raw pointer; the caller upholds the aliasing rules.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Writes through a raw pointer; the caller upholds the aliasing rules.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A slot holding the latest waker of one async waiter (atomic-waker's
/// `AtomicWaker`, or loom's model of it).
#[derive(Default)]
pub(crate) struct WakerSlot(AtomicWaker);

impl WakerSlot {
    /// Stores `waker` to be woken by [`WakerSlot::wake`].
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(loom))]
        self.0.register(waker);
        #[cfg(loom)]
        self.0.register_by_ref(waker);
    }

    /// Wakes the stored waker, if any.
    pub(crate) fn wake(&self) {
        self.0.wake();
    }

    /// Drops the stored waker, if any: its waiter is gone, and what the
    /// waker keeps alive (the polling task) must not wait for the slot's
    /// own memory to go.
    pub(crate) fn clear(&self) {
        #[cfg(not(loom))]
        drop(self.0.take());
        #[cfg(loom)]
        drop(self.0.take_waker());
    }
}

/// The memory of an object one thread frees while others may have touched
/// it: under loom a cell that each toucher reads ([`Lifetime::touch`]) and
/// the freeing owner writes ([`Lifetime::end`]), so a model flags a free
/// that is not ordered after every touch (loom does not see frees
/// themselves); nothing at all otherwise.
pub(crate) struct Lifetime {
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<()>,
}

// SAFETY: the loom cell is only used to check accesses, never to share a
// value; without loom the type is empty.
unsafe impl Sync for Lifetime {}

impl Lifetime {
    pub(crate) fn new() -> Lifetime {
        Lifetime {
            #[cfg(loom)]
            cell: loom::cell::UnsafeCell::new(()),
        }
    }

    /// A thread other than the owner touches the object (while it may).
    #[inline(always)]
    pub(crate) fn touch(&self) {
        #[cfg(loom)]
        self.cell.with(|_| ());
    }

    /// The owner frees the object: every touch must happen before this.
    #[inline(always)]
    pub(crate) fn end(&self) {
        #[cfg(loom)]
        self.cell.with_mut(|_| ());
    }
}
