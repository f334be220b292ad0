//! [`Map`]: Python's `Executor.map`, lazy and bounded.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::ThreadPool;
use crate::error::TaskError;
use crate::future::FutureHandle;
use crate::panics::panic_message;

type Chunk<R> = Vec<Result<R, TaskError>>;

/// The iterator of [`ThreadPool::map`]: results in input order.
///
/// It pulls inputs lazily: at most `buffer` chunks of `chunksize` inputs are
/// submitted and not yet consumed at any time, so mapping over a huge (or
/// endless) iterator never queues it all. Each item is
/// `Ok(value)` or the task's [`TaskError`] (a panic surfaces at its own
/// position). With a timeout, counted from the `map` call, the first item
/// not ready in time is `Err(TaskError::Timeout)`, the rest are cancelled,
/// and the iterator ends. If the pool is shut down, the inputs of the chunk
/// that could not be submitted come out as `Err(TaskError::Shutdown)` and
/// the iterator ends. Dropping the iterator cancels the chunks it queued
/// that have not started; a chunk already running maps the rest of its
/// inputs for nobody. If the input iterator panics, the panic comes out of
/// the `next` call that was pulling inputs (which pulls ahead, so results
/// already done may not have been yielded yet), and the map ends there,
/// cancelling what it queued as a drop does: the inputs pulled for the
/// chunk being built are dropped unmapped, and the input is not called
/// again.
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let squares: Vec<u64> = pool
///     .map(|x: u64| x * x, 0..10)
///     .chunksize(3)
///     .buffer(2)
///     .timeout(Duration::from_secs(60))
///     .map(Result::unwrap)
///     .collect();
/// assert_eq!(squares, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
/// ```
#[must_use = "iterators are lazy: nothing is submitted until it is consumed"]
pub struct Map<I: Iterator, R> {
    pool: ThreadPool,
    f: Arc<dyn Fn(I::Item) -> R + Send + Sync>,
    inputs: std::iter::Fuse<I>,
    chunksize: usize,
    buffer: usize,
    deadline: Option<Instant>,
    started: Instant,
    /// Submitted chunks, oldest first, with their lengths.
    in_flight: VecDeque<(FutureHandle<Chunk<R>>, usize)>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
    /// Items of the chunk just taken that failed as a whole, to report now.
    failed: Option<(TaskError, usize)>,
    /// Items of a chunk the pool refused (shut down), to report after the
    /// chunks in flight before it.
    refused: Option<(TaskError, usize)>,
    finished: bool,
}

impl<I: Iterator, R> std::fmt::Debug for Map<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("chunksize", &self.chunksize)
            .field("buffer", &self.buffer)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// Maps `f` over `inputs` on the pool (Python's `Executor.map`), lazily
    /// and in input order. Defaults: one input per task, at most twice as
    /// many tasks in flight as workers, no timeout; see [`Map`].
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    /// let lengths: Vec<_> = pool.map(|s: &str| s.len(), ["a", "bcd", "ef"]).collect();
    /// assert_eq!(lengths, [Ok(1), Ok(3), Ok(2)]);
    /// ```
    pub fn map<I, F, R>(&self, f: F, inputs: I) -> Map<I::IntoIter, R>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        Map {
            pool: self.clone(),
            f: Arc::new(f),
            inputs: inputs.into_iter().fuse(),
            chunksize: 1,
            buffer: 2 * self.workers(),
            deadline: None,
            started: Instant::now(),
            in_flight: VecDeque::new(),
            current: Vec::new().into_iter(),
            failed: None,
            refused: None,
            finished: false,
        }
    }
}

impl<I, R> Map<I, R>
where
    I: Iterator,
    I::Item: Send + 'static,
    R: Send + Sync + 'static,
{
    /// Inputs per task (Python's `chunksize`); at least 1. A chunk's
    /// inputs are read from the iterator and held in one `Vec` before its
    /// task is submitted, so `n` of them must fit in memory: a chunk too
    /// large for it fails as a `Vec` that large does (for an input whose
    /// size is known, such as a range, at once: "capacity overflow", or
    /// the allocation error that aborts the process).
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    /// // 100 inputs in 10 tasks of 10.
    /// let out: Vec<u32> = pool.map(|x: u32| x + 1, 0..100).chunksize(10).map(Result::unwrap).collect();
    /// assert_eq!(out, (1..=100).collect::<Vec<_>>());
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Most chunks submitted ahead of the consumer (Python 3.14's
    /// `buffersize`); at least 1.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    /// // An endless input: only what is read (plus the buffer) is ever submitted.
    /// let first: Vec<u64> = pool.map(|x: u64| x * x, 0..).buffer(4).take(3).map(Result::unwrap).collect();
    /// assert_eq!(first, [0, 1, 4]);
    /// ```
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = n.max(1);
        self
    }

    /// Gives up once `timeout` has passed since the `map` call (Python
    /// counts from the call too). The map is lazy: the clock runs whether
    /// or not the results are being read, so a map read only after its
    /// deadline yields [`TaskError::Timeout`] at the first result not yet
    /// done, even where every task would have finished in time had it been
    /// read at once (Python's eager `map` would have returned them). On
    /// timeout the rest are cancelled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::TaskError;
    ///
    /// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    /// let gate = concurrent_futures::Promise::<()>::new();
    /// let g = gate.handle();
    /// let mut results = pool
    ///     .map(move |_: u8| g.wait().unwrap(), [1])
    ///     .timeout(Duration::from_millis(10));
    /// assert_eq!(results.next(), Some(Err(TaskError::Timeout)));
    /// assert_eq!(results.next(), None);
    /// gate.set_result(()).unwrap();
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = self.started.checked_add(timeout);
        self
    }

    /// Submits chunks until `buffer` are in flight or inputs run out.
    fn refill(&mut self) {
        while self.in_flight.len() < self.buffer {
            // The input is user code: if it panics, the panic goes to the
            // caller of `next` and the map ends, what it has in flight
            // cancelled, as if dropped (the inputs already pulled for this
            // chunk are dropped unmapped): calling the iterator again after
            // its panic would be reading a broken one.
            let (inputs, chunksize) = (&mut self.inputs, self.chunksize);
            let pulled = catch_unwind(AssertUnwindSafe(|| {
                inputs.by_ref().take(chunksize).collect::<Vec<I::Item>>()
            }));
            let chunk = match pulled {
                Ok(chunk) => chunk,
                Err(payload) => {
                    self.finished = true;
                    self.cancel_all();
                    std::panic::resume_unwind(payload)
                }
            };
            if chunk.is_empty() {
                return;
            }
            let len = chunk.len();
            let f = self.f.clone();
            let task = move || {
                chunk
                    .into_iter()
                    .map(|x| {
                        // The payload is dropped under a guard: its own
                        // `Drop` may panic.
                        catch_unwind(AssertUnwindSafe(|| f(x)))
                            .map_err(|p| TaskError::Panicked(panic_message(p)))
                    })
                    .collect::<Chunk<R>>()
            };
            match self.pool.submit(task) {
                Ok(handle) => self.in_flight.push_back((handle, len)),
                Err(_) => {
                    // Shut down: report the chunk's items after those in
                    // flight, then stop pulling.
                    self.refused = Some((TaskError::Shutdown, len));
                    self.finished = true;
                    return;
                }
            }
        }
    }

    fn cancel_all(&mut self) {
        for (h, _) in self.in_flight.drain(..) {
            h.cancel();
        }
    }
}

impl<I, R> Iterator for Map<I, R>
where
    I: Iterator,
    I::Item: Send + 'static,
    R: Send + Sync + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if let Some(e) = take_one(&mut self.failed) {
                return Some(Err(e));
            }
            if !self.finished {
                self.refill();
            }
            let Some((handle, len)) = self.in_flight.pop_front() else {
                // Nothing in flight: report a refused chunk, or end.
                return take_one(&mut self.refused).map(Err);
            };
            let waited = match self.deadline {
                None => handle.wait(),
                Some(d) => handle.wait_timeout(d.saturating_duration_since(Instant::now())),
            };
            if let Err(TaskError::Timeout) = waited {
                handle.cancel();
                self.cancel_all();
                self.finished = true;
                self.refused = None;
                self.current = Vec::new().into_iter();
                return Some(Err(TaskError::Timeout));
            }
            match handle.try_join() {
                Ok(Ok(items)) => self.current = items.into_iter(),
                Ok(Err(e)) => self.failed = Some((e, len)),
                // Nobody else holds a handle to a chunk: unreachable, but
                // report rather than hang or panic.
                Err(_) => self.failed = Some((TaskError::Abandoned, len)),
            }
        }
    }
}

/// Takes one of `n` copies of an error to report.
fn take_one(slot: &mut Option<(TaskError, usize)>) -> Option<TaskError> {
    let (e, n) = slot.take()?;
    if n > 1 {
        *slot = Some((e.clone(), n - 1));
    }
    Some(e)
}

impl<I: Iterator, R> Drop for Map<I, R> {
    fn drop(&mut self) {
        for (h, _) in self.in_flight.drain(..) {
            h.cancel();
        }
    }
}
