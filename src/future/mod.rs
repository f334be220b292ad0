//! The future: a lock-free state machine with an ordered callback list.
//!
//! One allocation per future ([`core`]) holds the lifecycle word
//! ([`state`]), the outcome, and two sealed Treiber stacks ([`stack`] of
//! [`node`]s): waiters ([`wait`]), woken first on completion, then
//! done-callbacks ([`callback`]), run in registration order. The public
//! faces are [`FutureHandle`] (readers) and [`Promise`] (the writer).

mod callback;
pub(crate) mod core;
mod handle;
mod node;
mod promise;
pub(crate) mod stack;
pub(crate) mod state;
mod wait;

pub use callback::{
    CallbackPanic, Registration, clear_callback_panic_hook, set_callback_panic_hook,
};
pub(crate) use callback::{Hook as PanicHook, contain, panic_message, report_panic_payload};
pub use handle::{FutureHandle, Join, WaitAsync};
pub use promise::Promise;
