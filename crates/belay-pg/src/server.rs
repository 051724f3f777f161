//! The listener and each connection's life: TLS negotiation, the startup message and its
//! parameters, SCRAM-SHA-256 (or cleartext over TLS), admission through the `Gate`, the
//! upstream login, cancel routing, then the relay loop until either side leaves or belay
//! shuts down.
//!
//! Limits: a connection cap (SQLSTATE 53300 past it; cancel requests are always served), a
//! handshake deadline, a bound on message size, and a shutdown that lets idle sessions go at
//! once and busy ones finish their transaction within a grace period. The relay loop itself
//! is `relay_loop.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::codec::{self, Backend, Severity, Startup};
use crate::gate::{Credential, Gate, Login, Refusal, UpstreamSpec};
use crate::relay::{Relay, Violation};
use crate::relay_loop;
use crate::upstream::{self, CancelTarget, Stream};
use belay_core::encoding;

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub require_tls: bool,
    pub allow_cleartext_password: bool,
    /// Largest message accepted from a client.
    pub max_message: usize,
    /// Largest Query or Parse accepted from a client: a longer one is read past, never
    /// buffered, and refused (its text could not be analysed anyway).
    pub max_sql_message: usize,
    /// Bytes all sessions together may hold in their buffers before each session stops
    /// reading more than a little at a time (back-pressure instead of memory).
    pub memory_budget: usize,
    /// Threads that run sessions (each a single-threaded runtime). Default:
    /// `default_relay_threads`.
    pub relay_threads: usize,
}

/// Half the cores, at least one. A relay thread spends its time waiting on sockets and
/// waking for them; fewer threads each find more sessions ready per wake-up (one
/// `epoll_wait` answers for several), which on a machine shared with clients or the database
/// costs less per statement than more threads each waking for one. docs/BENCHMARKS.md has
/// the measurement.
pub fn default_relay_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 1000,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            require_tls: false,
            allow_cleartext_password: false,
            max_message: codec::DEFAULT_MAX_MESSAGE,
            max_sql_message: 2 * 1024 * 1024,
            memory_budget: 256 * 1024 * 1024,
            relay_threads: default_relay_threads(),
        }
    }
}

/// Startup parameters a client may send; they are passed upstream. Everything else (notably
/// `options`, `replication`, `search_path`) is refused, since it could change settings belay
/// pins or parses by.
const PASSED_PARAMETERS: &[&str] = &[
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "timezone",
];

#[derive(Debug, Default)]
pub(crate) struct CancelKeys {
    map: Mutex<HashMap<i32, (Bytes, CancelTarget)>>,
}

impl CancelKeys {
    /// A fresh key for a session whose upstream key is `target`.
    fn register(&self, target: CancelTarget) -> (i32, Bytes) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut raw = [0u8; 8];
            if getrandom::fill(&mut raw).is_err() {
                // No randomness: hand out a key nobody can use rather than a guessable one.
                return (0, Bytes::new());
            }
            let pid = i32::from_be_bytes([raw[0] & 0x7f, raw[1], raw[2], raw[3]]);
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = Bytes::copy_from_slice(&raw[4..]);
            map.insert(pid, (secret.clone(), target));
            return (pid, secret);
        }
    }

    pub(crate) fn remove(&self, pid: i32) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    fn find(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (expected, target) = map.get(&pid)?;
        let same = expected.len() == secret.len()
            && expected
                .iter()
                .zip(secret)
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        same.then(|| target.clone())
    }
}

/// An upstream TLS configuration's identity: its sslmode and root certificate file.
type TlsKey = (belay_core::SslMode, Option<std::path::PathBuf>);

/// Upstream TLS configurations, built once per key.
#[derive(Debug, Default)]
pub(crate) struct UpstreamTls {
    cache: Mutex<HashMap<TlsKey, Option<Arc<rustls::ClientConfig>>>>,
}

impl UpstreamTls {
    pub(crate) fn get(
        &self,
        spec: &UpstreamSpec,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        let key = (spec.sslmode, spec.sslrootcert.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let config = crate::tls::client_config(spec.sslmode, spec.sslrootcert.as_deref())?;
        cache.insert(key, config.clone());
        Ok(config)
    }
}

/// The threads sessions run on: single-threaded runtimes (`Options::relay_threads`), each
/// driving its sessions' sockets itself, the way a pooler's event loop does. Against Tokio's
/// work-stealing scheduler this took a third off belay's CPU time per prepared statement at
/// one client (docs/BENCHMARKS.md). What blocks (a durable audit record, belay's state
/// store) never runs on them: it goes to the blocking pool (`off_thread`).
struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    /// Sessions on this thread, for placing the next one.
    load: Arc<AtomicUsize>,
    /// Dropped to stop the thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// `count` threads; when stopped, each waits up to `grace` for the blocking calls its
    /// sessions left running.
    fn start(count: usize, grace: Duration) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("belay-relay-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(grace);
                })?;
            workers.push(Worker {
                handle,
                load: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// The least busy thread (`start` makes at least one).
    fn pick(&self) -> Option<&Worker> {
        self.workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
    }

    /// Stops the threads once their sessions are gone, and waits for them.
    async fn stop(mut self) {
        let threads: Vec<_> = self
            .workers
            .iter_mut()
            .filter_map(|w| {
                w.stop.take();
                w.thread.take()
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Without `stop` (the serving future was dropped): the threads end on their own.
        for w in &mut self.workers {
            w.stop.take();
        }
    }
}

/// One session counted on its thread while it lives.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f`, which may block, on the blocking pool; the session's thread serves its other
/// sessions meanwhile. A panic in `f` comes back as `Err`.
pub(crate) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(
            "belay failed while deciding (an internal error); the connection is closed".to_owned(),
        ),
        Err(_) => Err("belay is shutting down".to_owned()),
    }
}

/// Everything connections share.
pub(crate) struct Shared {
    gate: Arc<dyn Gate>,
    pub(crate) options: Options,
    pub(crate) cancel: CancelKeys,
    pub(crate) upstream_tls: UpstreamTls,
    limit: Arc<Semaphore>,
    /// A per-process secret that makes unknown users' SCRAM salts stable.
    decoy: [u8; 32],
    /// Bytes all sessions' buffers hold, against `Options::memory_budget`.
    pub(crate) buffered: AtomicUsize,
}

/// Serves PostgreSQL clients on `listener` until `shutdown` becomes true, then drains.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<dyn Gate>,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut decoy = [0u8; 32];
    getrandom::fill(&mut decoy).map_err(|e| std::io::Error::other(e.to_string()))?;
    let shared = Arc::new(Shared {
        gate,
        limit: Arc::new(Semaphore::new(options.max_connections)),
        options,
        cancel: CancelKeys::default(),
        upstream_tls: UpstreamTls::default(),
        decoy,
        buffered: AtomicUsize::new(0),
    });
    let workers = Workers::start(shared.options.relay_threads, shared.options.shutdown_grace)?;
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                // Moved to the least busy session thread, whose runtime takes it over.
                let socket = match socket.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand a connection to a session thread");
                        continue;
                    }
                };
                let Some(worker) = workers.pick() else { continue };
                worker.load.fetch_add(1, Ordering::Relaxed);
                let counted = Counted(worker.load.clone());
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tasks.spawn_on(
                    async move {
                        let _counted = counted;
                        if let Ok(socket) = TcpStream::from_std(socket) {
                            connection(shared, socket, peer, shutdown).await;
                        }
                    },
                    &worker.handle,
                );
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let grace = shared.options.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "closing sessions still busy after the shutdown grace period"
        );
        tasks.shutdown().await;
    }
    workers.stop().await;
    Ok(())
}

pub(crate) fn fatal(code: &str, message: impl Into<String>) -> BytesMut {
    fatal_refusal(Refusal::new(code, message))
}

fn fatal_refusal(r: Refusal) -> BytesMut {
    let mut out = BytesMut::new();
    Backend::ErrorResponse(r.fields(Severity::Fatal)).encode(&mut out);
    out
}

/// Why a connection ended before its session began; the client reads the message (empty:
/// nothing to say, the connection just closes).
struct Reject(BytesMut);

/// How far a handshake got, for the record of a refusal: a refusal the gate made (from
/// `Gate::open` on) is recorded by the gate; one made before is recorded through
/// `Gate::refused`.
#[derive(Debug, Default)]
struct Progress {
    asked_gate: bool,
    user: Option<String>,
    database: Option<String>,
}

async fn read_startup(stream: &mut Box<dyn Stream>, buf: &mut BytesMut) -> Result<Startup, Reject> {
    loop {
        match Startup::read(buf) {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {}
            Err(e) => {
                return Err(Reject(fatal(
                    "08P01",
                    format!("invalid startup packet: {e}"),
                )))
            }
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(Reject(BytesMut::new())),
            Ok(_) => {}
        }
    }
}

async fn read_message(
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    tag: u8,
) -> Result<Bytes, Reject> {
    loop {
        match codec::read_frame(buf, 64 * 1024) {
            Ok(Some(f)) if f.tag == tag => return Ok(f.body),
            Ok(Some(f)) => {
                return Err(Reject(fatal(
                    "08P01",
                    format!(
                        "expected an authentication message, got `{}`",
                        f.tag as char
                    ),
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(Reject(fatal("08P01", format!("invalid message: {e}")))),
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(Reject(BytesMut::new())),
            Ok(_) => {}
        }
    }
}

async fn send(stream: &mut Box<dyn Stream>, bytes: &[u8]) -> Result<(), Reject> {
    stream
        .write_all(bytes)
        .await
        .map_err(|_| Reject(BytesMut::new()))?;
    stream.flush().await.map_err(|_| Reject(BytesMut::new()))
}

async fn connection(
    shared: Arc<Shared>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let mut stream: Box<dyn Stream> = Box::new(socket);
    let mut buf = BytesMut::with_capacity(8192);
    let timeout = shared.options.handshake_timeout;
    // Boxed: the handshake's state (TLS, SCRAM) is larger than the relay loop's and is
    // given back when it ends, instead of sizing every session's task.
    let mut progress = Progress::default();
    let startup = tokio::time::timeout(
        timeout,
        Box::pin(handshake(
            &shared,
            &mut stream,
            &mut buf,
            peer,
            &mut progress,
        )),
    )
    .await;
    let admitted = match startup {
        Err(_) => Err(Reject(fatal(
            "08006",
            format!("the client did not complete the handshake within {timeout:?}"),
        ))),
        Ok(result) => result,
    };
    match admitted {
        Err(Reject(message)) => {
            if !message.is_empty() {
                if !progress.asked_gate {
                    record_refusal(&shared, peer, progress, &message).await;
                }
                let _ = send(&mut stream, &message).await;
            }
        }
        Ok(None) => {}
        Ok(Some(admitted)) => relay_loop::run(shared, stream, buf, admitted, shutdown).await,
    }
}

/// Records a refusal made before the gate was asked, through `Gate::refused`, before the
/// client reads it.
async fn record_refusal(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    progress: Progress,
    message: &[u8],
) {
    let mut frame = BytesMut::from(message);
    let fields = match codec::read_frame(&mut frame, message.len().max(1024)) {
        Ok(Some(f)) => match Backend::decode(&f) {
            Ok(Backend::ErrorResponse(fields)) => fields,
            _ => return,
        },
        _ => return,
    };
    let refusal = Refusal::new(&fields.code, fields.message);
    let gate = shared.gate.clone();
    let _ = off_thread(move || {
        gate.refused(
            &peer.to_string(),
            progress.user.as_deref(),
            progress.database.as_deref(),
            &refusal,
        )
    })
    .await;
}

pub(crate) struct Admitted {
    pub(crate) relay: Relay,
    pub(crate) upstream: upstream::Upstream,
    /// Where an approved statement of a session whose role may not write runs.
    pub(crate) elevated: Option<UpstreamSpec>,
    pub(crate) key: i32,
    pub(crate) _permit: tokio::sync::OwnedSemaphorePermit,
}

/// From the first byte to ReadyForQuery. `Ok(None)`: a cancel request, served.
async fn handshake(
    shared: &Arc<Shared>,
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    peer: SocketAddr,
    progress: &mut Progress,
) -> Result<Option<Admitted>, Reject> {
    let mut tls = false;
    let params = loop {
        match read_startup(stream, buf).await? {
            Startup::SslRequest if !tls => match &shared.options.tls {
                Some(config) if buf.is_empty() => {
                    send(stream, b"S").await?;
                    let plain = std::mem::replace(stream, Box::new(tokio::io::duplex(1).0));
                    let accepted = tokio_rustls::TlsAcceptor::from(config.clone())
                        .accept(plain)
                        .await
                        .map_err(|_| Reject(BytesMut::new()))?;
                    *stream = Box::new(accepted);
                    tls = true;
                }
                // Bytes after the SSLRequest would be read in the clear: refuse.
                Some(_) => {
                    return Err(Reject(fatal(
                        "08P01",
                        "data arrived before the TLS handshake",
                    )))
                }
                None => send(stream, b"N").await?,
            },
            Startup::GssEncRequest => send(stream, b"N").await?,
            Startup::Cancel { pid, secret } => {
                if let Some(target) = shared.cancel.find(pid, &secret) {
                    upstream::cancel(&target).await;
                }
                return Ok(None);
            }
            Startup::Newer { minor, params } => {
                // As the server answers a newer minor version: the newest it speaks (3.0)
                // and the protocol options (`_pq_.*`) it does not know, then on in 3.0.
                let (options, params): (Vec<_>, Vec<_>) = params
                    .into_iter()
                    .partition(|(k, _)| k.starts_with("_pq_."));
                let mut out = BytesMut::new();
                codec::put_message(&mut out, b'v', |b| {
                    b.extend_from_slice(&0i32.to_be_bytes());
                    b.extend_from_slice(&(options.len() as i32).to_be_bytes());
                    for (k, _) in &options {
                        codec::put_cstr(b, k);
                    }
                });
                send(stream, &out).await?;
                tracing::debug!(minor, "client asked for a newer protocol; answered 3.0");
                progress.user = Startup::param(&params, "user").map(str::to_owned);
                progress.database = Startup::param(&params, "database").map(str::to_owned);
                break params;
            }
            Startup::Startup { params } => {
                progress.user = Startup::param(&params, "user").map(str::to_owned);
                progress.database = Startup::param(&params, "database").map(str::to_owned);
                break params;
            }
            Startup::SslRequest => return Err(Reject(fatal("08P01", "a second SSLRequest"))),
        }
    };
    let permit = shared.limit.clone().try_acquire_owned().map_err(|_| {
        Reject(fatal(
            "53300",
            format!(
                "too many connections to belay (the limit is {}); close idle sessions or raise listen.max_connections",
                shared.options.max_connections
            ),
        ))
    })?;
    if shared.options.require_tls && !tls {
        return Err(Reject(fatal(
            "28000",
            "belay requires TLS: connect with sslmode=require or stricter",
        )));
    }
    let login = login(&params, peer, tls)?;
    let mut passed = Vec::new();
    for (key, value) in &params {
        let lower = key.to_ascii_lowercase();
        if PASSED_PARAMETERS.contains(&lower.as_str()) {
            if lower == "client_encoding" && !encoding::parsable(value) {
                return Err(Reject(fatal(
                    "22023",
                    match encoding::canonical(value) {
                        Some(canonical) => format!(
                            "belay refuses client_encoding `{value}` ({canonical}): its multi-byte characters can hide quotes and backslashes, so the server would read other text than belay checked; use UTF8"
                        ),
                        None => format!("`{value}` is not a client encoding belay knows; use UTF8"),
                    },
                )));
            }
            passed.push((key.clone(), value.clone()));
        }
    }

    let (gate, user) = (shared.gate.clone(), login.user.clone());
    let credential = off_thread(move || gate.credential(&user))
        .await
        .map_err(|m| Reject(fatal("XX000", m)))?
        .map_err(|r| Reject(fatal_refusal(r)))?;
    let mut out = BytesMut::new();
    let authenticated = if shared.options.allow_cleartext_password && tls {
        Backend::AuthenticationCleartextPassword.encode(&mut out);
        send(stream, &out).await?;
        let body = read_message(stream, buf, b'p').await?;
        let password = body.strip_suffix(&[0]).unwrap_or(&body);
        match credential {
            Credential::Scram(v) => v.matches(password),
            Credential::None => false,
        }
    } else {
        scram(shared, stream, buf, &login.user, &credential).await?
    };
    let (gate, opening) = (shared.gate.clone(), login.clone());
    progress.asked_gate = true;
    let (mut spec, session) = off_thread(move || gate.open(&opening, authenticated))
        .await
        .map_err(|m| Reject(fatal("XX000", m)))?
        .map_err(|r| Reject(fatal_refusal(r)))?;
    let mut relay = Relay::new(session);
    spec.params.extend(passed);
    let upstream_tls = match shared.upstream_tls.get(&spec) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("belay cannot use TLS to the upstream {}: {e}", spec.label);
            relay.ended(&message);
            return Err(Reject(fatal("08006", message)));
        }
    };
    let upstream = match upstream::connect(&spec, upstream_tls).await {
        Ok(u) => u,
        Err(e) => {
            let message = format!(
                "belay cannot reach the upstream database {}: {e}",
                spec.label
            );
            relay.ended(&message);
            return Err(Reject(fatal_refusal(Refusal::new("08006", message).hint(
                "the database is down or unreachable from belay; an operator must check it",
            ))));
        }
    };
    if let Err(Violation(m)) = relay.watch(&upstream.parameters, &spec.params) {
        relay.ended(&m);
        return Err(Reject(fatal("08P01", m)));
    }
    let key = match &upstream.key {
        Some((pid, secret)) => shared.cancel.register(CancelTarget {
            host: spec.host.clone(),
            port: spec.port,
            pid: *pid,
            secret: secret.clone(),
        }),
        None => (0, Bytes::new()),
    };
    out.clear();
    Backend::AuthenticationOk.encode(&mut out);
    relay.application_prefix = spec.application_prefix.clone();
    for p in &upstream.parameters {
        match relay.shown_setting(p) {
            Some(shown) => shown.encode(&mut out),
            None => p.encode(&mut out),
        }
    }
    for notice in &spec.notices {
        Backend::NoticeResponse(codec::ErrorFields::new(
            Severity::Notice,
            "01000",
            notice.clone(),
        ))
        .encode(&mut out);
    }
    if let Some((pid, _)) = &upstream.key {
        relay.pids = Some((*pid, key.0));
    }
    Backend::BackendKeyData {
        pid: key.0,
        secret: key.1,
    }
    .encode(&mut out);
    Backend::ReadyForQuery(codec::TransactionStatus::Idle).encode(&mut out);
    send(stream, &out).await?;
    // An approved statement of a session whose role may not write runs as the writing role
    // on a connection of its own, with the same pinned settings but the read-only default.
    let elevated = spec.elevated.clone().map(|(user, password)| {
        relay.detour = true;
        let mut elevated = spec.clone();
        elevated.user = user;
        elevated.password = password;
        elevated.elevated = None;
        elevated
            .params
            .retain(|(name, _)| name != "default_transaction_read_only");
        elevated
    });
    Ok(Some(Admitted {
        relay,
        upstream,
        elevated,
        key: key.0,
        _permit: permit,
    }))
}

fn login(params: &[(String, String)], peer: SocketAddr, tls: bool) -> Result<Login, Reject> {
    let mut settings = Vec::new();
    for (key, value) in params {
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "user" | "database" | "application_name" => {}
            k if PASSED_PARAMETERS.contains(&k) => {}
            "replication" => {
                return Err(Reject(fatal(
                    "08P01",
                    "replication connections cannot go through belay",
                )))
            }
            "options" => {
                settings.extend(startup_options(value).map_err(|why| Reject(fatal("08P01", why)))?)
            }
            // A setting of its own (asyncpg's `server_settings`): decided like one in
            // `options`.
            _ => settings.push((lower, value.clone())),
        }
    }
    let user = Startup::param(params, "user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Reject(fatal(
                "28000",
                "no user name: connect with user = your agent name",
            ))
        })?;
    let database = Startup::param(params, "database").unwrap_or(user);
    Ok(Login {
        user: user.to_owned(),
        database: database.to_owned(),
        peer: peer.to_string(),
        application_name: Startup::param(params, "application_name").map(str::to_owned),
        settings,
        tls,
    })
}

/// The settings in a startup `options` value, split as the server splits it (on whitespace,
/// a backslash keeping the next character): `-c name=value`, `-cname=value` or
/// `--name=value`, dashes in the name read as underscores. `Err` for anything else (the
/// server's other switches), which belay does not pass on.
fn startup_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                started = true;
            }
            c if c.is_ascii_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    let refuse = |w: &str| {
        format!(
            "startup `options` may carry only settings (`-c name=value`), not `{w}`; run SET after connecting instead"
        )
    };
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let assignment = if w == "-c" {
            words.next().ok_or_else(|| refuse(&w))?
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest.to_owned()
        } else {
            return Err(refuse(&w));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(format!(
                "startup `options` gives `{assignment}` without a value (`-c name=value`)"
            ));
        };
        if name.is_empty() {
            return Err(refuse(&w));
        }
        settings.push((
            name.replace('-', "_").to_ascii_lowercase(),
            value.to_owned(),
        ));
    }
    Ok(settings)
}

/// The server side of SCRAM-SHA-256. `Ok(false)`: the proof failed.
async fn scram(
    shared: &Shared,
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    user: &str,
    credential: &Credential,
) -> Result<bool, Reject> {
    let mut out = BytesMut::new();
    Backend::AuthenticationSasl(vec![belay_scram::MECHANISM.to_owned()]).encode(&mut out);
    send(stream, &out).await?;
    let mut body = read_message(stream, buf, b'p').await?;
    let malformed = || Reject(fatal("08P01", "malformed SASLInitialResponse"));
    let end = body.iter().position(|b| *b == 0).ok_or_else(malformed)?;
    let mechanism = body.split_to(end);
    body.advance(1);
    if &mechanism[..] != belay_scram::MECHANISM.as_bytes() {
        return Err(Reject(fatal(
            "28000",
            "belay speaks SCRAM-SHA-256 only; channel binding is not offered",
        )));
    }
    if body.len() < 4 {
        return Err(malformed());
    }
    let len = body.get_i32();
    if usize::try_from(len).ok() != Some(body.len()) {
        return Err(malformed());
    }
    let verifier = match credential {
        Credential::Scram(v) => Some(v),
        Credential::None => None,
    };
    let seed = [user.as_bytes(), &shared.decoy].concat();
    let (exchange, server_first) = belay_scram::ServerExchange::start(verifier, &seed, &body)
        .map_err(|e| Reject(fatal("08P01", e.to_string())))?;
    out.clear();
    Backend::AuthenticationSaslContinue(Bytes::from(server_first)).encode(&mut out);
    send(stream, &out).await?;
    let body = read_message(stream, buf, b'p').await?;
    match exchange.finish(&body) {
        Ok(server_final) => {
            out.clear();
            Backend::AuthenticationSaslFinal(Bytes::from(server_final)).encode(&mut out);
            send(stream, &out).await?;
            Ok(true)
        }
        Err(belay_scram::Error::Failed) => Ok(false),
        Err(e) => Err(Reject(fatal("08P01", e.to_string()))),
    }
}
