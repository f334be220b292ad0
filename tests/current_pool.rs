//! `concurrent_futures::spawn` and `submit`: queueing onto the pool that
//! runs the caller, without a handle to it.
#![cfg(not(loom))]

mod common;
use common::{occupy, thread_name};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};

use concurrent_futures::{CurrentPoolError, TaskError, ThreadPool};

fn named(prefix: &str, workers: usize) -> ThreadPool {
    ThreadPool::builder()
        .workers(workers)
        .thread_name(prefix)
        .build()
        .unwrap()
}

#[test]
fn work_queued_from_a_task_runs_on_that_tasks_pool() {
    let a = named("current-a", 2);
    let b = named("current-b", 2);
    let (tx, rx) = mpsc::channel();
    for pool in [&a, &b] {
        let tx = tx.clone();
        pool.spawn(move || {
            let t = tx.clone();
            concurrent_futures::spawn(move || t.send(thread_name()).unwrap()).unwrap();
            let h = concurrent_futures::submit(thread_name).unwrap();
            tx.send(h.join().unwrap()).unwrap();
        })
        .unwrap();
    }
    drop(tx);
    let mut names: Vec<String> = rx.iter().collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names[..2].iter().all(|n| n.starts_with("current-a")),
        "{names:?}"
    );
    assert!(
        names[2..].iter().all(|n| n.starts_with("current-b")),
        "{names:?}"
    );
}

#[test]
fn off_a_pool_the_closure_comes_back() {
    for on_thread in [false, true] {
        let run = move || {
            let (tx, rx) = mpsc::channel();
            let err = concurrent_futures::spawn(move || tx.send(5).unwrap()).unwrap_err();
            assert!(matches!(err, CurrentPoolError::NotInPool(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                "cannot spawn: the calling thread is not a pool's worker"
            );
            assert!(rx.try_recv().is_err(), "refused, yet it ran");
            err.into_inner()();
            assert_eq!(rx.try_recv(), Ok(5));
            let err = concurrent_futures::submit(|| 6).unwrap_err();
            assert!(matches!(err, CurrentPoolError::NotInPool(_)), "{err:?}");
            assert_eq!(err.into_inner()(), 6);
        };
        // The main thread (with a pool alive), and a plain thread.
        let _pool = ThreadPool::new(1).unwrap();
        if on_thread {
            std::thread::spawn(run).join().unwrap();
        } else {
            run();
        }
    }
}

#[test]
fn after_shutdown_a_running_task_gets_its_closure_back() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let task = pool
        .submit(move || {
            g.wait(); // the pool shuts down meanwhile
            let (tx, rx) = mpsc::channel();
            let spawned = match concurrent_futures::spawn(move || tx.send("spawned").unwrap()) {
                Err(CurrentPoolError::Shutdown(f)) => {
                    f();
                    rx.recv().unwrap()
                }
                other => panic!("spawn after shutdown: {:?}", other.map(|_| ())),
            };
            let submitted = match concurrent_futures::submit(|| "submitted") {
                Err(e @ CurrentPoolError::Shutdown(_)) => {
                    assert_eq!(
                        e.to_string(),
                        "cannot spawn: the calling worker's pool is shut down"
                    );
                    e.into_inner()()
                }
                other => panic!("submit after shutdown: {:?}", other.map(|_| ())),
            };
            (spawned, submitted)
        })
        .unwrap();
    pool.shutdown(false, false);
    gate.wait();
    assert_eq!(task.join(), Ok(("spawned", "submitted")));
}

#[test]
fn a_done_callback_on_a_worker_and_install_can_queue_work() {
    let pool = named("current-cb", 1);
    let (task, gate) = occupy(&pool);
    let (tx, rx) = mpsc::channel();
    // Attached while the task runs: the worker runs it when the task ends.
    let _ = task.add_done_callback(move |_| {
        let on = thread_name();
        let h = concurrent_futures::submit(thread_name).unwrap();
        tx.send((on, h)).unwrap();
    });
    gate.wait();
    let (on, h) = rx.recv().unwrap();
    assert!(on.starts_with("current-cb"), "the callback ran on {on:?}");
    assert!(h.join().unwrap().starts_with("current-cb"));

    let h = pool.install(|| concurrent_futures::submit(|| 7).unwrap());
    assert_eq!(h.join(), Ok(7));
}

#[test]
fn a_chain_and_a_tree_of_ambient_spawns_run_every_task() {
    fn link(left: usize, count: Arc<AtomicUsize>, done: mpsc::Sender<()>) {
        count.fetch_add(1, Ordering::Relaxed);
        match left {
            0 => done.send(()).unwrap(),
            _ => concurrent_futures::spawn(move || link(left - 1, count, done)).unwrap(),
        }
    }
    fn tree(depth: u32, leaves: Arc<AtomicUsize>, done: mpsc::Sender<()>) {
        if depth == 0 {
            if leaves.fetch_add(1, Ordering::Relaxed) + 1 == 1 << 12 {
                done.send(()).unwrap();
            }
            return;
        }
        for _ in 0..2 {
            let (l, d) = (leaves.clone(), done.clone());
            concurrent_futures::spawn(move || tree(depth - 1, l, d)).unwrap();
        }
    }
    let pool = ThreadPool::new(2).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let c = count.clone();
    pool.spawn(move || link(10_000, c, tx)).unwrap();
    rx.recv().unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 10_001);

    let leaves = Arc::new(AtomicUsize::new(0));
    let (l, (tx, rx)) = (leaves.clone(), mpsc::channel());
    pool.spawn(move || tree(12, l, tx)).unwrap();
    rx.recv().unwrap();
    pool.shutdown(true, false);
    assert_eq!(leaves.load(Ordering::Relaxed), 1 << 12);
    // Every task counted: the chain's 10,001 and the tree's 2^13 - 1.
    assert_eq!(pool.metrics().completed, 10_001 + (1 << 13) - 1);
}

#[test]
fn a_panic_in_ambient_work_is_counted_and_the_worker_survives() {
    let pool = ThreadPool::new(1).unwrap();
    let h = pool
        .submit(|| {
            concurrent_futures::spawn(|| panic!("ambient spawn boom")).unwrap();
            concurrent_futures::submit(|| -> u8 { panic!("ambient submit boom") }).unwrap()
        })
        .unwrap();
    let inner = h.join().unwrap();
    assert!(
        matches!(inner.result(), Err(TaskError::Panicked(m)) if m.as_str() == "ambient submit boom")
    );
    assert_eq!(pool.submit(|| 1).unwrap().join(), Ok(1));
    pool.shutdown(true, false);
    assert_eq!(pool.metrics().panicked, 2);
}
