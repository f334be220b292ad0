//! Every builder input that can be wrong is a `BuildError`: a property test
//! drives the builder with arbitrary inputs (edge values weighted in) and
//! checks that `build` never panics or hangs, and that a pool it returns
//! serves and shuts down.
#![cfg(not(loom))]

mod common;
use common::Watchdog;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use concurrent_futures::{BuildError, MAX_WORKERS, MIN_STACK_SIZE, ThreadPool};
use proptest::prelude::*;

/// Worker counts: the valid few this machine can start quickly, and the
/// invalid edges (starting 32,767 threads would only test the OS).
fn workers() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        (0usize..=3).prop_map(Some),
        Just(Some(MAX_WORKERS + 1)),
        Just(Some(usize::MAX)),
    ]
}

/// Names: anything, NUL bytes and non-ASCII included.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z-]{0,12}",
        any::<String>(),
        "[a-z]{0,4}\0[a-z]{0,4}",
    ]
}

/// Stack sizes: none, tiny, around the minimum, ordinary, absurd.
fn stacks() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        (1usize..MIN_STACK_SIZE).prop_map(Some),
        Just(Some(MIN_STACK_SIZE)),
        (MIN_STACK_SIZE..(8 << 20)).prop_map(Some),
        Just(Some(1 << 46)),
        Just(Some(usize::MAX / 2)),
        Just(Some(usize::MAX)),
    ]
}

/// Queue and compensation bounds: zero, small, huge.
fn bounds() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        (1usize..16).prop_map(Some),
        Just(Some(usize::MAX)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn build_never_panics_or_hangs(
        workers in workers(),
        name in names(),
        stack in stacks(),
        max_queued in bounds(),
        max_blocking in bounds(),
    ) {
        let _dog = Watchdog::new("build_never_panics_or_hangs", Duration::from_secs(60));
        let mut b = ThreadPool::builder().thread_name(name.clone());
        if let Some(n) = workers {
            b = b.workers(n);
        }
        if let Some(s) = stack {
            b = b.stack_size(s);
        }
        if let Some(q) = max_queued {
            b = b.max_queued(q);
        }
        if let Some(m) = max_blocking {
            b = b.max_blocking(m);
        }
        let built = catch_unwind(AssertUnwindSafe(|| b.build()));
        let built = match built {
            Ok(b) => b,
            Err(_) => panic!("build panicked for {workers:?} {name:?} {stack:?} {max_queued:?} {max_blocking:?}"),
        };
        match built {
            Ok(pool) => {
                // Every input was valid: the pool serves, then shuts down.
                prop_assert!(workers.is_none_or(|n| (1..=MAX_WORKERS).contains(&n)));
                prop_assert!(!name.contains('\0'));
                prop_assert!(stack.is_none_or(|s| s >= MIN_STACK_SIZE));
                prop_assert_ne!(max_queued, Some(0));
                prop_assert_eq!(pool.submit(|| 6 * 7).unwrap().join(), Ok(42));
                let report = pool.shutdown_timeout(Duration::from_secs(30), false);
                prop_assert!(report.finished);
            }
            Err(BuildError::ZeroWorkers) => prop_assert_eq!(workers, Some(0)),
            Err(BuildError::TooManyWorkers(n)) => {
                prop_assert_eq!(workers, Some(n));
                prop_assert!(n > MAX_WORKERS);
            }
            Err(BuildError::ZeroBound) => prop_assert_eq!(max_queued, Some(0)),
            Err(BuildError::ThreadName(n)) => {
                prop_assert!(n.contains('\0'));
                prop_assert_eq!(n, name);
            }
            Err(BuildError::StackSize(s)) => {
                prop_assert_eq!(stack, Some(s));
                prop_assert!(s < MIN_STACK_SIZE);
            }
            // The OS refused a stack it cannot map: only absurd sizes.
            Err(BuildError::Spawn(_)) => prop_assert!(stack.is_some_and(|s| s >= 1 << 40)),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

/// Each kind of bad input, once, with the error a user sees.
#[test]
fn each_bad_input_names_itself() {
    let err = |b: concurrent_futures::Builder| b.build().unwrap_err().to_string();
    assert_eq!(
        err(ThreadPool::builder().workers(0)),
        "a pool needs at least one worker"
    );
    assert!(err(ThreadPool::builder().workers(usize::MAX)).contains("at most 32767"));
    assert!(err(ThreadPool::builder().thread_name("a\0b")).contains("NUL"));
    assert!(err(ThreadPool::builder().stack_size(100)).contains("below the minimum"));
    assert!(err(ThreadPool::builder().stack_size(usize::MAX)).contains("could not start"));
    assert_eq!(
        err(ThreadPool::builder().max_queued(0)),
        "a queue bound must be at least 1"
    );
}
