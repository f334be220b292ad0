//! One entry of a [`Stack`](super::stack::Stack): a type-erased header
//! followed by its payload, in one allocation.
//!
//! # Ownership
//! A node has at most two owners, counted in `refs`:
//! - the list, from the push until a drainer has run it or a compactor has
//!   unlinked it;
//! - optionally one outside holder (a [`Registration`](super::Registration),
//!   a blocked thread, an async waiter) that may remove it.
//!
//! Whoever drops the last reference frees the memory. Nobody else can reach
//! a node: pushers only read the head word, never a node, and a node's
//! `next` is only read by the one thread that owns the list's interior (see
//! `stack.rs`), so no reader can outlive an unlink and no deferred
//! reclamation scheme is needed.
//!
//! # Status
//! The payload has exactly one consumer, decided by one CAS on `status`:
//! `LIVE -> TAKEN` (a drainer will fire it) or `LIVE -> REMOVED` (the outside
//! holder discards it; it never fires). A list-owned node a tombstone names
//! is resolved by the interior owner alone: `LIVE -> REMOVED` with its
//! payload dropped at once by a drain, or `LIVE -> DOOMED -> REMOVED` by a
//! compaction, which drops the payload only after letting go of the list.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::blocks::{self, Home};
use crate::sync::{AtomicU8, Lifetime, Ordering, UnsafeCell};

/// Not yet consumed.
const LIVE: u8 = 0;
/// Claimed by a drainer, which fires the payload.
const TAKEN: u8 = 1;
/// Claimed by its outside holder (or removed by a tombstone); the payload
/// never fires.
const REMOVED: u8 = 2;
/// A removal request for an older node of the same list (see
/// [`NodeRef::tombstone`]); never fires.
const TOMBSTONE: u8 = 3;
/// Removed by a tombstone during a compaction, its payload not yet dropped:
/// the compactor drops it after letting go of the list (no user `Drop` runs
/// while it owns the interior). Never fires.
const DOOMED: u8 = 4;

/// What a node carries. `A` is what the stack's drainer passes in.
pub(crate) trait Payload<A>: Send + Sync {
    /// Consumes the payload. Called at most once, by the thread that won
    /// `LIVE -> TAKEN`. Does not unwind: a payload running user code
    /// catches its panics.
    ///
    /// # Safety
    /// The caller won the `TAKEN` claim and calls this once.
    unsafe fn fire(&self, arg: &A);

    /// Drops the payload without firing it. Called at most once, by the
    /// thread that won `LIVE -> REMOVED`.
    ///
    /// # Safety
    /// The caller won the `REMOVED` claim and calls this once.
    unsafe fn discard(&self);
}

/// What the type-erased entry point of a node is asked to do.
enum Op<'a, A> {
    Fire(&'a A),
    /// Fire, then free: a drain's common case, one indirect call.
    FireFree(&'a A),
    Discard,
    Free,
}

/// The one function pointer per node that knows its payload type.
type Dispatch<A> = unsafe fn(NonNull<Header<A>>, Op<'_, A>);

/// The payload of a tombstone: the address and serial of the node to remove.
struct Tombstone(usize, u64);

impl<A> Payload<A> for Tombstone {
    unsafe fn fire(&self, _: &A) {}
    unsafe fn discard(&self) {}
}

/// The type-erased start of every node.
#[repr(C)]
pub(crate) struct Header<A> {
    /// The next older node. Written by the pusher before the node is
    /// published, afterwards only by the thread owning the list interior.
    pub(super) next: UnsafeCell<*mut Header<A>>,
    status: AtomicU8,
    refs: AtomicU8,
    /// A serial number unique in the process (0 for waiter nodes): with the
    /// address it names a callback for removal, so a stale registration can
    /// never match a new node that reuses the address.
    serial: u64,
    dispatch: Dispatch<A>,
    /// Where the node's memory came from (see `blocks.rs`).
    home: Home,
    /// A node two holders may touch is freed by the last to let go: under
    /// loom each holder's accesses must happen before that free (empty
    /// otherwise).
    life: Lifetime,
}

#[repr(C)]
struct Node<A, P> {
    header: Header<A>,
    payload: P,
}

/// A pointer to a node with one reference owned by the holder.
pub(crate) struct NodeRef<A> {
    ptr: NonNull<Header<A>>,
    _owns: PhantomData<Header<A>>,
}

// SAFETY: a NodeRef only touches the node's atomics and, after winning a
// status claim, its payload, which is `Send + Sync` (required by `Payload`).
unsafe impl<A> Send for NodeRef<A> {}
// SAFETY: as above; shared access only reaches atomics.
unsafe impl<A> Sync for NodeRef<A> {}

/// The entry point of a `Node<A, P>`.
///
/// # Safety
/// `h` heads a live `Node<A, P>`. `Fire` needs the caller to hold the
/// `TAKEN` claim, `Discard` the `REMOVED` claim, each used once; `Free`
/// needs the last reference.
unsafe fn dispatch<A, P: Payload<A>>(h: NonNull<Header<A>>, op: Op<'_, A>) {
    let node = h.cast::<Node<A, P>>();
    match op {
        // SAFETY: `h` is the first field of a `repr(C)` `Node<A, P>`, so the
        // cast recovers the node; the claim makes this the only consumer.
        Op::Fire(arg) => unsafe { node.as_ref().payload.fire(arg) },
        // SAFETY: as for `Fire`, then as for `Free`. `fire` does not unwind
        // (payloads guard the user code they run), so the free is reached.
        Op::FireFree(arg) => unsafe {
            node.as_ref().payload.fire(arg);
            dispatch::<A, P>(h, Op::Free);
        },
        // SAFETY: as above.
        Op::Discard => unsafe { node.as_ref().payload.discard() },
        // SAFETY: by contract the node is ours to drop and free, and it was
        // made by `NodeRef::alloc` with this layout and the recorded home.
        Op::Free => unsafe {
            node.as_ref().header.life.end();
            let home = node.as_ref().header.home;
            std::ptr::drop_in_place(node.as_ptr());
            blocks::free(node.cast(), std::alloc::Layout::new::<Node<A, P>>(), home);
        },
    }
}

impl<A> NodeRef<A> {
    #[inline]
    fn alloc<P: Payload<A>>(payload: P, serial: u64, status: u8, refs: u8) -> NonNull<Header<A>> {
        let (memory, home) = blocks::alloc(std::alloc::Layout::new::<Node<A, P>>());
        let node = memory.cast::<Node<A, P>>();
        // A pusher's link to this node, once it heads a list, is made from
        // its address alone (`Stack::try_link`): it must find this
        // provenance. A no-op in the machine code.
        let _ = node.as_ptr().expose_provenance();
        // SAFETY: `blocks::alloc` returned memory fit for this layout.
        unsafe {
            node.as_ptr().write(Node {
                header: Header {
                    next: UnsafeCell::new(std::ptr::null_mut()),
                    status: AtomicU8::new(status),
                    refs: AtomicU8::new(refs),
                    serial,
                    dispatch: dispatch::<A, P>,
                    home,
                    life: Lifetime::new(),
                },
                payload,
            })
        };
        node.cast::<Header<A>>()
    }

    /// Allocates a node carrying `payload` with two references: one becomes
    /// the list's when it is pushed, the other stays with the caller (a
    /// waiter that may withdraw it). A node never pushed is freed by
    /// dropping both.
    pub(crate) fn new<P: Payload<A>>(payload: P) -> (NodeRef<A>, NodeRef<A>) {
        let ptr = Self::alloc(payload, 0, LIVE, 2);
        let a = NodeRef {
            ptr,
            _owns: PhantomData,
        };
        let b = NodeRef {
            ptr,
            _owns: PhantomData,
        };
        (a, b)
    }

    /// Allocates a node owned by the list alone (a done-callback: it is
    /// removed by a tombstone, never through a reference of its own, so
    /// attaching and draining it need no reference counting).
    pub(crate) fn new_listed<P: Payload<A>>(payload: P, serial: u64) -> NodeRef<A> {
        NodeRef {
            ptr: Self::alloc(payload, serial, LIVE, 1),
            _owns: PhantomData,
        }
    }

    /// A tombstone: asks the thread that next owns the list interior to
    /// remove the older node at address `target` with serial `serial`.
    pub(crate) fn tombstone(target: usize, serial: u64) -> NodeRef<A> {
        NodeRef {
            ptr: Self::alloc(Tombstone(target, serial), 0, TOMBSTONE, 1),
            _owns: PhantomData,
        }
    }

    /// The node's address and serial, as a tombstone names it.
    pub(crate) fn name(&self) -> (usize, u64) {
        (self.ptr.as_ptr().addr(), self.header().serial)
    }

    /// The target of a tombstone not yet resolved, if this is one. Only the
    /// list interior's owner calls this (it alone resolves tombstones).
    pub(crate) fn tombstone_target(&self) -> Option<(usize, u64)> {
        // Relaxed: a tombstone's status is set at its allocation and changed
        // only by the interior owner, which this caller is; the push that
        // published it (Release/Acquire on the head word) ordered the rest.
        if self.header().status.load(Ordering::Relaxed) != TOMBSTONE {
            return None;
        }
        // SAFETY: only tombstones carry the TOMBSTONE status, and they are
        // made with a `Tombstone` payload.
        let t = unsafe { self.payload::<Tombstone>() };
        Some((t.0, t.1))
    }

    /// Marks a node resolved by the interior owner: a tombstone that was
    /// matched, or a listed node a tombstone removes: its payload is dropped
    /// now (`defer` false: a drain, which runs user code anyway) or marked
    /// [`DOOMED`] for [`NodeRef::discard_if_doomed`] once the owner has let
    /// go (`defer` true: a compaction). Never fired either way. Only on
    /// list-owned nodes, by the interior owner.
    pub(crate) fn remove_by_owner(&self, defer: bool) {
        // Relaxed stores: the interior owner is the only thread that can
        // claim a list-owned node.
        match self.header().status.load(Ordering::Relaxed) {
            LIVE if defer => self.header().status.store(DOOMED, Ordering::Relaxed),
            LIVE => {
                self.header().status.store(REMOVED, Ordering::Relaxed);
                // SAFETY: LIVE and list-owned: this thread is its only consumer.
                unsafe { self.discard() };
            }
            TOMBSTONE => self.header().status.store(REMOVED, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Drops the payload of a node a compaction doomed (and unlinked); the
    /// caller holds the list's reference to it, the only one.
    pub(crate) fn discard_if_doomed(&self) {
        // Relaxed: the compactor set DOOMED itself, on this thread.
        if self.header().status.load(Ordering::Relaxed) == DOOMED {
            self.header().status.store(REMOVED, Ordering::Relaxed);
            // SAFETY: DOOMED nodes are list-owned and unlinked: the caller
            // holds the only reference, and DOOMED -> REMOVED happens once.
            unsafe { self.discard() };
        }
    }

    /// Gives up this reference as a raw pointer (the list's reference).
    pub(crate) fn into_raw(self) -> *mut Header<A> {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }

    /// Takes back a reference given up by [`NodeRef::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `into_raw` and that reference was not taken back.
    pub(crate) unsafe fn from_raw(ptr: *mut Header<A>) -> NodeRef<A> {
        NodeRef {
            // SAFETY: `into_raw` only hands out non-null pointers.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _owns: PhantomData,
        }
    }

    fn header(&self) -> &Header<A> {
        // SAFETY: we own a reference, so the node is allocated.
        unsafe { self.ptr.as_ref() }
    }

    /// Whether this is the only reference left: nobody else can claim or
    /// free the node (there is no way to make a new reference).
    fn is_sole(&self) -> bool {
        // Acquire: pairs with the other holder's Release in `drop`, so what
        // it did to the node happens before what we do next.
        self.header().refs.load(Ordering::Acquire) == 1
    }

    /// Claims the payload for firing while another holder may remove it.
    /// Returns false if it was removed.
    fn try_take(&self) -> bool {
        // Relaxed: the claim only needs the atomicity of one RMW on one word;
        // the payload itself was published by the push (Release/Acquire on
        // the head word) or created by this thread.
        self.header()
            .status
            .compare_exchange(LIVE, TAKEN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Claims the payload for removal. Returns false if a drainer took it.
    pub(crate) fn try_remove(&self) -> bool {
        // Relaxed: as in `try_take`; the holder created the payload or
        // received the reference through a happens-before edge.
        self.header()
            .status
            .compare_exchange(LIVE, REMOVED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the node was removed, by its holder or a tombstone
    /// (compaction unlinks it).
    pub(crate) fn is_removed(&self) -> bool {
        // Relaxed: a stale LIVE only delays the unlink to a later pass.
        matches!(
            self.header().status.load(Ordering::Relaxed),
            REMOVED | DOOMED
        )
    }

    /// Fires the payload unless its holder removed it, then gives up this
    /// reference: what a drain does with each node it takes.
    pub(crate) fn run(self, arg: &A) {
        // The common case: the registration was dropped, so no one can
        // remove the node and no claim is needed. A removed node keeps its
        // remover's reference until the removal is done, so it is never sole
        // while it could still be claimed.
        if self.is_sole() {
            // Fire and free in one call.
            let ptr = self.ptr;
            // Relaxed: the status was last written by this thread or before
            // the other holder's Release drop (which `is_sole` acquired).
            let live = self.header().status.load(Ordering::Relaxed) == LIVE;
            std::mem::forget(self);
            let op = if live { Op::FireFree(arg) } else { Op::Free };
            // SAFETY: we held the last reference (given up by the forget),
            // and a LIVE sole node is ours to fire.
            return unsafe { ((*ptr.as_ptr()).dispatch)(ptr, op) };
        }
        if self.try_take() {
            // SAFETY: we won the TAKEN claim just now.
            unsafe { (self.header().dispatch)(self.ptr, Op::Fire(arg)) }
        }
    }

    /// Drops the payload without firing it.
    ///
    /// # Safety
    /// The caller won [`NodeRef::try_remove`] (or owns the node alone) and
    /// calls this once.
    pub(crate) unsafe fn discard(&self) {
        // SAFETY: forwarded contract.
        unsafe { (self.header().dispatch)(self.ptr, Op::Discard) }
    }

    /// Shared access to the payload.
    ///
    /// # Safety
    /// `P` is the payload type the node was created with.
    pub(crate) unsafe fn payload<P>(&self) -> &P {
        // SAFETY: the node is a `repr(C)` `Node<A, P>` (contract) kept alive
        // by our reference.
        unsafe { &self.ptr.cast::<Node<A, P>>().as_ref().payload }
    }
}

impl<A> Drop for NodeRef<A> {
    fn drop(&mut self) {
        // The last reference frees without an RMW (see `is_sole`).
        // Otherwise, Release: our accesses to the node happen before the
        // free; the thread that drops the last reference acquires them.
        if self.is_sole() || {
            // What this holder did to the node, as loom sees it: the free
            // by the other must come after it.
            self.header().life.touch();
            self.header().refs.fetch_sub(1, Ordering::Release) == 1
        } {
            // Acquire: pairs with the other holder's Release decrement. A
            // load rather than a fence, which ThreadSanitizer cannot see.
            self.header().refs.load(Ordering::Acquire);
            // SAFETY: the count reached zero: this was the last reference.
            unsafe { (self.header().dispatch)(self.ptr, Op::Free) }
        }
    }
}
