//! The future: a lock-free state machine with an ordered callback list.
//!
//! One allocation per future ([`core`]) holds the lifecycle word
//! ([`state`]), the outcome, and two sealed Treiber stacks ([`stack`] of
//! [`node`]s): waiters ([`wait`]), woken first on completion, then
//! done-callbacks ([`callback`]), run in registration order. The public
//! faces are [`FutureHandle`] (readers) and [`Promise`] (the writer).
//! Async waiters register a [`relay`] waker, so no user waker code runs
//! inside a waker slot. Blocking waits go through [`blocking`], where a pool
//! installs how its threads wait.

pub(crate) mod blocking;
mod callback;
pub(crate) mod core;
mod handle;
mod node;
mod promise;
pub(crate) mod relay;
pub(crate) mod stack;
pub(crate) mod state;
mod wait;

pub use callback::Registration;
pub(crate) use handle::deadline;
pub use handle::{FutureHandle, Join, WaitAsync};
pub use promise::Promise;
