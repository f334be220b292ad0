//! The process-wide callback-panic hook, in a binary of its own: a test
//! that fails here leaves the hook's lock held, which would hang every
//! other test that reports a panic.
#![cfg(not(loom))]

mod common;
use common::Watchdog;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use concurrent_futures::{Promise, clear_callback_panic_hook, set_callback_panic_hook};

/// Replacing or clearing the hook drops the old one, and what it captured
/// is user code: here a promise whose drop completes its future, whose
/// callback panics, whose report reads the hook. The old hook was dropped
/// with the hook's write lock still held, and that report waited on the
/// lock for good.
#[test]
fn dropping_a_replaced_hook_may_report_a_panic() {
    let _dog = Watchdog::new("hook_drop", Duration::from_secs(60));
    // A hook owning a promise with a panicking callback, dropped by `swap`.
    let armed = || {
        let p = Promise::<u8>::new();
        let _ = p
            .handle()
            .add_done_callback(|_| panic!("reported during the hook's drop"));
        move |_: &concurrent_futures::CallbackPanic| {
            let _ = p.is_cancelled();
        }
    };
    let (tx, rx) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    set_callback_panic_hook(armed());
    let swapper = thread::spawn(move || {
        // Replaced: the new hook hears the old one's promise.
        set_callback_panic_hook(move |p| {
            seen_tx.send(p.message().as_str().to_owned()).unwrap();
        });
        tx.send("replaced").unwrap();
        set_callback_panic_hook(armed());
        // Cleared: the default hook (stderr) hears this one's.
        clear_callback_panic_hook();
        tx.send("cleared").unwrap();
    });
    for step in ["replaced", "cleared"] {
        let got = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(got, Ok(step), "the swap hung on the hook's lock");
    }
    swapper.join().unwrap();
    assert_eq!(
        seen.try_recv().as_deref(),
        Ok("reported during the hook's drop")
    );
}
