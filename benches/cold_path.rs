//! Where a cold submit's latency goes, against the park/unpark floor.
//!
//! `compare`'s cold row times submit -> done-callback on a pool whose
//! workers have parked, against one parked thread woken by another (the
//! floor). This bench splits the pool's figure into its parts. Three kinds
//! of sample, drawn in random order, each after a 2 ms sleep, so all see
//! the same moments of the machine:
//!
//! - **floor**: unpark an echo thread, which stamps the time; also when the
//!   measurer's `unpark` call returned.
//! - **callback** (what `compare` times): submit an empty-bodied task, then
//!   attach a callback that stamps; also when `submit` returned, when the
//!   task's body started, and whether the callback ran on the worker or
//!   inline on the submitter (attached after the task was done).
//! - **body**: submit a task whose body stamps and unparks the measurer:
//!   the wake and the task's start, without completion and callback.
//!
//! Each timed sample also says whether the woken thread started before its
//! waker's `unpark` or `submit` call returned: it preempted its waker, or
//! ran beside it on another CPU. For the callback samples it also counts
//! those that started early and then ran the callback inline (the worker
//! ran the task before the callback was attached).
//!
//! On Linux, untimed floor and body samples, drawn among the others, record
//! whether the woken thread ran on the CPU its waker ran on
//! (`/proc/thread-self/stat`; reading it before a timed sample changed
//! what the scheduler did next, so the timed samples never read it).
//!
//! Run: `cargo bench --bench cold_path` (about 15 s). `COLD_GAP_US` sets
//! the sleep before each sample (default 2000): how long everything had to
//! go cold.

use concurrent_futures::ThreadPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The CPU the calling thread runs on, where the OS says (Linux).
fn cpu() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the
    // state, field 3; the processor is field 39.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(39 - 3)?.parse().ok()
}

/// Sorted samples, printed as quartiles and tail.
struct Series(&'static str, Vec<f64>);

impl Series {
    fn print(&mut self) {
        let v = &mut self.1;
        if v.is_empty() {
            println!("{:<44} (no samples)", self.0);
            return;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        println!(
            "{:<44} n {:>4}  p25 {:>7.0}  p50 {:>7.0}  p75 {:>7.0}  p99 {:>7.0}",
            self.0,
            v.len(),
            p(0.25),
            p(0.5),
            p(0.75),
            p(0.99)
        );
    }
}

/// Times in ns since a common start, shareable with other threads.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> usize {
        self.0.elapsed().as_nanos() as usize
    }
}

/// Counts of timed samples where the woken thread stamped before its
/// waker's `unpark` or `submit` call returned: it preempted its waker
/// (both on one CPU, as the placement samples show) or ran beside it.
#[derive(Default)]
struct Early {
    early: usize,
    all: usize,
}

impl Early {
    /// Counts one sample; returns whether it started early.
    fn note(&mut self, woken_stamp: usize, call_returned: usize) -> bool {
        let early = woken_stamp < call_returned;
        self.all += 1;
        self.early += usize::from(early);
        early
    }
}

/// Counts of samples where the woken thread ran on its waker's CPU.
#[derive(Default)]
struct Placement {
    same: usize,
    known: usize,
}

impl Placement {
    fn note(&mut self, waker: Option<usize>, woken: usize) {
        if let Some(w) = waker
            && woken != usize::MAX
        {
            self.known += 1;
            self.same += usize::from(w == woken);
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let per_kind = if quick { 100 } else { 600 };
    let pool = ThreadPool::new(2).unwrap();
    let clock = Clock(Instant::now());
    let me = std::thread::current();
    let gap = std::env::var("COLD_GAP_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(2), Duration::from_micros);

    // The floor's echo thread: woken with a new sample number in `go`, it
    // stamps `seen`, notes its CPU if asked (`echo_cpu` not 0), and
    // unparks the measurer.
    let go = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let echo_cpu = Arc::new(AtomicUsize::new(usize::MAX));
    let echo = {
        let (go, seen, echo_cpu, me) = (go.clone(), seen.clone(), echo_cpu.clone(), me.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            loop {
                let i = go.load(Ordering::Acquire);
                if i == usize::MAX {
                    return;
                }
                if i == last {
                    std::thread::park();
                    continue;
                }
                last = i;
                seen.store(clock.now(), Ordering::Release);
                if echo_cpu.load(Ordering::Relaxed) == 0 {
                    echo_cpu.store(cpu().unwrap_or(usize::MAX), Ordering::Relaxed);
                }
                me.unpark();
            }
        })
    };

    let mut floor_unpark = Series("floor: unpark() returned", Vec::new());
    let mut floor_echo = Series("floor: echo thread stamped (the floor)", Vec::new());
    let mut cb_submit = Series("callback: submit() returned", Vec::new());
    let mut cb_body = Series("callback: task body started", Vec::new());
    let mut cb_all = Series("callback: callback ran (compare's cold row)", Vec::new());
    let mut cb_worker = Series("  of which ran on the worker", Vec::new());
    let mut cb_inline = Series("  of which ran inline on the submitter", Vec::new());
    let mut body = Series("body: task body started", Vec::new());
    let (mut floor_place, mut body_place) = (Placement::default(), Placement::default());
    let (mut floor_early, mut cb_early, mut body_early) =
        (Early::default(), Early::default(), Early::default());
    // Callback samples that started early and then ran the callback inline.
    let mut cb_early_inline = 0;

    // 0 floor, 1 callback, 2 body; 3 and 4: floor and body, untimed, for
    // where the woken thread ran.
    let mut kinds: Vec<u8> = (0..per_kind).flat_map(|_| [0, 1, 2, 3, 4]).collect();
    // A fixed xorshift shuffle: the same order every run.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..kinds.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        kinds.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut floor_i = 0;
    for kind in kinds {
        std::thread::sleep(gap); // every thread parks
        let placement = kind >= 3;
        let waker_cpu = if placement { cpu() } else { None };
        match kind {
            0 | 3 => {
                floor_i += 1;
                echo_cpu.store(usize::from(!placement), Ordering::Relaxed);
                let t0 = clock.now();
                go.store(floor_i, Ordering::Release);
                echo.thread().unpark();
                let t1 = clock.now();
                while seen.load(Ordering::Acquire) < t0 {
                    std::thread::park();
                }
                if placement {
                    floor_place.note(waker_cpu, echo_cpu.load(Ordering::Relaxed));
                } else {
                    floor_unpark.1.push((t1 - t0) as f64);
                    floor_early.note(seen.load(Ordering::Acquire), t1);
                    floor_echo
                        .1
                        .push((seen.load(Ordering::Acquire) - t0) as f64);
                }
            }
            1 => {
                let started = Arc::new(AtomicUsize::new(0));
                let called = Arc::new(AtomicUsize::new(0));
                let on_worker = Arc::new(AtomicUsize::new(0));
                let s = started.clone();
                let t0 = clock.now();
                let h = pool
                    .submit(move || s.store(clock.now(), Ordering::Release))
                    .unwrap();
                let t1 = clock.now();
                let (c, w, m, submitter) = (
                    called.clone(),
                    on_worker.clone(),
                    me.clone(),
                    std::thread::current().id(),
                );
                let _ = h.add_done_callback(move |_| {
                    let worker = std::thread::current().id() != submitter;
                    w.store(usize::from(worker), Ordering::Relaxed);
                    c.store(clock.now(), Ordering::Release);
                    m.unpark();
                });
                while called.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                }
                let t = (called.load(Ordering::Acquire) - t0) as f64;
                cb_submit.1.push((t1 - t0) as f64);
                let early = cb_early.note(started.load(Ordering::Acquire), t1);
                let inline = on_worker.load(Ordering::Relaxed) != 1;
                cb_early_inline += usize::from(early && inline);
                cb_body
                    .1
                    .push((started.load(Ordering::Acquire) - t0) as f64);
                cb_all.1.push(t);
                match on_worker.load(Ordering::Relaxed) {
                    1 => cb_worker.1.push(t),
                    _ => cb_inline.1.push(t),
                }
            }
            _ => {
                let started = Arc::new(AtomicUsize::new(0));
                let where_ran = Arc::new(AtomicUsize::new(usize::MAX));
                let (s, w, m) = (started.clone(), where_ran.clone(), me.clone());
                let t0 = clock.now();
                let _handle = pool
                    .submit(move || {
                        s.store(clock.now(), Ordering::Release);
                        if placement {
                            w.store(cpu().unwrap_or(usize::MAX), Ordering::Relaxed);
                        }
                        m.unpark();
                    })
                    .unwrap();
                let t1 = clock.now();
                while started.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                }
                if placement {
                    body_place.note(waker_cpu, where_ran.load(Ordering::Relaxed));
                } else {
                    body.1.push((started.load(Ordering::Acquire) - t0) as f64);
                    body_early.note(started.load(Ordering::Acquire), t1);
                }
            }
        }
    }
    go.store(usize::MAX, Ordering::Release);
    echo.thread().unpark();
    echo.join().unwrap();

    println!(
        "ns from t0 (just before the unpark or the submit), 2 workers, {} µs apart:",
        gap.as_micros()
    );
    for s in [
        &mut floor_unpark,
        &mut floor_echo,
        &mut body,
        &mut cb_submit,
        &mut cb_body,
        &mut cb_all,
        &mut cb_worker,
        &mut cb_inline,
    ] {
        s.print();
    }
    for (name, e) in [
        ("floor: the echo thread", &floor_early),
        ("callback: the task's body", &cb_early),
        ("body: the task's body", &body_early),
    ] {
        println!(
            "{name} started before its waker's call returned in {} of {} samples",
            e.early, e.all
        );
    }
    println!(
        "callback: of those that started early, {cb_early_inline} ran the callback inline ({} ran inline in all)",
        cb_inline.1.len()
    );
    for (name, p) in [("floor", &floor_place), ("body", &body_place)] {
        match p.known {
            0 => println!("{name}: the woken thread's CPU is unknown on this OS"),
            n => println!(
                "{name}: the woken thread ran on its waker's CPU in {} of {n} samples",
                p.same
            ),
        }
    }
}
