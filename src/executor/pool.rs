//! [`ThreadPool`]: Python's `ThreadPoolExecutor` on a work-stealing pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::async_task;
use super::deadlock;
use super::metrics::Metrics;
use super::registry::{Config, Registry};
use super::submit;
use super::task::TaskRef;
use super::worker;
use crate::error::TaskError;
use crate::future::FutureHandle;
use crate::panics::{PanicOrigin, guard};
use crate::trace::trace_event;

/// Why a submit was refused. Holds the closure, so no work is lost.
///
/// ```
/// use concurrent_futures::{SubmitError, ThreadPool};
///
/// let pool = ThreadPool::new(1).unwrap();
/// pool.shutdown(true, false);
/// let err = pool.submit(|| 1).unwrap_err();
/// assert!(matches!(err, SubmitError::Shutdown(_)));
/// let f = err.into_inner();
/// assert_eq!(f(), 1); // the closure came back
/// ```
pub enum SubmitError<F> {
    /// The pool is shut down (Python: `RuntimeError` after `shutdown`).
    Shutdown(F),
    /// `try_submit` found the queue bound reached.
    Full(F),
}

impl<F> SubmitError<F> {
    /// The refused closure.
    ///
    /// ```
    /// use concurrent_futures::{SubmitError, ThreadPool};
    /// let pool = ThreadPool::builder().workers(1).max_queued(1).build().unwrap();
    /// pool.shutdown(true, false);
    /// let f = pool.try_submit(|| "hand it back").unwrap_err().into_inner();
    /// assert_eq!(f(), "hand it back");
    /// ```
    pub fn into_inner(self) -> F {
        match self {
            SubmitError::Shutdown(f) | SubmitError::Full(f) => f,
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Shutdown(_) => f.write_str("Shutdown(..)"),
            SubmitError::Full(_) => f.write_str("Full(..)"),
        }
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Shutdown(_) => f.write_str("cannot submit: the pool is shut down"),
            SubmitError::Full(_) => f.write_str("cannot submit: the queue bound is reached"),
        }
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// Most worker threads a pool may have (Java's `ForkJoinPool` has the same
/// cap): more is a mistake, not a machine.
pub const MAX_WORKERS: usize = 0x7fff;

/// Smallest worker stack accepted, in bytes: below it, a task that panics
/// can overflow the stack while the panic is reported, which aborts the
/// process.
pub const MIN_STACK_SIZE: usize = 64 * 1024;

/// Why a pool could not be built. Every input a [`Builder`] takes is
/// checked here: a bad one is an error, never a panic.
///
/// ```
/// use concurrent_futures::{BuildError, ThreadPool};
/// assert!(matches!(ThreadPool::new(0), Err(BuildError::ZeroWorkers)));
/// assert!(matches!(ThreadPool::new(usize::MAX), Err(BuildError::TooManyWorkers(_))));
/// assert!(matches!(ThreadPool::builder().max_queued(0).build(), Err(BuildError::ZeroBound)));
/// assert!(matches!(ThreadPool::builder().thread_name("a\0b").build(), Err(BuildError::ThreadName(_))));
/// assert!(matches!(ThreadPool::builder().stack_size(1).build(), Err(BuildError::StackSize(1))));
/// // Too large for the OS: refused when the first worker is started.
/// assert!(matches!(ThreadPool::builder().stack_size(usize::MAX).build(), Err(BuildError::Spawn(_))));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A pool needs at least one worker.
    ZeroWorkers,
    /// More workers than [`MAX_WORKERS`] were asked for.
    TooManyWorkers(usize),
    /// A queue bound of zero would refuse every `try_submit`.
    ZeroBound,
    /// The thread name prefix contains a NUL byte, which no OS thread name
    /// may hold.
    ThreadName(String),
    /// The stack size is below [`MIN_STACK_SIZE`].
    StackSize(usize),
    /// The operating system refused to start a worker thread (for instance
    /// a stack size too large for it).
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWorkers => f.write_str("a pool needs at least one worker"),
            BuildError::TooManyWorkers(n) => {
                write!(f, "{n} workers asked for; a pool has at most {MAX_WORKERS}")
            }
            BuildError::ZeroBound => f.write_str("a queue bound must be at least 1"),
            BuildError::ThreadName(name) => {
                write!(f, "thread name {name:?} contains a NUL byte")
            }
            BuildError::StackSize(n) => {
                write!(
                    f,
                    "a stack of {n} bytes is below the minimum of {MIN_STACK_SIZE}"
                )
            }
            BuildError::Spawn(e) => write!(f, "could not start a worker thread: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// What a [`ThreadPool::shutdown_timeout`] left behind.
///
/// ```
/// use std::time::Duration;
/// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
/// let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
/// let g = gate.clone();
/// let stuck = pool.submit(move || { g.wait(); }).unwrap();
/// while !stuck.running() { std::thread::yield_now(); }
/// let report = pool.shutdown_timeout(Duration::from_millis(10), false);
/// assert!(!report.finished);
/// assert_eq!(report.running, 1);
/// gate.wait(); // let it finish
/// assert_eq!(stuck.join(), Ok(()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every worker thread ended before the deadline.
    pub finished: bool,
    /// Tasks still running when the deadline passed (they keep running;
    /// their handles resolve when they return). Work a cancelling shutdown
    /// still runs is not counted here nor in [`Metrics`]: the closures of
    /// a strand's drain and callbacks routed to the pool (essential), and
    /// a future already polled, run to their end uncounted.
    pub running: usize,
    /// Tasks still queued when the deadline passed (they will run, or were
    /// cancelled if cancelling was asked).
    pub queued: usize,
    /// Futures of [`submit_future`](ThreadPool::submit_future) and
    /// [`spawn_future`](ThreadPool::spawn_future) not finished when the
    /// deadline passed (the workers stay to poll them until they are), and
    /// any submit still in flight; 0 when `finished`. A future that called
    /// the shutdown counts itself.
    pub pending_futures: usize,
    /// It did not wait, as the wait could never end (see
    /// [`ThreadPool::shutdown`]): it was called from one of the pool's own
    /// threads, from work one of its tasks lent to another pool, or from a
    /// task that one of its tasks waits on. Its figures are those of the
    /// moment it was called.
    pub would_deadlock: bool,
}

/// Configures a [`ThreadPool`].
///
/// ```
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::builder()
///     .workers(2)
///     .thread_name("crunch")
///     .max_queued(1000)
///     .build()
///     .unwrap();
/// assert_eq!(pool.workers(), 2);
/// ```
#[derive(Clone)]
pub struct Builder {
    workers: Option<usize>,
    name_prefix: String,
    stack_size: Option<usize>,
    max_queued: Option<usize>,
    max_blocking: usize,
    keep_alive: Duration,
    shared_queue: bool,
    batch_scheduling: bool,
    panic_hook: Option<crate::panics::Hook>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("name_prefix", &self.name_prefix)
            .field("stack_size", &self.stack_size)
            .field("max_queued", &self.max_queued)
            .field("max_blocking", &self.max_blocking)
            .field("keep_alive", &self.keep_alive)
            .field("shared_queue", &self.shared_queue)
            .field("batch_scheduling", &self.batch_scheduling)
            .field("panic_hook", &self.panic_hook.is_some())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: None,
            name_prefix: String::from("cf-worker"),
            stack_size: None,
            max_queued: None,
            max_blocking: 512,
            keep_alive: super::worker::KEEP_ALIVE,
            shared_queue: false,
            batch_scheduling: false,
            panic_hook: None,
        }
    }
}

impl Builder {
    /// A builder with the defaults: one worker per available core, threads
    /// named `cf-worker-N`, the platform's stack size, no queue bound, at
    /// most 512 compensating workers.
    ///
    /// ```
    /// let pool = concurrent_futures::Builder::new().workers(1).build().unwrap();
    /// assert_eq!(pool.workers(), 1);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of worker threads (default: available parallelism). `build`
    /// refuses 0 ([`BuildError::ZeroWorkers`]) and more than
    /// [`MAX_WORKERS`] ([`BuildError::TooManyWorkers`]).
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::builder().workers(3).build().unwrap();
    /// assert_eq!(pool.workers(), 3);
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Prefix of the worker threads' names (`PREFIX-0`, `PREFIX-1`, …;
    /// compensating workers are `PREFIX-extra`). `build` refuses a prefix
    /// with a NUL byte ([`BuildError::ThreadName`]).
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::builder().workers(1).thread_name("io").build().unwrap();
    /// let name = pool.submit(|| std::thread::current().name().map(str::to_owned)).unwrap();
    /// assert_eq!(name.join(), Ok(Some("io-0".to_owned())));
    /// ```
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Stack size of each worker thread, in bytes. `build` refuses less
    /// than [`MIN_STACK_SIZE`] ([`BuildError::StackSize`]), and reports a
    /// size the OS cannot give as [`BuildError::Spawn`].
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::builder().stack_size(4 << 20).build().unwrap();
    /// // Deep recursion needs a large stack.
    /// fn depth(n: u32) -> u32 { if n == 0 { 0 } else { 1 + depth(n - 1) } }
    /// assert_eq!(pool.submit(|| depth(10_000)).unwrap().join(), Ok(10_000));
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Bound on queued tasks for [`ThreadPool::try_submit`] (`submit`
    /// ignores it, like Python's unbounded executor). `build` refuses 0
    /// ([`BuildError::ZeroBound`]); `usize::MAX` is the same as no bound. Approximate under
    /// concurrent submits: it may be exceeded by the number of threads
    /// submitting at the same instant. It counts the queues' entries, and
    /// a cancelled task keeps its entry until a worker meets it there (and
    /// drops it unrun): a pool whose workers are all busy stays full of
    /// cancelled tasks until one of them comes back to its queue.
    ///
    /// ```
    /// use concurrent_futures::{SubmitError, ThreadPool};
    /// let pool = ThreadPool::builder().workers(1).max_queued(2).build().unwrap();
    /// // `submit` ignores the bound; `try_submit` refuses past it. (A std
    /// // barrier holds the worker: a wait the pool can see would be
    /// // compensated by an extra worker, which would drain the queue.)
    /// let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    /// let g = gate.clone();
    /// let blocker = pool.submit(move || { g.wait(); }).unwrap();
    /// while !blocker.running() { std::thread::yield_now(); }
    /// let queued: Vec<_> = (0..2).map(|i| pool.try_submit(move || i).unwrap()).collect();
    /// assert!(matches!(pool.try_submit(|| 2), Err(SubmitError::Full(_))));
    /// gate.wait();
    /// assert_eq!(queued.into_iter().map(|h| h.join().unwrap()).sum::<i32>(), 1);
    /// ```
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = Some(n);
        self
    }

    /// Most compensating workers alive at once. A worker that blocks on a
    /// task running elsewhere is compensated by one, so the pool keeps its
    /// capacity (like Java's managed blocking), and by no more: a stand-in
    /// starts only while fewer are alive than threads are blocked, so
    /// `workers` tasks run at once outside waits, however many are queued. A compensating worker stays
    /// after its work is done, asleep, for [`keep_alive`](Builder::keep_alive)
    /// (10 seconds by default), so a pool that
    /// blocks again and again reuses it instead of starting a thread. Default 512; 0 means none
    /// (a blocked worker is not stood in for: at most `workers` tasks run
    /// at once, as in Python's executor). Then a task that blocks on other
    /// work of the same pool which it cannot run itself (a scope's tasks
    /// at the scope's end, a strand's closures, a task another worker
    /// started) waits for a free worker, and if every worker is blocked
    /// so, for good: the wait-for graph sees cycles of waits, not a pool
    /// out of workers. After a shutdown, idle workers exit once nothing is
    /// queued, so there such work waits for good even with a worker that
    /// was free: a task that, after the shutdown, makes work it then
    /// blocks on (a `join` half, a task it waits on that another thread
    /// started) needs a stand-in. A handle's untimed wait on a task of the same pool
    /// still queued runs it inline, with or without stand-ins, up to 64
    /// tasks deep on one thread; past that, or for a timed wait, it blocks
    /// like any other. Any value is accepted: the OS
    /// refusing a thread only means no stand-in is started. A stand-in is
    /// started by the thread whose submit or wait needs it, so it inherits
    /// that thread's CPU affinity (and a real-time policy), where the core
    /// workers have the building thread's.
    ///
    /// ```
    /// // One worker, and a task that waits on another one running elsewhere:
    /// // a compensating worker keeps the pool's capacity meanwhile.
    /// let pool = concurrent_futures::ThreadPool::builder().workers(1).max_blocking(4).build().unwrap();
    /// let p = pool.clone();
    /// let outer = pool.submit(move || p.submit(|| 6).unwrap().join().unwrap() * 7).unwrap();
    /// assert_eq!(outer.join(), Ok(42));
    /// ```
    pub fn max_blocking(mut self, n: usize) -> Self {
        self.max_blocking = n;
        self
    }

    /// How long an idle compensating worker (see
    /// [`max_blocking`](Builder::max_blocking)) stays, asleep, for a submit
    /// to wake it before its thread exits. Default 10 seconds, as tokio's
    /// blocking pool keeps its idle threads. Shorter gives threads back
    /// sooner to a pool that blocks seldom; `Duration::ZERO` ends a
    /// compensating worker as soon as it finds no work. Core workers never
    /// exit before shutdown.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = concurrent_futures::ThreadPool::builder()
    ///     .workers(1)
    ///     .keep_alive(Duration::from_millis(500))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.submit(|| 7).unwrap().join(), Ok(7));
    /// ```
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.keep_alive = idle;
        self
    }

    /// Whether [`submit`](ThreadPool::submit), [`try_submit`](ThreadPool::try_submit)
    /// and [`spawn`](ThreadPool::spawn) called on the pool's own workers
    /// queue on the pool's shared queue too, so that tasks start in the
    /// order they were submitted, whichever thread submitted them, as with
    /// Python's executor (one queue). Default `false`: a worker's own
    /// submits go to its deque and run ahead of work submitted from
    /// outside (warm caches, no contention). Either way scopes, `join`,
    /// strands, routed callbacks and the ambient
    /// [`spawn`](crate::spawn)/[`submit`](fn@crate::submit) keep to the
    /// worker's deque.
    ///
    /// With it, a task that a worker's task submits cannot overtake one
    /// submitted earlier from outside, which matters to a pool without
    /// stand-ins ([`max_blocking`](Builder::max_blocking)`(0)`) whose
    /// tasks wait on each other in submission order.
    ///
    /// ```
    /// use std::sync::{Arc, Barrier, Mutex};
    /// use concurrent_futures::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(1).shared_queue(true).build().unwrap();
    /// let order = Arc::new(Mutex::new(Vec::new()));
    /// let gate = Arc::new(Barrier::new(2));
    /// let (p, o, g) = (pool.clone(), order.clone(), gate.clone());
    /// let a = pool.submit(move || {
    ///     g.wait(); // `b` is queued from outside by now
    ///     let o2 = o.clone();
    ///     p.submit(move || o2.lock().unwrap().push("c")).unwrap()
    /// }).unwrap();
    /// let o = order.clone();
    /// let b = pool.submit(move || o.lock().unwrap().push("b")).unwrap();
    /// gate.wait();
    /// a.join().unwrap().join().unwrap();
    /// b.join().unwrap();
    /// assert_eq!(*order.lock().unwrap(), ["b", "c"]);
    /// ```
    pub fn shared_queue(mut self, on: bool) -> Self {
        self.shared_queue = on;
        self
    }

    /// On Linux, each worker asks at its start for the `SCHED_BATCH`
    /// policy (default: off): it is scheduled as before by its nice value,
    /// but when it is woken it does not preempt the thread running on its
    /// core; it runs when that thread blocks, at the scheduler's next tick,
    /// or on another core. For a pool that shares cores with the thread
    /// that feeds it, a server's I/O thread above all: that thread goes on
    /// reading and submitting instead of being switched out for each task
    /// it hands over. Where the kernel places a woken worker on its waker's
    /// core (the VM of docs/BENCHMARKS.md, nearly always), the example
    /// server's I/O thread under `wrk` was switched out 158-7,066 times in
    /// a 5 s run with it, against 147,001-257,801 in the runs that read
    /// slow without it (one preemption per two requests), and the server's
    /// median at 80% of its peak rate fell from 591-742 µs to 470-543
    /// (BENCHMARKS.md, "A worker that preempted the I/O thread"). A
    /// hand-written pool gains as much from the same policy: it is a
    /// scheduler's setting, offered here as one call.
    ///
    /// The workers' idle rules follow the policy: a worker that runs dry
    /// sleeps at once instead of spinning (it spins only for the reply of
    /// a thread blocked on a result it just delivered), and a submit wakes
    /// a sleeping worker whenever there is one instead of leaving its task
    /// to a worker already awake, which under this policy may be waiting
    /// for the submitter's own core (docs/design.md, "Whom a wake-up
    /// preempts"). They follow the policy as the building thread finds it,
    /// not the option: `build` first
    /// asks for it from a throwaway thread, and where the kernel refuses it
    /// (a seccomp filter) or the building thread is real-time (its workers
    /// inherit that policy and keep it), the pool keeps the normal policy
    /// and the normal idle rules, as with the option off. A building
    /// thread under `SCHED_IDLE` gives workers that never preempt either:
    /// they keep that policy and take the rules. Off Linux the option
    /// changes nothing.
    ///
    /// The cost: a task submitted by a thread that then keeps its core
    /// busy may wait until that thread blocks or its time slice ends (the
    /// kernel's to set: typically milliseconds, by its version and
    /// configuration) where no other core is free.
    /// Leave it off where the submitter's next moment matters less than the
    /// task's start. And work that tasks fan out inside the pool (`join`,
    /// a scope) loses the spin that caught it: the example server's
    /// requests cut in 4 parts answered less with the option's idle rules
    /// than without them in 14 of 18 rounds (35,495-53,650 requests/s
    /// against 42,431-52,674, both under the policy). It suits a pool fed
    /// from outside.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::builder()
    ///     .workers(2)
    ///     .batch_scheduling(true)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.submit(|| 6 * 7).unwrap().join(), Ok(42));
    /// ```
    pub fn batch_scheduling(mut self, on: bool) -> Self {
        self.batch_scheduling = on;
        self
    }

    /// Reports panics of done-callbacks that run on this pool's workers
    /// (including callbacks routed to the pool and strand closures) to
    /// `hook` instead of the process-wide hook of
    /// [`set_callback_panic_hook`](crate::set_callback_panic_hook). A
    /// panic is reported by the thread it happens on: a strand closure run
    /// by a thread that [`dispatch`](crate::Strand::dispatch)ed to the
    /// strand goes to that thread's hook.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::{Promise, ThreadPool};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let pool = ThreadPool::builder()
    ///     .workers(1)
    ///     .callback_panic_hook(move |p| tx.lock().unwrap().send(p.message().to_string()).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let promise = Promise::<u8>::new();
    /// pool.add_done_callback(&promise.handle(), |_| panic!("in a routed callback"));
    /// promise.set_result(1).unwrap();
    /// assert_eq!(rx.recv().unwrap(), "in a routed callback");
    /// ```
    pub fn callback_panic_hook(
        mut self,
        hook: impl Fn(&crate::CallbackPanic) + Send + Sync + 'static,
    ) -> Self {
        self.panic_hook = Some(Arc::new(hook));
        self
    }

    /// Starts the pool.
    ///
    /// ```
    /// use concurrent_futures::{BuildError, ThreadPool};
    /// assert!(ThreadPool::builder().workers(2).build().is_ok());
    /// assert!(matches!(ThreadPool::builder().workers(0).build(), Err(BuildError::ZeroWorkers)));
    /// ```
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let workers = match self.workers {
            Some(0) => return Err(BuildError::ZeroWorkers),
            Some(n) if n > MAX_WORKERS => return Err(BuildError::TooManyWorkers(n)),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
        };
        if self.max_queued == Some(0) {
            return Err(BuildError::ZeroBound);
        }
        if self.name_prefix.contains('\0') {
            return Err(BuildError::ThreadName(self.name_prefix));
        }
        if let Some(bytes) = self.stack_size
            && bytes < MIN_STACK_SIZE
        {
            return Err(BuildError::StackSize(bytes));
        }
        let config = Config {
            workers,
            name_prefix: self.name_prefix,
            stack_size: self.stack_size,
            max_queued: self.max_queued,
            max_blocking: self.max_blocking,
            keep_alive: self.keep_alive,
            shared_queue: self.shared_queue,
            batch_scheduling: self.batch_scheduling,
            panic_hook: self.panic_hook,
        };
        let (registry, locals) = Registry::new(config);
        let owner = Owner {
            registry: registry.clone(),
        };
        for (index, local) in locals.into_iter().enumerate() {
            let name = format!("{}-{index}", registry.config.name_prefix);
            match registry.spawn_thread(name, move |reg| worker::run_worker(reg, index, local)) {
                Ok(join) => registry
                    .joins
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(join),
                Err(e) => {
                    // `owner` shuts down and joins the workers already started.
                    drop(owner);
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        trace_event!(
            ::tracing::Level::DEBUG,
            workers,
            thread_name = %registry.config.name_prefix,
            "pool started"
        );
        Ok(ThreadPool {
            owner: Arc::new(owner),
        })
    }
}

/// Shuts the pool down when the last [`ThreadPool`] clone goes.
struct Owner {
    registry: Arc<Registry>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Python: a dropped executor still completes its queued work. After
        // a `shutdown_timeout` that gave up, waiting again would hang where
        // the caller chose not to: do not wait then. Nor inside the drop of
        // a future that holds this pool open (it held the last clone): its
        // hold is released only after this returns.
        let wait = !self.registry.gave_up_waiting()
            && !async_task::dropping_held_future_of(&self.registry);
        shutdown(&self.registry, wait, false, None);
    }
}

/// A work-stealing thread pool with Python's executor API.
///
/// Submits from outside go to a shared injector queue; submits from inside
/// a task go to the worker's own deque; idle workers steal, then park
/// after a brief spin (no CPU used while idle). Cloning gives another handle
/// to the same pool; the pool shuts down (waiting for queued work, except
/// where [`shutdown`](ThreadPool::shutdown) says it cannot) when the last
/// clone is dropped.
///
/// ```
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let handles: Vec<_> = (0..4u64).map(|i| pool.submit(move || i * i).unwrap()).collect();
/// let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(squares, [0, 1, 4, 9]);
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    owner: Arc<Owner>,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers())
            .field("shutdown", &self.registry().is_shutdown())
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `workers` threads with the other defaults of [`Builder`].
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    /// assert_eq!(pool.submit(|| 1 + 1).unwrap().join(), Ok(2));
    /// ```
    pub fn new(workers: usize) -> Result<ThreadPool, BuildError> {
        Builder::new().workers(workers).build()
    }

    /// A [`Builder`] for a pool.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::builder().workers(2).build().unwrap();
    /// assert_eq!(pool.workers(), 2);
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.owner.registry
    }

    /// The number of (core) worker threads.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(3).unwrap();
    /// assert_eq!(pool.workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.registry().config.workers
    }

    /// Schedules `f` and returns a handle to its result. A panic in `f`
    /// resolves the handle with [`TaskError::Panicked`];
    /// the worker survives.
    /// After shutdown the closure is handed back in [`SubmitError::Shutdown`].
    ///
    /// ```
    /// use concurrent_futures::{TaskError, ThreadPool};
    /// let pool = ThreadPool::new(1).unwrap();
    /// let ok = pool.submit(|| "fine").unwrap();
    /// let bad = pool.submit(|| -> u8 { panic!("oops") }).unwrap();
    /// assert_eq!(ok.join(), Ok("fine"));
    /// assert!(matches!(bad.result(), Err(TaskError::Panicked(m)) if m.as_str() == "oops"));
    /// ```
    pub fn submit<F, T>(&self, f: F) -> Result<FutureHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + Sync + 'static,
    {
        submit_in(public_slot(self.registry()), f).map_err(SubmitError::Shutdown)
    }

    /// Like [`submit`](ThreadPool::submit), but refuses with
    /// [`SubmitError::Full`] when the queue bound of
    /// [`Builder::max_queued`] is reached. A shut-down pool refuses with
    /// [`SubmitError::Shutdown`], full or not.
    ///
    /// ```
    /// use concurrent_futures::{SubmitError, ThreadPool};
    /// let pool = ThreadPool::builder().workers(1).max_queued(1).build().unwrap();
    /// let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    /// let g = gate.clone();
    /// let blocker = pool.submit(move || { g.wait(); }).unwrap();
    /// while !blocker.running() { std::thread::yield_now(); }
    /// let queued = pool.try_submit(|| 1).unwrap();
    /// assert!(matches!(pool.try_submit(|| 2), Err(SubmitError::Full(_))));
    /// gate.wait();
    /// assert_eq!(queued.join(), Ok(1));
    /// ```
    pub fn try_submit<F, T>(&self, f: F) -> Result<FutureHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + Sync + 'static,
    {
        // A shut-down pool says so, full or not: a caller that retries on
        // `Full` must learn that no retry can succeed.
        if self.is_shutdown() {
            return Err(SubmitError::Shutdown(f));
        }
        if let Some(bound) = self.registry().config.max_queued
            && self.metrics().queued >= bound
        {
            return Err(SubmitError::Full(f));
        }
        self.submit(f)
    }

    /// Schedules `f` without a handle (fire and forget). A panic is counted
    /// in [`Metrics::panicked`] and otherwise ignored.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// pool.spawn(move || tx.send("ran").unwrap()).unwrap();
    /// assert_eq!(rx.recv(), Ok("ran"));
    /// ```
    pub fn spawn<F>(&self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        spawn_in(public_slot(self.registry()), f, false).map_err(SubmitError::Shutdown)
    }

    /// Runs `future` on the pool's workers and returns a handle to its
    /// output: async code can `await` the handle, blocking code can
    /// [`join`](FutureHandle::join) it. Each wake queues one poll on a
    /// worker (never on the waking thread, so a waker may hold a lock the
    /// future's `poll` takes); a future that wakes itself yields its worker
    /// between polls. Each poll counts as a task in [`Metrics`].
    ///
    /// Like a submitted closure: cancelling the handle before the first
    /// poll means the future is never polled (Python's `cancel`); once
    /// polled it is running and `cancel` returns false. A cancelling
    /// shutdown cancels it only if it was never polled. A panic in `poll`
    /// resolves the handle with [`TaskError::Panicked`] (and counts in
    /// [`Metrics::panicked`]).
    ///
    /// A live future keeps the pool open: after shutdown the workers stay
    /// to poll it, and `shutdown(true, _)` (and dropping the pool) waits
    /// until it finishes, as Python waits for pending futures; a future
    /// that never finishes makes that wait endless, like a closure that
    /// never returns: use [`shutdown_timeout`](ThreadPool::shutdown_timeout),
    /// which reports it in [`ShutdownReport::pending_futures`]. A future no
    /// waker can reach any more is dropped with its last waker, on the
    /// thread that drops it (its handle resolves as
    /// [`TaskError::Abandoned`]); one that keeps its own waker alive (say,
    /// the sender of a channel it awaits) is never dropped.
    ///
    /// ```
    /// use concurrent_futures::{Promise, ThreadPool};
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let input = Promise::new();
    /// let ready = input.handle();
    /// let doubled = pool.submit_future(async move { ready.await.unwrap() * 2 }).unwrap();
    /// input.set_result(21).unwrap();
    /// assert_eq!(doubled.join(), Ok(42));
    /// ```
    pub fn submit_future<F>(&self, future: F) -> Result<FutureHandle<F::Output>, SubmitError<F>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + Sync + 'static,
    {
        if self.is_shutdown() {
            return Err(SubmitError::Shutdown(future));
        }
        let promise = crate::future::Promise::new();
        let handle = promise.handle();
        match async_task::spawn(
            self.registry(),
            async_task::Completing::new(future, promise),
        ) {
            Ok(()) => Ok(handle),
            // Shut down in between: hand the caller's future back.
            Err(completing) => Err(SubmitError::Shutdown(completing.into_inner())),
        }
    }

    /// Runs `future` on the pool with no handle (fire and forget), as
    /// [`submit_future`](ThreadPool::submit_future) does otherwise (it holds
    /// the pool open too). A panic in `poll` is reported through the
    /// callback-panic hook and counted in [`Metrics::panicked`].
    ///
    /// ```
    /// use concurrent_futures::{Promise, ThreadPool};
    ///
    /// let pool = ThreadPool::new(1).unwrap();
    /// let done = Promise::new();
    /// let handle = done.handle();
    /// pool.spawn_future(async move { done.set_result("polled on the pool").unwrap() }).unwrap();
    /// assert_eq!(handle.result(), Ok(&"polled on the pool"));
    /// ```
    pub fn spawn_future<F>(&self, future: F) -> Result<(), SubmitError<F>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        async_task::spawn(self.registry(), future).map_err(SubmitError::Shutdown)
    }

    /// Attaches a done-callback to `handle` that runs as a task on this pool,
    /// never inline on the thread that completes the future. If the pool is
    /// shut down when the future completes, the callback runs inline instead
    /// (it is never lost).
    ///
    /// **Not ordered**: the guarantee of
    /// [`FutureHandle::add_done_callback`] (registration order, never two
    /// at a time) covers the moment each routed callback is *queued*; once
    /// queued they are independent pool tasks, which different workers may
    /// run at the same time and in any order. For routed callbacks that run
    /// one at a time in registration order, route them to a
    /// [`Strand`](crate::Strand) with
    /// [`Strand::add_done_callback`](crate::Strand::add_done_callback).
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::{Promise, ThreadPool};
    /// let pool = ThreadPool::builder().workers(1).thread_name("cb").build().unwrap();
    /// let promise = Promise::new();
    /// let (tx, rx) = mpsc::channel();
    /// pool.add_done_callback(&promise.handle(), move |r| {
    ///     let on = std::thread::current().name().map(str::to_owned);
    ///     tx.send((*r.unwrap(), on)).unwrap();
    /// });
    /// promise.set_result(3).unwrap();
    /// assert_eq!(rx.recv().unwrap(), (3, Some("cb-0".to_owned())));
    /// ```
    pub fn add_done_callback<T, F>(&self, handle: &FutureHandle<T>, f: F)
    where
        T: Send + Sync + 'static,
        F: FnOnce(Result<&T, &TaskError>) + Send + 'static,
    {
        let registry = self.registry().clone();
        let reader = handle.clone();
        let _ = handle.add_done_callback(move |_| {
            let job = move || {
                // Reported like any done-callback's panic (the pool would
                // otherwise only count it).
                guard(PanicOrigin::DoneCallback, || f(reader.outcome_ref()));
            };
            if let Err(job) = spawn_on(&registry, job, true) {
                job();
            }
        });
    }

    /// A snapshot of the pool's counters.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(2).unwrap();
    /// assert_eq!(pool.metrics().threads, 2);
    /// for i in 0..10 {
    ///     pool.submit(move || i).unwrap();
    /// }
    /// pool.shutdown(true, false);
    /// assert_eq!(pool.metrics().completed, 10);
    /// assert_eq!(pool.metrics().threads, 0);
    /// ```
    pub fn metrics(&self) -> Metrics {
        Metrics {
            threads: self.registry().live_threads(),
            ..self.registry().metrics()
        }
    }

    /// Python's `shutdown(wait, cancel_futures)`: stop accepting work; with
    /// `cancel_pending`, cancel every task that has not started; with
    /// `wait`, block until every worker has finished. Queued tasks that are
    /// not cancelled still run, and futures on the pool that have started
    /// ([`submit_future`](ThreadPool::submit_future)) keep the workers until
    /// they finish (a cancelling shutdown never polls one on the calling
    /// thread: it hands it back to the workers). Every handle of a task
    /// that returns, or of a future that finishes, ends done or cancelled.
    /// The queued tasks a cancelling shutdown cancels have their
    /// done-callbacks run on the calling thread, as Python's `cancel` does
    /// (tasks in a worker's own deque, spawned there, are cancelled by
    /// a thread of the pool that waits on one, or by
    /// that worker, and their callbacks run there). Callbacks routed to
    /// the pool ([`ThreadPool::add_done_callback`])
    /// and strand drains a posted closure starts still go to the workers,
    /// not to the caller, which may hold a lock they take; a
    /// [`dispatch_done_callback`](crate::Strand::dispatch_done_callback)
    /// on a cancelled task runs on the caller, as a dispatch does, and so
    /// does the rest of that strand's drain if the strand was idle.
    ///
    /// It does not wait where the wait could never end: called from one
    /// of the pool's own threads (it would wait on itself); from a
    /// done-callback that a cancelling shutdown of the same pool runs on
    /// its caller (that call holds the pool open until the callback
    /// returns; the outer call still waits, if asked); from work that
    /// one of the pool's tasks waits on, running on another pool's thread
    /// (an [`install`](ThreadPool::install), a scope or a `join` there);
    /// or from another pool's task that one of this pool's tasks is
    /// blocked waiting on (directly or through other waits: the wait-for
    /// graph of [`TaskError::WouldDeadlock`]). While an untimed shutdown
    /// from a pool thread waits, a handle's wait on the pool's threads'
    /// side that would close such a cycle is refused with `WouldDeadlock`;
    /// module-level [`wait`](fn@crate::wait) leaves the shut-down caller's
    /// handle out of what it waits for, and [`as_completed`](crate::as_completed)
    /// blocks on it as it does on its caller's own handle (a
    /// [`shutdown_timeout`](ThreadPool::shutdown_timeout)'s wait ends by
    /// itself, and refuses nothing; a timeout too long for a deadline is
    /// untimed). Waits the crate does not see (a
    /// channel, a lock, a `Promise` someone else sets, a future on the pool
    /// awaiting) are not in the graph. Calling it again is harmless.
    ///
    /// ```
    /// use concurrent_futures::ThreadPool;
    /// let pool = ThreadPool::new(1).unwrap();
    /// let h = pool.submit(|| 5).unwrap();
    /// pool.shutdown(true, false);
    /// assert_eq!(h.join(), Ok(5));
    /// assert!(pool.submit(|| 6).is_err());
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        shutdown(self.registry(), wait, cancel_pending, None);
    }

    /// Shuts down and waits at most `timeout` for the workers to finish,
    /// instead of hanging on a task that never returns or a future that
    /// never finishes; reports what was still running, queued or pending.
    /// After it gave up, dropping the pool does not wait either.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::ThreadPool;
    /// let pool = ThreadPool::new(1).unwrap();
    /// let report = pool.shutdown_timeout(Duration::from_secs(5), false);
    /// assert!(report.finished);
    /// assert_eq!((report.running, report.queued), (0, 0));
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration, cancel_pending: bool) -> ShutdownReport {
        shutdown(self.registry(), true, cancel_pending, Some(timeout))
    }

    /// True on one of this pool's threads: a worker, or a thread started
    /// to keep the pool's capacity while a worker blocks. Code that must
    /// not wait for its own thread checks it: joining the pool from inside
    /// one of its tasks could never end (Python raises "cannot join
    /// current thread" there).
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    /// assert!(!pool.is_worker_thread());
    /// let inner = pool.clone();
    /// assert_eq!(pool.submit(move || inner.is_worker_thread()).unwrap().join(), Ok(true));
    /// let other = concurrent_futures::ThreadPool::new(1).unwrap();
    /// assert_eq!(pool.submit(move || other.is_worker_thread()).unwrap().join(), Ok(false));
    /// ```
    pub fn is_worker_thread(&self) -> bool {
        worker::is_worker_of(self.registry())
    }

    /// Whether [`shutdown`](ThreadPool::shutdown) was called.
    ///
    /// ```
    /// let pool = concurrent_futures::ThreadPool::new(1).unwrap();
    /// assert!(!pool.is_shutdown());
    /// pool.shutdown(false, false);
    /// assert!(pool.is_shutdown());
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.registry().is_shutdown()
    }
}

/// The slot of a public `submit` or `spawn`: on the shared queue if the
/// pool was built with [`Builder::shared_queue`], else where the caller is.
fn public_slot(registry: &Arc<Registry>) -> Option<submit::SubmitSlot<'_>> {
    if registry.config.shared_queue {
        submit::SubmitSlot::claim_from(registry, None)
    } else {
        submit::SubmitSlot::claim(registry)
    }
}

/// Queues `f` in `slot` (claimed first: `None`, refused) with a handle to
/// its result; hands it back if the pool is shut down.
pub(crate) fn submit_in<F, T>(
    slot: Option<submit::SubmitSlot<'_>>,
    f: F,
) -> Result<FutureHandle<T>, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + Sync + 'static,
{
    // The slot is claimed first, so that a refusal still has the closure.
    let Some(slot) = slot else {
        return Err(f);
    };
    let (task, shared) = TaskRef::new(f, slot.registry().tag.0);
    slot.push(task);
    Ok(FutureHandle::from_shared(shared))
}

/// Schedules a fire-and-forget closure; hands it back if the pool is shut
/// down. An `essential` one runs even if shutdown later cancels queued work,
/// and one made while this thread cancels the pool's queue (a routed
/// callback or a strand drain of a task it cancels) goes to the workers
/// all the same: the cancelling thread may hold a lock it takes.
pub(crate) fn spawn_on<F>(registry: &Arc<Registry>, f: F, essential: bool) -> Result<(), F>
where
    F: FnOnce() + Send + 'static,
{
    let slot = submit::SubmitSlot::claim(registry);
    if slot.is_none() && essential && Cancelling::is_here(registry) {
        // The canceller holds the pool open: the workers stay to run it.
        submit::SubmitSlot::requeue(registry).push(TaskRef::detached(f, true));
        return Ok(());
    }
    spawn_in(slot, f, essential)
}

std::thread_local! {
    /// The pools whose queues this thread is cancelling (`cancel_injector`),
    /// innermost last: a callback of a task one cancel cancels may shut
    /// down another pool, cancelling too.
    static CANCELLING: std::cell::RefCell<Vec<*const Registry>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks this thread as cancelling a pool's queue while it lives.
struct Cancelling;

impl Cancelling {
    fn enter(registry: &Registry) -> Option<Cancelling> {
        // `try_with`: from a thread-local's destructor nothing is marked;
        // routed work then runs on this thread, as before.
        CANCELLING
            .try_with(|c| c.borrow_mut().push(registry))
            .ok()
            .map(|()| Cancelling)
    }

    fn is_here(registry: &Registry) -> bool {
        CANCELLING
            .try_with(|c| c.borrow().iter().any(|&r| std::ptr::eq(r, registry)))
            .unwrap_or(false)
    }
}

impl Drop for Cancelling {
    fn drop(&mut self) {
        let _ = CANCELLING.try_with(|c| c.borrow_mut().pop());
    }
}

/// [`spawn_on`] with the slot claimed (`None`: refused).
pub(crate) fn spawn_in<F>(
    slot: Option<submit::SubmitSlot<'_>>,
    f: F,
    essential: bool,
) -> Result<(), F>
where
    F: FnOnce() + Send + 'static,
{
    let Some(slot) = slot else {
        return Err(f);
    };
    slot.push(TaskRef::detached(f, essential));
    Ok(())
}

/// Cancels what the injector holds, from the shutting-down thread, so a busy
/// pool's handles resolve now (workers cancel what they pop too). Work that
/// must still run (a polled future, a strand drain, a routed callback) goes
/// back to the workers: none of it runs on this thread, which may hold a
/// lock it takes. At most as many as are queued now, so what goes back
/// cannot keep the drain going.
fn cancel_injector(registry: &Arc<Registry>) {
    let _cancelling = Cancelling::enter(registry);
    let mut left = registry.injector.len();
    while left > 0 {
        match registry.injector.steal() {
            crossbeam_deque::Steal::Success(task) => {
                left -= 1;
                if let Some(task) = task.cancel_from_drain() {
                    submit::SubmitSlot::requeue(registry).push(task);
                }
            }
            crossbeam_deque::Steal::Retry => continue,
            crossbeam_deque::Steal::Empty => break,
        }
    }
}

/// On a pool thread, enters the shutdown's wait for `registry`'s threads
/// in the wait-for graph, as a handle's wait is (`timed`: with a deadline):
/// `Err` if one of them could never finish while the caller waits (the
/// caller runs work one of them lent it, or one is blocked on what the
/// caller holds). While the edge stands, a wait of one of them on what the
/// caller holds is refused. Off a pool (nothing can wait on such a
/// thread's tasks), or for an untagged pool, nothing is entered.
fn enter_wait_graph(
    registry: &Registry,
    timed: bool,
) -> Result<Option<deadlock::Registered<'static>>, ()> {
    let pool = registry.tag.0;
    if pool == 0 || !crate::future::blocking::on_pool_thread() {
        return Ok(None);
    }
    let holds = crate::future::blocking::running_snapshot();
    deadlock::WAITS
        .register_pool(holds, pool, timed)
        .map(Some)
        .ok_or(())
}

fn shutdown(
    registry: &Arc<Registry>,
    wait: bool,
    cancel_pending: bool,
    timeout: Option<Duration>,
) -> ShutdownReport {
    trace_event!(
        ::tracing::Level::DEBUG,
        wait,
        cancel_pending,
        ?timeout,
        "shutdown"
    );
    // A timeout too long to name a deadline waits for good, as every
    // other wait's does: so it is untimed, for the graph too, which would
    // otherwise take its edge for one that ends by itself.
    let timeout = timeout.filter(|&t| crate::future::deadline(t).is_some());
    if cancel_pending {
        // Held open while we drain, so no worker exits between our taking a
        // task that must still run and our queueing it again.
        let _hold = registry.hold_open();
        registry.shutdown(true);
        cancel_injector(registry);
    } else {
        registry.shutdown(false);
    }
    // A wait that could never end is not made: from one of the pool's own
    // threads; from code a cancelling shutdown of this pool runs on this
    // thread (a cancelled task's callback: the outer call holds the pool
    // open until it returns); or (the wait-for graph) where the caller
    // runs work one of them lent it, or one of them is blocked on what the
    // caller holds.
    let edge = (wait && !worker::is_worker_of(registry) && !Cancelling::is_here(registry))
        .then(|| enter_wait_graph(registry, timeout.is_some()));
    let waits = matches!(edge, Some(Ok(_)));
    let finished = waits && registry.wait_exited(timeout);
    drop(edge);
    if timeout.is_some() && waits && !finished {
        registry.give_up_waiting();
    }
    if finished {
        let joins = std::mem::take(&mut *registry.joins.lock().unwrap_or_else(|e| e.into_inner()));
        for join in joins {
            let _ = join.join();
        }
    }
    let m = registry.metrics();
    let report = ShutdownReport {
        finished,
        running: m.running,
        queued: m.queued,
        // After shutdown no submit is in flight for long: what holds the
        // pool open is its live futures.
        pending_futures: if finished { 0 } else { registry.holds() },
        would_deadlock: wait && !waits,
    };
    trace_event!(::tracing::Level::DEBUG, ?report, "shutdown returns");
    report
}
