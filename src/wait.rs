//! Python's module-level `wait` and `as_completed`.
//!
//! Both attach one done-callback per pending handle that sends the handle's
//! index over a channel, and remove every callback they attached before
//! they return (or when the iterator is dropped): calling them any number of
//! times on handles that never complete leaves nothing behind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::error::{TaskError, TimedOut};
use crate::future::blocking::{self, WaitOn, on_pool_thread};
use crate::future::{FutureHandle, Registration, deadline};
use crate::sync::WakerSlot;

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
///
/// ```
/// use concurrent_futures::{Promise, ReturnWhen, TaskError, wait};
/// let (ok, bad, pending) = (Promise::new(), Promise::new(), Promise::<u8>::new());
/// ok.set_result(1).unwrap();
/// bad.complete(Err(TaskError::Abandoned)).unwrap();
/// let hs = [ok.handle(), bad.handle(), pending.handle()];
/// // A failure ends FIRST_EXCEPTION at once, with the pending one not done.
/// let r = wait(hs, ReturnWhen::FirstException, None);
/// assert_eq!((r.done.len(), r.not_done.len()), (2, 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future fails: panicked or abandoned, or any other
    /// [`TaskError`] except cancellation (which is not a failure). Like
    /// `AllCompleted` if none fails. A task returning `Err` as its value
    /// is not a failure here: that is a value.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// What [`wait`] returns: Python's `DoneAndNotDoneFutures`.
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{Promise, ReturnWhen, wait};
/// let (a, b) = (Promise::new(), Promise::<u8>::new());
/// a.set_result(1).unwrap();
/// let r = wait([a.handle(), b.handle()], ReturnWhen::AllCompleted, Some(Duration::from_millis(5)));
/// assert!(r.done[0].ptr_eq(&a.handle()));
/// assert!(r.not_done[0].ptr_eq(&b.handle()));
/// ```
#[derive(Debug)]
pub struct DoneAndNotDone<T> {
    /// Futures that are done (finished or cancelled), in input order.
    pub done: Vec<FutureHandle<T>>,
    /// The others, in input order.
    pub not_done: Vec<FutureHandle<T>>,
}

/// Attaches "send my index" callbacks to the handles not yet done, and
/// removes them when dropped.
struct Watch<'a, T> {
    handles: &'a [FutureHandle<T>],
    registrations: Vec<Option<Registration<T>>>,
    rx: Receiver<usize>,
}

impl<'a, T: Send + Sync + 'static> Watch<'a, T> {
    /// A handle already done gets no callback (`registrations[i]` is
    /// `None`): one attached to a future whose callbacks are running would
    /// report only once they end, and never if they run on this thread.
    fn new(handles: &'a [FutureHandle<T>]) -> Self {
        let (inbox, rx) = Inbox::new();
        let registrations = handles
            .iter()
            .enumerate()
            .map(|(i, h)| (!h.done()).then(|| send_when_done(h, i, &inbox)))
            .collect();
        Watch {
            handles,
            registrations,
            rx,
        }
    }

    /// The next index to finish, waiting until `deadline` (inside
    /// [`Watching::block`](crate::future::blocking::Watching::block), which keeps the pool's capacity).
    fn next(&mut self, deadline: Option<Instant>) -> Option<usize> {
        let i = recv_here(&self.rx, deadline)?;
        // It ran: nothing to remove any more.
        self.registrations[i] = None;
        Some(i)
    }
}

impl<T> Drop for Watch<'_, T> {
    fn drop(&mut self) {
        for (h, r) in self.handles.iter().zip(&mut self.registrations) {
            if let Some(r) = r.take() {
                h.remove_done_callback(r);
            }
        }
    }
}

/// Where the done-callbacks of one `wait` or `as_completed` report: the
/// index of each future that finished, then a wake for an async reader.
pub(crate) struct Inbox {
    tx: mpsc::Sender<usize>,
    waker: WakerSlot,
}

impl Inbox {
    fn new() -> (Arc<Inbox>, Receiver<usize>) {
        let (tx, rx) = mpsc::channel();
        let waker = WakerSlot::default();
        (Arc::new(Inbox { tx, waker }), rx)
    }

    /// The waker of the task polling the stream, woken on each arrival.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn waker(&self) -> &WakerSlot {
        &self.waker
    }
}

/// Attaches a callback that sends `i` to `inbox` once `h` is done (at once
/// if it already is).
fn send_when_done<T: Send + Sync + 'static>(
    h: &FutureHandle<T>,
    i: usize,
    inbox: &Arc<Inbox>,
) -> Registration<T> {
    let inbox = inbox.clone();
    h.add_done_callback(move |_| {
        let _ = inbox.tx.send(i);
        inbox.waker.wake();
    })
}

/// Removes duplicates (by identity), keeping the first of each.
fn distinct<T>(handles: impl IntoIterator<Item = FutureHandle<T>>) -> Vec<FutureHandle<T>> {
    let mut seen = std::collections::HashSet::new();
    handles
        .into_iter()
        .filter(|h| seen.insert(h.id()))
        .collect()
}

/// Receives the next finished index, blocking until `deadline`, on a
/// thread that already counts as waiting (see [`Watching::block`](crate::future::blocking::Watching::block)).
fn recv_here(rx: &Receiver<usize>, deadline: Option<Instant>) -> Option<usize> {
    match deadline {
        None => rx.recv().ok(),
        Some(d) => rx
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .ok(),
    }
}

/// Whether `return_when` is met with `left` of the handles waited for
/// still to finish, `some_done` if one has, `some_failed` if one that did
/// failed.
fn met(return_when: ReturnWhen, left: usize, some_done: bool, some_failed: bool) -> bool {
    match return_when {
        ReturnWhen::FirstCompleted => some_done || left == 0,
        ReturnWhen::FirstException => some_failed || left == 0,
        ReturnWhen::AllCompleted => left == 0,
    }
}

fn failed<T>(h: &FutureHandle<T>) -> bool {
    matches!(h.try_result(), Some(Err(e)) if e != TaskError::Cancelled)
}

/// Waits for `handles` (Python's `concurrent.futures.wait`): returns when
/// `return_when` is met or `timeout` passes, never with a timeout error:
/// the result says which are done. Duplicates are collapsed. A future
/// counts as done from its state, as in Python: one whose done-callbacks
/// are still running (on this thread or another) is done.
///
/// Called from a pool task whose own handle is among `handles`, it does not
/// wait for that one (it cannot finish while its task waits here, and
/// Python would hang): it returns once the others meet `return_when`, with
/// the caller's own handle in `not_done`. The same goes for handles of
/// tasks that already wait (through blocked pool tasks, with no deadline)
/// on the caller. A task that starts waiting on the caller's handle while
/// it waits here is refused with [`TaskError::WouldDeadlock`] if the
/// caller could then never return: always under `AllCompleted`, under the
/// others if none of the other handles can finish.
///
/// Called from a pool task, the wait keeps the pool's capacity (a sleeping
/// worker is woken or a compensating one started). The thread that calls
/// `wait` may run done-callbacks of `handles` when it detaches its own
/// watchers on return (see
/// [`remove_done_callback`](FutureHandle::remove_done_callback)).
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{Promise, ReturnWhen, wait};
///
/// let (a, b) = (Promise::new(), Promise::new());
/// a.set_result(1).unwrap();
/// let r = wait([a.handle(), b.handle()], ReturnWhen::FirstCompleted, None);
/// assert_eq!((r.done.len(), r.not_done.len()), (1, 1));
/// let r = wait([a.handle(), b.handle()], ReturnWhen::AllCompleted, Some(Duration::ZERO));
/// assert_eq!((r.done.len(), r.not_done.len()), (1, 1));
/// ```
pub fn wait<T: Send + Sync + 'static>(
    handles: impl IntoIterator<Item = FutureHandle<T>>,
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> DoneAndNotDone<T> {
    let handles = distinct(handles);
    let deadline = timeout.and_then(deadline);
    // Handles of tasks this thread is running cannot finish during the
    // wait: only the others are waited for.
    let mut excluded: Vec<bool> = handles
        .iter()
        .map(|h| !h.done() && h.held_by_caller())
        .collect();
    let reachable = excluded.iter().filter(|e| !**e).count();
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    // Cheap first look: a zero timeout, or a condition already met, attaches
    // nothing.
    // (A handle left out is the caller's own running task: never done.)
    let already = (0..handles.len())
        .filter(|&i| !excluded[i] && handles[i].done())
        .count();
    let met_now = met(
        return_when,
        reachable - already,
        already > 0,
        handles.iter().any(failed),
    );
    if !met_now && !expired() {
        // On a pool thread, the others still pending, as the wait-for graph
        // names them: those whose tasks wait on this one (through blocked
        // pool tasks) cannot finish either, and are left out too.
        let pending: Vec<usize> = if on_pool_thread() {
            (0..handles.len())
                .filter(|&i| !excluded[i] && !handles[i].done())
                .collect()
        } else {
            Vec::new()
        };
        let targets: Vec<usize> = pending.iter().map(|&i| handles[i].core_addr()).collect();
        // Every pending handle's callback sends its index once, so counting
        // messages is O(1) per completion. Attached before the wait enters
        // the graph: attaching may run other callbacks of these futures
        // here, and a wait in one must not meet this one's edge.
        let mut watch = Watch::new(&handles);
        // Those done before their callback could attach count from their
        // state, as Python's do: their callbacks may still be running.
        let done_first = |i: usize| watch.registrations[i].is_none();
        let on = WaitOn {
            all: return_when == ReturnWhen::AllCompleted,
            timed: deadline.is_some(),
            stuck_listed: false,
        };
        let waiting = blocking::watch(&targets, on);
        for (&i, &s) in pending.iter().zip(waiting.stuck()) {
            excluded[i] |= s;
        }
        // The handles waited for whose message has not come.
        let mut left = (0..handles.len())
            .filter(|&i| !excluded[i] && !done_first(i))
            .count();
        let met_first = met(
            return_when,
            left,
            (0..handles.len()).any(done_first),
            (0..handles.len()).any(|i| done_first(i) && failed(&handles[i])),
        );
        if !met_first {
            waiting.block(|| {
                while let Some(i) = watch.next(deadline) {
                    if !excluded[i] {
                        left -= 1;
                    }
                    if met(return_when, left, true, failed(&handles[i])) {
                        break;
                    }
                }
            });
        }
        // The edge goes first: removing the callbacks may run others.
        drop(waiting);
        drop(watch);
    }
    let (done, not_done) = handles.into_iter().partition(|h| h.done());
    DoneAndNotDone { done, not_done }
}

/// Yields handles as they finish (Python's `as_completed`): those already
/// done first, each distinct future once; cancelled ones count as finished.
/// With a `timeout` (counted from this call), yields a [`TimedOut`] error
/// once it passes with futures unfinished, then ends. Dropping the iterator
/// detaches everything it attached, and may run done-callbacks of those
/// futures on the dropping thread (see
/// [`remove_done_callback`](FutureHandle::remove_done_callback)).
///
/// Iterated from a pool task whose own handle is among `handles`, it blocks
/// once every other handle was yielded, as Python's does: that handle
/// cannot finish while its task waits. Give it a `timeout`, or use
/// [`wait`], which leaves the caller's own handle out. A task that starts
/// waiting on the caller's handle while `next` blocks is refused with
/// [`TaskError::WouldDeadlock`] if none of the handles left can finish
/// (followed while at most 64 are left).
///
/// ```
/// use concurrent_futures::{ThreadPool, as_completed};
///
/// let pool = ThreadPool::new(2).unwrap();
/// let handles: Vec<_> = (0..4).map(|i| pool.submit(move || i * 10).unwrap()).collect();
/// let mut total = 0;
/// for h in as_completed(handles, None) {
///     total += h.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 60);
/// ```
pub fn as_completed<T: Send + Sync + 'static>(
    handles: impl IntoIterator<Item = FutureHandle<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let handles = distinct(handles);
    let deadline = timeout.and_then(deadline);
    let total = handles.len();
    let (inbox, rx) = Inbox::new();
    let mut registrations = Vec::with_capacity(total);
    let mut ready = VecDeque::new();
    for (i, h) in handles.iter().enumerate() {
        if h.done() {
            ready.push_back(i);
            registrations.push(None);
        } else {
            registrations.push(Some(send_when_done(h, i, &inbox)));
        }
    }
    AsCompleted {
        slots: handles.into_iter().map(Some).collect(),
        registrations,
        ready,
        #[cfg(feature = "futures")]
        inbox,
        rx,
        deadline,
        yielded: 0,
        total,
        timed_out: false,
        watched: None,
    }
}

/// The iterator of [`as_completed`]; with the `futures` feature,
/// `into_stream` makes it a `Stream` of the same items, for async code.
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{Promise, as_completed};
/// let (a, b) = (Promise::new(), Promise::<u8>::new());
/// a.set_result(1).unwrap();
/// let mut it = as_completed([a.handle(), b.handle()], Some(Duration::from_millis(5)));
/// assert_eq!(it.next().unwrap().unwrap().result(), Ok(&1));
/// let timed_out = it.next().unwrap().unwrap_err();
/// assert_eq!((timed_out.unfinished, timed_out.total), (1, 2));
/// assert!(it.next().is_none());
/// ```
pub struct AsCompleted<T> {
    slots: Vec<Option<FutureHandle<T>>>,
    registrations: Vec<Option<Registration<T>>>,
    /// Indices done at the start, yielded first.
    ready: VecDeque<usize>,
    /// Where the callbacks report (the stream registers its waker there).
    #[cfg(feature = "futures")]
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) rx: Receiver<usize>,
    pub(crate) deadline: Option<Instant>,
    yielded: usize,
    total: usize,
    timed_out: bool,
    /// On a pool thread, once a `next` has blocked: the handles not yet
    /// yielded, as the wait-for graph names them.
    watched: Option<Watched>,
}

/// Most handles an [`AsCompleted`] may have left for a blocking `next` to
/// enter the wait-for graph: each such `next` lists them all (the check is
/// linear in them), so a long sequence enters it only for its last
/// `FOLLOWED` handles.
const FOLLOWED: usize = 64;

/// The addresses of the handles an [`AsCompleted`] has not yet yielded,
/// kept as it yields (O(1) each), for the wait-for edge of a blocking
/// `next`.
struct Watched {
    addrs: Vec<usize>,
    /// The slot index of each address.
    slot_of: Vec<usize>,
    /// The position in `addrs` of each slot's address (of those listed).
    at: Vec<usize>,
}

impl Watched {
    fn new<T>(slots: &[Option<FutureHandle<T>>]) -> Watched {
        let mut w = Watched {
            addrs: Vec::new(),
            slot_of: Vec::new(),
            at: vec![usize::MAX; slots.len()],
        };
        for (i, h) in slots.iter().enumerate() {
            if let Some(h) = h {
                w.at[i] = w.addrs.len();
                w.addrs.push(h.core_addr());
                w.slot_of.push(i);
            }
        }
        w
    }

    fn remove(&mut self, slot: usize) {
        let p = std::mem::replace(&mut self.at[slot], usize::MAX);
        if p == usize::MAX {
            return;
        }
        self.addrs.swap_remove(p);
        self.slot_of.swap_remove(p);
        if let Some(&moved) = self.slot_of.get(p) {
            self.at[moved] = p;
        }
    }
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("yielded", &self.yielded)
            .field("total", &self.total)
            .finish()
    }
}

impl<T> AsCompleted<T> {
    /// The next handle that was done at the start, if any is left.
    pub(crate) fn next_ready(&mut self) -> Option<FutureHandle<T>> {
        let i = self.ready.pop_front()?;
        Some(self.take(i))
    }

    /// The handle whose callback reported index `i`.
    pub(crate) fn arrived(&mut self, i: usize) -> FutureHandle<T> {
        // It ran: nothing to remove any more.
        self.registrations[i] = None;
        self.take(i)
    }

    fn take(&mut self, i: usize) -> FutureHandle<T> {
        self.yielded += 1;
        if let Some(w) = &mut self.watched {
            w.remove(i);
        }
        self.slots[i]
            .take()
            .expect("each index is yielded once: handles are distinct")
    }

    /// The timeout passed: the error, after which the sequence ends.
    pub(crate) fn expire(&mut self) -> TimedOut {
        self.timed_out = true;
        TimedOut {
            unfinished: self.total - self.yielded,
            total: self.total,
        }
    }

    /// Whether every item (or the timeout error) was yielded.
    pub(crate) fn is_terminated(&self) -> bool {
        self.timed_out || self.yielded == self.total
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<FutureHandle<T>, TimedOut>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.is_terminated() {
            return None;
        }
        if let Some(h) = self.next_ready() {
            return Some(Ok(h));
        }
        let arrived = match self.rx.try_recv() {
            Ok(i) => Some(i),
            // Nothing yet: block, as a wait for any one of the handles not
            // yet yielded (an edge of the wait-for graph on a pool thread).
            Err(_) => {
                let left = self.total - self.yielded;
                if self.watched.is_none() && left <= FOLLOWED && on_pool_thread() {
                    self.watched = Some(Watched::new(&self.slots));
                }
                let targets = self.watched.as_ref().map_or(&[][..], |w| &w.addrs[..]);
                let on = WaitOn {
                    all: false,
                    timed: self.deadline.is_some(),
                    stuck_listed: true,
                };
                let waiting = blocking::watch(targets, on);
                waiting.block(|| recv_here(&self.rx, self.deadline))
            }
        };
        Some(match arrived {
            Some(i) => Ok(self.arrived(i)),
            None => Err(self.expire()),
        })
    }
}

impl<T> Drop for AsCompleted<T> {
    fn drop(&mut self) {
        for (slot, r) in self.slots.iter().zip(&mut self.registrations) {
            if let (Some(h), Some(r)) = (slot, r.take()) {
                h.remove_done_callback(r);
            }
        }
    }
}
