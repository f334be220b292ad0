//! The server's logic, apart from its command line, so the tests can start
//! it on an ephemeral port: an HTTP/1.1 server on tokio + hyper whose
//! handler offloads CPU-bound work (hashing the request body many rounds)
//! to one of three backends, and a graceful shutdown that drains
//! in-flight requests.
//!
//! - `GET /health`: `ok`.
//! - `POST /digest[?rounds=N][&parts=P]`: the body hashed `N` rounds
//!   (default from the config), as 16 hex digits and a newline. With
//!   `parts` (2 to 16), the body is cut in `P` parts hashed in parallel and
//!   the part digests hashed together: on the pool backend the request's
//!   task fans the parts out in a scope, borrowing the body (no copy, no
//!   `Arc`). A body over 1 MiB gets
//!   413; a bad `rounds`, a malformed body or more than `MAX_WORK` bytes
//!   to hash 400; an unknown path 404; a refused offload 503.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use concurrent_futures::{ShutdownReport, ThreadPool};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

#[path = "../../benches/baselines/mod.rs"]
mod baselines;
use baselines::mutex_pool::MutexPool;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Largest `rounds` a request may ask for.
pub const MAX_ROUNDS: u32 = 10_000_000;
/// Largest work a request may ask for: rounds × body bytes hashed.
pub const MAX_WORK: u64 = 1 << 32;
/// Most parts a request may cut its body into.
pub const MAX_PARTS: usize = 16;

/// Where the CPU-bound work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This crate's work-stealing pool, its workers under `SCHED_BATCH`
    /// (`Builder::batch_scheduling`); the handler awaits the handle.
    Pool,
    /// `tokio::task::spawn_blocking`, capped at the same thread count.
    SpawnBlocking,
    /// A `Mutex<VecDeque>` + `Condvar` pool; a oneshot carries the result.
    Mutex,
    /// No offload: the work runs on the I/O thread itself. A reference for
    /// the benches (what a request costs with no hand-off at all), not a
    /// way to serve: a long request stalls every connection.
    Inline,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pool" => Ok(Backend::Pool),
            "spawn-blocking" => Ok(Backend::SpawnBlocking),
            "mutex" => Ok(Backend::Mutex),
            "inline" => Ok(Backend::Inline),
            _ => Err(format!(
                "unknown backend {s:?}: pool, spawn-blocking, mutex or inline"
            )),
        }
    }
}

/// What the server runs with.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The backend.
    pub backend: Backend,
    /// Threads doing the work (the pool's workers, tokio's blocking cap,
    /// the mutex pool's threads).
    pub workers: usize,
    /// Default hashing rounds per request.
    pub rounds: u32,
}

/// The work: the body hashed `rounds` times (SipHash, chained).
pub fn digest(body: &[u8], rounds: u32) -> u64 {
    let mut h = 0u64;
    for _ in 0..rounds {
        let mut s = DefaultHasher::new();
        s.write_u64(h);
        s.write(body);
        h = s.finish();
    }
    h
}

/// The body cut in `parts` parts, each hashed `rounds` times by `each`
/// (given the parts, returning their digests in order), the digests then
/// hashed together once. One part is plain [`digest`].
pub fn digest_parts(
    body: &[u8],
    rounds: u32,
    parts: usize,
    each: impl FnOnce(&[&[u8]]) -> Vec<u64>,
) -> u64 {
    if parts <= 1 {
        return digest(body, rounds);
    }
    let size = body.len().div_ceil(parts).max(1);
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    let digests = each(&chunks);
    let joined: Vec<u8> = digests.iter().flat_map(|d| d.to_le_bytes()).collect();
    digest(&joined, 1)
}

/// The runtime for `config`: one thread for I/O (the work goes elsewhere),
/// and for `SpawnBlocking` a blocking pool of `workers` threads.
pub fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(config.workers)
        .enable_all()
        .build()
}

enum Offload {
    Pool(ThreadPool),
    SpawnBlocking,
    Mutex(MutexPool),
    Inline,
}

impl Offload {
    fn new(config: &Config) -> Result<Offload, String> {
        Ok(match config.backend {
            Backend::Pool => Offload::Pool(
                ThreadPool::builder()
                    .workers(config.workers)
                    .thread_name("digest")
                    // The workers share the cores with the I/O thread that
                    // feeds them: woken, they wait for it instead of
                    // preempting it (docs/BENCHMARKS.md, "The same server
                    // flat out").
                    .batch_scheduling(true)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Backend::SpawnBlocking => Offload::SpawnBlocking,
            Backend::Mutex => Offload::Mutex(MutexPool::new(config.workers, false)),
            Backend::Inline => Offload::Inline,
        })
    }

    /// Runs `digest_parts(body, rounds, parts)` on the backend and awaits
    /// it.
    async fn digest(
        state: &Arc<State>,
        body: Bytes,
        rounds: u32,
        parts: usize,
    ) -> Result<u64, String> {
        let sequential = move |chunks: &[&[u8]]| chunks.iter().map(|c| digest(c, rounds)).collect();
        let shared = state.clone();
        match &state.offload {
            Offload::Pool(pool) => match pool.submit(move || {
                let Offload::Pool(pool) = &shared.offload else {
                    unreachable!("the pool backend")
                };
                // The request's task fans its parts out over the pool in a
                // scope: the parts borrow `body`, which this task owns.
                digest_parts(&body, rounds, parts, |chunks| {
                    pool.scope(|s| {
                        let handles: Vec<_> = chunks
                            .iter()
                            .map(|c| s.submit(move || digest(c, rounds)))
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| match h {
                                Ok(h) => h.join().unwrap_or_else(|e| panic!("{e}")),
                                // Shut down meanwhile: hash it here.
                                Err(refused) => refused.into_inner()(),
                            })
                            .collect()
                    })
                })
            }) {
                Ok(handle) => handle.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Offload::SpawnBlocking => {
                tokio::task::spawn_blocking(move || digest_parts(&body, rounds, parts, sequential))
                    .await
                    .map_err(|e| e.to_string())
            }
            Offload::Mutex(pool) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                pool.spawn(move || {
                    let _ = tx.send(digest_parts(&body, rounds, parts, sequential));
                });
                rx.await.map_err(|e| e.to_string())
            }
            Offload::Inline => Ok(digest_parts(&body, rounds, parts, sequential)),
        }
    }
}

/// What the server shares with its connections.
struct State {
    config: Config,
    offload: Offload,
    in_flight: AtomicUsize,
    served: AtomicU64,
}

/// A view of a running server, for tests and the shutdown message.
#[derive(Clone)]
pub struct Probe(Arc<State>);

impl Probe {
    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }
}

/// How a server ended.
#[derive(Debug)]
pub struct ServeReport {
    /// Requests answered.
    pub served: u64,
    /// Every connection closed, its in-flight requests answered, before
    /// the drain timeout.
    pub drained: bool,
    /// The pool's own shutdown report (`Pool` backend).
    pub pool: Option<ShutdownReport>,
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<State>);

impl InFlight {
    fn enter(state: &Arc<State>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reply(status: StatusCode, text: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response
}

fn parts_of(req: &Request<Incoming>) -> Result<usize, String> {
    let query = req.uri().query().unwrap_or("");
    match query.split('&').find_map(|p| p.strip_prefix("parts=")) {
        None => Ok(1),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PARTS).contains(&n) => Ok(n),
            _ => Err(format!("parts must be 1..={MAX_PARTS}, got {v:?}\n")),
        },
    }
}

fn rounds_of(req: &Request<Incoming>, default: u32) -> Result<u32, String> {
    let Some(query) = req.uri().query() else {
        return Ok(default);
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("rounds=") {
            return match v.parse::<u32>() {
                Ok(n) if (1..=MAX_ROUNDS).contains(&n) => Ok(n),
                _ => Err(format!("rounds must be 1..={MAX_ROUNDS}, got {v:?}\n")),
            };
        }
    }
    Ok(default)
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => reply(StatusCode::OK, "ok\n"),
        (&Method::POST, "/digest") => {
            let rounds = match rounds_of(&req, state.config.rounds) {
                Ok(r) => r,
                Err(e) => return reply(StatusCode::BAD_REQUEST, e),
            };
            let parts = match parts_of(&req) {
                Ok(p) => p,
                Err(e) => return reply(StatusCode::BAD_REQUEST, e),
            };
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB\n");
                }
                Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad body: {e}\n")),
            };
            if u64::from(rounds) * body.len().max(1) as u64 > MAX_WORK {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!("rounds x body bytes must be at most {MAX_WORK}\n"),
                );
            }
            match Offload::digest(&state, body, rounds, parts).await {
                Ok(h) => reply(StatusCode::OK, format!("{h:016x}\n")),
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        (_, "/health" | "/digest") => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// lets every in-flight request finish (at most `drain` long), closes
/// idle keep-alive connections, and shuts the backend down.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    probe: impl FnOnce(Probe),
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Result<ServeReport, String> {
    let state = Arc::new(State {
        config,
        offload: Offload::new(&config)?,
        in_flight: AtomicUsize::new(0),
        served: AtomicU64::new(0),
    });
    probe(Probe(state.clone()));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, say: report, and back off
                        // rather than spin on the same error.
                        use std::io::Write;
                        let _ = writeln!(std::io::stderr(), "server: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        // Counted until the response is made, or until hyper
                        // drops this future (the client went away).
                        let _in_flight = InFlight::enter(&state);
                        let response = handle(req, state.clone()).await;
                        state.served.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(response)
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::spawn(graceful.watch(conn));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok();
    let pool = match &state.offload {
        Offload::Pool(pool) => Some(pool.shutdown_timeout(drain, false)),
        // The mutex pool joins its threads when the last connection lets
        // go of the state; spawn_blocking's threads end with the runtime.
        Offload::Mutex(_) | Offload::SpawnBlocking | Offload::Inline => None,
    };
    Ok(ServeReport {
        served: state.served.load(Ordering::Relaxed),
        drained,
        pool,
    })
}
