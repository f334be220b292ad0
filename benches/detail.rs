//! Criterion groups for the detailed view (`cargo bench --bench detail`):
//! attaching a callback, completing with callbacks, submitting a task.

mod baselines;

use std::hint::black_box;

use baselines::mutex_future::MutexFuture;
use concurrent_futures::{Promise, ThreadPool};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn attach(c: &mut Criterion) {
    let mut g = c.benchmark_group("attach one callback (uncontended)");
    g.bench_function("ours", |b| {
        let p = Promise::<u64>::new();
        let h = p.handle();
        b.iter(|| {
            let _ = h.add_done_callback(|v| {
                let _ = black_box(v);
            });
        });
    });
    g.bench_function("mutex future", |b| {
        let f = MutexFuture::<u64>::new();
        b.iter(|| {
            f.add_done_callback(|v| {
                let _ = black_box(v);
            })
        });
    });
    g.finish();
}

fn complete(c: &mut Criterion) {
    let mut g = c.benchmark_group("complete with N callbacks");
    for n in [1usize, 10, 100, 1000] {
        g.bench_with_input(BenchmarkId::new("ours", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let p = Promise::<u64>::new();
                    let h = p.handle();
                    for _ in 0..n {
                        let _ = h.add_done_callback(|v| {
                            let _ = black_box(v);
                        });
                    }
                    p
                },
                |p| p.set_result(1).unwrap(),
                criterion::BatchSize::SmallInput,
            );
        });
        g.bench_with_input(BenchmarkId::new("mutex future", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let f = MutexFuture::<u64>::new();
                    for _ in 0..n {
                        f.add_done_callback(|v| {
                            let _ = black_box(v);
                        });
                    }
                    f
                },
                |f| f.set(1),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn submit(c: &mut Criterion) {
    let mut g = c.benchmark_group("submit and wait 1,000 empty tasks");
    let pool = ThreadPool::new(2).unwrap();
    g.bench_function("ours", |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..1000).map(|_| pool.submit(|| ()).unwrap()).collect();
            for h in hs {
                h.wait().unwrap();
            }
        })
    });
    let mp = baselines::mutex_pool::MutexPool::new(2, false);
    g.bench_function("mutex pool", |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..1000).map(|_| mp.submit(|| ())).collect();
            for h in hs {
                h.wait();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, attach, complete, submit);
criterion_main!(benches);
