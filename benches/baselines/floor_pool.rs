//! The floor: the smallest correct crossbeam-deque pool. Injector plus a
//! deque per worker, stealing, spin then park with a fence-based sleep
//! check. No handles, no metrics, no shutdown modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::thread::{JoinHandle, Thread};

use crossbeam_deque::{Injector, Stealer, Worker};

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    injector: Injector<Job>,
    stealers: Vec<Stealer<Job>>,
    sleeping: Vec<AtomicBool>,
    sleepers: AtomicUsize,
    threads: std::sync::OnceLock<Vec<Thread>>,
    shutdown: AtomicBool,
}

pub struct FloorPool {
    shared: Arc<Shared>,
    joins: Vec<JoinHandle<()>>,
}

thread_local! {
    static LOCAL: std::cell::Cell<*const Worker<Job>> = const { std::cell::Cell::new(std::ptr::null()) };
}

impl FloorPool {
    pub fn new(workers: usize) -> Self {
        let locals: Vec<_> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            sleepers: AtomicUsize::new(0),
            threads: std::sync::OnceLock::new(),
            shutdown: AtomicBool::new(false),
        });
        let joins: Vec<_> = locals
            .into_iter()
            .enumerate()
            .map(|(i, local)| {
                let s = shared.clone();
                std::thread::spawn(move || run(s, i, local))
            })
            .collect();
        let _ = shared
            .threads
            .set(joins.iter().map(|j| j.thread().clone()).collect());
        FloorPool { shared, joins }
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let local = LOCAL.with(|l| l.get());
        if local.is_null() {
            self.shared.injector.push(job);
        } else {
            // SAFETY: set by this thread's worker loop for its lifetime.
            unsafe { (*local).push(job) };
        }
        notify(&self.shared);
    }
}

fn notify(s: &Shared) {
    fence(Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) == 0 {
        return;
    }
    for (i, flag) in s.sleeping.iter().enumerate() {
        if flag.swap(false, Ordering::SeqCst) {
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            if let Some(t) = s.threads.get() {
                t[i].unpark();
            }
            return;
        }
    }
}

fn find(s: &Shared, i: usize, local: &Worker<Job>) -> Option<Job> {
    local.pop().or_else(|| {
        loop {
            let mut retry = false;
            match s.injector.steal_batch_and_pop(local) {
                crossbeam_deque::Steal::Success(j) => return Some(j),
                crossbeam_deque::Steal::Retry => retry = true,
                crossbeam_deque::Steal::Empty => {}
            }
            for (v, st) in s.stealers.iter().enumerate() {
                if v == i {
                    continue;
                }
                match st.steal_batch_and_pop(local) {
                    crossbeam_deque::Steal::Success(j) => return Some(j),
                    crossbeam_deque::Steal::Retry => retry = true,
                    crossbeam_deque::Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    })
}

fn run(s: Arc<Shared>, i: usize, local: Worker<Job>) {
    LOCAL.with(|l| l.set(&local));
    let mut idle = 0;
    loop {
        if let Some(job) = find(&s, i, &local) {
            idle = 0;
            job();
            continue;
        }
        if s.shutdown.load(Ordering::SeqCst) {
            break;
        }
        idle += 1;
        if idle < 32 {
            std::thread::yield_now();
            continue;
        }
        s.sleeping[i].store(true, Ordering::SeqCst);
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !s.injector.is_empty()
            || s.stealers.iter().any(|st| !st.is_empty())
            || s.shutdown.load(Ordering::SeqCst)
        {
            if s.sleeping[i].swap(false, Ordering::SeqCst) {
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            continue;
        }
        while s.sleeping[i].load(Ordering::SeqCst) && !s.shutdown.load(Ordering::SeqCst) {
            std::thread::park();
        }
    }
    LOCAL.with(|l| l.set(std::ptr::null()));
}

impl Drop for FloorPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(ts) = self.shared.threads.get() {
            for t in ts {
                t.unpark();
            }
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}
