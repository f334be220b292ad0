//! Compile-fail tests: misuse of the thread-safety and lifetime bounds must
//! be rejected by the compiler (see `tests/ui/*.rs`, one property a file,
//! each with the expected error in its `.stderr`), and the matching correct
//! uses must keep compiling (the `#[test]`s below), so every bound is pinned
//! from both sides: neither loosened into unsoundness nor tightened into
//! refusing sound code.
//!
//! Re-bless the expected errors after a toolchain change with
//! `TRYBUILD=overwrite cargo test --test compile_fail`, then read the diff,
//! and move [`BLESSED`] to that toolchain.
#![cfg(not(loom))]

use concurrent_futures::{
    CurrentPoolError, FutureHandle, Join, Promise, Registration, Strand, SubmitError, TaskError,
    ThreadPool, WaitAsync,
};

/// The rustc whose words the `.stderr` files hold. Another release words
/// the same errors differently (how it renders a closure, which notes it
/// adds), so there the cases are not compared: they run where the files
/// were blessed, as CI runs them.
const BLESSED: &str = "rustc 1.95.";

#[test]
fn misuse_does_not_compile() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !version.starts_with(BLESSED) {
        eprintln!(
            "compile_fail: the expected errors are {BLESSED}x's, this is {:?}: not compared",
            version.trim()
        );
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}

/// The positive side of the `ui/` cases: with `Send + Sync` values the
/// public types cross and are shared between threads.
#[test]
fn thread_safe_types_are_send_and_sync() {
    assert_send_sync::<FutureHandle<String>>();
    assert_send_sync::<Promise<String>>();
    assert_send_sync::<Registration<String>>();
    assert_send_sync::<ThreadPool>();
    assert_send_sync::<SubmitError<fn()>>();
    assert_send_sync::<CurrentPoolError<fn()>>();
    assert_send_sync::<TaskError>();
    // The strand's state is only ever touched by one drainer at a time, so
    // `S: Send` suffices: a `Send` but not `Sync` state is fine.
    assert_send_sync::<Strand<Vec<u8>>>();
    assert_send_sync::<Strand<std::cell::Cell<u8>>>();
    // A future that keeps only `Send` values across its awaits runs on the
    // pool (the positive side of `submit_future_non_send`).
    let pool = ThreadPool::new(1).unwrap();
    let h = pool
        .submit_future(async {
            let s = String::from("kept across an await");
            std::future::ready(()).await;
            s.len()
        })
        .unwrap();
    assert_eq!(h.join(), Ok(20));
    // The async faces can be held across `.await` in a multi-threaded runtime.
    assert_send::<Join<String>>();
    assert_send::<WaitAsync<'static, String>>();
}

/// The positive side of the `ui/` cases that call the API: the same calls
/// with thread-safe captures and values compile (and run).
#[test]
fn thread_safe_uses_compile() {
    use std::sync::{Arc, mpsc};

    let pool = ThreadPool::new(1).unwrap();
    let shared = Arc::new(1u8);
    let captured = shared.clone();
    let handle = pool.submit(move || Arc::clone(&captured)).unwrap();
    assert_eq!(handle.join().as_deref(), Ok(&1));

    let (tx, rx) = mpsc::channel();
    let _registration = pool.submit(|| 2u8).unwrap().add_done_callback(move |r| {
        tx.send(*r.unwrap()).unwrap();
    });
    assert_eq!(rx.recv(), Ok(2));

    let promise = Promise::<u16>::new();
    let handle = promise.handle();
    let registration = handle.add_done_callback(|_| {});
    assert!(handle.remove_done_callback(registration));
    std::thread::spawn(move || promise.set_result(3).unwrap())
        .join()
        .unwrap();
    let reader = handle.clone();
    std::thread::spawn(move || assert_eq!(reader.result(), Ok(&3)))
        .join()
        .unwrap();

    let strand = Strand::new(&pool, std::cell::Cell::new(0u32));
    strand.post(|s| s.set(s.get() + 1));
    let owned = String::from("static");
    pool.spawn(move || drop(owned)).unwrap();
    assert_eq!(strand.submit(|s| s.get()).join(), Ok(1));
    pool.shutdown(true, false);
}

/// The positive side of the `scope_*` cases: inside a scope, tasks and
/// done-callbacks borrow what outlives the scope, and handles are used
/// inside it.
#[test]
fn scoped_borrows_compile() {
    let pool = ThreadPool::new(1).unwrap();
    let data = [1u32, 2, 3];
    let mut seen = Vec::new();
    let total = pool.scope(|s| {
        let seen = &mut seen;
        s.spawn(|| assert_eq!(data.len(), 3)).unwrap();
        let h = s.submit(|| data.iter().sum::<u32>()).unwrap();
        h.add_done_callback(move |r| seen.push(*r.unwrap()));
        h.join().unwrap()
    });
    assert_eq!((total, seen), (6, vec![6]));
}
