//! `examples/server`: started on an ephemeral loopback port, sent real
//! requests over TCP, answered correctly by each backend, and shut down
//! cleanly with a request in flight.
#![cfg(not(loom))]

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/client.rs"]
mod client;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use app::{Backend, Config, Probe, ServeReport};
use client::Client;

/// A server on its own runtime thread; `stop` makes it shut down.
struct Running {
    addr: SocketAddr,
    probe: Probe,
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::thread::JoinHandle<Result<ServeReport, String>>,
}

fn start(backend: Backend) -> Running {
    let config = Config {
        backend,
        workers: 2,
        rounds: 100,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, started) = mpsc::channel();
    let done = std::thread::spawn(move || {
        app::runtime(&config).unwrap().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let on_start = move |probe| ready.send((addr, probe)).unwrap();
            let stop = async move { drop(stopped.await) };
            app::serve(listener, config, on_start, stop, Duration::from_secs(60)).await
        })
    });
    let (addr, probe) = started.recv().unwrap();
    Running {
        addr,
        probe,
        stop,
        done,
    }
}

fn digest_hex(body: &[u8], rounds: u32) -> String {
    format!("{:016x}\n", app::digest(body, rounds))
}

#[test]
fn every_backend_answers_with_the_digest() {
    for backend in [
        Backend::Pool,
        Backend::SpawnBlocking,
        Backend::Mutex,
        Backend::Inline,
    ] {
        let server = start(backend);
        let mut c = Client::connect(server.addr).unwrap();
        for (i, body) in [&b"hello"[..], b"", &[7u8; 4096]].into_iter().enumerate() {
            let rounds = 10 + i as u32;
            let path = format!("/digest?rounds={rounds}");
            assert_eq!(
                c.request("POST", &path, body),
                Ok((200, digest_hex(body, rounds))),
                "{backend:?}"
            );
        }
        // The default rounds come from the config.
        assert_eq!(
            c.request("POST", "/digest", b"x"),
            Ok((200, digest_hex(b"x", 100)))
        );
        // Parts hashed in parallel (a scope on the pool) give what hashing
        // them one after another gives.
        let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let sequential = |chunks: &[&[u8]]| chunks.iter().map(|c| app::digest(c, 5)).collect();
        let expected = format!("{:016x}\n", app::digest_parts(&body, 5, 7, sequential));
        assert_eq!(
            c.request("POST", "/digest?rounds=5&parts=7", &body),
            Ok((200, expected)),
            "{backend:?}"
        );
        drop(c);
        server.stop.send(()).unwrap();
        let report = server.done.join().unwrap().unwrap();
        assert_eq!(report.served, 5, "{backend:?}");
        assert!(report.drained, "{backend:?}");
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let server = start(Backend::Pool);
    let mut c = Client::connect(server.addr).unwrap();
    assert_eq!(c.request("GET", "/health", b""), Ok((200, "ok\n".into())));
    let (status, text) = c.request("POST", "/digest?parts=17", b"x").unwrap();
    assert_eq!(
        (status, text.as_str()),
        (400, "parts must be 1..=16, got \"17\"\n")
    );
    let (status, text) = c.request("POST", "/digest?rounds=0", b"x").unwrap();
    assert_eq!(status, 400);
    assert!(text.contains("rounds must be"), "{text}");
    assert_eq!(
        c.request("POST", "/digest?rounds=many", b"x").unwrap().0,
        400
    );
    assert_eq!(c.request("GET", "/digest", b"").unwrap().0, 405);
    let (status, text) = c
        .request(
            "POST",
            &format!("/digest?rounds={}", app::MAX_ROUNDS),
            &[1; 1024],
        )
        .unwrap();
    assert_eq!(status, 400, "unbounded work must be refused");
    assert!(text.contains("at most"), "{text}");
    assert_eq!(c.request("GET", "/elsewhere", b"").unwrap().0, 404);
    // The connection is still usable after each error.
    assert_eq!(
        c.request("POST", "/digest?rounds=3", b"ok"),
        Ok((200, digest_hex(b"ok", 3)))
    );
    let too_big = vec![0u8; app::MAX_BODY + 1];
    assert_eq!(
        Client::connect(server.addr)
            .unwrap()
            .request("POST", "/digest", &too_big)
            .unwrap()
            .0,
        413
    );
    drop(c);
    server.stop.send(()).unwrap();
    assert!(server.done.join().unwrap().unwrap().drained);
}

/// Shutdown with a request in flight: the request is answered in full, and
/// the server returns (its listener closed) with everything drained and the
/// pool finished.
#[test]
fn shutdown_drains_the_request_in_flight() {
    let server = start(Backend::Pool);
    let addr = server.addr;
    let body = vec![3u8; 1024];
    let rounds = 200_000;
    let b = body.clone();
    let slow = std::thread::spawn(move || {
        Client::connect(addr)
            .unwrap()
            .request("POST", &format!("/digest?rounds={rounds}"), &b)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while server.probe.in_flight() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        std::thread::yield_now();
    }
    server.stop.send(()).unwrap();
    assert_eq!(slow.join().unwrap(), Ok((200, digest_hex(&body, rounds))));
    let report = server.done.join().unwrap().unwrap();
    assert!(report.drained);
    assert_eq!(report.served, 1);
    let pool = report.pool.expect("the pool backend reports its shutdown");
    assert!(pool.finished);
    assert_eq!((pool.running, pool.queued, pool.pending_futures), (0, 0, 0));
}
