//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{FutureHandle, ThreadPool};

/// The calling thread's name ("" if it has none): where a test's work ran.
pub fn thread_name() -> String {
    thread::current().name().unwrap_or("").to_owned()
}

/// A task that waits at the returned barrier (a std one: no stand-in is
/// started for it), then returns `value`.
pub fn gated<T: Send + Sync + 'static>(
    pool: &ThreadPool,
    value: T,
) -> (FutureHandle<T>, Arc<Barrier>) {
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let task = pool
        .submit(move || {
            g.wait();
            value
        })
        .unwrap();
    (task, gate)
}

/// Occupies one worker with a task that waits at the returned barrier, and
/// returns once that task runs, so whatever is submitted next queues.
pub fn occupy(pool: &ThreadPool) -> (FutureHandle<()>, Arc<Barrier>) {
    let (task, gate) = gated(pool, ());
    while !task.running() {
        std::thread::yield_now();
    }
    (task, gate)
}

/// A pool of one worker whose thread is named `name-0`.
pub fn one_worker_pool(name: &str) -> ThreadPool {
    ThreadPool::builder()
        .workers(1)
        .thread_name(name)
        .build()
        .unwrap()
}

/// Holds every worker busy; what is submitted until the returned release
/// is called queues behind it.
pub fn hold_workers(pool: &ThreadPool) -> impl FnOnce() + use<> {
    let n = pool.workers();
    let (held, release) = (Arc::new(Barrier::new(n + 1)), Arc::new(Barrier::new(n + 1)));
    for _ in 0..n {
        let (h, r) = (held.clone(), release.clone());
        pool.spawn(move || {
            h.wait();
            r.wait();
        })
        .unwrap();
    }
    held.wait();
    move || {
        release.wait();
    }
}

/// A future that is pending `wakes` times, waking itself each time (each
/// wake re-queues it on the pool), then ready.
pub fn wakes_itself(wakes: usize) -> impl std::future::Future<Output = ()> + Send {
    let mut left = wakes;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return std::task::Poll::Ready(());
        }
        left -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// Aborts the process if the test still runs after `limit`: a hang must fail
/// CI, not stall it (a verdict, not synchronisation). Declared first in a
/// test, it outlives every pool drop there. Dropping it disarms it.
pub struct Watchdog(mpsc::Sender<String>);

impl Watchdog {
    pub fn new(test: &'static str, limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<String>();
        let deadline = Instant::now() + limit;
        thread::spawn(move || {
            let mut stage = String::from("start");
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(s) => stage = s,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        eprintln!("watchdog: {test} hung ({limit:?}) at {stage}");
                        std::process::abort();
                    }
                }
            }
        });
        Watchdog(tx)
    }

    /// Names the stage the test has reached, for the report if it hangs.
    pub fn stage(&self, stage: String) {
        let _ = self.0.send(stage);
    }
}

/// `workers` tasks can all meet at a barrier of `workers + 1` only if every
/// core worker is alive and free (otherwise this hangs and the watchdog
/// fails the test). No task here blocks in a crate wait, so no compensating
/// worker can stand in for a dead one. Then later work must still run.
pub fn assert_all_workers_alive(pool: &ThreadPool) {
    let meet = Arc::new(Barrier::new(pool.workers() + 1));
    let spawn_meet = |_| {
        let m = meet.clone();
        pool.submit(move || {
            m.wait();
        })
        .unwrap()
    };
    let hs: Vec<_> = (0..pool.workers()).map(spawn_meet).collect();
    meet.wait();
    hs.into_iter().for_each(|h| assert_eq!(h.join(), Ok(())));
    let later: Vec<_> = (0..100).map(|i| pool.submit(move || i).unwrap()).collect();
    let sum: usize = later.iter().map(|h| *h.result().unwrap()).sum();
    assert_eq!(sum, 4950);
}

/// A parallel sum by `join`, split in halves down to `grain` elements.
pub fn join_sum(pool: &ThreadPool, v: &[u64], grain: usize) -> u64 {
    if v.len() <= grain {
        return v.iter().sum();
    }
    let (l, r) = v.split_at(v.len() / 2);
    let (a, b) = pool.join(|| join_sum(pool, l, grain), || join_sum(pool, r, grain));
    a + b
}

/// Runs `wait` on a new thread, and returns once that thread sleeps in the
/// kernel (Linux: its state in `/proc` reads `S`) or has finished, so what
/// completes the wait finds the waiter parked, not about to park. Elsewhere
/// (and under Miri, which has no `/proc`, or where the thread's entry
/// cannot be read) it returns once the thread has started: the wait may
/// still be ahead.
pub fn spawn_parked<T: Send + 'static>(
    wait: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (started, tid) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = started.send(kernel_tid());
        wait()
    });
    let tid = tid.recv().unwrap();
    until_asleep(tid, || waiter.is_finished());
    waiter
}

/// The calling thread's kernel id, for [`until_asleep`] (Linux; 0
/// elsewhere and under Miri).
pub fn kernel_tid() -> i32 {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: `gettid` only reads the calling thread's id.
    return unsafe { libc::gettid() };
    #[cfg(not(all(target_os = "linux", not(miri))))]
    0
}

/// Returns once the thread `tid` ([`kernel_tid`]) sleeps in the kernel
/// (its state in `/proc` reads `S`) and has on every look for a
/// millisecond, or `stop()`. A thread that blocks a moment on a lock or
/// in the allocator on its way to the wait a test means reads `S` too; a
/// millisecond of it is what tells a wait from those. Where the state
/// cannot be read (not Linux, Miri, no `/proc`, another PID namespace) it
/// returns at once: the thread may not be asleep yet.
pub fn until_asleep(tid: i32, stop: impl Fn() -> bool) {
    if !cfg!(all(target_os = "linux", not(miri))) {
        return;
    }
    let path = format!("/proc/self/task/{tid}/stat");
    // The state is the field after the command's closing parenthesis; an
    // entry that cannot be read cannot tell, and ends the look.
    let asleep = || {
        std::fs::read_to_string(&path).map_or(None, |s| {
            Some(s.rsplit_once(") ").is_none_or(|(_, r)| r.starts_with('S')))
        })
    };
    let mut since: Option<Instant> = None;
    while !stop() {
        match asleep() {
            None => return,
            Some(true) => {
                if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(1) {
                    return;
                }
            }
            Some(false) => since = None,
        }
        thread::yield_now();
    }
}
