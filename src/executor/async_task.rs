//! Async tasks: `std::future::Future`s polled on the pool's workers.
//!
//! A task is one `Arc` holding the future and one state word of two bits:
//! `RIGHT`, the *poll right* (its holder is the only thread that may touch
//! the future), and `WOKEN`, a wake the holder has not yet consumed.
//!
//! - **Wake** (any thread, any number of times): `fetch_or(RIGHT | WOKEN)`.
//!   If `RIGHT` was clear, the waker now holds the right and queues the
//!   task; otherwise the holder will see `WOKEN`.
//! - **Poll** (the holder): `swap(RIGHT)` consumes `WOKEN`, then poll once.
//!   - `Ready` (or a panic): drop the future and keep the right for good,
//!     so every later wake is a no-op.
//!   - `Pending`: CAS `RIGHT -> 0`. If that fails, a wake came during the
//!     poll: keep the right and queue the task again (never poll in a
//!     loop: a future that wakes itself must not hold its worker).
//!
//! Why no wake is lost: every access is an RMW on one word, so all are
//! ordered. A wake before the holder's CAS leaves `WOKEN` set, and the CAS
//! fails; a wake after it finds `RIGHT` clear and queues the task itself.
//! And a poll sees what every consumed waker did before waking, and what
//! the last poll wrote: its `swap` (Acquire) reads the last `fetch_or`
//! (Release), and each RMW continues the release sequence of the ones
//! before it, back to the last poll's CAS (Release). Three RMWs per
//! wake-and-poll; modelled by `loom_models::wakes_are_never_lost` below.
//!
//! The queue entry *is* the task (`TaskRef::from_arc`) and the waker a
//! poll is given borrows the queue's reference: a wake allocates nothing of
//! its own and a poll takes no reference count.
//!
//! A live future holds the pool open ([`Registry::hold_open`]) until it is
//! dropped: after shutdown the workers stay to poll it, a wake queues it as
//! before (`SubmitSlot::requeue` is never refused), and `shutdown(wait)`
//! returns once every such future has finished, as Python's waits for
//! pending futures. So a future is only ever polled on a worker, never on a
//! waking thread that may hold a lock its `poll` takes. A future that was
//! never polled is cancellable, like a queued task; once polled it has
//! started, and a cancelling shutdown lets it finish.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::metrics::Tally;
use super::registry::Registry;
use super::submit::SubmitSlot;
use super::task::{Ran, Runnable, TaskRef, drop_guarded};
use super::worker::{count_panic, with_own_registry};
use crate::error::TaskError;
use crate::future::Promise;
use crate::panics::{PanicOrigin, guard, panic_message};
use crate::sync::{AtomicU8, Ordering, UnsafeCell};

/// What one poll did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// Finished (or panicked): the future is dropped, wakes are no-ops.
    Done { panicked: bool },
    /// Pending, and the poll right is released: a wake will queue it.
    Idle,
    /// Pending, but woken meanwhile: the caller holds the right and must
    /// queue it again.
    Again,
}

/// The future and whether it was ever polled; only the holder of the poll
/// right touches it.
struct Slot<F> {
    polled: bool,
    future: Option<F>,
}

/// The poll right: held by exactly one thread, or by the queue entry.
const RIGHT: u8 = 1;
/// A wake the holder of the right has not consumed yet.
const WOKEN: u8 = 2;

/// The protocol of the module docs, independent of the pool (loom models
/// it with wakers that poll inline).
pub(crate) struct PollCell<F> {
    state: AtomicU8,
    slot: UnsafeCell<Slot<F>>,
}

// SAFETY: the slot is only touched by the holder of the poll right, and
// the state word's RMWs (Acquire to take the right, Release to give it up)
// order one holder's accesses before the next's; `F: Send` lets the future
// move between the threads that poll it.
unsafe impl<F: Send> Sync for PollCell<F> {}

impl<F: Future<Output = ()>> PollCell<F> {
    /// A cell whose poll right the caller holds: it must queue the first
    /// poll.
    pub(crate) fn new(future: F) -> Self {
        PollCell {
            state: AtomicU8::new(RIGHT),
            slot: UnsafeCell::new(Slot {
                polled: false,
                future: Some(future),
            }),
        }
    }

    /// Records a wake. True if the caller now holds the poll right and
    /// must queue a poll.
    pub(crate) fn wake(&self) -> bool {
        // Release: pairs with the Acquire swap in `poll`, so the poll that
        // consumes this wake sees what the waker did before waking. No
        // Acquire: a waker that takes the right touches nothing of the
        // future; the next holder's Acquire reads this RMW, which continues
        // the release sequence of the CAS that gave the right up, so it
        // sees the last poll's writes without the waker relaying them.
        self.state.fetch_or(RIGHT | WOKEN, Ordering::Release) & RIGHT == 0
    }

    /// Polls once. The caller holds the poll right.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Polled {
        // Acquire: pairs with the Release of every wake consumed here (see
        // `wake`).
        self.state.swap(RIGHT, Ordering::Acquire);
        let outcome = self.slot.with_mut(|slot| {
            // SAFETY: we hold the poll right: no other thread touches the
            // slot until we release it.
            let slot = unsafe { &mut *slot };
            slot.polled = true;
            let future = slot.future.as_mut()?;
            // SAFETY: the future stays in place inside the task's `Arc`
            // until it is dropped in place (`drop_future`): it is never
            // moved, so it may be pinned.
            let future = unsafe { Pin::new_unchecked(future) };
            Some(catch_unwind(AssertUnwindSafe(|| future.poll(cx))))
        });
        match outcome {
            Some(Ok(Poll::Pending)) => {
                // Release: hands the future's state to the waker that takes
                // the right next (its Acquire). Failure: a wake came during
                // the poll; the next poll's swap acquires it.
                match self
                    .state
                    .compare_exchange(RIGHT, 0, Ordering::Release, Ordering::Relaxed)
                {
                    Ok(_) => Polled::Idle,
                    Err(_) => Polled::Again,
                }
            }
            Some(Ok(Poll::Ready(()))) => {
                self.drop_future();
                Polled::Done { panicked: false }
            }
            Some(Err(payload)) => {
                self.drop_future();
                crate::panics::report(PanicOrigin::FuturePoll, payload);
                Polled::Done { panicked: true }
            }
            // Unreachable: after `Done` the right is never released, so
            // nobody polls again.
            None => Polled::Idle,
        }
    }

    /// Drops the future if it was never polled; the caller holds the poll
    /// right. False if it was polled (the caller must poll it instead).
    pub(crate) fn cancel_unpolled(&self) -> bool {
        // Acquire: this holder did not take the right with `poll`'s swap;
        // reading the state synchronises with the last poll's Release CAS
        // (see `wake`), so its writes to the slot are visible.
        self.state.load(Ordering::Acquire);
        // SAFETY: we hold the poll right (see `poll`).
        let polled = self.slot.with(|slot| unsafe { (*slot).polled });
        if !polled {
            self.drop_future();
        }
        !polled
    }

    /// Whether the future is still there (not finished or dropped). Only
    /// for `Drop`, which has the task to itself.
    fn is_live(&mut self) -> bool {
        self.slot.with(|slot| {
            // SAFETY: `&mut self`: no other reference to the cell exists.
            unsafe { (*slot).future.is_some() }
        })
    }

    /// Drops the future whether or not it was polled (its queue is thrown
    /// away); the caller holds the poll right. False if it was gone.
    pub(crate) fn drop_held(&self) -> bool {
        // Acquire: as in `cancel_unpolled`.
        self.state.load(Ordering::Acquire);
        self.drop_future()
    }

    /// Drops the future in place, keeping the poll right for good; false
    /// if it was already gone. A panicking `Drop` is contained: the slot is
    /// marked empty either way, so the future is never dropped twice.
    fn drop_future(&self) -> bool {
        self.slot.with_mut(|slot| {
            // SAFETY: we hold the poll right (see `poll`), or `&mut self`.
            let slot = unsafe { &mut *slot };
            let Some(future) = slot.future.as_mut() else {
                return false;
            };
            let future: *mut F = future;
            // SAFETY: `future` points to a live value that nothing reads
            // again: the slot is overwritten right after without dropping
            // the old value. Dropping in place keeps the pin promise.
            guard(PanicOrigin::Drop, || unsafe {
                std::ptr::drop_in_place(future)
            });
            // SAFETY: the old value was just dropped; writing over it
            // without dropping it again is what we want.
            unsafe { std::ptr::write(&mut slot.future, None) };
            true
        })
    }
}

/// A future on the pool: the cell plus where to queue it. It holds the
/// pool open from `spawn` until the future is dropped.
struct AsyncTask<F: Future<Output = ()>> {
    registry: Arc<Registry>,
    cell: PollCell<F>,
}

impl<F: Future<Output = ()> + Send + 'static> AsyncTask<F> {
    /// Queues the task; the caller holds the poll right.
    fn schedule(self: Arc<Self>) {
        with_own_registry(Arc::as_ptr(&self.registry), |own| match own {
            // On one of the pool's workers (a future woken by a task on the
            // pool, its own poll included), the worker holds the registry
            // while this thread runs. Cloning a reference here instead put
            // a locked increment and decrement of the registry's count, a
            // line every worker shares, on each such wake: 60% of the CPU
            // of `compare`'s self-wake re-poll on 2 workers (`perf record`,
            // issue 21).
            Some((registry, on)) => {
                SubmitSlot::requeue_from(registry, Some(on)).push(TaskRef::from_arc(self))
            }
            // Elsewhere a worker may run the task, finish it and let the
            // pool go before the push returns: the push keeps its own.
            None => {
                let registry = self.registry.clone();
                SubmitSlot::requeue_from(&registry, None).push(TaskRef::from_arc(self));
            }
        })
    }

    /// Cancels the task if its future was never polled (the caller holds
    /// the poll right through the queue entry); a started one comes back.
    fn cancel_if_unpolled(self: Arc<Self>) -> Option<Arc<Self>> {
        if self.cell.cancel_unpolled() {
            self.finished();
            drop_guarded(self);
            None
        } else {
            Some(self)
        }
    }

    /// The future is gone (finished, cancelled, dropped): the pool need not
    /// stay open for it any more.
    fn finished(&self) {
        self.registry.release_hold();
    }
}

impl<F: Future<Output = ()>> Drop for AsyncTask<F> {
    fn drop(&mut self) {
        // The last reference went while the future was still pending (no
        // waker left to wake it), on whatever thread dropped that waker.
        // The future goes first, then the hold, so `shutdown(wait)` never
        // returns while its `Drop` still runs. The future may hold the last
        // `ThreadPool` of this pool, whose drop would wait for this very
        // hold: the marker tells it not to wait (`dropping_held_future_of`).
        if self.cell.is_live() {
            {
                let _marker = DroppingHeld::enter(&self.registry);
                self.cell.drop_future();
            }
            self.registry.release_hold();
        }
    }
}

std::thread_local! {
    /// The registries whose held futures this thread is dropping (their
    /// addresses), innermost last: a future's drop may drop another pool's
    /// future (its last waker), whose drop may drop the outer pool's last
    /// handle, which must still see the outer drop.
    static DROPPING_HELD: std::cell::RefCell<Vec<usize>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks the calling thread as dropping a future that holds `registry`
/// open, until dropped. (Unmarked where the thread's locals are gone: a
/// drop from another thread-local's destructor.)
struct DroppingHeld(bool);

impl DroppingHeld {
    fn enter(registry: &Registry) -> Self {
        let addr = (registry as *const Registry).addr();
        DroppingHeld(
            DROPPING_HELD
                .try_with(|d| d.borrow_mut().push(addr))
                .is_ok(),
        )
    }
}

impl Drop for DroppingHeld {
    fn drop(&mut self) {
        if self.0 {
            let _ = DROPPING_HELD.try_with(|d| d.borrow_mut().pop());
        }
    }
}

/// Whether the calling thread is inside the drop of a future that holds
/// `registry` open: a wait for the pool's workers there would wait on the
/// hold this very drop is about to release.
pub(crate) fn dropping_held_future_of(registry: &Registry) -> bool {
    let addr = (registry as *const Registry).addr();
    DROPPING_HELD
        .try_with(|d| d.borrow().contains(&addr))
        .unwrap_or(false)
}

impl<F: Future<Output = ()> + Send + 'static> Wake for AsyncTask<F> {
    fn wake(self: Arc<Self>) {
        if self.cell.wake() {
            self.schedule();
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.cell.wake() {
            self.clone().schedule();
        }
    }
}

impl<F: Future<Output = ()> + Send + 'static> Runnable for AsyncTask<F> {
    fn run(self: Arc<Self>, tally: Tally<'_>) -> Ran {
        let polled = with_borrowed_waker(&self, |cx| self.cell.poll(cx));
        let ran = match polled {
            Polled::Done { panicked: true } => Ran::Panicked,
            _ => Ran::Completed,
        };
        // Before the pool's hold is released or the task re-queued; a
        // `submit_future` handle completed inside the poll, just before.
        tally.finish(ran);
        match polled {
            Polled::Again => self.schedule(),
            Polled::Idle => drop_guarded(self),
            Polled::Done { .. } => {
                self.finished();
                drop_guarded(self);
            }
        }
        ran
    }

    fn cancel(self: Arc<Self>) {
        // Python's `cancel_futures` cancels what has not started; a future
        // that was polled has: the worker polls it as usual.
        if let Some(started) = self.cancel_if_unpolled() {
            started.run(Tally::NONE);
        }
    }

    fn cancel_from_drain(self: Arc<Self>) -> Option<Arc<Self>> {
        // The shutting-down caller may be anyone (a task holding a lock
        // this future's `poll` takes): leave a started one to a worker.
        self.cancel_if_unpolled()
    }

    fn abandon(self: Arc<Self>) {
        // The queue is thrown away with no worker to run the task: its
        // future can only be dropped.
        if self.cell.drop_held() {
            self.finished();
        }
        drop_guarded(self);
    }
}

/// Runs `f` with a waker that borrows `task`'s reference: no reference
/// count is taken unless the future clones the waker.
pub(crate) fn with_borrowed_waker<W, R>(task: &Arc<W>, f: impl FnOnce(&mut Context<'_>) -> R) -> R
where
    W: Wake + Send + Sync + 'static,
{
    // SAFETY: the `Arc` rebuilt here owns no count of its own: it aliases
    // `task`'s, which outlives this call, and it is never dropped (the
    // `ManuallyDrop`), so the count is unchanged. Clones of the waker take
    // counts of their own (std's `Wake` vtable clones the `Arc`), and a
    // `Context` lends its waker only by reference, so nobody can drop or
    // consume this one.
    let waker = ManuallyDrop::new(Waker::from(unsafe { Arc::from_raw(Arc::as_ptr(task)) }));
    f(&mut Context::from_waker(&waker))
}

/// Queues `future` on `registry`, or hands it back if the pool is shut
/// down. Once queued, the future holds the pool open until it is dropped.
pub(crate) fn spawn<F>(registry: &Arc<Registry>, future: F) -> Result<(), F>
where
    F: Future<Output = ()> + Send + 'static,
{
    if !registry.try_hold() {
        return Err(future);
    }
    let task = Arc::new(AsyncTask {
        registry: registry.clone(),
        cell: PollCell::new(future),
    });
    SubmitSlot::requeue(registry).push(TaskRef::from_arc(task));
    Ok(())
}

/// Runs a future and completes a promise with its output: Python's
/// `set_running_or_notify_cancel` before the first poll (a cancelled
/// handle means it never runs), a panic as [`TaskError::Panicked`].
pub(crate) struct Completing<F: Future> {
    /// Dropped by hand in `drop`, before the handle is told.
    future: ManuallyDrop<F>,
    promise: Promise<F::Output>,
    started: bool,
}

impl<F: Future> Completing<F> {
    pub(crate) fn new(future: F, promise: Promise<F::Output>) -> Self {
        Completing {
            future: ManuallyDrop::new(future),
            promise,
            started: false,
        }
    }

    /// The future back, never polled (a refused spawn hands it to the
    /// caller); the promise is dropped, its handle unused.
    pub(crate) fn into_inner(self) -> F {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: never polled, so never pinned: the future may move.
        // `this` is never dropped, so each field is taken or dropped
        // exactly once, here.
        unsafe {
            std::ptr::drop_in_place(&mut this.promise);
            ManuallyDrop::take(&mut this.future)
        }
    }
}

impl<F: Future> Future for Completing<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is pinned structurally and never moved out of
        // `self` (only dropped in place, in `drop`); the other fields are
        // never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.started {
            this.started = true;
            if this.promise.set_running_or_notify_cancel() != Ok(true) {
                return Poll::Ready(());
            }
        }
        // SAFETY: see above: `future` is structurally pinned.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => {
                let _ = this.promise.set_result(value);
                Poll::Ready(())
            }
            Err(payload) => {
                count_panic();
                let _ = this
                    .promise
                    .complete(Err(TaskError::Panicked(panic_message(payload))));
                Poll::Ready(())
            }
        }
    }
}

impl<F: Future> Drop for Completing<F> {
    fn drop(&mut self) {
        // The future's captures go first, so that whoever the handle
        // wakes finds them released; a panic there must not keep the
        // handle from being told.
        // SAFETY: dropped in place exactly once, here, and never used
        // again (`self` is being dropped).
        guard(PanicOrigin::Drop, || unsafe {
            ManuallyDrop::drop(&mut self.future)
        });
        // Dropped before its first poll: cancelled (by a cancelling
        // shutdown), not abandoned.
        if !self.started {
            self.promise.handle().cancel();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::{PollCell, Polled, with_borrowed_waker};
    use crate::sync::{AtomicUsize, Ordering};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// Ready once it has seen `target` events; counts overlapping polls.
    struct Counting {
        shared: Arc<Shared>,
        target: usize,
    }

    struct Shared {
        events: AtomicUsize,
        polling: AtomicUsize,
        overlaps: AtomicUsize,
        finished: AtomicUsize,
    }

    impl Future for Counting {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            let s = &self.shared;
            if s.polling.fetch_add(1, Ordering::SeqCst) != 0 {
                s.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let seen = s.events.load(Ordering::Relaxed);
            s.polling.fetch_sub(1, Ordering::SeqCst);
            if seen >= self.target {
                s.finished.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A task over a `Counting` future ready after `target` events, and
    /// what it counts.
    fn counting_task(target: usize) -> (Arc<Shared>, Arc<Task>) {
        let shared = Arc::new(Shared {
            events: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            overlaps: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        let counting = Counting {
            shared: shared.clone(),
            target,
        };
        (shared, Arc::new(Task(PollCell::new(counting))))
    }

    /// A task whose "queue" is the waking thread itself: a wake that wins
    /// the poll right polls inline (a stand-in for the queue: the protocol
    /// does not care which thread holds the right).
    struct Task(PollCell<Counting>);

    impl Task {
        fn run(self: &Arc<Self>) {
            while with_borrowed_waker(self, |cx| self.0.poll(cx)) == Polled::Again {}
        }
    }

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if self.0.wake() {
                self.run();
            }
        }
    }

    /// Two threads each publish an event (Relaxed: only the wake protocol
    /// may make it visible) and wake, while the spawner runs the first
    /// poll: the future completes exactly once, polls never overlap, and
    /// no wake is lost (it would leave the future pending for good).
    #[test]
    fn wakes_are_never_lost() {
        loom::model(|| {
            let (shared, task) = counting_task(2);
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let (task, shared) = (task.clone(), shared.clone());
                    loom::thread::spawn(move || {
                        shared.events.fetch_add(1, Ordering::Relaxed);
                        Waker::from(task).wake();
                    })
                })
                .collect();
            task.run();
            for w in wakers {
                w.join().unwrap();
            }
            assert_eq!(shared.finished.load(Ordering::SeqCst), 1);
            assert_eq!(shared.overlaps.load(Ordering::SeqCst), 0);
        });
    }

    /// A cancelling shutdown's paths: a waker takes the poll right after
    /// the first poll gave it up and, instead of polling, drops the held
    /// future (`drop_held`) or asks to cancel it unpolled
    /// (`cancel_unpolled`, which must see the poll and refuse). Both read
    /// the slot the poll wrote, ordered by their own Acquire load of the
    /// state: a wake's RMW takes the right without one. Without it loom
    /// reports the slot touched unordered with the poll.
    fn a_waker_that_cancels_sees_the_last_poll(drop_held: bool) {
        loom::model(move || {
            let (shared, task) = counting_task(1);
            let t = task.clone();
            let canceller = loom::thread::spawn(move || {
                if t.0.wake() {
                    // The right, after the first poll released it.
                    if drop_held {
                        assert!(t.0.drop_held(), "the future was still there");
                    } else {
                        assert!(!t.0.cancel_unpolled(), "it was polled");
                    }
                }
            });
            let first = with_borrowed_waker(&task, |cx| task.0.poll(cx));
            if first == Polled::Again {
                // Woken during the poll: the right stayed here.
                assert!(task.0.drop_held());
            }
            canceller.join().unwrap();
            assert_eq!(shared.finished.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn a_waker_that_drops_the_held_future_sees_the_last_poll() {
        a_waker_that_cancels_sees_the_last_poll(true);
    }

    #[test]
    fn a_waker_that_cancels_an_unpolled_future_sees_it_was_polled() {
        a_waker_that_cancels_sees_the_last_poll(false);
    }
}
