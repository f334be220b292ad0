//! The crate's own waker in front of a user's, so that no user code runs
//! inside a waker slot's critical section.
//!
//! `AtomicWaker::register` clones the waker it is given, and drops the one
//! it held, while its state word says `REGISTERING`; a `clone` or `drop`
//! that panics there leaves the slot in that state for good, and every
//! later wake is lost. So a slot is only ever given a *relay*: a `Waker`
//! over an `Arc<Forward>` of ours, whose clone and drop are reference
//! counting that cannot panic. The user's waker lives inside: its `wake`
//! runs under [`guard`], and so does its `drop`, when the last relay goes.
//!
//! The poller keeps the relay it last registered ([`Relay`]) and makes a new
//! one only when the task's waker changes (`will_wake` says no): the user's
//! `clone` then runs on the poller's thread, before anything shared is
//! touched, so if it panics, the poll unwinds with the slot untouched.

use std::sync::Arc;
use std::task::{Wake, Waker};

use crate::panics::{PanicOrigin, guard};

/// The user's waker, woken and dropped under guards.
struct Forward(Option<Waker>);

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(waker) = &self.0 {
            guard(PanicOrigin::Waker, || waker.wake_by_ref());
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(waker) = self.0.take() {
            guard(PanicOrigin::Drop, move || drop(waker));
        }
    }
}

/// The relay a poller last registered; owned by the poller.
#[derive(Default)]
pub(crate) struct Relay {
    current: Option<(Arc<Forward>, Waker)>,
}

impl Relay {
    /// A waker that wakes `user`, safe to hand to a waker slot. Reuses the
    /// last relay while `user` would wake the same task.
    pub(crate) fn waker_for(&mut self, user: &Waker) -> &Waker {
        let reuse = matches!(
            &self.current,
            Some((forward, _)) if forward.0.as_ref().is_some_and(|w| w.will_wake(user))
        );
        if !reuse {
            // The old relay's drop is reference counting; if it was the
            // last, `Forward::drop` guards the user's drop.
            self.current = None;
        }
        let (_, relay) = self.current.get_or_insert_with(|| {
            // The user's clone runs here, before anything shared is touched.
            let forward = Arc::new(Forward(Some(user.clone())));
            (forward.clone(), Waker::from(forward))
        });
        relay
    }
}
