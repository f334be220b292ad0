//! The straightforward future: `Mutex<state + Vec<callback>>` + `Condvar`.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Callback<T> = Box<dyn FnOnce(&T) + Send>;

struct Inner<T> {
    value: OnceLock<T>,
    /// `None` once done.
    callbacks: Mutex<Option<Vec<Callback<T>>>>,
    cv: Condvar,
}

pub struct MutexFuture<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for MutexFuture<T> {
    fn clone(&self) -> Self {
        MutexFuture {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> MutexFuture<T> {
    pub fn new() -> Self {
        MutexFuture {
            inner: Arc::new(Inner {
                value: OnceLock::new(),
                callbacks: Mutex::new(Some(Vec::new())),
                cv: Condvar::new(),
            }),
        }
    }

    pub fn add_done_callback(&self, f: impl FnOnce(&T) + Send + 'static) {
        let mut guard = self.inner.callbacks.lock().unwrap();
        match guard.as_mut() {
            Some(list) => list.push(Box::new(f)),
            None => {
                drop(guard);
                f(self.inner.value.get().unwrap());
            }
        }
    }

    /// Sets the value, wakes waiters, runs callbacks (outside the lock).
    pub fn set(&self, v: T) {
        let _ = self.inner.value.set(v);
        let callbacks = self
            .inner
            .callbacks
            .lock()
            .unwrap()
            .take()
            .unwrap_or_default();
        self.inner.cv.notify_all();
        let v = self.inner.value.get().unwrap();
        for cb in callbacks {
            cb(v);
        }
    }

    pub fn done(&self) -> bool {
        self.inner.value.get().is_some()
    }

    pub fn wait(&self) -> &T {
        let mut guard = self.inner.callbacks.lock().unwrap();
        while guard.is_some() {
            guard = self.inner.cv.wait(guard).unwrap();
        }
        self.inner.value.get().unwrap()
    }
}
