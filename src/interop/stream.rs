//! [`AsCompletedStream`]: [`AsCompleted`] as a `Stream`, the same items
//! as the iterator, in the same order, without blocking the polling task.
//!
//! A wrapper rather than a second trait on the iterator: a type that is
//! both an `Iterator` and a `Stream` makes `.next()` ambiguous wherever
//! `StreamExt` is imported (tokio-stream wraps its receivers for the same
//! reason).
//!
//! Each done-callback sends its index to the inbox and wakes the waker
//! registered there. `poll_next` looks at the inbox, registers its waker,
//! and looks again, so an arrival between the two looks is not missed
//! (`AtomicWaker`'s contract). A timeout needs a clock that wakes the task:
//! the first time the stream would wait with a deadline set, it starts an
//! [`Alarm`], a thread that sleeps until the deadline (or until the stream
//! ends or is dropped) and then wakes the task. No runtime is assumed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::{FusedStream, Stream};

use crate::error::TimedOut;
use crate::future::FutureHandle;
use crate::future::relay::Relay;
use crate::wait::{AsCompleted, Inbox};

/// A thread that wakes the stream's task at its deadline; told to stop
/// early when the stream is dropped or ends.
enum Alarm {
    Running {
        stop: Arc<AtomicBool>,
        thread: std::thread::Thread,
    },
    /// The thread could not be started (the stream then wakes itself on
    /// every poll until the deadline: it spins rather than hang past its
    /// timeout, and does not retry the spawn).
    Failed,
}

impl Alarm {
    fn start(inbox: Arc<Inbox>, deadline: Instant) -> Alarm {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("cf-as-completed-alarm".into())
            .spawn(move || {
                // Acquire: pairs with the Release store in `drop`.
                while !flag.load(Ordering::Acquire) {
                    let now = Instant::now();
                    if now >= deadline {
                        inbox.waker().wake();
                        return;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            });
        match spawned {
            Ok(join) => Alarm::Running {
                stop,
                thread: join.thread().clone(),
            },
            Err(_) => Alarm::Failed,
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let Alarm::Running { stop, thread } = self {
            // Release: pairs with the alarm's Acquire load; the unpark ends
            // its sleep, so the thread exits now rather than at the deadline.
            stop.store(true, Ordering::Release);
            thread.unpark();
        }
    }
}

impl<T> AsCompleted<T> {
    /// This sequence as a [`Stream`] (feature `futures`): the same items in
    /// the same order, each handle once as it finishes, then, if the
    /// timeout passes first, one [`TimedOut`] error. Waiting never blocks
    /// the polling task; the timeout wakes it without a runtime's timer.
    /// Dropping the stream detaches everything, as for the iterator.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use concurrent_futures::{ThreadPool, as_completed};
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let handles: Vec<_> = (1..=3u64).map(|i| pool.submit(move || i * i).unwrap()).collect();
    /// let total = futures::executor::block_on(async {
    ///     let mut total = 0;
    ///     let mut done = as_completed(handles, None).into_stream();
    ///     while let Some(h) = done.next().await {
    ///         total += h.unwrap().result().unwrap();
    ///     }
    ///     total
    /// });
    /// assert_eq!(total, 14);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
    pub fn into_stream(self) -> AsCompletedStream<T> {
        AsCompletedStream {
            inner: self,
            alarm: None,
            relay: Relay::default(),
        }
    }
}

/// The [`Stream`] of [`as_completed`](crate::as_completed), from
/// [`AsCompleted::into_stream`] (feature `futures`).
///
/// ```
/// use futures::StreamExt;
/// use concurrent_futures::{Promise, as_completed};
///
/// let (a, b) = (Promise::new(), Promise::new());
/// b.set_result("b").unwrap();
/// let mut s = as_completed([a.handle(), b.handle()], None).into_stream();
/// a.set_result("a").unwrap();
/// let order: Vec<&str> = futures::executor::block_on(async {
///     let mut order = Vec::new();
///     while let Some(h) = s.next().await {
///         order.push(*h.unwrap().result().unwrap());
///     }
///     order
/// });
/// assert_eq!(order, ["b", "a"]); // done ones first
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub struct AsCompletedStream<T> {
    inner: AsCompleted<T>,
    /// Wakes the polling task at the deadline, once it had to wait.
    alarm: Option<Alarm>,
    /// What is registered in the inbox: a relay, never the task's own
    /// waker (`future/relay.rs`).
    relay: Relay,
}

impl<T> std::fmt::Debug for AsCompletedStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsCompletedStream")
            .field(&self.inner)
            .finish()
    }
}

impl<T> Stream for AsCompletedStream<T> {
    type Item = Result<FutureHandle<T>, TimedOut>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = this.next_item(cx);
        if this.inner.is_terminated() {
            // Nothing more to wait for: stop the alarm's thread now.
            this.alarm = None;
        }
        item
    }
}

impl<T> AsCompletedStream<T> {
    fn next_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<FutureHandle<T>, TimedOut>>> {
        let AsCompletedStream {
            inner: this,
            alarm,
            relay,
        } = self;
        if this.is_terminated() {
            return Poll::Ready(None);
        }
        if let Some(h) = this.next_ready() {
            return Poll::Ready(Some(Ok(h)));
        }
        // Look, register, look again: an arrival between the first look
        // and the registration would otherwise wake nobody. (The receiver
        // never sees a disconnect: the inbox this stream holds keeps a
        // sender.)
        for registered in [false, true] {
            if let Ok(i) = this.rx.try_recv() {
                return Poll::Ready(Some(Ok(this.arrived(i))));
            }
            if this.deadline.is_some_and(|d| Instant::now() >= d) {
                return Poll::Ready(Some(Err(this.expire())));
            }
            if !registered {
                this.inbox.waker().register(relay.waker_for(cx.waker()));
            }
        }
        if let Some(deadline) = this.deadline
            && alarm.is_none()
        {
            *alarm = Some(Alarm::start(this.inbox.clone(), deadline));
        }
        if let Some(Alarm::Failed) = alarm {
            // No thread to wake us at the deadline: poll again rather than
            // sleep past it.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<T> Drop for AsCompletedStream<T> {
    fn drop(&mut self) {
        // The callbacks it removes keep the inbox until a compaction or
        // their future's completion frees them: the waker registered there
        // (the polling task's, through the relay) goes now.
        self.inner.inbox.waker().clear();
    }
}

impl<T> FusedStream for AsCompletedStream<T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}
