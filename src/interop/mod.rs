//! The `futures` feature: the traits of the `futures` ecosystem on this
//! crate's types, so async code drives them without glue.
//!
//! - [`stream`]: [`AsCompleted`](crate::AsCompleted) as a `Stream`
//!   ([`AsCompletedStream`]).
//! - [`spawn`]: [`ThreadPool`](crate::ThreadPool) as a `Spawn`.

mod spawn;
mod stream;

pub use stream::AsCompletedStream;
