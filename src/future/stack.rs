//! The sealed Treiber stack behind a future's callbacks and waiters.
//!
//! One word, `head`, holds the newest node's address and two tag bits:
//!
//! | head                | meaning                                                    |
//! |---------------------|------------------------------------------------------------|
//! | `ptr`               | pending; `ptr` is the newest node (newest first)           |
//! | `ptr \| BUSY`       | pending; a compactor owns the list below `ptr`             |
//! | `ptr \| DONE\|BUSY` | complete; one thread owns the drain, `ptr` = late arrivals |
//! | `DONE`              | complete, nobody draining, nothing queued                  |
//!
//! Who may do what:
//! - **push** (any thread): one CAS that keeps the tag. On `DONE` a pusher
//!   either claims the drain (`DONE -> DONE|BUSY`, callbacks: it runs its own
//!   node first) or is told the stack is closed (waiters).
//! - **complete** (once, the completing thread): sets `DONE|BUSY`. If `BUSY`
//!   was already set a compactor owns the interior and drains when it lets go.
//! - **drain** (the `BUSY` owner, once `DONE`): swap the list out, reverse it,
//!   run it oldest first; repeat until a CAS `DONE|BUSY -> DONE` succeeds on
//!   an empty list. That CAS is the only way back to `DONE`, so no node can
//!   land on a list nobody will read again.
//! - **compact** (pending, whoever wins `ptr -> ptr|BUSY`): unlink removed
//!   nodes below `ptr`, which pushers never touch.
//!
//! Because exactly one thread holds `BUSY`, node interiors (`next`) have one
//! writer and one reader at a time, callbacks never overlap, and batches
//! taken later hold only nodes pushed after earlier batches were taken: with
//! each batch reversed, that is registration order.

use std::marker::PhantomData;

use super::node::{Header, NodeRef};
use crate::sync::{AtomicPtr, AtomicU32, Ordering};

/// The future is complete; set once, never cleared.
const DONE: usize = 0b01;
/// One thread owns the list interior (draining or compacting).
const BUSY: usize = 0b10;
const TAGS: usize = DONE | BUSY;

/// Removed-but-linked nodes tolerated before a removal compacts the list
/// (1 under loom, so the models exercise compaction).
const MIN_GARBAGE: u32 = if cfg!(loom) { 1 } else { 16 };

/// What [`Stack::push`] did with the node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Linked; a drainer will fire it (or its holder removes it).
    Queued,
    /// The stack was idle and complete: the node fired on this thread,
    /// followed by everything pushed meanwhile.
    RanInline,
    /// The stack was complete and the caller asked not to drain: nothing
    /// was linked.
    Closed,
}

/// A sealed Treiber stack of [`NodeRef`]s; see the module docs.
pub(crate) struct Stack<A> {
    head: AtomicPtr<Header<A>>,
    /// Removed nodes still linked (approximate; only steers compaction).
    /// 32 bits keep a future small; a wrap only mistimes one compaction.
    garbage: AtomicU32,
    /// Garbage level that triggers compaction: at least the live count of
    /// the last pass, so compaction costs O(1) amortised per removal.
    threshold: AtomicU32,
    _nodes: PhantomData<NodeRef<A>>,
}

fn tags<A>(p: *mut Header<A>) -> usize {
    p.addr() & TAGS
}

fn untag<A>(p: *mut Header<A>) -> *mut Header<A> {
    p.map_addr(|a| a & !TAGS)
}

fn tagged<A>(p: *mut Header<A>, t: usize) -> *mut Header<A> {
    p.map_addr(|a| a | t)
}

fn done_idle<A>() -> *mut Header<A> {
    std::ptr::without_provenance_mut(DONE)
}

fn done_busy<A>() -> *mut Header<A> {
    std::ptr::without_provenance_mut(DONE | BUSY)
}

/// Reads a node's `next`.
///
/// # Safety
/// The caller owns the interior of the list holding `node` (or the node is
/// not published) and `node` is live.
unsafe fn next_of<A>(node: *mut Header<A>) -> *mut Header<A> {
    // SAFETY: by contract no other thread writes `next` now.
    unsafe { (*node).next.with(|p| *p) }
}

/// Writes a node's `next`. Same contract as [`next_of`].
unsafe fn set_next<A>(node: *mut Header<A>, next: *mut Header<A>) {
    // SAFETY: by contract no other thread reads or writes `next` now.
    unsafe { (*node).next.with_mut(|p| *p = next) }
}

/// Exponential spin back-off for a contended CAS.
#[derive(Default)]
#[cfg_attr(loom, allow(dead_code))]
struct Backoff(u32);

impl Backoff {
    #[cfg(not(loom))]
    fn snooze(&mut self) {
        for _ in 0..1u32 << self.0 {
            crate::sync::spin_hint();
        }
        self.0 = (self.0 + 1).min(6);
    }

    /// Under loom one yield is enough, and keeps the models small.
    #[cfg(loom)]
    fn snooze(&mut self) {
        crate::sync::spin_hint();
    }
}

impl<A> Stack<A> {
    /// An empty, pending stack.
    pub(crate) fn new() -> Self {
        Stack {
            head: AtomicPtr::new(std::ptr::null_mut()),
            garbage: AtomicU32::new(0),
            threshold: AtomicU32::new(MIN_GARBAGE),
            _nodes: PhantomData,
        }
    }

    /// Identity stored in nodes made for this stack.
    pub(crate) fn id(&self) -> *const () {
        (self as *const Self).cast()
    }

    /// Whether the stack is complete and no drain is running or pending.
    pub(crate) fn is_quiescent(&self) -> bool {
        // Acquire: pairs with the drainer's Release CAS to `DONE`, so what
        // the callbacks did happens before the caller's next step.
        self.head.load(Ordering::Acquire) == done_idle()
    }

    /// Pushes `node` (the list's reference). With `drain_arg`, a push onto
    /// an idle complete stack claims the drain and fires the node inline;
    /// without, it returns [`Pushed::Closed`] and drops the node.
    pub(crate) fn push(&self, node: NodeRef<A>, drain_arg: Option<&A>) -> Pushed {
        let node = node.into_raw();
        let mut backoff = Backoff::default();
        // Relaxed: the head's address is only compared and stored into our
        // node, never dereferenced here.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if head == done_idle() {
                // SAFETY: never published: the list reference is ours.
                match self.push_on_done(unsafe { NodeRef::from_raw(node) }, drain_arg) {
                    Ok(pushed) => return pushed,
                    Err(()) => {
                        // Relaxed: only an address to link and compare;
                        // the CAS in `try_link` decides.
                        head = self.head.load(Ordering::Relaxed);
                        continue;
                    }
                }
            }
            match self.try_link(node, head, &mut backoff) {
                Ok(()) => return Pushed::Queued,
                Err(actual) => head = actual,
            }
        }
    }

    /// A push that found the stack idle and complete: runs the node with no
    /// list (claiming the drain), or closes. `Err` if a drain started
    /// meanwhile: link it after all. Out of line, so a push onto a pending
    /// stack stays small (callgrind: about 20 instructions per attach).
    #[cold]
    #[inline(never)]
    fn push_on_done(&self, node: NodeRef<A>, drain_arg: Option<&A>) -> Result<Pushed, ()> {
        let Some(arg) = drain_arg else {
            // Acquire: the caller treats Closed as "done" and reads the
            // outcome next; pairs with the drainer's Release CAS to DONE,
            // which follows the completer's publish. (A load, not a fence:
            // ThreadSanitizer cannot see fences.)
            self.head.load(Ordering::Acquire);
            drop(node);
            return Ok(Pushed::Closed);
        };
        match self.run_now(arg, node, |node, arg| node.run(arg)) {
            Ok(()) => Ok(Pushed::RanInline),
            Err(node) => {
                // Leaked back to the caller's raw pointer, which it links.
                let _ = node.into_raw();
                Err(())
            }
        }
    }

    /// Links the unpublished `node` on top of `head`, keeping the tags: one
    /// CAS. On failure returns the current head, after backing off.
    fn try_link(
        &self,
        node: *mut Header<A>,
        head: *mut Header<A>,
        backoff: &mut Backoff,
    ) -> Result<(), *mut Header<A>> {
        // The link names the node at the head's address when the CAS
        // succeeds, which may not be the node `head` was loaded from: that
        // one may have been freed and its address reused by a node pushed
        // since (ABA, harmless to the list's shape: design.md,
        // "Reclamation"). The CAS compares addresses only, so the link
        // takes the address with the provenance every node exposes at its
        // allocation (`NodeRef::alloc`), not the stale load's, which would
        // make a later read through it a use of a freed allocation (to
        // Miri; machines see the same address either way).
        let next = std::ptr::with_exposed_provenance_mut(untag(head).addr());
        // SAFETY: the node is not yet published: only we access it.
        unsafe { set_next(node, next) };
        // Release: publishes the node's fields to the thread that takes
        // the list (Acquire swap in `drain`, Acquire CAS in `compact`).
        match self.head.compare_exchange_weak(
            head,
            tagged(node, tags(head)),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(actual) => {
                // Contended: back off so the winner's line settles instead
                // of every pusher bouncing it (exponential, capped; no
                // effect without contention).
                backoff.snooze();
                Err(actual)
            }
        }
    }

    /// Asks for the removal of the node at `target` (pushed on this stack and
    /// owned by the list alone) by pushing a tombstone: lock-free, one CAS.
    /// Returns false, pushing nothing, once the stack is complete: the node
    /// then runs (or ran). The next drain or compaction resolves the request
    /// and drops the node's payload unfired.
    pub(crate) fn push_tombstone(&self, target: (usize, u64)) -> bool {
        let node = NodeRef::<A>::tombstone(target.0, target.1).into_raw();
        let mut backoff = Backoff::default();
        // Relaxed: only compared and stored into our node.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if tags(head) & DONE != 0 {
                // SAFETY: never published: the reference is ours.
                drop(unsafe { NodeRef::from_raw(node) });
                return false;
            }
            match self.try_link(node, head, &mut backoff) {
                Ok(()) => return true,
                Err(actual) => head = actual,
            }
        }
    }

    /// Seals the stack and runs everything on it, oldest first, unless a
    /// compactor owns the interior (it drains when it lets go). Called once.
    pub(crate) fn complete(&self, arg: &A) {
        // Relaxed: a first guess for the CAS below, which decides.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(tags(head) & DONE, 0, "complete called twice");
            if head.is_null() {
                // Nothing attached, nobody compacting: seal straight to idle
                // DONE, one CAS instead of claim, swap and release.
                // Release: publishes the outcome to the next drain claimer
                // (its Acquire CAS on DONE) and to `is_quiescent`.
                match self.head.compare_exchange_weak(
                    head,
                    done_idle(),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(actual) => {
                        head = actual;
                        continue;
                    }
                }
            }
            // AcqRel: Release publishes the outcome written before this call
            // to a compactor that finds DONE when it lets go (its Acquire);
            // Acquire pairs with pushes so the drain below sees the nodes.
            match self.head.compare_exchange_weak(
                head,
                tagged(head, DONE | BUSY),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if tags(head) & BUSY != 0 => return,
                Ok(_) => return self.drain(arg),
                Err(actual) => head = actual,
            }
        }
    }

    /// Whether the calling thread is draining this stack right now (it is
    /// inside one of its callbacks): waiting for the drain to end would wait
    /// on itself.
    pub(crate) fn draining_here(&self) -> bool {
        let id = self.id().addr();
        DRAINING.with(|top| {
            let mut frame = top.get();
            while frame != 0 {
                // SAFETY: frames are pushed by `drain` on this thread's stack
                // and popped before that `drain` returns or unwinds.
                let f = unsafe { &*(frame as *const DrainFrame) };
                if f.stack == id {
                    return true;
                }
                frame = f.prev;
            }
            false
        })
    }

    /// If the stack is complete and nobody is draining it, claims the drain
    /// and calls `run(item, arg)` as its oldest entry, then runs whatever
    /// was pushed meanwhile; otherwise hands `item` back. Lets a callback
    /// attached after completion run with no node at all.
    #[inline]
    pub(crate) fn run_now<I>(&self, arg: &A, item: I, run: impl FnOnce(I, &A)) -> Result<(), I> {
        // Relaxed: only a hint; the CAS in `claim_and_run` decides.
        if self.head.load(Ordering::Relaxed) != done_idle() {
            return Err(item);
        }
        self.claim_and_run(arg, item, run)
    }

    /// The rest of [`Stack::run_now`], out of line: an attach to a pending
    /// future pays only the load above (callgrind: 18 instructions less).
    #[cold]
    #[inline(never)]
    fn claim_and_run<I>(&self, arg: &A, item: I, run: impl FnOnce(I, &A)) -> Result<(), I> {
        // Acquire: pairs with the last drainer's Release (and through it
        // the completer's), so the outcome and the effects of earlier
        // callbacks are visible before `run`.
        match self.head.compare_exchange(
            done_idle(),
            done_busy(),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                self.drain_after(arg, move || run(item, arg));
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// Runs batches until the list is empty and `DONE` is restored.
    /// The caller holds `BUSY` and `DONE` is set.
    fn drain(&self, arg: &A) {
        self.drain_after(arg, || {});
    }

    /// [`Stack::drain`], running `first` before the first batch, inside the
    /// drain (so a wait it makes on this stack knows it would wait on
    /// itself). `first` does not unwind (it runs guarded user code).
    fn drain_after(&self, arg: &A, first: impl FnOnce()) {
        let frame = DrainFrame::new(self.id().addr());
        let _inside = frame.enter();
        first();
        loop {
            // Acquire: pairs with the Release of the pushes we take.
            let head = self.head.swap(done_busy(), Ordering::Acquire);
            let mut newest = untag(head);
            if newest.is_null() {
                // Release: publishes the callbacks' effects to the next thread
                // that claims the drain (its Acquire CAS on `DONE`).
                match self.head.compare_exchange(
                    done_busy(),
                    done_idle(),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(_) => continue,
                }
            }
            // Reverse the batch in place so it runs oldest first, resolving
            // removal requests on the way (a tombstone is newer than its
            // target, so walking newest first meets it first).
            let mut oldest = std::ptr::null_mut();
            let mut removals = Removals::resolving_now();
            while !newest.is_null() {
                // SAFETY: we hold BUSY and swapped this batch out of the head:
                // no other thread can reach these nodes' `next`.
                let next = unsafe { next_of(newest) };
                removals.visit(newest);
                // SAFETY: as above.
                unsafe { set_next(newest, oldest) };
                oldest = newest;
                newest = next;
            }
            while !oldest.is_null() {
                // SAFETY: as above; read before the node can be freed.
                let next = unsafe { next_of(oldest) };
                // SAFETY: the list's reference, handed back by the swap.
                unsafe { NodeRef::from_raw(oldest) }.run(arg);
                oldest = next;
            }
        }
    }

    /// Notes that a linked node was removed by its holder and compacts the
    /// list once enough garbage has built up. `drain_arg` is needed in case
    /// the future completes meanwhile: the compactor then owns the drain.
    pub(crate) fn note_removed(&self, drain_arg: &A) {
        // Relaxed: a steering counter; its exact value is never relied on.
        let garbage = self.garbage.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if garbage >= self.threshold.load(Ordering::Relaxed) {
            self.compact(drain_arg);
        }
    }

    /// Unlinks removed nodes below the newest one, if no other thread owns
    /// the interior and the stack is still pending.
    fn compact(&self, drain_arg: &A) {
        // Acquire: pairs with the pushes' Release so the nodes' `next` are
        // visible, and with the last compactor's Release of BUSY.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            if tags(head) != 0 || head.is_null() {
                return; // busy or complete: the owner sweeps; or nothing to do
            }
            match self.head.compare_exchange_weak(
                head,
                tagged(head, BUSY),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => head = actual,
            }
        }
        let top = head;
        let (mut unlinked, mut live) = (0u32, 1u32);
        // No user code runs while we own the interior: removed payloads are
        // dropped, and unlinked nodes freed, after we let go.
        let mut removals = Removals::deferring();
        let mut garbage: *mut Header<A> = std::ptr::null_mut();
        // The newest node stays linked (pushers may be linking above it),
        // but a tombstone there is resolved like any other.
        removals.visit(top);
        let mut prev = top;
        // SAFETY: we hold BUSY; nodes below `top` are reachable only through
        // it and pushers never write an existing node's `next`.
        let mut cur = unsafe { next_of(top) };
        while !cur.is_null() {
            // SAFETY: as above.
            let next = unsafe { next_of(cur) };
            removals.visit(cur);
            // SAFETY: `cur` is linked, so the list still owns a reference.
            let node = unsafe { NodeRef::from_raw(cur) };
            if node.is_removed() {
                // SAFETY: as above; `prev` is live and below-or-at `top`.
                unsafe { set_next(prev, next) };
                // Unlinked: nobody else reads its `next` now (an outside
                // holder never does), so it threads our garbage list. The
                // list's reference goes with it.
                let node = node.into_raw();
                // SAFETY: as above.
                unsafe { set_next(node, garbage) };
                garbage = node;
                unlinked = unlinked.saturating_add(1);
            } else {
                let _ = node.into_raw(); // stays linked: keep the list's reference
                prev = cur;
                live = live.saturating_add(1);
            }
            cur = next;
        }
        // Relaxed: steering counts only (when to compact next), ordered
        // with nothing.
        let _ = self
            .garbage
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |g| {
                Some(g.saturating_sub(unlinked))
            });
        self.threshold
            .store(live.max(MIN_GARBAGE), Ordering::Relaxed);
        self.release_busy(drain_arg);
        while !garbage.is_null() {
            // SAFETY: unlinked above; the garbage list is ours alone.
            let next = unsafe { next_of(garbage) };
            // SAFETY: the list's reference, moved onto the garbage list.
            let node = unsafe { NodeRef::from_raw(garbage) };
            // Payload drops are guarded by the payloads themselves
            // (callbacks and relays), so none unwinds out of here.
            node.discard_if_doomed();
            drop(node);
            garbage = next;
        }
    }

    /// Lets go of a pending-time `BUSY`; if the future completed meanwhile,
    /// drains instead (the completer left that to us).
    fn release_busy(&self, drain_arg: &A) {
        // Relaxed: a first guess for the CASes below, which decide.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if tags(head) & DONE != 0 {
                // Acquire: pairs with the completer's AcqRel CAS, making the
                // outcome visible before we run callbacks (a load, not a
                // fence, so ThreadSanitizer sees it).
                self.head.load(Ordering::Acquire);
                return self.drain(drain_arg);
            }
            // Release: publishes our `next` edits to the next interior owner.
            match self.head.compare_exchange_weak(
                head,
                untag(head),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    /// The innermost drain running on this thread (a `DrainFrame` address,
    /// 0 for none); a callback that completes another future nests drains.
    static DRAINING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(loom)]
loom::thread_local! {
    /// As above, per loom thread.
    static DRAINING: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// One drain in progress on this thread, linked to the one it runs inside.
struct DrainFrame {
    stack: usize,
    prev: usize,
}

/// Pops its frame when the drain ends, or unwinds.
struct DrainGuard<'a>(&'a DrainFrame);

impl DrainFrame {
    fn new(stack: usize) -> Self {
        DrainFrame {
            stack,
            prev: DRAINING.with(|top| top.get()),
        }
    }

    /// Makes this frame (on the drainer's stack) the innermost one.
    fn enter(&self) -> DrainGuard<'_> {
        DRAINING.with(|top| top.set(self as *const DrainFrame as usize));
        DrainGuard(self)
    }
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        let prev = self.0.prev;
        DRAINING.with(|top| top.set(prev));
    }
}

/// Removal requests met while walking a list newest first. Tombstones are
/// rare, so this allocates only when one is met.
struct Removals {
    targets: Vec<(usize, u64)>,
    /// Mark targets doomed instead of dropping their payloads now.
    defer: bool,
}

impl Removals {
    /// For a drain: a removed payload is dropped at once.
    fn resolving_now() -> Self {
        Removals {
            targets: Vec::new(),
            defer: false,
        }
    }

    /// For a compaction: removed payloads are dropped after it lets go.
    fn deferring() -> Self {
        Removals {
            targets: Vec::new(),
            defer: true,
        }
    }

    /// Looks at `node` (the caller owns the list interior): a tombstone is
    /// recorded and marked resolved; the target of a recorded tombstone is
    /// removed (its payload dropped, never fired).
    fn visit<A>(&mut self, node: *mut Header<A>) {
        // SAFETY: the caller owns the interior, so the node is linked and the
        // list's reference keeps it alive; we only borrow it here.
        let node = std::mem::ManuallyDrop::new(unsafe { NodeRef::from_raw(node) });
        if let Some(target) = node.tombstone_target() {
            self.targets.push(target);
            node.remove_by_owner(self.defer);
        } else if !self.targets.is_empty()
            && let Some(i) = self.targets.iter().position(|&t| t == node.name())
        {
            self.targets.swap_remove(i);
            node.remove_by_owner(self.defer);
        }
    }
}

impl<A> Drop for Stack<A> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can touch the list any more. Nodes
        // left here were never fired (the future was dropped without
        // completing): discard their payloads.
        let mut cur = untag(self.head.load(Ordering::Relaxed));
        while !cur.is_null() {
            // SAFETY: exclusive access (see above).
            let next = unsafe { next_of(cur) };
            // SAFETY: linked nodes carry the list's reference.
            let node = unsafe { NodeRef::from_raw(cur) };
            if node.try_remove() {
                // SAFETY: we won the REMOVED claim just now.
                unsafe { node.discard() };
            }
            // (No linked node is DOOMED: a compaction unlinks every node it
            // dooms in the same pass.)
            cur = next;
        }
    }
}
