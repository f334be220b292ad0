//! The example Python users post, redone: submit `f(x) = x*x`, failing when
//! `x*x % 7 == 0`, for x from 1000 down to 1, each twice (2,000 tasks), and
//! total the outcomes in done-callbacks. In Python the callbacks race on the
//! totals unless you add a lock; here they run on a strand that owns the
//! totals, so they update them with `&mut` and no `Mutex`.
//!
//! Run: `cargo run --release --example totaller`

use concurrent_futures::{Promise, Strand, ThreadPool};

/// What the done-callbacks accumulate.
#[derive(Debug, Default)]
struct Totals {
    successes: usize,
    errors: usize,
    total: usize,
    results: Vec<u64>,
}

/// The task: a value, or an error as its value (Python would raise).
fn square(x: u64) -> Result<u64, String> {
    let y = x * x;
    if y.is_multiple_of(7) {
        Err(format!("{x}^2 = {y} is divisible by 7"))
    } else {
        Ok(y)
    }
}

fn main() {
    const TASKS: usize = 2_000;
    let pool = ThreadPool::new(4).expect("start the pool");
    let totals = Strand::new(&pool, Totals::default());
    // Resolved from inside the strand by the callback that counts the last
    // outcome, carrying the totals out.
    let finished = Promise::new();
    let report = finished.handle();
    let finished = std::sync::Arc::new(finished);

    for x in (1..=1000u64).rev() {
        for _ in 0..2 {
            let handle = pool.submit(move || square(x)).expect("pool is running");
            let finished = finished.clone();
            totals.add_done_callback(&handle, move |t, outcome| {
                match outcome {
                    Ok(Ok(y)) => {
                        t.successes += 1;
                        t.results.push(*y);
                    }
                    Ok(Err(_)) | Err(_) => t.errors += 1,
                }
                t.total += 1;
                if t.total == TASKS {
                    let _ = finished.set_result(std::mem::take(t));
                }
            });
        }
    }

    let t = report.result().expect("all outcomes counted");
    println!("errors = {}", t.errors);
    println!("successes = {}", t.successes);
    println!("total = {}", t.total);
    println!("results kept = {}", t.results.len());
    assert_eq!(t.errors, 284);
    assert_eq!(t.successes, 1_716);
    assert_eq!(t.total, TASKS);
    assert_eq!(t.results.len(), t.successes);
    println!("ok: every outcome counted once, no lock");
}
