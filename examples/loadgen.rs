//! A bounded HTTP/1.1 load generator for `examples/server`, loopback only:
//! `C` keep-alive connections, each sending `POST /digest` requests one
//! after another, until `N` requests are answered or `D` seconds pass,
//! whichever comes first. Prints requests/s and p50/p99/max latency.
//!
//! ```sh
//! cargo run --release --example loadgen -- --port 8080 --connections 16 --requests 20000 --seconds 10
//! ```
//!
//! Every answer is checked against the digest computed here; a wrong or
//! failed answer counts as an error (and the exit status is 1).

#[path = "server/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "server/client.rs"]
#[allow(dead_code)]
mod client;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use client::Client;

const USAGE: &str = "usage: loadgen [--port P] [--connections C] [--requests N] [--seconds D] \
                     [--body-bytes B] [--rounds R]";

struct Args {
    port: u16,
    connections: usize,
    requests: usize,
    seconds: u64,
    body_bytes: usize,
    rounds: u32,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        port: 8080,
        connections: 16,
        requests: 20_000,
        seconds: 10,
        body_bytes: 256,
        rounds: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n = |max: u64| match value.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{flag}: want 1..={max}, got {value:?}")),
        };
        match flag.as_str() {
            "--port" => a.port = n(u16::MAX.into())? as u16,
            "--connections" => a.connections = n(1024)? as usize,
            "--requests" => a.requests = n(10_000_000)? as usize,
            "--seconds" => a.seconds = n(600)?,
            "--body-bytes" => a.body_bytes = n(app::MAX_BODY as u64)? as usize,
            "--rounds" => a.rounds = n(app::MAX_ROUNDS.into())? as u32,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// One keep-alive connection: sends until the shared budget or the
/// deadline runs out; returns each request's latency.
fn connection(
    a: &Args,
    budget: &AtomicUsize,
    errors: &AtomicUsize,
    deadline: Instant,
) -> Vec<Duration> {
    let body: Vec<u8> = (0..a.body_bytes).map(|i| (i % 251) as u8).collect();
    let expected = format!("{:016x}\n", app::digest(&body, a.rounds));
    let request = Client::encode("POST", &format!("/digest?rounds={}", a.rounds), &body);
    let mut latencies = Vec::new();
    let Ok(mut client) = Client::connect((Ipv4Addr::LOCALHOST, a.port).into()) else {
        errors.fetch_add(1, Ordering::Relaxed);
        return latencies;
    };
    while Instant::now() < deadline
        && budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    {
        let start = Instant::now();
        match client.send(&request) {
            Ok((200, text)) if text == expected => latencies.push(start.elapsed()),
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let a = Arc::new(parse().unwrap_or_else(|e| {
        eprintln!("loadgen: {e}\n{USAGE}");
        std::process::exit(2)
    }));
    let budget = Arc::new(AtomicUsize::new(a.requests));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(a.connections + 1));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let threads: Vec<_> = (0..a.connections)
        .map(|_| {
            let (a, budget, errors, start) =
                (a.clone(), budget.clone(), errors.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                connection(&a, &budget, &errors, deadline)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let elapsed = t0.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "requests={} seconds={elapsed:.2} rps={:.0} p50_us={:.0} p99_us={:.0} max_us={:.0} errors={errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        us(percentile(&latencies, 0.50)),
        us(percentile(&latencies, 0.99)),
        us(latencies.last().copied().unwrap_or_default()),
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
