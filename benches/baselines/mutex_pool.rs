//! `Mutex<VecDeque<job>>` + `Condvar`, N workers, in two variants: notify on
//! every submit (naive), or only when a worker sleeps (good).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::mutex_future::MutexFuture;

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    sleeping: usize,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
    naive: bool,
}

pub struct MutexPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl MutexPool {
    pub fn new(workers: usize, naive: bool) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                sleeping: 0,
                shutdown: false,
            }),
            cv: Condvar::new(),
            naive,
        });
        let threads = (0..workers)
            .map(|_| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = {
                            let mut q = s.queue.lock().unwrap();
                            loop {
                                if let Some(job) = q.jobs.pop_front() {
                                    break job;
                                }
                                if q.shutdown {
                                    return;
                                }
                                q.sleeping += 1;
                                q = s.cv.wait(q).unwrap();
                                q.sleeping -= 1;
                            }
                        };
                        job();
                    }
                })
            })
            .collect();
        MutexPool { shared, threads }
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut q = self.shared.queue.lock().unwrap();
        q.jobs.push_back(Box::new(job));
        let wake = self.shared.naive || q.sleeping > 0;
        drop(q);
        if wake {
            self.shared.cv.notify_one();
        }
    }

    pub fn submit<T: Send + Sync + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> MutexFuture<T> {
        let fut = MutexFuture::new();
        let f2 = fut.clone();
        self.spawn(move || f2.set(f()));
        fut
    }
}

impl Drop for MutexPool {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().shutdown = true;
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
