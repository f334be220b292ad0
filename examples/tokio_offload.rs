//! The "tokio + rayon" pattern without a hand-made oneshot channel: async
//! tasks on tokio offload CPU-bound work to the pool and `.await` the
//! handle, while the runtime's threads stay free for I/O.
//!
//! ```sh
//! cargo run --release --example tokio_offload
//! ```
//!
//! Eight requests each count the primes below a bound on the pool; a
//! ticker on the runtime keeps ticking meanwhile (it would stall if the
//! work ran on the runtime's own threads). It prints each answer, checks
//! it, and prints how many ticks happened while the work ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concurrent_futures::ThreadPool;

/// CPU-bound work: the number of primes below `n`, by trial division.
fn primes_below(n: u64) -> usize {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count()
}

fn main() {
    let pool = ThreadPool::builder().thread_name("crunch").build().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        let requests: Vec<_> = (1..=8u64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let bound = 50_000 * i;
                    // The work runs on the pool; this task just awaits it.
                    let handle = pool.submit(move || primes_below(bound)).unwrap();
                    (bound, handle.await.unwrap())
                })
            })
            .collect();
        for request in requests {
            let (bound, count) = request.await.unwrap();
            println!("primes below {bound:>7}: {count}");
            assert_eq!(count, primes_below_reference(bound));
        }
        ticker.abort();
    });
    println!(
        "the runtime ticked {} times while the pool worked",
        ticks.load(Ordering::Relaxed)
    );
}

/// Known prime counts for the bounds used above (pi(x)).
fn primes_below_reference(bound: u64) -> usize {
    match bound {
        50_000 => 5133,
        100_000 => 9592,
        150_000 => 13848,
        200_000 => 17984,
        250_000 => 22044,
        300_000 => 25997,
        350_000 => 29977,
        400_000 => 33860,
        _ => unreachable!("not a bound of this example"),
    }
}
