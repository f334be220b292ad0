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
//! is dropped) and then wakes the task. No runtime is assumed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TryRecvError;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::{FusedStream, Stream};

use crate::error::TimedOut;
use crate::future::FutureHandle;
use crate::wait::{AsCompleted, Inbox};

/// A thread that wakes the stream's task at its deadline; told to stop
/// early when the stream is dropped.
struct Alarm {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Alarm {
    /// Starts the alarm; `None` if the thread could not be started (the
    /// stream then wakes itself at once on every poll until the deadline:
    /// it spins rather than hang past its timeout).
    fn start(inbox: Arc<Inbox>, deadline: Instant) -> Option<Alarm> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join = std::thread::Builder::new()
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
            })
            .ok()?;
        Some(Alarm {
            stop,
            thread: join.thread().clone(),
        })
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // Release: pairs with the alarm's Acquire load; the unpark ends its
        // sleep, so the thread exits now rather than at the deadline.
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
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
        }
    }
}

/// The [`Stream`] of [`as_completed`](crate::as_completed), from
/// [`AsCompleted::into_stream`] (feature `futures`).
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub struct AsCompletedStream<T> {
    inner: AsCompleted<T>,
    /// Wakes the polling task at the deadline, once it had to wait.
    alarm: Option<Alarm>,
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
        let AsCompletedStream { inner: this, alarm } = self.get_mut();
        if this.is_terminated() {
            return Poll::Ready(None);
        }
        if let Some(h) = this.next_ready() {
            return Poll::Ready(Some(Ok(h)));
        }
        // Look, register, look again: an arrival between the first look
        // and the registration would otherwise wake nobody.
        for registered in [false, true] {
            match this.rx.try_recv() {
                Ok(i) => return Poll::Ready(Some(Ok(this.arrived(i)))),
                // Disconnected cannot happen while items are owed: each
                // pending handle's callback holds a sender until it sends.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            if this.deadline.is_some_and(|d| Instant::now() >= d) {
                return Poll::Ready(Some(Err(this.expire())));
            }
            if !registered {
                this.inbox.waker().register(cx.waker());
            }
        }
        if let Some(deadline) = this.deadline
            && alarm.is_none()
        {
            *alarm = Alarm::start(this.inbox.clone(), deadline);
            if alarm.is_none() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

impl<T> FusedStream for AsCompletedStream<T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}
