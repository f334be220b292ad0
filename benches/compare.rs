//! Side-by-side comparison of every workload against the mutex designs, the
//! floor, and the peers, in one run. Prints a table of ratios (baseline time
//! / our time: above 1 means we are faster) and writes `target/compare.json`.
//!
//! Run: `cargo bench --bench compare` (full) or
//! `cargo bench --bench compare -- --quick` (each workload briefly); add
//! group names (`callbacks scoped throughput latency waits memory idle`) to run
//! only those.

mod baselines;
mod trees;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use baselines::floor_pool::FloorPool;
use baselines::mutex_future::MutexFuture;
use baselines::mutex_pool::MutexPool;
use concurrent_futures::{Promise, ReturnWhen, ThreadPool, as_completed, wait};

// ---------------------------------------------------------------------------
// Counting allocator (allocations per task, bytes per pending task).

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------
// Measurement.

const WORKERS: usize = 2;
/// The thread name prefix of the `throughput` group's pool (its spawn tree
/// row reads their CPU time).
const OUR_WORKERS: &str = "cf-compare";
/// The same for that group's rayon pool.
const RAYON_WORKERS: &str = "rayon-compare";

struct Bench {
    quick: bool,
    rows: Vec<(String, String, f64, f64)>,
    top: Vec<(String, f64)>,
}

impl Bench {
    fn runs(&self) -> usize {
        if self.quick { 3 } else { 9 }
    }

    fn n(&self, full: usize) -> usize {
        if self.quick { full / 5 } else { full }
    }

    /// Median over runs of `f()`'s duration divided by `ops`, in ns.
    fn per_op(&self, ops: usize, mut f: impl FnMut() -> Duration) -> f64 {
        let mut v: Vec<f64> = (0..self.runs())
            .map(|_| f().as_nanos() as f64 / ops as f64)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// Both medians of `ours` and `theirs`, measured in alternation (A B A
    /// B ...), so drift in the machine's speed hits both alike.
    fn duel(
        &self,
        ops: usize,
        mut ours: impl FnMut() -> Duration,
        mut theirs: impl FnMut() -> Duration,
    ) -> (f64, f64) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..self.runs() {
            a.push(ours().as_nanos() as f64 / ops as f64);
            b.push(theirs().as_nanos() as f64 / ops as f64);
        }
        a.sort_by(|x, y| x.total_cmp(y));
        b.sort_by(|x, y| x.total_cmp(y));
        (a[a.len() / 2], b[b.len() / 2])
    }

    fn row(&mut self, workload: &str, baseline: &str, ours: f64, theirs: f64) {
        println!(
            "{:<44} {:<28} {:>10.1} {:>10.1} {:>7.2}x",
            workload,
            baseline,
            ours,
            theirs,
            theirs / ours
        );
        self.rows
            .push((workload.into(), baseline.into(), ours, theirs));
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

static SINK: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// 1. Callback attach and drain.

/// The callback every attach row attaches to our future: it captures a
/// word, as real callbacks capture state.
#[inline]
fn attach_ours_one(h: &concurrent_futures::FutureHandle<u64>, i: usize) {
    let _ = h.add_done_callback(move |v| {
        SINK.fetch_add(*v.unwrap() as usize + i, Ordering::Relaxed);
    });
}

/// The same callback on the mutex future.
#[inline]
fn attach_mutex_one(f: &MutexFuture<u64>, i: usize) {
    f.add_done_callback(move |v| {
        SINK.fetch_add(*v as usize + i, Ordering::Relaxed);
    });
}

fn attach_ours(threads: usize, k: usize) -> (Duration, Duration) {
    let p = Promise::<u64>::new();
    let start = Arc::new(Barrier::new(threads));
    let attach = time(|| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                let h = p.handle();
                let start = start.clone();
                s.spawn(move || {
                    start.wait();
                    for i in 0..k {
                        attach_ours_one(&h, i);
                    }
                });
            }
        })
    });
    let drain = time(|| p.set_result(1).unwrap());
    (attach, drain)
}

fn attach_mutex(threads: usize, k: usize) -> (Duration, Duration) {
    let f = MutexFuture::<u64>::new();
    let start = Arc::new(Barrier::new(threads));
    let attach = time(|| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                let f = f.clone();
                let start = start.clone();
                s.spawn(move || {
                    start.wait();
                    for i in 0..k {
                        attach_mutex_one(&f, i);
                    }
                });
            }
        })
    });
    let drain = time(|| f.set(1));
    (attach, drain)
}

/// One thread attaches `each` callbacks to each of `futures` futures in
/// turn; only the attaches are timed, each future completed (and its memory
/// freed) before the next. `each` is small enough that the allocator keeps
/// the freed memory, so no attach waits on a page fault.
fn attach_ours_resident(futures: usize, each: usize) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..futures {
        let p = Promise::<u64>::new();
        let h = p.handle();
        t += time(|| {
            for i in 0..each {
                attach_ours_one(&h, i);
            }
        });
        p.set_result(1).unwrap();
    }
    t
}

fn attach_mutex_resident(futures: usize, each: usize) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..futures {
        let f = MutexFuture::<u64>::new();
        t += time(|| {
            for i in 0..each {
                attach_mutex_one(&f, i);
            }
        });
        f.set(1);
    }
    t
}

/// Every callback captures a word (as real callbacks capture state), so
/// both designs allocate one closure per callback.
fn callbacks(b: &mut Bench) {
    let k = b.n(100_000);
    for threads in [1, 2, 4] {
        // Threads start behind a barrier, so the spawn cost is in both.
        let (ours, theirs) = b.duel(
            threads * k,
            || attach_ours(threads, k).0,
            || attach_mutex(threads, k).0,
        );
        b.row(
            &format!("attach, {threads} thread(s) x {k}"),
            "mutex future",
            ours,
            theirs,
        );
    }
    // The same attach where the memory is the process's already: 100000
    // callbacks on one future are 4.8 MB, which the allocator gives back to
    // the kernel at each drain and takes again, one page fault per 4 KiB, at
    // the next (BENCHMARKS.md, "The other misses", attach uncontended).
    let (futures, each) = (k / 1000, 1000);
    let (ours, theirs) = b.duel(
        futures * each,
        || attach_ours_resident(futures, each),
        || attach_mutex_resident(futures, each),
    );
    b.row(
        &format!("attach, 1 thread x {each}, {futures} futures"),
        "mutex future",
        ours,
        theirs,
    );
    let (ours, theirs) = b.duel(k, || attach_ours(1, k).1, || attach_mutex(1, k).1);
    b.row(
        &format!("completion drain per callback ({k})"),
        "mutex future Vec walk",
        ours,
        theirs,
    );
    let n = b.n(10_000);
    let reps = 10;
    let (ours, theirs) = b.duel(
        reps * n,
        || (0..reps).map(|_| many_futures_ours(n)).sum(),
        || (0..reps).map(|_| many_futures_mutex(n)).sum(),
    );
    b.row(
        &format!("{n} futures x 1-3 callbacks, 2 attachers + completer"),
        "mutex future",
        ours,
        theirs,
    );
    for fan in [1, 10, 100, 1000] {
        let reps = b.n(20_000) / fan.max(1) + 1;
        let (ours, theirs) = b.duel(
            reps,
            || (0..reps).map(|_| attach_ours_single(fan)).sum(),
            || (0..reps).map(|_| attach_mutex_single(fan)).sum(),
        );
        b.row(
            &format!("complete with {fan} callbacks"),
            "mutex future",
            ours,
            theirs,
        );
    }
}

/// The shape servers make: many futures with a few callbacks each (1 to 3,
/// a word captured), attached by two threads while a third completes the
/// futures in order. Threads start behind a barrier, so both designs pay
/// the same spawns; the futures are made before and dropped after the
/// timed part.
macro_rules! many_futures {
    ($n:expr, $make:expr, $attach:expr, $complete:expr) => {{
        let futures: Vec<_> = (0..$n).map(|_| $make()).collect();
        let start = Barrier::new(3);
        let t = time(|| {
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (futures, start) = (&futures, &start);
                    s.spawn(move || {
                        start.wait();
                        for (i, f) in futures.iter().enumerate() {
                            // Future i gets 1 + i % 3 callbacks, split
                            // between the two threads.
                            for j in (t..1 + i % 3).step_by(2) {
                                $attach(f, i + j);
                            }
                        }
                    });
                }
                start.wait();
                for f in &futures {
                    $complete(f);
                }
            })
        });
        drop(futures);
        t
    }};
}

fn many_futures_ours(n: usize) -> Duration {
    type Pair = (Promise<u64>, concurrent_futures::FutureHandle<u64>);
    many_futures!(
        n,
        || {
            let p = Promise::<u64>::new();
            let h = p.handle();
            (p, h)
        },
        |(_, h): &Pair, i: usize| attach_ours_one(h, i),
        |(p, _): &Pair| p.set_result(1).unwrap()
    )
}

fn many_futures_mutex(n: usize) -> Duration {
    many_futures!(
        n,
        MutexFuture::<u64>::new,
        |f: &MutexFuture<u64>, i: usize| attach_mutex_one(f, i),
        |f: &MutexFuture<u64>| f.set(1)
    )
}

fn attach_ours_single(k: usize) -> Duration {
    let p = Promise::<u64>::new();
    let h = p.handle();
    for i in 0..k {
        attach_ours_one(&h, i);
    }
    time(|| p.set_result(1).unwrap())
}

fn attach_mutex_single(k: usize) -> Duration {
    let f = MutexFuture::<u64>::new();
    for i in 0..k {
        attach_mutex_one(&f, i);
    }
    time(|| f.set(1))
}

// ---------------------------------------------------------------------------
// 2. Submit throughput.

fn wait_count(counter: &AtomicUsize, n: usize) {
    while counter.load(Ordering::Acquire) < n {
        std::thread::yield_now();
    }
}

/// Times `n` empty jobs handed to `$spawn`, each answering on a tokio oneshot
/// (a peer's stand-in for a result handle), and waits for every answer. A
/// macro, not a function taking `Box<dyn FnOnce>`, so the peer gets the
/// closure unboxed, as its users would give it.
macro_rules! oneshot_round_trips {
    ($n:expr, |$job:ident| $spawn:expr) => {
        time(|| {
            let rs: Vec<_> = (0..$n)
                .map(|_| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let $job = move || {
                        let _ = tx.send(());
                    };
                    $spawn;
                    rx
                })
                .collect();
            for r in rs {
                r.blocking_recv().unwrap();
            }
        })
    };
}

/// Times one spawn tree of `depth` on `pool` (the root spawned from the
/// calling thread), until every leaf has run, the caller parked (the
/// `trees` module says why it does not yield).
fn time_tree(pool: &ThreadPool, depth: u32) -> Duration {
    trees::time(1 << depth, false, |leaves| {
        pool.spawn(move || trees::ours(depth, leaves)).unwrap();
    })
}

/// The cores a pool's workers used over a row's timed trees: their CPU
/// time over the trees' wall time ([`trees::time_with_cpu`]). About 2:
/// side by side; about 1: stacked on one core (BENCHMARKS.md, "What picks
/// the spawn tree's mode").
struct Cores {
    prefix: &'static str,
    workers: usize,
    cpu_ns: std::cell::Cell<u64>,
    wall_ns: std::cell::Cell<u64>,
    known: std::cell::Cell<bool>,
}

impl Cores {
    fn new(prefix: &'static str, workers: usize) -> Self {
        Cores {
            prefix,
            workers,
            cpu_ns: 0.into(),
            wall_ns: 0.into(),
            known: true.into(),
        }
    }

    /// Runs `timed` (one tree, returning its time) and adds its wall time
    /// and its workers' CPU time up.
    fn around(&self, timed: impl FnOnce() -> Duration) -> Duration {
        let (took, cpu) = trees::time_with_cpu(self.prefix, self.workers, timed);
        match cpu {
            Some(ns) => {
                self.cpu_ns.set(self.cpu_ns.get() + ns);
                self.wall_ns
                    .set(self.wall_ns.get() + took.as_nanos() as u64);
            }
            None => self.known.set(false),
        }
        took
    }

    /// The cores used over every tree so far; `None` if any reading failed.
    fn used(&self) -> Option<f64> {
        (self.known.get() && self.wall_ns.get() > 0)
            .then(|| self.cpu_ns.get() as f64 / self.wall_ns.get() as f64)
    }
}

/// Times `n` submits with handles, then waits for every handle.
fn time_submit_wait(pool: &ThreadPool, n: usize) -> Duration {
    time(|| {
        let hs: Vec<_> = (0..n).map(|_| pool.submit(|| ()).unwrap()).collect();
        for h in hs {
            h.wait().unwrap();
        }
    })
}

/// The CPU the process's threads other than the caller use over one
/// second while `pool` idles (every pool alive counts: in the
/// `oversubscribed` group, the 2-worker pool too), in percent of one
/// core, and how it was counted.
fn idle_percent(pool: &ThreadPool) -> (f64, &'static str) {
    pool.submit(|| ()).unwrap().wait().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let the workers park
    let clock = CpuClock::pick();
    let c0 = clock.seconds();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    // At least 0: a thread that exited meanwhile took its time with it.
    // NaN where neither clock could be read (not Linux): unknown, not 0%.
    let pct = (100.0 * (clock.seconds() - c0) / t0.elapsed().as_secs_f64()).max(0.0);
    (pct, clock.name())
}

fn throughput(b: &mut Bench) {
    let n = b.n(1_000_000);
    // Named, so that the spawn tree rows can read their workers' CPU time.
    let pool = ThreadPool::builder()
        .workers(WORKERS)
        .thread_name(OUR_WORKERS)
        .build()
        .unwrap();
    let ours = b.per_op(n, || time_submit_wait(&pool, n));
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .thread_name(|i| format!("{RAYON_WORKERS}-{i}"))
        .build()
        .unwrap();
    let theirs = b.per_op(n, || oneshot_round_trips!(n, |job| rayon_pool.spawn(job)));
    b.row(
        &format!("submit+wait {n} (handles)"),
        "rayon spawn + oneshot",
        ours,
        theirs,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .unwrap();
    let theirs = b.per_op(n, || {
        time(|| {
            let hs: Vec<_> = (0..n).map(|_| rt.spawn_blocking(|| ())).collect();
            rt.block_on(async {
                for h in hs {
                    h.await.unwrap();
                }
            });
        })
    });
    b.row(
        &format!("submit+wait {n} (handles)"),
        "tokio spawn_blocking",
        ours,
        theirs,
    );
    let tp = threadpool::ThreadPool::new(WORKERS);
    let theirs = b.per_op(n, || oneshot_round_trips!(n, |job| tp.execute(job)));
    b.row(
        &format!("submit+wait {n} (handles)"),
        "threadpool + oneshot",
        ours,
        theirs,
    );
    for (naive, name) in [
        (true, "mutex pool, notify always"),
        (false, "mutex pool, notify sleepers"),
    ] {
        let mp = MutexPool::new(WORKERS, naive);
        let theirs = b.per_op(n, || {
            time(|| {
                let hs: Vec<_> = (0..n).map(|_| mp.submit(|| ())).collect();
                for h in hs {
                    h.wait();
                }
            })
        });
        b.row(&format!("submit+wait {n} (handles)"), name, ours, theirs);
    }

    // Fire and forget against the floor, in alternation.
    let count = Arc::new(AtomicUsize::new(0));
    let floor = FloorPool::new(WORKERS);
    let (ours, theirs) = b.duel(
        n,
        || {
            count.store(0, Ordering::Relaxed);
            time(|| {
                for _ in 0..n {
                    let c = count.clone();
                    pool.spawn(move || {
                        c.fetch_add(1, Ordering::Release);
                    })
                    .unwrap();
                }
                wait_count(&count, n);
            })
        },
        || {
            count.store(0, Ordering::Relaxed);
            time(|| {
                for _ in 0..n {
                    let c = count.clone();
                    floor.spawn(move || {
                        c.fetch_add(1, Ordering::Release);
                    });
                }
                wait_count(&count, n);
            })
        },
    );
    b.row(
        &format!("spawn {n} (fire and forget)"),
        "floor (bare crossbeam pool)",
        ours,
        theirs,
    );
    let theirs = b.per_op(n, || {
        count.store(0, Ordering::Relaxed);
        time(|| {
            for _ in 0..n {
                let c = count.clone();
                rayon_pool.spawn(move || {
                    c.fetch_add(1, Ordering::Release);
                });
            }
            wait_count(&count, n);
        })
    });
    b.row(
        &format!("spawn {n} (fire and forget)"),
        "rayon spawn",
        ours,
        theirs,
    );

    // From inside workers: a chain, each task spawning its successor onto
    // the pool running it (no pool handle carried, as with rayon::spawn).
    let chain = b.n(200_000);
    fn ours_chain(left: usize, done: Arc<AtomicUsize>) {
        if left == 0 {
            done.store(1, Ordering::Release);
            return;
        }
        concurrent_futures::spawn(move || ours_chain(left - 1, done)).unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let ours = b.per_op(chain, || {
        done.store(0, Ordering::Relaxed);
        time(|| {
            let d = done.clone();
            pool.spawn(move || ours_chain(chain, d)).unwrap();
            wait_count(&done, 1);
        })
    });
    fn tokio_chain(left: usize, done: Arc<AtomicUsize>) {
        if left == 0 {
            done.store(1, Ordering::Release);
            return;
        }
        tokio::spawn(async move { tokio_chain(left - 1, done) });
    }
    let theirs = b.per_op(chain, || {
        done.store(0, Ordering::Relaxed);
        time(|| {
            let d = done.clone();
            rt.spawn(async move { tokio_chain(chain, d) });
            wait_count(&done, 1);
        })
    });
    b.row(
        &format!("chained spawn x{chain} (inside workers)"),
        "tokio spawn",
        ours,
        theirs,
    );
    fn rayon_chain(left: usize, done: Arc<AtomicUsize>) {
        if left == 0 {
            done.store(1, Ordering::Release);
            return;
        }
        rayon::spawn(move || rayon_chain(left - 1, done));
    }
    let theirs = b.per_op(chain, || {
        done.store(0, Ordering::Relaxed);
        time(|| {
            let d = done.clone();
            rayon_pool.install(|| rayon::spawn(move || rayon_chain(chain, d)));
            wait_count(&done, 1);
        })
    });
    b.row(
        &format!("chained spawn x{chain} (inside workers)"),
        "rayon spawn",
        ours,
        theirs,
    );

    // A spawn tree (`trees`): every task spawns two children until the
    // depth runs out; the waiter parks until the last leaf.
    let depth = if b.quick { 14 } else { 17 };
    let leaves = 1usize << depth;
    let our_cores = Cores::new(OUR_WORKERS, WORKERS);
    let ours = b.per_op(2 * leaves, || our_cores.around(|| time_tree(&pool, depth)));
    let theirs = b.per_op(2 * leaves, || {
        trees::time(leaves, false, |c| {
            rt.spawn(async move { trees::tokio(depth, c) });
        })
    });
    b.row(
        &format!("spawn tree 2^{depth} leaves (inside)"),
        "tokio spawn",
        ours,
        theirs,
    );
    let rayon_cores = Cores::new(RAYON_WORKERS, WORKERS);
    let theirs = b.per_op(2 * leaves, || {
        rayon_cores.around(|| {
            trees::time(leaves, false, |c| {
                rayon_pool.install(|| trees::rayon(depth, c));
            })
        })
    });
    b.row(
        &format!("spawn tree 2^{depth} leaves (inside)"),
        "rayon spawn",
        ours,
        theirs,
    );
    // The mode each pool's tree ran in (about 2 cores: side by side; about
    // 1: stacked), over the row's runs.
    for (name, cores) in [("ours", &our_cores), ("rayon", &rayon_cores)] {
        match cores.used() {
            Some(c) => {
                println!("spawn tree: {name} workers used {c:.2} cores");
                b.top.push((format!("tree_cores_{name}"), c));
            }
            None => println!("spawn tree: {name} workers' cores unknown on this OS"),
        }
    }

    // Python's ThreadPoolExecutor, same task count, same machine.
    let py_n = b.n(200_000);
    if let Some(py_ns) = python_tpe(py_n) {
        let ours = b.per_op(py_n, || {
            time(|| {
                let hs: Vec<_> = (0..py_n).map(|_| pool.submit(|| ()).unwrap()).collect();
                for h in hs {
                    h.wait().unwrap();
                }
            })
        });
        b.row(
            &format!("submit+wait {py_n} (handles)"),
            "Python ThreadPoolExecutor",
            ours,
            py_ns,
        );
    } else {
        println!("(python3 not found: Python comparison skipped)");
    }
}

// ---------------------------------------------------------------------------
// Futures on the pool against tokio's scheduler, 2 workers each.

/// Pending `left` more times, waking itself each time (one re-queue per wake).
struct Yields(usize);

impl std::future::Future for Yields {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 == 0 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn async_tasks(b: &mut Bench) {
    let pool = ThreadPool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let n = b.n(200_000);
    let (ours, theirs) = b.duel(
        n,
        || {
            time(|| {
                let hs: Vec<_> = (0..n)
                    .map(|i| pool.submit_future(async move { i }).unwrap())
                    .collect();
                let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
                SINK.fetch_add(sum, Ordering::Relaxed);
            })
        },
        || {
            time(|| {
                let hs: Vec<_> = (0..n).map(|i| rt.spawn(async move { i })).collect();
                let sum: usize = rt.block_on(async {
                    let mut sum = 0;
                    for h in hs {
                        sum += h.await.unwrap();
                    }
                    sum
                });
                SINK.fetch_add(sum, Ordering::Relaxed);
            })
        },
    );
    b.row(
        &format!("spawn future+await x{n} (handles)"),
        "tokio spawn + JoinHandle",
        ours,
        theirs,
    );

    // Wakes: 100 futures each waking itself k times; each wake re-queues.
    let k = if b.quick { 200 } else { 1000 };
    let tasks = 100;
    let (ours, theirs) = b.duel(
        tasks * k,
        || {
            time(|| {
                let hs: Vec<_> = (0..tasks)
                    .map(|_| pool.submit_future(Yields(k)).unwrap())
                    .collect();
                hs.into_iter().for_each(|h| h.join().unwrap());
            })
        },
        || {
            time(|| {
                let hs: Vec<_> = (0..tasks).map(|_| rt.spawn(Yields(k))).collect();
                rt.block_on(async {
                    for h in hs {
                        h.await.unwrap();
                    }
                });
            })
        },
    );
    b.row(
        &format!("self-wake re-poll x{}", tasks * k),
        "tokio spawn",
        ours,
        theirs,
    );
}

/// ns per task of Python's executor, from `benches/python_tpe.py`.
fn python_tpe(n: usize) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_tpe.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(n.to_string())
        .arg(WORKERS.to_string())
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------
// 3. Latency: submit -> callback.

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

fn latency(b: &mut Bench) {
    let samples = b.n(5_000);
    let pool = ThreadPool::new(WORKERS).unwrap();
    let _ = Condvar::new; // (kept for the wait baselines)
    // The callback stamps the time. Hot: the measuring thread stays on the
    // CPU (spins on the stamp), as a busy submitter does. Cold: the workers
    // have parked, and the measuring thread parks until the callback unparks
    // it, exactly as in the floor below (one thread unparks another, which
    // stamps the time and unparks it back): one wake-up, one way, with the
    // measuring thread off the CPU.
    let base = Instant::now();
    let now = move || base.elapsed().as_nanos() as usize;
    // One sample: submit, attach the stamping callback, wait for the stamp.
    let sample = |park: bool| -> f64 {
        let stamp = Arc::new(AtomicUsize::new(0));
        let (s, main) = (stamp.clone(), std::thread::current());
        let t0 = now();
        let h = pool.submit(|| ()).unwrap();
        let _ = h.add_done_callback(move |_| {
            s.store(now(), Ordering::Release);
            if park {
                main.unpark();
            }
        });
        while stamp.load(Ordering::Acquire) == 0 {
            if park {
                std::thread::park();
            } else {
                std::hint::spin_loop();
            }
        }
        (stamp.load(Ordering::Acquire) - t0) as f64
    };
    let mut hot: Vec<f64> = (0..samples).map(|_| sample(false)).collect();
    // Cold, and the floor: a parked thread is unparked and stamps the time.
    // The two alternate sample by sample, each after a 2 ms sleep (the
    // workers and the echo thread park), so both see the same machine: on
    // a shared VM, measured one after the other, the floor and the pool
    // drew different minutes and the ratio moved with them.
    let cold_samples = if b.quick { 200 } else { 1000 };
    let (mut cold, mut floor) = (Vec::new(), Vec::new());
    {
        let go = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let (g, s, main) = (go.clone(), seen.clone(), std::thread::current());
        let echo = std::thread::spawn(move || {
            for i in 1..=cold_samples {
                while g.load(Ordering::Acquire) < i {
                    std::thread::park();
                }
                s.store(now(), Ordering::Release);
                main.unpark();
            }
        });
        let gap = Duration::from_millis(2);
        for i in 1..=cold_samples {
            std::thread::sleep(gap); // let the workers park (cold)
            cold.push(sample(true));
            std::thread::sleep(gap);
            let t0 = now();
            go.store(i, Ordering::Release);
            echo.thread().unpark();
            while seen.load(Ordering::Acquire) < t0 {
                std::thread::park();
            }
            floor.push((seen.load(Ordering::Acquire) - t0) as f64);
        }
        echo.join().unwrap();
    }
    let (hp50, hp99) = (percentile(&mut hot, 0.5), percentile(&mut hot, 0.99));
    let (cp50, cp99) = (percentile(&mut cold, 0.5), percentile(&mut cold, 0.99));
    let (fp50, fp99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99));
    println!(
        "latency submit->callback ns: hot p50 {hp50:.0} p99 {hp99:.0}; cold p50 {cp50:.0} p99 {cp99:.0}; park/unpark floor p50 {fp50:.0} p99 {fp99:.0}"
    );
    b.row(
        "latency submit->callback p50, cold pool",
        "unpark->wake one way",
        cp50,
        fp50,
    );
    b.row(
        "latency submit->callback p99, cold pool",
        "unpark->wake one way",
        cp99,
        fp99,
    );
    b.top.push(("latency_hot_p50_ns".into(), hp50));
    b.top.push(("latency_hot_p99_ns".into(), hp99));
}

// ---------------------------------------------------------------------------
// 4. wait / as_completed over 10,000 handles.

fn waits(b: &mut Bench) {
    let n = 10_000;
    let ours_wait = b.per_op(n, || {
        let ps: Vec<Promise<u32>> = (0..n).map(|_| Promise::new()).collect();
        let hs: Vec<_> = ps.iter().map(Promise::handle).collect();
        let setter = std::thread::spawn(move || {
            for (i, p) in ps.into_iter().enumerate() {
                p.set_result(i as u32).unwrap();
            }
        });
        let d = time(|| {
            let r = wait(hs, ReturnWhen::AllCompleted, None);
            assert_eq!(r.done.len(), n);
        });
        setter.join().unwrap();
        d
    });
    let theirs = b.per_op(n, || {
        let fs: Vec<MutexFuture<u32>> = (0..n).map(|_| MutexFuture::new()).collect();
        let setters = fs.clone();
        let setter = std::thread::spawn(move || {
            for (i, f) in setters.into_iter().enumerate() {
                f.set(i as u32);
            }
        });
        let d = time(|| {
            // Python's wait(): a shared waiter counted down by callbacks.
            let w = Arc::new((Mutex::new(0usize), Condvar::new()));
            for f in &fs {
                let w = w.clone();
                f.add_done_callback(move |_| {
                    *w.0.lock().unwrap() += 1;
                    w.1.notify_one();
                });
            }
            let mut g = w.0.lock().unwrap();
            while *g < n {
                g = w.1.wait(g).unwrap();
            }
        });
        setter.join().unwrap();
        d
    });
    b.row(
        "wait(ALL_COMPLETED) over 10,000",
        "mutex futures + waiter",
        ours_wait,
        theirs,
    );
    let ours_ac = b.per_op(n, || {
        let ps: Vec<Promise<u32>> = (0..n).map(|_| Promise::new()).collect();
        let hs: Vec<_> = ps.iter().map(Promise::handle).collect();
        let setter = std::thread::spawn(move || {
            for (i, p) in ps.into_iter().enumerate() {
                p.set_result(i as u32).unwrap();
            }
        });
        let d = time(|| assert_eq!(as_completed(hs, None).count(), n));
        setter.join().unwrap();
        d
    });
    let theirs_ac = b.per_op(n, || {
        let fs: Vec<MutexFuture<u32>> = (0..n).map(|_| MutexFuture::new()).collect();
        let setters = fs.clone();
        let setter = std::thread::spawn(move || {
            for (i, f) in setters.into_iter().enumerate() {
                f.set(i as u32);
            }
        });
        let d = time(|| {
            // Python's as_completed: finished indices under a lock, the
            // consumer taking them one at a time.
            let w = Arc::new((
                Mutex::new(std::collections::VecDeque::new()),
                Condvar::new(),
            ));
            for (i, f) in fs.iter().enumerate() {
                let w = w.clone();
                f.add_done_callback(move |_| {
                    w.0.lock().unwrap().push_back(i);
                    w.1.notify_one();
                });
            }
            for _ in 0..n {
                let mut g = w.0.lock().unwrap();
                loop {
                    if let Some(i) = g.pop_front() {
                        SINK.fetch_add(i, Ordering::Relaxed);
                        break;
                    }
                    g = w.1.wait(g).unwrap();
                }
            }
        });
        setter.join().unwrap();
        d
    });
    b.row(
        "as_completed over 10,000",
        "mutex futures + queue",
        ours_ac,
        theirs_ac,
    );
}

// ---------------------------------------------------------------------------
// 5. Memory; 6. idle CPU.

fn memory(b: &mut Bench) {
    let pool = ThreadPool::new(WORKERS).unwrap();
    let n = 100_000;
    // Allocations per task, from outside, to completion (handles kept in a
    // pre-sized Vec so the Vec itself does not count).
    let mut hs = Vec::with_capacity(n);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        hs.push(pool.submit(|| ()).unwrap());
    }
    for h in &hs {
        h.wait().unwrap();
    }
    let allocs = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    drop(hs);
    // Bytes per pending task: both workers held, tasks queued with handles.
    let gate = Arc::new(Barrier::new(WORKERS + 1));
    let blockers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let g = gate.clone();
            pool.submit(move || {
                g.wait();
            })
            .unwrap()
        })
        .collect();
    while blockers.iter().any(|b| !b.running()) {
        std::thread::yield_now();
    }
    let mut hs = Vec::with_capacity(n);
    let base = LIVE.load(Ordering::Relaxed);
    for _ in 0..n {
        hs.push(pool.submit(|| ()).unwrap());
    }
    let bytes = (LIVE.load(Ordering::Relaxed) - base) as f64 / n as f64
        + std::mem::size_of::<concurrent_futures::FutureHandle<()>>() as f64;
    gate.wait();
    for h in hs {
        h.wait().unwrap();
    }
    println!(
        "allocations per task: {allocs:.2}; bytes per pending task (with its handle): {bytes:.0}"
    );
    b.top.push(("allocs_per_task".into(), allocs));
    b.top.push(("bytes_per_pending_task".into(), bytes));
}

/// How [`idle_percent`] counts CPU time, chosen once so that both of its
/// readings come from the same source.
#[derive(Clone, Copy)]
enum CpuClock {
    /// Each thread's time on a CPU (`/proc/self/task/*/schedstat`,
    /// nanoseconds; exact for a parked thread), the calling thread left out:
    /// it only sleeps and reads these files.
    Threads,
    /// The whole process's user + system ticks (`/proc/self/stat`), in
    /// 10 ms steps: one tick in the measured second reads as 1%.
    Ticks,
}

impl CpuClock {
    /// Threads' run time where Linux keeps it, else ticks.
    fn pick() -> Self {
        match threads_cpu_seconds() {
            Some(_) => CpuClock::Threads,
            None => CpuClock::Ticks,
        }
    }

    /// CPU seconds so far, as this clock counts them.
    fn seconds(self) -> f64 {
        match self {
            CpuClock::Threads => threads_cpu_seconds().unwrap_or(f64::NAN),
            CpuClock::Ticks => {
                // NaN where there is no such file (not Linux): unknown.
                let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
                    return f64::NAN;
                };
                let after = stat.rsplit(')').next().unwrap_or("");
                let f: Vec<&str> = after.split_whitespace().collect();
                let field = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
                match (field(11), field(12)) {
                    (Some(user), Some(system)) => (user + system) / 100.0,
                    _ => f64::NAN,
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            CpuClock::Threads => "threads' run time",
            CpuClock::Ticks => "10 ms ticks",
        }
    }
}

/// CPU seconds the process's threads but the caller have used so far
/// (see [`CpuClock::Threads`]); `None` where Linux does not say.
fn threads_cpu_seconds() -> Option<f64> {
    let me = std::fs::read_link("/proc/thread-self").ok()?;
    let me = me.file_name()?.to_owned();
    let (ns, found) = trees::threads_cpu_ns(|_, id| id != me)?;
    // No thread's run time readable (no `schedstat`): Linux does not say,
    // which is not 0 seconds.
    (found > 0).then_some(ns as f64 / 1e9)
}

fn idle_cpu(b: &mut Bench) {
    let pool = ThreadPool::new(WORKERS).unwrap();
    let (pct, how) = idle_percent(&pool);
    match pct.is_nan() {
        true => println!("idle pool CPU over 1 s: unknown (no CPU clock readable here)"),
        false => println!("idle pool CPU over 1 s: {pct:.3}% ({how})"),
    }
    b.top.push(("idle_cpu_percent".into(), pct));
}

// ---------------------------------------------------------------------------
// 7. Oversubscribed: more workers than the machine has cores.

/// Pools of 4 and 8 workers on this 2-core machine against the same
/// workload on 2 workers, measured in alternation; then the bigger pool's
/// idle CPU.
fn oversubscribed(b: &mut Bench) {
    let n = b.n(1_000_000);
    let depth = if b.quick { 14 } else { 17 };
    let two = ThreadPool::new(WORKERS).unwrap();
    for workers in [4, 8] {
        let many = ThreadPool::new(workers).unwrap();
        let (ours, theirs) = b.duel(
            n,
            || time_submit_wait(&many, n),
            || time_submit_wait(&two, n),
        );
        b.row(
            &format!("submit+wait {n}, {workers} workers"),
            "the same on 2 workers",
            ours,
            theirs,
        );
        let (ours, theirs) = b.duel(
            2 << depth,
            || time_tree(&many, depth),
            || time_tree(&two, depth),
        );
        b.row(
            &format!("spawn tree 2^{depth} leaves, {workers} workers"),
            "the same on 2 workers",
            ours,
            theirs,
        );
        let (pct, how) = idle_percent(&many);
        println!("idle {workers}-worker pool CPU over 1 s: {pct:.3}% ({how})");
        b.top
            .push((format!("idle_cpu_percent_{workers}_workers"), pct));
    }
}

// ---------------------------------------------------------------------------

fn write_json(b: &Bench, file: &str) {
    let mut s = String::from("{\"results\":[");
    for (i, (w, base, ours, theirs)) in b.rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"workload\":\"{w}\",\"baseline\":\"{base}\",\"ours_ns\":{ours:.1},\"baseline_ns\":{theirs:.1},\"ratio\":{:.3}}}",
            theirs / ours
        ));
    }
    s.push(']');
    for (k, v) in &b.top {
        s.push_str(&format!(",\"{k}\":{v:.3}"));
    }
    // A `--quick` run's figures are not the report's: `report.py` refuses it.
    s.push_str(&format!(",\"quick\":{}", b.quick));
    s.push_str("}\n");
    // The target directory this bench was built in, however it was set
    // (`CARGO_TARGET_DIR`, `--target-dir`, a config file): the parent of
    // the scratch directory cargo gives benches.
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).display().to_string();
    let path = format!("{dir}/{file}");
    std::fs::write(&path, s).unwrap_or_else(|e| panic!("write {path}: {e}"));
    println!("wrote {path}");
}

// ---------------------------------------------------------------------------
// 9. Scoped tasks and fork-join (issue 14).

/// Parallel sum: split in halves down to `grain`, `join` at each split.
fn sum_ours(pool: &ThreadPool, v: &[u64], grain: usize) -> u64 {
    if v.len() <= grain {
        return v.iter().sum();
    }
    let (l, r) = v.split_at(v.len() / 2);
    let (a, b) = pool.join(|| sum_ours(pool, l, grain), || sum_ours(pool, r, grain));
    a + b
}

fn sum_rayon(v: &[u64], grain: usize) -> u64 {
    if v.len() <= grain {
        return v.iter().sum();
    }
    let (l, r) = v.split_at(v.len() / 2);
    let (a, b) = rayon::join(|| sum_rayon(l, grain), || sum_rayon(r, grain));
    a + b
}

/// Quicksort: partition around the middle element, `join` the halves,
/// sort sequentially below `grain`.
fn partition(v: &mut [u32]) -> usize {
    let mid = v.len() / 2;
    v.swap(mid, v.len() - 1);
    let pivot = v[v.len() - 1];
    let mut store = 0;
    for i in 0..v.len() - 1 {
        if v[i] < pivot {
            v.swap(i, store);
            store += 1;
        }
    }
    let last = v.len() - 1;
    v.swap(store, last);
    store
}

fn quicksort_ours(pool: &ThreadPool, v: &mut [u32], grain: usize) {
    if v.len() <= grain {
        v.sort_unstable();
        return;
    }
    let p = partition(v);
    let (l, r) = v.split_at_mut(p);
    pool.join(
        || quicksort_ours(pool, l, grain),
        || quicksort_ours(pool, &mut r[1..], grain),
    );
}

fn quicksort_rayon(v: &mut [u32], grain: usize) {
    if v.len() <= grain {
        v.sort_unstable();
        return;
    }
    let p = partition(v);
    let (l, r) = v.split_at_mut(p);
    rayon::join(
        || quicksort_rayon(l, grain),
        || quicksort_rayon(&mut r[1..], grain),
    );
}

/// Pseudo-random input, the same for both sides.
fn shuffled(n: usize) -> Vec<u32> {
    let mut x = 0x2545_F491_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect()
}

/// `n` scoped spawns of `job`.
fn spawn_n<'scope, 'env>(
    s: &'scope concurrent_futures::Scope<'scope, 'env>,
    n: usize,
    job: &'env (impl Fn() + Sync),
) {
    for _ in 0..n {
        s.spawn(job).unwrap();
    }
}

fn scoped(b: &mut Bench) {
    let pool = ThreadPool::new(WORKERS).unwrap();
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    let v: Vec<u64> = (0..b.n(1 << 22) as u64).collect();
    for grain in [1 << 14, 1 << 11] {
        let leaves = v.len() / grain;
        let (ours, theirs) = b.duel(
            leaves,
            || {
                time(|| {
                    SINK.store(
                        pool.install(|| sum_ours(&pool, &v, grain)) as usize,
                        Ordering::Relaxed,
                    )
                })
            },
            || {
                time(|| {
                    SINK.store(
                        rayon_pool.install(|| sum_rayon(&v, grain)) as usize,
                        Ordering::Relaxed,
                    )
                })
            },
        );
        b.row(
            &format!("join sum {} x u64, grain {grain} (per leaf)", v.len()),
            "rayon::join",
            ours,
            theirs,
        );
    }
    let input = shuffled(b.n(1 << 20));
    let grain = 1 << 12;
    let (ours, theirs) = b.duel(
        input.len(),
        || {
            let mut v = input.clone();
            let t = time(|| pool.install(|| quicksort_ours(&pool, &mut v, grain)));
            assert!(v.is_sorted());
            t
        },
        || {
            let mut v = input.clone();
            let t = time(|| rayon_pool.install(|| quicksort_rayon(&mut v, grain)));
            assert!(v.is_sorted());
            t
        },
    );
    b.row(
        &format!("join quicksort {} x u32 (per element)", input.len()),
        "rayon::join",
        ours,
        theirs,
    );
    // 10,000 scoped tasks, each adding up a borrowed slice.
    let n = b.n(10_000);
    let data: Vec<u64> = (0..64).collect();
    let total = AtomicUsize::new(0);
    let add = |t: &AtomicUsize| {
        t.fetch_add(data.iter().sum::<u64>() as usize, Ordering::Relaxed);
    };
    let rayon_scope = || {
        time(|| {
            rayon_pool.scope(|s| {
                for _ in 0..n {
                    s.spawn(|_| add(&total));
                }
            })
        })
    };
    let job = || add(&total);
    let (ours, theirs) = b.duel(
        n,
        || time(|| pool.scope(|s| spawn_n(s, n, &job))),
        rayon_scope,
    );
    b.row(
        &format!("{n} scoped spawns (borrowing)"),
        "rayon scope + spawn",
        ours,
        theirs,
    );
    // rayon's `scope` runs its body on a worker (its spawns go to that
    // worker's deque); ours runs it on the caller. The same shape as
    // rayon's: `install` + `scope`.
    let on_worker = || time(|| pool.install(|| pool.scope(|s| spawn_n(s, n, &job))));
    let (ours, theirs) = b.duel(n, on_worker, rayon_scope);
    b.row(
        &format!("{n} scoped spawns, body on a worker"),
        "rayon scope + spawn",
        ours,
        theirs,
    );
    let submits = || {
        time(|| {
            pool.scope(|s| {
                let hs: Vec<_> = (0..n).map(|_| s.submit(|| add(&total)).unwrap()).collect();
                drop(hs);
            })
        })
    };
    let (ours, theirs) = b.duel(n, submits, rayon_scope);
    b.row(
        &format!("{n} scoped submits (handles kept)"),
        "rayon scope + spawn",
        ours,
        theirs,
    );
    // A thread per task costs far more: fewer tasks, per task.
    let m = b.n(1000);
    let threads = || {
        time(|| {
            std::thread::scope(|s| {
                for _ in 0..m {
                    s.spawn(job);
                }
            })
        })
    };
    let (ours, theirs) = b.duel(m, || time(|| pool.scope(|s| spawn_n(s, m, &job))), threads);
    b.row(
        &format!("{m} scoped spawns"),
        "std::thread::scope, a thread each",
        ours,
        theirs,
    );
    SINK.fetch_add(total.into_inner(), Ordering::Relaxed);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; run only when asked for this target.
    let mut b = Bench {
        quick,
        rows: Vec::new(),
        top: Vec::new(),
    };
    println!(
        "{:<44} {:<28} {:>10} {:>10} {:>8}",
        "workload", "baseline", "ours ns", "base ns", "ratio"
    );
    // Optional group names on the command line run only those groups.
    type Group = (&'static str, fn(&mut Bench));
    let groups: [Group; 9] = [
        ("callbacks", callbacks),
        ("scoped", scoped),
        ("latency", latency),
        ("waits", waits),
        ("memory", memory),
        ("idle", idle_cpu),
        ("async", async_tasks),
        ("oversubscribed", oversubscribed),
        // Last: tokio's spawn_blocking leaves hundreds of idle threads
        // behind for seconds, which would disturb the groups after it.
        ("throughput", throughput),
    ];
    let chosen: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(unknown) = chosen
        .iter()
        .find(|c| !groups.iter().any(|(name, _)| c.as_str() == *name))
    {
        let names: Vec<&str> = groups.iter().map(|(name, _)| *name).collect();
        eprintln!("no group {unknown:?}; the groups: {}", names.join(", "));
        std::process::exit(2);
    }
    for (name, run) in groups {
        if chosen.is_empty() || chosen.iter().any(|c| c.as_str() == name) {
            run(&mut b);
        }
    }
    println!("(ratio = baseline time / our time; above 1 means we are faster)");
    println!("checksum {}", SINK.load(Ordering::Relaxed) % 10);
    // A run of some groups does not overwrite a full run's file.
    let file = if chosen.is_empty() {
        "compare.json".to_owned()
    } else {
        let names: Vec<&str> = chosen.iter().map(|c| c.as_str()).collect();
        format!("compare-{}.json", names.join("-"))
    };
    write_json(&b, &file);
}
