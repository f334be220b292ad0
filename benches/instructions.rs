//! Instruction counts under `valgrind --tool=callgrind` (repeatable on a
//! noisy machine). Run by `benches/callgrind.sh`, which runs this binary
//! with two operation counts and prints the difference per operation, so
//! start-up and thread creation cancel out.
//!
//! Usage: instructions (attach|drain|mutex_attach|mutex_drain|join|rayon_join|submit|spawn|floor|chain|chain_handle|rayon_chain|tree|rayon_tree|repoll|tokio_repoll) N

mod baselines;

use std::hint::black_box;

use concurrent_futures::{Promise, ThreadPool};

/// A one-worker pool whose worker waits at the returned barrier, so tasks
/// queued meanwhile run back to back once the caller meets it.
fn gated_pool() -> (ThreadPool, std::sync::Arc<std::sync::Barrier>) {
    let pool = ThreadPool::new(1).unwrap();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    pool.spawn(move || {
        g.wait();
    })
    .unwrap();
    (pool, gate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` runs every bench target with `--bench`: do nothing then.
    if args.len() < 3 {
        return;
    }
    let n: usize = args[2].parse().expect("N");
    match args[1].as_str() {
        // One attach to a pending future (the drain is in the "complete" count).
        "attach" => {
            let p = Promise::<u64>::new();
            let h = p.handle();
            for _ in 0..n {
                let _ = h.add_done_callback(|v| {
                    let _ = black_box(v);
                });
            }
            std::mem::forget(p); // never complete: count attaches alone
        }
        // One attach and its share of the completion drain: N callbacks on
        // one future, then the future completes (minus `attach`: the drain
        // per callback).
        "drain" => {
            let p = Promise::<u64>::new();
            let h = p.handle();
            for i in 0..n {
                let _ = h.add_done_callback(move |v| {
                    let _ = black_box((v, i));
                });
            }
            p.set_result(1).unwrap();
        }
        // The same two on the mutex design, for the ratio issue 13 asks.
        "mutex_attach" => {
            // A word captured, or `Box` would not allocate (ours makes a
            // node either way).
            let f = baselines::mutex_future::MutexFuture::<u64>::new();
            for i in 0..n {
                f.add_done_callback(move |v| {
                    let _ = black_box((v, i));
                });
            }
            std::mem::forget(f);
        }
        "mutex_drain" => {
            let f = baselines::mutex_future::MutexFuture::<u64>::new();
            for i in 0..n {
                f.add_done_callback(move |v| {
                    let _ = black_box((v, i));
                });
            }
            f.set(1);
        }
        // One `join` and its share of the tree: a parallel sum split down
        // to 64-element leaves on a one-worker pool (nobody steals), N
        // joins; and the same on rayon.
        "join" => {
            fn sum(pool: &ThreadPool, v: &[u64]) -> u64 {
                if v.len() <= 64 {
                    return v.iter().sum();
                }
                let (l, r) = v.split_at(v.len() / 2);
                let (a, b) = pool.join(|| sum(pool, l), || sum(pool, r));
                a + b
            }
            let pool = ThreadPool::new(1).unwrap();
            let v: Vec<u64> = (0..(n * 64) as u64).collect();
            black_box(pool.install(|| sum(&pool, &v)));
        }
        "rayon_join" => {
            fn sum(v: &[u64]) -> u64 {
                if v.len() <= 64 {
                    return v.iter().sum();
                }
                let (l, r) = v.split_at(v.len() / 2);
                let (a, b) = rayon::join(|| sum(l), || sum(r));
                a + b
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let v: Vec<u64> = (0..(n * 64) as u64).collect();
            black_box(pool.install(|| sum(&v)));
        }
        // submit + run + complete (+ the handle's drop): N tasks queued
        // behind a gate, so the worker never idles between them and no
        // thread interleaving enters the count; then all run.
        "submit" => {
            let (pool, gate) = gated_pool();
            let handles: Vec<_> = (0..n)
                .map(|_| pool.submit(|| black_box(1)).unwrap())
                .collect();
            gate.wait();
            pool.shutdown(true, false);
            drop(handles);
        }
        // A fire-and-forget spawn from outside + its run, queued behind a
        // gate like `submit`.
        "spawn" => {
            let (pool, gate) = gated_pool();
            for i in 0..n {
                let word = black_box(i); // captured, as real closures capture state
                pool.spawn(move || {
                    black_box(word);
                })
                .unwrap();
            }
            gate.wait();
            pool.shutdown(true, false);
        }
        // The same on the floor (the bare crossbeam pool of the benchmarks),
        // for comparison: what our spawn costs beyond it.
        "floor" => {
            let pool = baselines::floor_pool::FloorPool::new(1);
            let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
            let g = gate.clone();
            pool.spawn(move || {
                g.wait();
            });
            for i in 0..n {
                let word = black_box(i);
                pool.spawn(move || {
                    black_box(word);
                });
            }
            gate.wait();
            drop(pool);
        }
        // A spawn from inside a worker + its run: a chain of N tasks, each
        // spawning the next onto the pool running it, on a one-worker pool
        // (the main thread waits).
        "chain" => {
            fn link(left: usize, done: Promise<()>) {
                if left == 0 {
                    let _ = done.set_result(());
                    return;
                }
                concurrent_futures::spawn(move || link(left - 1, done)).unwrap();
            }
            let pool = ThreadPool::new(1).unwrap();
            let done = Promise::new();
            let finished = done.handle();
            pool.spawn(move || link(n, done)).unwrap();
            finished.wait().unwrap();
        }
        // The same on `rayon::spawn`, its one-thread pool's ambient spawn.
        "rayon_chain" => {
            fn link(left: usize, done: Promise<()>) {
                if left == 0 {
                    let _ = done.set_result(());
                    return;
                }
                rayon::spawn(move || link(left - 1, done));
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let done = Promise::new();
            let finished = done.handle();
            pool.spawn(move || link(n, done));
            finished.wait().unwrap();
        }
        // The chain with each task carrying a clone of the pool's handle
        // for its successor (`ThreadPool::spawn`).
        "chain_handle" => {
            fn link(pool: ThreadPool, left: usize, done: Promise<()>) {
                if left == 0 {
                    let _ = done.set_result(());
                    return;
                }
                let p = pool.clone();
                pool.spawn(move || link(p, left - 1, done)).unwrap();
            }
            let pool = ThreadPool::new(1).unwrap();
            let done = Promise::new();
            let finished = done.handle();
            link(pool.clone(), n, done);
            finished.wait().unwrap();
        }
        // One wake + re-queue + poll of a future on the pool: a future that
        // wakes itself N times on a one-worker pool (the main thread waits).
        "repoll" => {
            let pool = ThreadPool::new(1).unwrap();
            let mut left = n;
            let h = pool
                .submit_future(std::future::poll_fn(move |cx| {
                    if left == 0 {
                        return std::task::Poll::Ready(());
                    }
                    left -= 1;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }))
                .unwrap();
            h.join().unwrap();
        }
        // The same on tokio: a self-waking task on a one-worker
        // multi-thread runtime (the main thread waits on its handle).
        "tokio_repoll" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap();
            let mut left = n;
            let h = rt.spawn(std::future::poll_fn(move |cx| {
                if left == 0 {
                    return std::task::Poll::Ready(());
                }
                left -= 1;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }));
            rt.block_on(h).unwrap();
        }
        // A spawn tree of N tasks on a one-worker pool: task `i` spawns
        // tasks `2i + 1` and `2i + 2` while they are below N (a heap's
        // numbering), onto the pool running it; the last to finish sets
        // the promise. One operation: one task spawned from a worker and
        // run, in a tree's order.
        "tree" => {
            let pool = ThreadPool::new(1).unwrap();
            let tree = Tree::new(n);
            let finished = tree.done();
            pool.spawn(move || tree_ours(0, tree)).unwrap();
            finished.wait().unwrap();
        }
        "rayon_tree" => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let tree = Tree::new(n);
            let finished = tree.done();
            pool.spawn(move || tree_rayon(0, tree));
            finished.wait().unwrap();
        }
        other => panic!("unknown workload {other}"),
    }
}

/// What every task of a spawn tree shares: its size, how many are left to
/// finish, and the promise the last one sets.
#[derive(Clone)]
struct Tree(std::sync::Arc<(usize, std::sync::atomic::AtomicUsize, Promise<()>)>);

impl Tree {
    fn new(n: usize) -> Tree {
        let left = std::sync::atomic::AtomicUsize::new(n);
        Tree(std::sync::Arc::new((n, left, Promise::new())))
    }

    fn size(&self) -> usize {
        self.0.0
    }

    fn done(&self) -> concurrent_futures::FutureHandle<()> {
        self.0.2.handle()
    }

    /// Counts one task finished; the last sets the promise.
    fn finish(&self) {
        if self.0.1.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let _ = self.0.2.set_result(());
        }
    }
}

fn tree_ours(i: usize, tree: Tree) {
    for child in [2 * i + 1, 2 * i + 2] {
        if child < tree.size() {
            let t = tree.clone();
            concurrent_futures::spawn(move || tree_ours(child, t)).unwrap();
        }
    }
    tree.finish();
}

fn tree_rayon(i: usize, tree: Tree) {
    for child in [2 * i + 1, 2 * i + 2] {
        if child < tree.size() {
            let t = tree.clone();
            rayon::spawn(move || tree_rayon(child, t));
        }
    }
    tree.finish();
}
