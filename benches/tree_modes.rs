//! Why `compare`'s spawn tree row moves: how many cores each pool's
//! workers used in each run.
//!
//! `compare` times a spawn tree (`trees`: every task spawns two children
//! until 2^17 leaves; each child clones the shared leaf counter's `Arc`)
//! on our pool and on rayon's, two workers each, and with a yielding
//! waiter both pools' times fell into two modes from run to run. This
//! bench runs the same two trees in alternation and records, per run, the
//! CPU time every worker thread spent (`/proc/self/task/*/schedstat`,
//! Linux), so each run's time comes with the cores its workers used:
//! about 2 when the two workers ran side by side on their own cores,
//! about 1 when the scheduler stacked them on one core and they took
//! turns. The summary gives each pool's median per mode, so the two pools
//! can be compared mode for mode.
//!
//! The waiter yields in a loop until the last leaf, as `compare`'s did
//! until `2000fb0`; `TREE_WAIT=park` parks it instead (the last leaf
//! unparks it), as `compare`'s does now.
//!
//! Run: `cargo bench --bench tree_modes` (a few seconds). `TREE_RUNS` sets
//! the runs per pool (default 30).

mod trees;

use concurrent_futures::ThreadPool;
use std::sync::Arc;
use trees::Leaves;

const DEPTH: u32 = 17;
const LEAVES: usize = 1 << DEPTH;
const WORKERS: usize = 2;
/// Our pool's thread names start with this.
const OURS: &str = "cf-tree";
/// Rayon's pool's thread names start with this.
const RAYON: &str = "rayon-tree";
/// A run whose workers used at least this many cores ran side by side.
const SIDE_BY_SIDE: f64 = 1.5;
/// A run whose workers used at most this many cores took turns on one.
const TAKING_TURNS: f64 = 1.2;
/// One run's figures.
#[derive(Clone, Copy)]
struct Run {
    /// Nanoseconds per task (2 * LEAVES tasks, as `compare` counts).
    ns: f64,
    /// The workers' CPU time over the wall time: the cores they used.
    cores: Option<f64>,
}

/// Times one tree started by `start`, with the workers named `prefix`,
/// and the cores they used ([`trees::time_with_cpu`]).
fn run(prefix: &str, park: bool, start: impl FnOnce(Arc<Leaves>)) -> Run {
    let (wall, cpu) = trees::time_with_cpu(prefix, WORKERS, || trees::time(LEAVES, !park, start));
    Run {
        ns: wall.as_nanos() as f64 / (2 * LEAVES) as f64,
        cores: cpu.map(|ns| ns as f64 / wall.as_nanos() as f64),
    }
}

/// The median of `v` (the mean of the middle two for an even count), or
/// `None` if it is empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The two modes: side by side (the workers used [`SIDE_BY_SIDE`] cores
/// or more) and taking turns ([`TAKING_TURNS`] or less); runs between, and
/// runs whose cores are unknown, are in neither.
fn mode(r: &Run) -> Option<&'static str> {
    match r.cores? {
        c if c >= SIDE_BY_SIDE => Some("side by side"),
        c if c <= TAKING_TURNS => Some("taking turns"),
        _ => None,
    }
}

/// Prints a pool's median over all runs and per mode, with run counts.
fn summary(name: &str, runs: &[Run]) {
    let all = median(runs.iter().map(|r| r.ns).collect()).unwrap_or(f64::NAN);
    print!("{name:<6} all {all:5.1} ns ({} runs)", runs.len());
    for m in ["side by side", "taking turns"] {
        let of: Vec<f64> = runs
            .iter()
            .filter(|r| mode(r) == Some(m))
            .map(|r| r.ns)
            .collect();
        let n = of.len();
        match median(of) {
            Some(ns) => print!("; {m} {ns:5.1} ns ({n})"),
            None => print!("; {m} - (0)"),
        }
    }
    println!();
}

fn main() {
    let runs: usize = std::env::var("TREE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let park = std::env::var("TREE_WAIT").is_ok_and(|v| v == "park");
    let ours = ThreadPool::builder()
        .workers(WORKERS)
        .thread_name(OURS)
        .build()
        .unwrap();
    let theirs = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .thread_name(|i| format!("{RAYON}-{i}"))
        .build()
        .unwrap();
    let time_ours = || {
        run(OURS, park, |leaves| {
            ours.spawn(move || trees::ours(DEPTH, leaves)).unwrap();
        })
    };
    let time_rayon = || {
        run(RAYON, park, |leaves| {
            theirs.install(|| trees::rayon(DEPTH, leaves));
        })
    };
    // One untimed tree each first: the workers name themselves once they
    // start, and until then their CPU time cannot be told apart.
    time_ours();
    time_rayon();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    println!(
        "spawn tree 2^{DEPTH} leaves, {WORKERS} workers each, waiter {}; ns per task, and the cores the workers used:",
        if park { "parked" } else { "yielding" }
    );
    for i in 0..runs {
        let (x, y) = (time_ours(), time_rayon());
        let cores = |r: &Run| r.cores.map_or("?".into(), |c| format!("{c:.2}"));
        println!(
            "run {i:>2}: ours {:5.1} ns on {} cores; rayon {:5.1} ns on {} cores",
            x.ns,
            cores(&x),
            y.ns,
            cores(&y)
        );
        a.push(x);
        b.push(y);
    }
    println!(
        "medians, all runs and by mode (side by side: >= {SIDE_BY_SIDE} cores; taking turns: <= {TAKING_TURNS}):"
    );
    summary("ours", &a);
    summary("rayon", &b);
}
