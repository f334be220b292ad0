//! An HTTP server on tokio + hyper that offloads CPU-bound work (hashing
//! each request body many rounds) to a thread pool and awaits the handle.
//!
//! ```sh
//! cargo run --release --example server -- --port 8080 --workers 2 --rounds 2000 --backend pool
//! curl -d 'hello' 'http://127.0.0.1:8080/digest?rounds=1000'
//! ```
//!
//! `--backend` picks where the work runs: `pool` (this crate), `spawn-blocking`
//! (`tokio::task::spawn_blocking`, capped at `--workers` threads) or `mutex`
//! (a `Mutex` + `Condvar` pool), so the three can be compared under the
//! same load (`examples/loadgen.rs`; docs/BENCHMARKS.md). `inline` does the
//! work on the I/O thread itself, offloading nothing: the benches' floor,
//! what a request costs with no hand-off, not a way to serve (one long
//! request stalls every connection). Ctrl-C stops
//! accepting, answers every in-flight request, closes the connections and
//! shuts the pool down; the server prints what it served and exits.

mod app;

use std::time::Duration;

use app::{Backend, Config};

const USAGE: &str = "usage: server [--port P (0: any free one)] [--workers N] [--rounds R] \
                     [--backend pool|spawn-blocking|mutex|inline]";

/// A line on stdout; a closed stdout (the reader went away) is no reason
/// to stop serving.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn parse() -> Result<(u16, Config), String> {
    let mut port = 8080u16;
    let mut config = Config {
        backend: Backend::Pool,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|e| bad(&e))?,
            "--workers" => match value.parse() {
                Ok(0) => return Err(bad(&"need at least one worker")),
                Ok(n) => config.workers = n,
                Err(e) => return Err(bad(&e)),
            },
            "--rounds" => match value.parse() {
                Ok(n) if (1..=app::MAX_ROUNDS).contains(&n) => config.rounds = n,
                Ok(_) => return Err(bad(&format!("must be 1..={}", app::MAX_ROUNDS))),
                Err(e) => return Err(bad(&e)),
            },
            "--backend" => config.backend = value.parse().map_err(|e: String| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((port, config))
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let (port, config) = parse().unwrap_or_else(|e| {
        eprintln!("server: {e}\n{USAGE}");
        std::process::exit(2)
    });
    let runtime = app::runtime(&config).expect("start the tokio runtime");
    let report = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("server: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1)
            });
        let addr = listener.local_addr().expect("a bound address");
        // Ctrl-C is watched from before the line scripts wait for: a
        // SIGINT sent as soon as they read it must not be lost (tokio's
        // `ctrl_c()` would register only when first polled, later).
        #[cfg(unix)]
        let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        // The first line says where to connect (scripts read it).
        say(format_args!("listening on http://{addr} ({config:?})"));
        let probe = std::sync::OnceLock::new();
        let ctrl_c = async {
            #[cfg(unix)]
            let watched = match interrupt {
                Ok(mut signal) => {
                    signal.recv().await;
                    Ok(())
                }
                Err(e) => Err(e),
            };
            #[cfg(not(unix))]
            let watched = tokio::signal::ctrl_c().await;
            if let Err(e) = watched {
                // No handler: serve until killed rather than stop at once.
                eprintln!("server: cannot watch for Ctrl-C ({e}); stop it with a signal");
                std::future::pending::<()>().await;
            }
            let in_flight = probe.get().map_or(0, app::Probe::in_flight);
            say(format_args!(
                "ctrl-c: draining {in_flight} in-flight requests"
            ));
        };
        let keep = |p| drop(probe.set(p));
        app::serve(listener, config, keep, ctrl_c, Duration::from_secs(30)).await
    });
    match report {
        Ok(r) => say(format_args!(
            "shut down: served {} requests, drained: {}, pool: {:?}",
            r.served, r.drained, r.pool
        )),
        Err(e) => {
            eprintln!("server: {e}");
            std::process::exit(1)
        }
    }
}
