//! Python's `concurrent.futures`, done right in Rust, lock-free.
//!
//! - [`ThreadPool`]: Python's `ThreadPoolExecutor` on a work-stealing
//!   executor: [`submit`](ThreadPool::submit) a closure, get a
//!   [`FutureHandle`]; [`map`](ThreadPool::map) lazily and in order;
//!   [`shutdown`](ThreadPool::shutdown) with or without cancelling queued
//!   work. A refused submit hands the closure back ([`SubmitError`]).
//! - [`FutureHandle`] / [`Promise`]: a future whose done-callbacks run
//!   exactly once, in registration order, never two at a time, even when
//!   attached while completion is running them. Block on it
//!   ([`result`](FutureHandle::result), [`join`](FutureHandle::join)), or
//!   `.await` it from async code.
//! - [`wait`](fn@wait) and [`as_completed`]: Python's module functions, leaving
//!   nothing attached to futures that never finish.
//! - [`Strand`]: a serial context on the pool that owns a state, so
//!   done-callbacks can update shared totals with `&mut` and no lock.
//! - From code running on a pool's thread, [`spawn`] and [`submit`](fn@submit) queue
//!   more work on that pool without a handle to it, as `rayon::spawn` does.
//! - Futures on the pool: [`ThreadPool::submit_future`] and
//!   [`ThreadPool::spawn_future`].
//! - Tasks that borrow: [`ThreadPool::scope`] (a [`Scope`] whose tasks and
//!   [`ScopedHandle`]s end with it), [`ThreadPool::join`] (fork-join) and
//!   [`ThreadPool::install`].
//!
//! ```
//! use concurrent_futures::{ThreadPool, as_completed};
//!
//! let pool = ThreadPool::new(2).unwrap();
//! let handles: Vec<_> = (1..=3u64).map(|i| pool.submit(move || i * 10).unwrap()).collect();
//! handles[0].add_done_callback(|r| println!("first: {:?}", r));
//! let total: u64 = as_completed(handles, None).map(|h| *h.unwrap().result().unwrap()).sum();
//! assert_eq!(total, 60);
//! ```
//!
//! # Feature flags
//!
//! - `futures`: `AsCompleted::into_stream` gives a `futures::Stream`,
//!   and [`ThreadPool`] implements `futures::task::Spawn`.
//! - `tracing`: spans and events for tasks and the pool's lifecycle
//!   (compiled out without the feature).
//!
//! The guide (`docs/guide.md` in the repository) is a tour from submit to
//! shutdown with a table from Python's names to this crate's;
//! `docs/design.md` explains the protocols and why they hold.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(unsafe_op_in_unsafe_fn)]

mod blocks;
mod error;
mod executor;
mod future;
#[cfg(feature = "futures")]
mod interop;
mod panics;
pub(crate) mod sync;
mod trace;
mod wait;

pub use error::{AlreadyStarted, InvalidState, PanicMessage, TaskError, TimedOut};
pub use executor::{
    BuildError, Builder, CurrentPoolError, MAX_WORKERS, MIN_STACK_SIZE, Map, Metrics, Scope,
    ScopedHandle, ScopedJoin, ShutdownReport, Strand, SubmitError, ThreadPool, spawn, submit,
};
pub use future::{FutureHandle, Join, Promise, Registration, WaitAsync};
#[cfg(feature = "futures")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub use interop::AsCompletedStream;
pub use panics::{CallbackPanic, PanicOrigin, clear_callback_panic_hook, set_callback_panic_hook};
pub use wait::{AsCompleted, DoneAndNotDone, ReturnWhen, as_completed, wait};

/// The README's, the guide's and thread-safety.md's examples, compiled
/// and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
#[doc = include_str!("../docs/guide.md")]
#[doc = include_str!("../docs/thread-safety.md")]
struct DocsDoctests;
