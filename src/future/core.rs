//! The shared state of one future, in one allocation: lifecycle word,
//! outcome slot, waiter stack, callback stack, handle count, and (for pool
//! tasks) the job itself.

use std::sync::Arc;
use std::time::Instant;

use super::callback::{Callback, Registration};
use super::node::NodeRef;
use super::stack::Stack;
use super::state::{BeginSet, Cancel, Lifecycle, Phase, Start};
use crate::error::{InvalidState, TaskError};
use crate::sync::{AtomicU8, AtomicU32, AtomicUsize, Ordering, UnsafeCell};

/// The error a cancelled future reports by reference.
static CANCELLED: TaskError = TaskError::Cancelled;

/// The state every future shares between its handles and its writer.
pub(crate) struct Core<T> {
    lifecycle: Lifecycle,
    /// `FutureHandle`s alive, plus one while a `Promise` (which can make
    /// more) is alive. Lets the last reader move the value out.
    handles: AtomicU32,
    /// The pool whose threads may run this task inline when they wait on
    /// it; 0 for none (a promise's future). In bytes that were padding.
    pool: u16,
    /// A byte the body keeps its own state in, in the last byte that was
    /// padding: a pool task marks its closure taken here, so the closure
    /// needs no `Option` (whose flag, after this core, cost a task 8
    /// bytes). Only the body touches it.
    body_mark: AtomicU8,
    /// Unique in the process: a registration names its future by it (an
    /// address could be reused by a new future once this one is freed).
    id: u64,
    /// Written once by the `begin_set` winner, read after `publish`.
    slot: UnsafeCell<Option<Result<T, TaskError>>>,
    waiters: Stack<()>,
    callbacks: Stack<Core<T>>,
}

// SAFETY: the slot is written by one thread (the `begin_set` winner) before
// the Release in `publish` and only read after an Acquire that sees it, or
// moved out by the last handle once no callback can run (`take_outcome`);
// so `T: Send` suffices to move the value across threads and `T: Sync` to
// share `&T` between readers. Every other field is atomic.
unsafe impl<T: Send + Sync> Sync for Core<T> {}
// SAFETY: as above; the value may be dropped on any thread.
unsafe impl<T: Send> Send for Core<T> {}

/// What else lives in a future's allocation. Pool tasks keep their closure
/// here so that a task and its future are one allocation, and so that a
/// thread waiting on a task that has not started can run it inline.
pub(crate) trait Body<T>: Send + Sync {
    /// Blocks until `core` is done or `deadline` passes; returns whether it
    /// is done. A pool task overrides this to run itself inline when it has
    /// not started, and to refuse waits that would deadlock.
    fn wait(&self, core: &Core<T>, deadline: Option<Instant>) -> Result<bool, TaskError> {
        if core.is_done() {
            return Ok(true);
        }
        Ok(super::blocking::blocking(|| core.wait_until(deadline)))
    }

    /// A handle's `cancel` just cancelled the future (and ran its
    /// callbacks). A pool task tells whoever waits for it to be over.
    fn cancelled(&self) {}
}

/// The body of a future made by a [`Promise`](crate::Promise).
pub(crate) struct NoBody;

impl<T> Body<T> for NoBody {}

/// A future's allocation: the shared state followed by its body.
pub(crate) struct Cell<T, B: ?Sized> {
    pub(crate) core: Core<T>,
    pub(crate) body: B,
}

/// The type every handle points to.
pub(crate) type Shared<T> = Cell<T, dyn Body<T>>;

impl<T: Send + Sync + 'static> Cell<T, NoBody> {
    /// A pending future with no body.
    pub(crate) fn without_body() -> Arc<Shared<T>> {
        Arc::new(Cell {
            core: Core::new(),
            body: NoBody,
        })
    }
}

impl<T> Core<T> {
    pub(crate) fn new() -> Self {
        Core::of_pool(0)
    }

    /// A pending future for a task of the pool tagged `pool`.
    pub(crate) fn of_pool(pool: u16) -> Self {
        Core {
            lifecycle: Lifecycle::new(),
            handles: AtomicU32::new(0),
            pool,
            body_mark: AtomicU8::new(0),
            id: super::callback::next_serial(),
            slot: UnsafeCell::new(None),
            waiters: Stack::new(),
            callbacks: Stack::new(),
        }
    }

    /// The tag of the pool whose task this is (0: none).
    pub(crate) fn pool(&self) -> u16 {
        self.pool
    }

    /// The body's byte (see the field); 0 in a new future.
    pub(crate) fn body_mark(&self) -> &AtomicU8 {
        &self.body_mark
    }

    pub(crate) fn phase(&self) -> Phase {
        self.lifecycle.phase()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.lifecycle.is_done()
    }

    pub(crate) fn waiters(&self) -> &Stack<()> {
        &self.waiters
    }

    /// The outcome. Only once done (callers check first).
    pub(crate) fn outcome(&self) -> Result<&T, &TaskError> {
        match self.phase() {
            Phase::Finished => {
                // SAFETY: FINISHED was observed with Acquire (in `phase`), so
                // the write before `publish` is visible, and the slot is never
                // written again (it is only moved out by the last handle when
                // no other reader can exist).
                let slot = self.slot.with(|p| unsafe { &*p });
                match slot {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(e)) => Err(e),
                    None => Err(&CANCELLED),
                }
            }
            _ => Err(&CANCELLED),
        }
    }

    /// Claims the future for running (Python's `set_running_or_notify_cancel`).
    pub(crate) fn try_start(&self) -> Start {
        self.lifecycle.try_start()
    }

    /// Python's `cancel()`, saying whether this call cancelled it (and ran
    /// the callbacks that completion runs) or found it cancelled already.
    pub(crate) fn cancel_now(&self) -> Cancel {
        let outcome = self.lifecycle.cancel();
        if outcome == Cancel::Cancelled {
            self.notify();
        }
        outcome
    }

    /// A handle's `cancel`: cancels the future if it has not started, and
    /// tells `body` when this call did. True if it is cancelled (now or
    /// before), false if it runs or is done.
    pub(crate) fn cancel_for(&self, body: &(impl Body<T> + ?Sized)) -> bool {
        match self.cancel_now() {
            Cancel::Cancelled => {
                body.cancelled();
                true
            }
            Cancel::AlreadyCancelled => true,
            Cancel::Refused => false,
        }
    }

    /// Stores the outcome `into(input)` exactly once, then wakes waiters and
    /// runs callbacks. A refused `input` is handed back untouched.
    pub(crate) fn set_with<V>(
        &self,
        input: V,
        into: impl FnOnce(V) -> Result<T, TaskError>,
    ) -> Result<(), InvalidState<V>> {
        match self.lifecycle.begin_set() {
            BeginSet::Won => {}
            BeginSet::AlreadyFinished => return Err(InvalidState::AlreadyFinished(input)),
            BeginSet::Cancelled => return Err(InvalidState::Cancelled(input)),
        }
        let outcome = into(input);
        // SAFETY: winning `begin_set` makes this the slot's only writer, and
        // no reader touches it before `publish`.
        self.slot.with_mut(|p| unsafe { *p = Some(outcome) });
        self.lifecycle.publish();
        self.notify();
        Ok(())
    }

    /// Blocks until no callback is running or queued. Waiters are woken
    /// before callbacks run, so the last handle can get here while the
    /// completer is still draining; nobody else can attach (that needs a
    /// handle, and no promise is left to make one), so once a marker
    /// callback attached now has run, only the drainer's final CAS is left.
    /// Returns false, without waiting, when called from user code the
    /// completion runs: one of this future's own callbacks (the drain cannot
    /// end while we wait inside it), or a waiter's waker, or its drop, which
    /// the completer runs before it even starts the callbacks.
    fn wait_quiescent(&self) -> bool {
        if self.callbacks.is_quiescent() {
            return true;
        }
        if self.callbacks.draining_here() || self.waiters.draining_here() {
            return false;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let (flag, thread) = (ran.clone(), crate::sync::current_thread());
        // A `'static` closure: it borrows nothing.
        let marker = move |_: Result<&T, &TaskError>| {
            // Release: pairs with the Acquire load below.
            flag.store(1, Ordering::Release);
            thread.unpark();
        };
        // SAFETY: a `'static` closure.
        let _ = unsafe { self.add_callback(marker) };
        // A blocking wait like any other: on a pool thread it keeps the
        // pool's capacity (the callbacks may need a worker of this pool).
        super::blocking::blocking(|| {
            // Acquire: pairs with the marker's Release store: the drain's
            // earlier callbacks happen before this returns.
            while ran.load(Ordering::Acquire) == 0 {
                crate::sync::park();
            }
        });
        // Only the drainer's last CAS is left: let it have the core.
        while !self.callbacks.is_quiescent() {
            crate::sync::yield_now();
        }
        true
    }

    /// Stores the outcome of a task the caller started (won `try_start`):
    /// nobody else can set it (a pool task has no promise, and a running
    /// task cannot be cancelled), so no `SETTING` claim is needed.
    pub(crate) fn set_started(&self, outcome: Result<T, TaskError>) {
        debug_assert_eq!(self.phase(), Phase::Running);
        // SAFETY: the caller won `try_start` and is the only writer (see
        // above); readers touch the slot only after `publish`.
        self.slot.with_mut(|p| unsafe { *p = Some(outcome) });
        self.lifecycle.publish();
        self.notify();
    }

    /// After the outcome is visible: wake every waiter, then run callbacks.
    fn notify(&self) {
        self.waiters.complete(&());
        self.callbacks.complete(self);
    }

    /// Attaches a callback; runs it inline if the future is already done.
    ///
    /// # Safety
    /// What `f` borrows outlives the future's completion (when it runs) and
    /// its removal (when a drain or compaction drops it unrun): true for a
    /// `'static` closure, and for a scoped task's, whose scope waits until
    /// the task is over (`executor/scope.rs`).
    pub(crate) unsafe fn add_callback<F>(&self, f: F) -> Registration<T>
    where
        F: FnOnce(Result<&T, &TaskError>) + Send,
    {
        let registration = |target| Registration {
            target,
            future: self.id,
            _future: std::marker::PhantomData,
        };
        // Done and nobody draining: run it here, with no node. (It can no
        // longer be removed, so the registration names nothing.)
        let f = match self.callbacks.run_now(self, f, super::callback::run_now) {
            Ok(()) => return registration((0, 0)),
            Err(f) => f,
        };
        let node = NodeRef::new_listed(Callback::new(f), super::callback::next_serial());
        let target = node.name();
        self.callbacks.push(node, Some(self));
        registration(target)
    }

    /// Detaches a callback: true if it will never run. Lock-free: pushes a
    /// tombstone; the next drain or compaction drops the closure unrun.
    pub(crate) fn remove_callback(&self, registration: Registration<T>) -> bool {
        // A future already done has won, even if its completer has not
        // sealed the callback list yet (waiters are woken first): the
        // callback will run.
        if registration.future != self.id
            || self.is_done()
            || !self.callbacks.push_tombstone(registration.target)
        {
            return false;
        }
        self.callbacks.note_removed(self);
        true
    }

    pub(crate) fn add_handle(&self) {
        // Relaxed: a new handle is made from an existing handle or from the
        // promise, both counted, so the count is above zero and cannot reach
        // one (the take condition) while the maker lives; no data is
        // published by counting.
        if self.handles.fetch_add(1, Ordering::Relaxed) == u32::MAX {
            // Four billion live handles: like `Arc`, refuse to wrap around.
            std::process::abort();
        }
    }

    pub(crate) fn drop_handle(&self) {
        // Release: this handle's reads of the value happen before a later
        // `take_outcome` that sees the decremented count (its Acquire).
        self.handles.fetch_sub(1, Ordering::Release);
    }

    /// Moves the outcome out if the caller holds the last handle. Callbacks
    /// may still be reading it: with `block`, waits for them; without,
    /// gives up. Only once done.
    pub(crate) fn take_outcome(&self, block: bool) -> Option<Result<T, TaskError>> {
        // Acquire: pairs with other handles' Release in `drop_handle`.
        if self.handles.load(Ordering::Acquire) != 1 {
            return None;
        }
        let quiet = if block {
            self.wait_quiescent()
        } else {
            self.callbacks.is_quiescent()
        };
        if !quiet {
            return None;
        }
        match self.phase() {
            // SAFETY: we hold the only handle and no promise is left to make
            // another, so no other thread can read the slot through a handle
            // or start a drain (attaching needs a handle), and the drain is
            // over (`is_quiescent`, Acquire): the slot is ours alone.
            Phase::Finished => self.slot.with_mut(|p| unsafe { (*p).take() }),
            _ => Some(Err(TaskError::Cancelled)),
        }
    }
}
