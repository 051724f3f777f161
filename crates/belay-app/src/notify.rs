//! Telling humans that an action waits for them: a Slack-compatible JSON message posted to the
//! environment's and the owner's webhooks, from a thread of its own, with retries and
//! exponential backoff. Delivery never blocks or loosens a decision: a full queue or a failed
//! delivery is recorded in the audit log and the approval request stands as it was.
//!
//! The HTTP client is a small HTTP/1.1 POST (one request per connection, TLS through rustls
//! with the Mozilla roots), enough for webhooks, so belay carries no general HTTP client.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use belay_audit::Draft;
use belay_core::Secret;
use belay_store::{Approval, StateStore};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::now_us;

/// Messages waiting for delivery; past this, new ones are dropped (and recorded).
const QUEUE: usize = 256;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each.
    pub first_backoff: Duration,
    /// The limit for one attempt: connect, send, read the status line.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

struct Job {
    url: Secret,
    /// Whose webhook it is, for the record (`environment production`, `owner alice`).
    target: String,
    approval: u64,
    body: Value,
}

/// Hands messages to the delivery thread.
#[derive(Debug)]
pub struct Notifier {
    queue: SyncSender<Job>,
    store: Arc<belay_store::SqliteStore>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("target", &self.target)
            .field("approval", &self.approval)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the delivery thread; it ends when the `Notifier` is dropped and the queue is
    /// empty.
    pub fn start(store: Arc<belay_store::SqliteStore>, retry: Retry) -> Notifier {
        let (queue, jobs) = mpsc::sync_channel(QUEUE);
        let thread_store = store.clone();
        let spawned = std::thread::Builder::new()
            .name("belay-notify".to_owned())
            .spawn(move || deliver_all(jobs, thread_store.as_ref(), retry));
        if let Err(e) = spawned {
            record(
                store.as_ref(),
                "-",
                0,
                &format!("the notification thread could not start: {e}"),
            );
        }
        Notifier { queue, store }
    }

    /// Queues `body` for `url`; never waits.
    pub fn send(&self, url: &Secret, target: &str, approval: u64, body: Value) {
        let job = Job {
            url: url.clone(),
            target: target.to_owned(),
            approval,
            body,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => record(
                self.store.as_ref(),
                &job.target,
                job.approval,
                "not sent: too many notifications are waiting",
            ),
            Err(TrySendError::Disconnected(job)) => record(
                self.store.as_ref(),
                &job.target,
                job.approval,
                "not sent: the notification thread stopped",
            ),
        }
    }
}

/// The message for a new approval request: Slack reads `text`; `belay` carries the same
/// facts for other integrations. The statement is shown with its constants replaced by `$n`
/// (values may be personal data or secrets); `belay pending` shows the exact text.
pub(crate) fn requested_message(a: &Approval, owner: &str) -> Value {
    let sql = belay_sql::redact(&a.request.action)
        .unwrap_or_else(|| "(the statement does not parse; see `belay pending`)".to_owned());
    let blast = a
        .request
        .blast_radius
        .as_ref()
        .map_or_else(|| "not computed".to_owned(), Value::to_string);
    let text = format!(
        "*belay*: agent `{agent}` (owner {owner}) asks to run a *{class}* statement in `{env}`:\n```{sql}```\n\
         why it is held: {reason}\nblast radius: {blast}\nneeds: {who}; expires {expires}\n\
         approve: `{approve}`  deny: `belay deny {id} --reason TEXT`",
        agent = a.request.agent,
        class = a.request.class,
        env = a.request.environment,
        reason = a.request.reason,
        who = crate::approvers_text(a),
        expires = crate::rfc3339(a.request.expires_us),
        approve = crate::approve_command(a.id),
        id = a.id,
    );
    json!({
        "text": text,
        "belay": {
            "approval": a.id,
            "agent": a.request.agent,
            "owner": owner,
            "environment": a.request.environment,
            "class": a.request.class,
            "statement": sql,
            "reason": a.request.reason,
            "policies": a.request.policies,
            "blast_radius": a.request.blast_radius,
            "approvals_required": a.request.required,
            "approvers": a.request.approvers,
            "expires": crate::rfc3339(a.request.expires_us),
            "approve_command": crate::approve_command(a.id),
        }
    })
}

fn record(store: &dyn StateStore, target: &str, approval: u64, outcome: &str) {
    tracing::warn!(
        target_webhook = target,
        approval,
        outcome,
        "approval notification"
    );
    let _ = store.record(Draft {
        time_us: now_us(),
        actor: "belay".to_owned(),
        kind: "approval.notify".to_owned(),
        outcome: Some(outcome.to_owned()),
        detail: json!({ "approval": approval, "webhook": target }),
        ..Draft::default()
    });
}

fn deliver_all(jobs: Receiver<Job>, store: &dyn StateStore, retry: Retry) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            record(
                store,
                "-",
                0,
                &format!("the notification runtime could not start: {e}"),
            );
            return;
        }
    };
    while let Ok(job) = jobs.recv() {
        let outcome = runtime.block_on(deliver(&job, retry));
        record(store, &job.target, job.approval, &outcome);
    }
}

/// Posts `job` until it is accepted or the attempts run out; says how it went.
async fn deliver(job: &Job, retry: Retry) -> String {
    let body = job.body.to_string();
    let mut backoff = retry.first_backoff;
    let mut last = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        match tokio::time::timeout(retry.timeout, post(job.url.expose(), &body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                return format!("delivered (attempt {attempt}, HTTP {status})")
            }
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {}s", retry.timeout.as_secs()),
        }
        if attempt < retry.attempts {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    format!("failed after {} attempts: {last}", retry.attempts.max(1))
}

/// POSTs a JSON `body` to `url` and returns the response's status code. Errors never contain
/// the URL's path or query, which carry the webhook's secret.
async fn post(url: &str, body: &str) -> Result<u16, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("the webhook URL is neither http:// nor https://".to_owned());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        // [v6]:port
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => return Err("the webhook URL's host is malformed".to_owned()),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse()
                        .map_err(|_| "the webhook URL's port is malformed".to_owned())?,
                ),
            ),
            None => (authority, None),
        },
    };
    let port: u16 = port.unwrap_or(default_port);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nUser-Agent: belay\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| format!("`{host}` is not a valid server name"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {host} failed: {e}"))?;
        exchange(stream, &request, host).await
    } else {
        exchange(stream, &request, host).await
    }
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &str,
    host: &str,
) -> Result<u16, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {host} failed: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("reading from {host} failed: {e}"))?;
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{host} did not answer with an HTTP status line"))
}
