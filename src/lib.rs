//! Python's `concurrent.futures`, done right in Rust, lock-free.
//!
//! - [`FutureHandle`] / [`Promise`]: a future whose done-callbacks live on a
//!   lock-free list and run exactly once, in registration order, never two
//!   at a time, even when attached while completion is running them.
//!
//! ```
//! use concurrent_futures::Promise;
//!
//! let promise = Promise::new();
//! let handle = promise.handle();
//! handle.add_done_callback(|r| println!("done: {:?}", r));
//! std::thread::spawn(move || promise.set_result(42).unwrap());
//! assert_eq!(handle.join(), Ok(42));
//! ```
#![deny(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn)]

mod error;
mod executor;
mod future;
pub(crate) mod sync;
mod wait;

pub use error::{AlreadyStarted, InvalidState, PanicMessage, TaskError, TimedOut};
pub use executor::{
    BuildError, Builder, Map, Metrics, ShutdownReport, Strand, SubmitError, ThreadPool,
};
pub use future::{
    CallbackPanic, FutureHandle, Join, Promise, Registration, WaitAsync, clear_callback_panic_hook,
    set_callback_panic_hook,
};
pub use wait::{AsCompleted, DoneAndNotDone, ReturnWhen, as_completed, wait};
