//! Memory for stack nodes and fire-and-forget tasks: per-thread caches of
//! fixed-size blocks, carved from slabs.
//!
//! A done-callback costs one node, and the global allocator used to be most
//! of what attaching and draining one cost (about 170 instructions of
//! `malloc` and 110 of `free` per node, against under 100 of our own). A
//! spawned task is one allocation too, often freed on another thread than
//! the one that made it, which `malloc`'s thread cache cannot serve. So
//! nodes and tasks ([`BlockBox`]) of up to [`MAX_BLOCK`] bytes come from
//! here instead:
//!
//! - **Size classes** of 16-byte steps. A thread keeps, per class, a list of
//!   free blocks (intrusive: a free block holds the next free block and its
//!   slab) and the slab it is carving. Allocating pops the list, else carves
//!   the next block of the slab, else makes a new slab: one global
//!   allocation per [`SLAB_BLOCKS`] nodes.
//! - **Freeing** pushes the block on the freeing thread's list (any thread:
//!   a slab is not tied to the thread that made it), unless that would make
//!   more than [`LIST_SLABS`] *runs* (blocks of one slab in a row) on the
//!   list; then the block goes back to its slab. Runs bound the slabs the
//!   list holds blocks of, and cost two compares per push and one per pop
//!   (a table of slabs and counts cost 20 instructions per attach).
//! - **A slab** counts the blocks not yet given back (`live`). Giving one
//!   back decrements it; the thread that takes it to zero frees the slab.
//!   That count is the only shared state here: an `Arc`-style release
//!   protocol, modelled by loom (`slab_is_freed_once_by_the_last_giver`).
//! - **A thread that exits** gives back every block on its lists and the
//!   blocks it never carved. After that (a node dropped by another
//!   thread-local's destructor) blocks go straight back to their slabs and
//!   new nodes come from the global allocator.
//!
//! Bounds: a slab stays allocated while any of its blocks is in use or
//! cached, so a cached block pins its whole slab. The bound is therefore on
//! slabs, not blocks: a thread's list for one class holds blocks of at most
//! [`LIST_SLABS`] slabs, and it carves one more, so an idle thread pins at
//! most `LIST_SLABS + 1` slabs per class: 46,720 bytes over all eight
//! classes, whatever pattern of frees filled its lists (a bound on blocks
//! let one block per slab pin 264 KiB in one class). A live node pins
//! its own slab (`SLAB_BLOCKS` blocks' worth at most), as any allocator's
//! page would.
//!
//! Under `cfg(loom)` nodes come from the global allocator (the models check
//! the stacks' protocols, not this memory); under `cfg(concurrent_futures_no_node_cache)`
//! too, so AddressSanitizer and Miri see every node freed at once and can
//! flag a use after free that a cached block would hide. With the cache on,
//! a free block is still allocated memory to the allocator, so under
//! `cfg(concurrent_futures_asan)` (set by CI's AddressSanitizer step with
//! the cache on) every block that is not in use is *poisoned*: uncarved,
//! listed, or given back to a slab that lives on. A node used after it was
//! freed then trips AddressSanitizer just as a freed allocation would.

// Without the cache only the slab model and the pass-through are used.
#![cfg_attr(any(loom, concurrent_futures_no_node_cache), allow(dead_code))]

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::sync::{AtomicUsize, Ordering};

/// Block sizes are multiples of this (and blocks aligned to it).
const GRAIN: usize = 16;
/// The largest block; larger nodes use the global allocator directly.
const MAX_BLOCK: usize = 128;
const CLASSES: usize = MAX_BLOCK / GRAIN;
/// Blocks per slab: one global allocation serves this many nodes.
const SLAB_BLOCKS: usize = 16;
/// Slabs whose blocks one class's free list may hold (the memory bound).
const LIST_SLABS: usize = 4;

/// Marks `len` bytes at `p` as not to be touched (AddressSanitizer's manual
/// poisoning; nothing without `cfg(concurrent_futures_asan)`).
#[inline(always)]
fn poison(p: *const u8, len: usize) {
    #[cfg(concurrent_futures_asan)]
    // SAFETY: only marks shadow memory of bytes inside one of our slabs.
    unsafe {
        asan::__asan_poison_memory_region(p.cast(), len)
    };
    let _ = (p, len);
}

/// Undoes [`poison`] before the crate itself touches the bytes.
#[inline(always)]
fn unpoison(p: *const u8, len: usize) {
    #[cfg(concurrent_futures_asan)]
    // SAFETY: as in `poison`.
    unsafe {
        asan::__asan_unpoison_memory_region(p.cast(), len)
    };
    let _ = (p, len);
}

#[cfg(concurrent_futures_asan)]
mod asan {
    unsafe extern "C" {
        pub(super) fn __asan_poison_memory_region(addr: *const std::ffi::c_void, size: usize);
        pub(super) fn __asan_unpoison_memory_region(addr: *const std::ffi::c_void, size: usize);
    }
}

/// Where a block's memory came from, recorded in its node: a slab, or (null)
/// the global allocator.
#[derive(Clone, Copy)]
pub(crate) struct Home(*const Slab);

/// The head of a slab; its blocks follow, `GRAIN`-aligned.
#[repr(C, align(16))]
pub(crate) struct Slab {
    /// Blocks not yet given back (in use, cached, or not carved yet).
    live: AtomicUsize,
    /// The block size and count, which fix the slab's layout.
    block: u32,
    blocks: u32,
    /// Under loom, checks that every giver's use happens before the free
    /// (zero-sized otherwise: the head stays 16 bytes).
    lifetime: crate::sync::Lifetime,
}

impl Slab {
    fn layout(block: usize, blocks: usize) -> Layout {
        // Cannot fail: at most 16 + 16 * 128 bytes, aligned to 16.
        Layout::from_size_align(size_of::<Slab>() + block * blocks, GRAIN)
            .unwrap_or_else(|_| unreachable!())
    }

    /// A new slab of `blocks` blocks of `block` bytes, all counted live.
    pub(crate) fn create(block: usize, blocks: usize) -> NonNull<Slab> {
        let layout = Self::layout(block, blocks);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { crate::sync::alloc(layout) };
        let Some(p) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        let slab = p.cast::<Slab>();
        // SAFETY: freshly allocated, aligned for `Slab`, large enough. The
        // casts are lossless: both are at most a few hundred.
        unsafe {
            slab.as_ptr().write(Slab {
                live: AtomicUsize::new(blocks),
                block: block as u32,
                blocks: blocks as u32,
                lifetime: crate::sync::Lifetime::new(),
            })
        };
        // SAFETY: the blocks follow the head inside the allocation.
        poison(unsafe { p.as_ptr().add(size_of::<Slab>()) }, block * blocks);
        slab
    }

    /// The `i`th block of `slab`.
    ///
    /// # Safety
    /// `slab` is live and `i` is below its block count.
    pub(crate) unsafe fn block(slab: NonNull<Slab>, i: usize) -> NonNull<u8> {
        // SAFETY: the offset stays inside the slab's allocation (contract).
        unsafe {
            let block = slab.as_ref().block as usize;
            slab.cast::<u8>().add(size_of::<Slab>() + i * block)
        }
    }

    /// Gives `n` blocks back to `slab`; the giver that brings the count to
    /// zero frees it.
    ///
    /// # Safety
    /// The caller owns `n` of the slab's live blocks and touches none of
    /// them again.
    pub(crate) unsafe fn give_back(slab: *const Slab, n: usize) {
        // SAFETY: the caller's blocks keep the slab allocated.
        let s = unsafe { &*slab };
        s.lifetime.touch(); // our last use of the slab's blocks
        // Release: our uses of the blocks happen before the free; pairs with
        // the Acquire load of the giver that frees (as `Arc` does).
        if s.live.fetch_sub(n, Ordering::Release) != n {
            return;
        }
        // Acquire: pairs with every other giver's Release. A load rather
        // than a fence, which ThreadSanitizer cannot see.
        s.live.load(Ordering::Acquire);
        s.lifetime.end();
        let layout = Self::layout(s.block as usize, s.blocks as usize);
        unpoison(slab.cast(), layout.size());
        // SAFETY: the count reached zero: no block is in use or cached, and
        // nobody else can reach the slab. Dropping in place runs the loom
        // atomic's drop; std's has none.
        unsafe {
            std::ptr::drop_in_place(slab.cast_mut());
            crate::sync::dealloc(slab.cast_mut().cast(), layout);
        }
    }
}

/// Allocates memory for a node of `layout`; returns it and its [`Home`],
/// which [`free`] needs back.
#[inline]
pub(crate) fn alloc(layout: Layout) -> (NonNull<u8>, Home) {
    #[cfg(not(any(loom, concurrent_futures_no_node_cache)))]
    if let Some(class) = class_of(layout)
        && let Ok(Some(block)) = cache::CACHE.try_with(|c| c.pop(class))
    {
        return block;
    }
    // SAFETY: nodes have a non-zero size.
    let p = unsafe { crate::sync::alloc(layout) };
    match NonNull::new(p) {
        Some(p) => (p, Home(std::ptr::null())),
        None => std::alloc::handle_alloc_error(layout),
    }
}

/// Frees memory [`alloc`] returned for `layout`, with its `home`.
///
/// # Safety
/// `ptr` and `home` came from `alloc(layout)` and are freed once; the
/// caller touches the memory no more.
#[inline]
pub(crate) unsafe fn free(ptr: NonNull<u8>, layout: Layout, home: Home) {
    if home.0.is_null() {
        // SAFETY: allocated by the global allocator with this layout.
        unsafe { crate::sync::dealloc(ptr.as_ptr(), layout) };
        return;
    }
    #[cfg(not(any(loom, concurrent_futures_no_node_cache)))]
    {
        if let Some(class) = class_of(layout)
            && let Ok(true) = cache::CACHE.try_with(|c| c.push(class, ptr, home))
        {
            return;
        }
    }
    poison(ptr.as_ptr(), layout.size());
    // SAFETY: the block is ours and we are done with it.
    unsafe { Slab::give_back(home.0, 1) }
}

/// The size class of `layout`, if it is served by blocks.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_BLOCK || layout.align() > GRAIN {
        return None;
    }
    Some(layout.size().div_ceil(GRAIN).max(1) - 1)
}

/// A value in a block: what a `Box` is, with the memory from here (the
/// global allocator when it does not fit a block). The queue entries of
/// fire-and-forget tasks (`executor/task.rs`) live in these: a task is
/// made on one thread and often freed on another, which `malloc`'s
/// per-thread cache cannot serve (callgrind: about 280 of a spawn's 650
/// instructions were `malloc` and `free`).
pub(crate) struct BlockBox<T> {
    ptr: NonNull<Boxed<T>>,
}

/// A [`BlockBox`]'s memory: the block's home, then the value.
struct Boxed<T> {
    home: Home,
    value: T,
}

// SAFETY: a `BlockBox<T>` owns its `T` as a `Box<T>` does; the block's
// home is plain data any thread may give back (`free` works from any
// thread).
unsafe impl<T: Send> Send for BlockBox<T> {}

impl<T> BlockBox<T> {
    /// Moves `value` into a block.
    #[inline]
    pub(crate) fn new(value: T) -> BlockBox<T> {
        let (memory, home) = alloc(Layout::new::<Boxed<T>>());
        let ptr = memory.cast::<Boxed<T>>();
        // SAFETY: `alloc` returned memory fit for this layout.
        unsafe { ptr.as_ptr().write(Boxed { home, value }) };
        BlockBox { ptr }
    }

    /// Gives up the box without freeing it (as `Box::into_raw`).
    #[inline]
    pub(crate) fn into_raw(this: BlockBox<T>) -> NonNull<()> {
        std::mem::ManuallyDrop::new(this).ptr.cast()
    }

    /// Takes back a box given up by [`BlockBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `BlockBox::<T>::into_raw` and is taken back once.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<()>) -> BlockBox<T> {
        BlockBox { ptr: ptr.cast() }
    }

    /// Moves the value out and frees the block first, so that the value's
    /// own work (a task's closure) can reuse it.
    #[inline]
    pub(crate) fn into_inner(this: BlockBox<T>) -> T {
        let ptr = std::mem::ManuallyDrop::new(this).ptr;
        // SAFETY: the box owns a live, initialised `Boxed<T>`, read once
        // here; the box is forgotten, so nothing reads or drops it again,
        // and the block is freed with the layout and home it was made with.
        unsafe {
            let Boxed { home, value } = ptr.as_ptr().read();
            free(ptr.cast(), Layout::new::<Boxed<T>>(), home);
            value
        }
    }
}

impl<T> std::ops::Deref for BlockBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns a live `Boxed<T>`.
        unsafe { &self.ptr.as_ref().value }
    }
}

impl<T> std::ops::DerefMut for BlockBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns a live `Boxed<T>`, and `&mut self` is the
        // only way to it.
        unsafe { &mut self.ptr.as_mut().value }
    }
}

impl<T> Drop for BlockBox<T> {
    fn drop(&mut self) {
        /// Frees the block when dropped, so a value whose drop unwinds
        /// does not leak it.
        struct FreeOnDrop(NonNull<u8>, Layout, Home);
        impl Drop for FreeOnDrop {
            fn drop(&mut self) {
                // SAFETY: made below from the box's block, its layout and
                // home, once, after which nothing touches the block.
                unsafe { free(self.0, self.1, self.2) }
            }
        }
        // SAFETY: the box owns a live `Boxed<T>`: its home is read, then its
        // value dropped once, then (even if that unwinds) the block freed
        // with the layout and home it was made with.
        unsafe {
            let home = self.ptr.as_ref().home;
            let _free = FreeOnDrop(self.ptr.cast(), Layout::new::<Boxed<T>>(), home);
            std::ptr::drop_in_place(&raw mut (*self.ptr.as_ptr()).value);
        }
    }
}

#[cfg(not(any(loom, concurrent_futures_no_node_cache)))]
mod cache {
    use std::cell::Cell;
    use std::ptr::NonNull;

    use super::{CLASSES, GRAIN, Home, LIST_SLABS, SLAB_BLOCKS, Slab};

    /// What a free block holds while it sits on a list: the next free
    /// block, tagged in its low bit (blocks are `GRAIN`-aligned) when this
    /// block starts a *run* (its slab differs from the block's below), and
    /// its slab.
    #[repr(C)]
    struct FreeBlock {
        next: *mut FreeBlock,
        slab: *const Slab,
    }

    /// The low bit of `FreeBlock::next`: this block starts a run.
    const NEW_RUN: usize = 1;

    /// One size class of one thread. `Cell`s: nothing here is borrowed
    /// across a call out (the global allocator is called with no borrow).
    struct Class {
        free: Cell<*mut FreeBlock>,
        /// Runs of blocks of one slab on the list: at most `LIST_SLABS`, so
        /// the list holds blocks of at most that many slabs. A run may be
        /// counted twice after a pop (see `pop`), which only makes the
        /// bound stricter.
        runs: Cell<usize>,
        /// The slab of the block on top of the list, if known (null: a
        /// push starts a run).
        top_slab: Cell<*const Slab>,
        /// The slab being carved, its next uncarved block, and its end.
        slab: Cell<*const Slab>,
        next: Cell<*mut u8>,
        end: Cell<*mut u8>,
    }

    pub(super) struct Cache {
        classes: [Class; CLASSES],
    }

    std::thread_local! {
        pub(super) static CACHE: Cache = const {
            Cache {
                classes: [const {
                    Class {
                        free: Cell::new(std::ptr::null_mut()),
                        runs: Cell::new(0),
                        top_slab: Cell::new(std::ptr::null()),
                        slab: Cell::new(std::ptr::null()),
                        next: Cell::new(std::ptr::null_mut()),
                        end: Cell::new(std::ptr::null_mut()),
                    }
                }; CLASSES],
            }
        };
    }

    const fn block_size(class: usize) -> usize {
        (class + 1) * GRAIN
    }

    impl Cache {
        /// A block of `class`: a cached one, the next one carved, or the
        /// first of a new slab.
        #[inline]
        pub(super) fn pop(&self, class: usize) -> Option<(NonNull<u8>, Home)> {
            let c = self.classes.get(class)?;
            let head = c.free.get();
            if let Some(block) = NonNull::new(head) {
                super::unpoison(head.cast(), block_size(class));
                // SAFETY: blocks on our list are ours, free, and hold a
                // `FreeBlock` written by `push`.
                let FreeBlock { next, slab } = unsafe { block.as_ptr().read() };
                c.free.set(next.map_addr(|a| a & !NEW_RUN));
                if next.addr() & NEW_RUN != 0 {
                    // The block below is of another slab, which we do not
                    // read (it may be poisoned): the next push starts a run.
                    c.runs.set(c.runs.get() - 1);
                    c.top_slab.set(std::ptr::null());
                }
                return Some((block.cast(), Home(slab)));
            }
            let next = c.next.get();
            if next != c.end.get() {
                // SAFETY: `next` is an uncarved block of the current slab,
                // and the slab's end is at least one block further.
                c.next.set(unsafe { next.add(block_size(class)) });
                // SAFETY: non-null: it differs from `end`, and both are
                // null only together.
                let block = unsafe { NonNull::new_unchecked(next) };
                super::unpoison(next, block_size(class));
                return Some((block, Home(c.slab.get())));
            }
            Some(self.carve_new_slab(class))
        }

        #[cold]
        fn carve_new_slab(&self, class: usize) -> (NonNull<u8>, Home) {
            let slab = Slab::create(block_size(class), SLAB_BLOCKS);
            let c = &self.classes[class];
            // SAFETY: the slab is live and has SLAB_BLOCKS blocks; the end
            // pointer is one past the last block, inside the allocation's
            // bounds as a one-past-the-end pointer.
            let (first, second, end) = unsafe {
                (
                    Slab::block(slab, 0),
                    Slab::block(slab, 1),
                    slab.cast::<u8>()
                        .add(size_of::<Slab>() + SLAB_BLOCKS * block_size(class)),
                )
            };
            // The old slab was fully carved (we only get here then): all its
            // blocks are accounted for elsewhere.
            c.slab.set(slab.as_ptr());
            c.next.set(second.as_ptr());
            c.end.set(end.as_ptr());
            super::unpoison(first.as_ptr(), block_size(class));
            (first, Home(slab.as_ptr()))
        }

        /// Keeps a freed block if the class's list may hold its slab.
        #[inline]
        pub(super) fn push(&self, class: usize, block: NonNull<u8>, home: Home) -> bool {
            let Some(c) = self.classes.get(class) else {
                return false;
            };
            let new_run = c.top_slab.get() != home.0;
            if new_run {
                if c.runs.get() == LIST_SLABS {
                    return false;
                }
                c.runs.set(c.runs.get() + 1);
            }
            // SAFETY: the block is ours (the caller frees it), at least
            // GRAIN bytes and GRAIN-aligned, so a `FreeBlock` fits (and the
            // next block's low bit is free for the tag).
            unsafe {
                block.cast::<FreeBlock>().as_ptr().write(FreeBlock {
                    next: c.free.get().map_addr(|a| a | usize::from(new_run)),
                    slab: home.0,
                })
            };
            c.free.set(block.as_ptr().cast());
            c.top_slab.set(home.0);
            super::poison(block.as_ptr(), block_size(class));
            true
        }
    }

    impl Drop for Cache {
        /// The thread is exiting: every cached block, and every block of
        /// the current slabs never carved, goes back to its slab.
        fn drop(&mut self) {
            for (class, c) in self.classes.iter().enumerate() {
                let mut cur = c.free.replace(std::ptr::null_mut());
                while !cur.is_null() {
                    super::unpoison(cur.cast(), block_size(class));
                    // SAFETY: as in `pop`.
                    let FreeBlock { next, slab } = unsafe { cur.read() };
                    super::poison(cur.cast(), block_size(class));
                    // SAFETY: the block is free and ours.
                    unsafe { Slab::give_back(slab, 1) };
                    cur = next.map_addr(|a| a & !NEW_RUN);
                }
                c.runs.set(0);
                c.top_slab.set(std::ptr::null());
                let (next, end) = (c.next.get(), c.end.get());
                if next != end {
                    let uncarved = (end.addr() - next.addr()) / block_size(class);
                    // SAFETY: the uncarved blocks were counted live for us.
                    unsafe { Slab::give_back(c.slab.get(), uncarved) };
                }
                c.next.set(std::ptr::null_mut());
                c.end.set(std::ptr::null_mut());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod model {
    use std::ptr::NonNull;

    use super::Slab;

    /// Two threads give back the two blocks of one slab at once: exactly
    /// one frees it (loom's allocator reports a leak or a double free), and
    /// the other's last use of its block happens before the free (the
    /// slab's `Lifetime`: loom sees no raw-pointer write, so it reports a
    /// free not ordered after a giver's touch).
    #[test]
    fn slab_is_freed_once_by_the_last_giver() {
        struct Shared(NonNull<Slab>);
        // SAFETY: each thread touches only its own block, then gives it back.
        unsafe impl Send for Shared {}
        loom::model(|| {
            let slab = Slab::create(16, 2);
            let giver = |i: usize| {
                let slab = Shared(slab);
                move || {
                    let slab = slab;
                    // SAFETY: each thread owns block `i` until it gives it back.
                    unsafe {
                        Slab::block(slab.0, i).as_ptr().write(i as u8);
                        Slab::give_back(slab.0.as_ptr(), 1);
                    }
                }
            };
            let t = loom::thread::spawn(giver(0));
            giver(1)();
            t.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;

    use super::BlockBox;

    /// Counts its drops in a shared cell.
    struct Counted(Rc<std::cell::Cell<u32>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_block_box_owns_its_value_as_a_box_does() {
        // A value that fits a block, and one that does not (the global
        // allocator): both read, write and give their value back.
        let mut small = BlockBox::new([7u8; 16]);
        let large = BlockBox::new([9u8; 512]);
        small[1] = 8;
        assert_eq!((small[0], small[1], large[511]), (7, 8, 9));
        assert_eq!(BlockBox::into_inner(small)[..2], [7, 8]);
        assert_eq!(BlockBox::into_inner(large), [9u8; 512]);
        // Through a raw pointer and back, then dropped: the value's drop
        // runs exactly once; moved out, it is the caller's to drop.
        let drops = Rc::new(std::cell::Cell::new(0));
        let raw = BlockBox::into_raw(BlockBox::new(Counted(drops.clone())));
        // SAFETY: made just above from a `BlockBox<Counted>`, taken back once.
        drop(unsafe { BlockBox::<Counted>::from_raw(raw) });
        assert_eq!(drops.get(), 1);
        let value = BlockBox::into_inner(BlockBox::new(Counted(drops.clone())));
        assert_eq!(drops.get(), 1);
        drop(value);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_value_whose_drop_panics_still_gives_its_block_back() {
        struct Boom;
        impl Drop for Boom {
            fn drop(&mut self) {
                panic!("boom");
            }
        }
        // Miri's and LeakSanitizer's leak checks see a block (or its
        // slab) that the unwinding drop failed to free.
        for _ in 0..3 {
            let boxed = BlockBox::new(Boom);
            assert!(catch_unwind(AssertUnwindSafe(move || drop(boxed))).is_err());
        }
    }
}
