//! Connecting to an upstream PostgreSQL as belay: TCP or Unix socket, TLS by `sslmode`,
//! startup with the pinned parameters, and authentication (SCRAM-SHA-256, MD5 or cleartext)
//! with the configured credentials, which never reach the agent.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::codec::{self, Backend, ErrorFields, Frame, Startup};
use crate::gate::{SslMode, UpstreamSpec};

/// A byte stream in either direction: TCP, Unix socket, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An authenticated upstream connection, ready for queries.
pub(crate) struct Upstream {
    pub stream: Box<dyn Stream>,
    /// Bytes read past the first ReadyForQuery.
    pub buf: BytesMut,
    /// ParameterStatus messages as the server sent them.
    pub parameters: Vec<Frame>,
    /// The server's cancel key.
    pub key: Option<(i32, Bytes)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where to send a CancelRequest for a session.
#[derive(Debug, Clone)]
pub(crate) struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub pid: i32,
    pub secret: Bytes,
}

/// Why the upstream could not be used. The text never contains the password.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server refused belay's login: {0}")]
    Refused(String),
    #[error("the server does not speak the protocol as expected: {0}")]
    Protocol(String),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

async fn open_socket(host: &str, port: u16) -> Result<Box<dyn Stream>, UpstreamError> {
    if host.starts_with('/') {
        let path = format!("{host}/.s.PGSQL.{port}");
        let s = UnixStream::connect(&path)
            .await
            .map_err(|e| UpstreamError::Connect(format!("{path}: {e}")))?;
        Ok(Box::new(s))
    } else {
        let s = TcpStream::connect((host, port))
            .await
            .map_err(|e| UpstreamError::Connect(format!("{host}:{port}: {e}")))?;
        let _ = s.set_nodelay(true);
        Ok(Box::new(s))
    }
}

/// Connects, negotiates TLS and logs in, within `spec.connect_timeout`.
pub(crate) async fn connect(
    spec: &UpstreamSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(spec.connect_timeout, connect_inner(spec, tls))
        .await
        .map_err(|_| UpstreamError::Timeout(spec.connect_timeout))?
}

async fn connect_inner(
    spec: &UpstreamSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Upstream, UpstreamError> {
    let mut stream = open_socket(&spec.host, spec.port).await?;
    // As libpq: never TLS over a Unix socket, which is already local.
    let unix = spec.host.starts_with('/');
    if let (Some(config), false) = (tls, unix || spec.sslmode == SslMode::Disable) {
        let mut out = BytesMut::new();
        Startup::SslRequest.encode(&mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        match answer[0] {
            b'S' => {
                let name = ServerName::try_from(spec.host.clone())
                    .map_err(|e| UpstreamError::Tls(format!("host `{}`: {e}", spec.host)))?;
                let connector = tokio_rustls::TlsConnector::from(config);
                let tls = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| UpstreamError::Tls(e.to_string()))?;
                stream = Box::new(tls);
            }
            b'N' if spec.sslmode == SslMode::Prefer => {}
            b'N' => {
                return Err(UpstreamError::Tls(
                    "the server does not support TLS, and sslmode requires it".to_owned(),
                ))
            }
            _ => {
                return Err(UpstreamError::Protocol(
                    "unexpected answer to SSLRequest".to_owned(),
                ))
            }
        }
    }
    let mut params = vec![
        ("user".to_owned(), spec.user.clone()),
        ("database".to_owned(), spec.database.clone()),
    ];
    params.extend(spec.params.iter().cloned());
    let mut out = BytesMut::new();
    Startup::Startup { params }.encode(&mut out);
    write(&mut stream, &out).await?;

    let mut buf = BytesMut::with_capacity(8192);
    let mut scram: Option<belay_scram::ClientExchange> = None;
    let mut parameters = Vec::new();
    let mut key = None;
    loop {
        let frame = next_frame(&mut stream, &mut buf).await?;
        let message =
            Backend::decode(&frame).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let password = || {
            spec.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| {
                    UpstreamError::Refused(format!(
                        "the server asks for a password and none is configured for {}",
                        spec.label
                    ))
                })
        };
        out.clear();
        match message {
            Backend::AuthenticationOk => {}
            Backend::AuthenticationCleartextPassword => {
                password_message(&mut out, password()?);
                write(&mut stream, &out).await?;
            }
            Backend::AuthenticationMd5Password(salt) => {
                let inner = hex(&Md5::digest([password()?, spec.user.as_bytes()].concat()));
                let outer = hex(&Md5::digest([inner.as_bytes(), &salt[..]].concat()));
                password_message(&mut out, format!("md5{outer}").as_bytes());
                write(&mut stream, &out).await?;
            }
            Backend::AuthenticationSasl(mechanisms) => {
                if !mechanisms.iter().any(|m| m == belay_scram::MECHANISM) {
                    return Err(UpstreamError::Refused(format!(
                        "the server offers only {mechanisms:?}"
                    )));
                }
                let (exchange, first) = belay_scram::ClientExchange::new(password()?)
                    .map_err(|e| UpstreamError::Refused(e.to_string()))?;
                scram = Some(exchange);
                codec::put_message(&mut out, b'p', |b| {
                    codec::put_cstr(b, belay_scram::MECHANISM);
                    b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    b.extend_from_slice(first.as_bytes());
                });
                write(&mut stream, &out).await?;
            }
            Backend::AuthenticationSaslContinue(data) => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL out of order".to_owned()))?;
                let reply = exchange
                    .respond(&data)
                    .map_err(|e| UpstreamError::Refused(e.to_string()))?;
                // A SASLResponse is the bare message, without a terminator.
                codec::put_message(&mut out, b'p', |b| b.extend_from_slice(reply.as_bytes()));
                write(&mut stream, &out).await?;
            }
            Backend::AuthenticationSaslFinal(data) => {
                scram
                    .as_ref()
                    .ok_or_else(|| UpstreamError::Protocol("SASL out of order".to_owned()))?
                    .verify(&data)
                    .map_err(|e| UpstreamError::Refused(e.to_string()))?;
            }
            Backend::AuthenticationOther(code) => {
                return Err(UpstreamError::Refused(format!(
                "the server asks for an authentication method belay does not speak (code {code})"
            )))
            }
            Backend::ParameterStatus { .. } => parameters.push(frame),
            // Copied out: a slice would keep the whole first read buffer alive for the session.
            Backend::BackendKeyData { pid, secret } => {
                key = Some((pid, Bytes::copy_from_slice(&secret)))
            }
            Backend::NoticeResponse(_) => {}
            Backend::ErrorResponse(fields) => {
                return Err(UpstreamError::Refused(describe(&fields)))
            }
            Backend::ReadyForQuery(_) => {
                return Ok(Upstream {
                    stream,
                    buf,
                    parameters,
                    key,
                })
            }
            _ => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message `{}` during startup",
                    frame.tag as char
                )))
            }
        }
    }
}

fn describe(fields: &ErrorFields) -> String {
    format!("{} (SQLSTATE {})", fields.message, fields.code)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn password_message(out: &mut BytesMut, password: &[u8]) {
    codec::put_message(out, b'p', |b| {
        b.extend_from_slice(password);
        b.extend_from_slice(&[0]);
    });
}

async fn write(stream: &mut Box<dyn Stream>, bytes: &[u8]) -> Result<(), UpstreamError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| UpstreamError::Connect(e.to_string()))
}

async fn next_frame(
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
) -> Result<Frame, UpstreamError> {
    loop {
        if let Some(frame) = codec::read_frame(buf, codec::DEFAULT_MAX_MESSAGE)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(frame);
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        if n == 0 {
            return Err(UpstreamError::Connect(
                "the server closed the connection during startup".to_owned(),
            ));
        }
    }
}

/// Sends a CancelRequest for the upstream session; errors are only logged, as libpq does.
pub(crate) async fn cancel(target: &CancelTarget) {
    let result = async {
        let mut stream = open_socket(&target.host, target.port).await?;
        let mut out = BytesMut::new();
        Startup::Cancel {
            pid: target.pid,
            secret: target.secret.to_vec(),
        }
        .encode(&mut out);
        write(&mut stream, &out).await?;
        let mut rest = [0u8; 1];
        let _ = stream.read(&mut rest).await;
        Ok::<_, UpstreamError>(())
    };
    if let Err(e) = result.await {
        tracing::warn!(error = %e, "cancel request to the upstream failed");
    }
}

/// `value` as a string literal onto `text`, for belay's own statements: quotes doubled,
/// nothing else (belay pins `standard_conforming_strings` on).
pub fn push_literal(text: &mut String, value: &str) {
    text.push('\'');
    for (i, part) in value.split('\'').enumerate() {
        if i > 0 {
            text.push_str("''");
        }
        text.push_str(part);
    }
    text.push('\'');
}

/// `value` as a string literal (`push_literal`).
pub fn literal(value: &str) -> String {
    let mut text = String::with_capacity(value.len() + 2);
    push_literal(&mut text, value);
    text
}

/// Logs in as `spec` says and runs `sql` as one simple query: the rows of its results, each
/// column as text (`None` for NULL). For belay's own looks at an upstream (the inspection of
/// its roles), never for agents' statements. `Err` says why, without the password.
pub async fn simple_query(
    spec: &UpstreamSpec,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut own = OwnConnection::connect(spec).await?;
    let rows = own.query(sql).await;
    own.close().await;
    rows
}

/// A connection of belay's own to an upstream, kept for many simple queries (the ledger's
/// reconciler). Never for agents' statements.
pub struct OwnConnection {
    up: Upstream,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for OwnConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnConnection").finish_non_exhaustive()
    }
}

impl OwnConnection {
    /// Logs in as `spec` says; `Err` says why, without the password.
    pub async fn connect(spec: &UpstreamSpec) -> Result<OwnConnection, String> {
        let tls = crate::tls::client_config(spec.sslmode, spec.sslrootcert.as_deref())?;
        let up = connect(spec, tls).await.map_err(|e| e.to_string())?;
        Ok(OwnConnection {
            up,
            timeout: spec.connect_timeout,
        })
    }

    /// Runs `sql` as one simple query: the rows of its results, each column as text. After
    /// an `Err` the connection is not to be used again.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let up = &mut self.up;
        let mut out = BytesMut::new();
        codec::put_message(&mut out, b'Q', |b| codec::put_cstr(b, sql));
        write(&mut up.stream, &out)
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut failed = None;
        let answer = async {
            loop {
                let frame = next_frame(&mut up.stream, &mut up.buf).await?;
                match frame.tag {
                    b'D' => rows.push(data_row(&frame.body).map_err(UpstreamError::Protocol)?),
                    b'E' => {
                        if let Ok(Backend::ErrorResponse(fields)) = Backend::decode(&frame) {
                            failed = Some(describe(&fields));
                        }
                    }
                    b'Z' => return Ok::<_, UpstreamError>(()),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Says goodbye to the server.
    pub async fn close(mut self) {
        let _ = write(&mut self.up.stream, &[b'X', 0, 0, 0, 4]).await;
    }
}

/// The columns of a DataRow in text format.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let bad = || "malformed DataRow".to_owned();
    let count = i16::from_be_bytes(
        body.get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let mut at = 2usize;
    let mut columns = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        let len = i32::from_be_bytes(
            body.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        at += 4;
        if len < 0 {
            columns.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| bad())?;
        let value = body.get(at..at + len).ok_or_else(bad)?;
        columns.push(Some(String::from_utf8_lossy(value).into_owned()));
        at += len;
    }
    Ok(columns)
}
