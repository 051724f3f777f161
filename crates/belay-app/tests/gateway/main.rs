//! The PostgreSQL gateway against a real PostgreSQL (a scratch cluster started here): real
//! clients (tokio-postgres) and hand-written protocol messages for the bypasses a client
//! library would never send. Every refusal is checked upstream too: what belay refused must
//! not have happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use belay_app::{App, AppGate};
use belay_config::{Config, Env};
use belay_core::{Class, Secret};
use belay_pg::codec::{self, Backend, ErrorFields, Frontend, Startup};
use belay_scratch::Cluster;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod audit;
mod boundary;
mod encodings;
mod ledger;
mod limits;
mod protocol;
mod setup;
mod sqlx_driver;

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    app: Arc<App>,
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    tokens: BTreeMap<&'static str, Secret>,
}

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); \
    INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i; \
    CREATE TABLE scratch (id int, note text);";

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // Under the witness (`tests/witness.rs`), the run's directory stays where it is told,
        // and the server logs every statement it runs.
        let witness = std::env::var_os("BELAY_WITNESS_DIR");
        let dir = match &witness {
            Some(root) => tempfile::tempdir_in(root).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cluster = Cluster::start(&dir.path().join("pg"), None).unwrap();
        cluster.stop_when_gone(std::process::id()).unwrap();
        // The upstream speaks TLS with a certificate from a CA of the test's own.
        let (ca_pem, cert_pem, key_pem) = certificate_chain();
        cluster.enable_ssl(&cert_pem, &key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), certificate_chain().0).unwrap();
        if witness.is_some() {
            for sql in [
                "ALTER SYSTEM SET log_statement = 'all'",
                "ALTER SYSTEM SET log_line_prefix = '@@@%a@@@ '",
                "SELECT pg_reload_conf()",
            ] {
                cluster.psql("postgres", sql).unwrap();
            }
        }
        cluster.psql("postgres", "CREATE ROLE belay LOGIN PASSWORD 'upstream-secret'").unwrap();
        for db in ["staging", "production", "watched", "ledgered", "reconciled"] {
            cluster.psql("postgres", &format!("CREATE DATABASE {db} OWNER belay")).unwrap();
            cluster.psql(db, &format!("SET ROLE belay; {SCHEMA}")).unwrap();
        }
        std::fs::write(dir.path().join("upstream-password"), "upstream-secret\n").unwrap();
        std::fs::write(dir.path().join("policy.cedar"), belay_policy::DEFAULT_POLICY).unwrap();
        let closed_port = belay_scratch::free_port().unwrap();
        let env = |name: &str, tier: &str, port: u16| {
            let tls = match name {
                "secure" => "sslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"",
                "wrongca" => "sslmode = \"verify-full\"\nsslrootcert = \"other-ca.pem\"",
                _ => "sslmode = \"prefer\"",
            };
            format!(
                "[environments.{name}]\ntier = \"{tier}\"\nstatement_timeout = \"30s\"\n\
                 [environments.{name}.postgres.main]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 database = \"{}\"\nuser = \"belay\"\npassword = {{ file = \"upstream-password\" }}\n\
                 {tls}\nfailure_domain = \"db\"\n",
                match name { "production" | "watched" | "ledgered" | "reconciled" => name, _ => "staging" }
            )
        };
        let text = format!(
            "state_dir = \"state\"\npolicy = \"policy.cedar\"\n{}{}{}",
            env("staging", "non-production", cluster.port),
            env("production", "production", cluster.port),
            env("broken", "non-production", closed_port),
        ) + &env("secure", "non-production", cluster.port)
            + &env("wrongca", "non-production", cluster.port)
            + &env("capped", "non-production", cluster.port)
            + &env("watched", "non-production", cluster.port)
            + &env("ledgered", "non-production", cluster.port)
            + &env("reconciled", "non-production", cluster.port)
            + "[environments.capped.limits]\nmax_connections = 3\nmax_connections_per_agent = 2\n";
        let path = dir.path().join("belay.toml");
        std::fs::write(&path, &text).unwrap();
        let app = Arc::new(App::open(Config::load(&path, &NoEnv).unwrap()).unwrap());
        app.add_human("test", "owner").unwrap();
        let mut tokens = BTreeMap::new();
        for (name, grants) in [
            ("worker", &[("staging", Class::Destructive), ("production", Class::Read), ("broken", Class::Read), ("secure", Class::Read), ("wrongca", Class::Read), ("capped", Class::Read), ("watched", Class::Read), ("ledgered", Class::Destructive), ("reconciled", Class::Destructive)][..]),
            ("reader", &[("staging", Class::Read), ("capped", Class::Read)][..]),
            ("capper", &[("capped", Class::Read)][..]),
            ("revokable", &[("staging", Class::Read)][..]),
            ("repeating", &[("staging", Class::Read)][..]),
            ("counted", &[("staging", Class::Read)][..]),
            ("summarised", &[("staging", Class::Read)][..]),
            ("setter", &[("staging", Class::Destructive), ("production", Class::Read)][..]),
        ] {
            let grants = grants.iter().map(|(e, c)| ((*e).to_owned(), *c)).collect();
            let (_, token) = app.add_agent("test", name, "owner", &grants, None).unwrap();
            tokens.insert(name, token);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (addr, _stop) = start_gateway(&runtime, app.clone(), belay_pg::Options::default());
        std::mem::forget(_stop);
        Harness { _dir: dir, cluster, app, runtime, addr, tokens }
    })
}

/// A CA certificate, and a certificate for 127.0.0.1 and localhost it signed, with its key.
fn certificate_chain() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "belay test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// A gateway of its own (for limits and shutdown), on the harness's runtime.
fn start_gateway(
    runtime: &tokio::runtime::Runtime,
    app: Arc<App>,
    options: belay_pg::Options,
) -> (
    SocketAddr,
    (
        watch::Sender<bool>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ),
) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let handle = runtime.spawn(belay_pg::serve(
        listener,
        Arc::new(AppGate::new(app)),
        options,
        rx,
    ));
    (addr, (tx, handle))
}

fn conn_string(addr: SocketAddr, agent: &str, db: &str) -> String {
    let h = harness();
    format!(
        "host=127.0.0.1 port={} user={agent} password={} dbname={db}",
        addr.port(),
        h.tokens[agent].expose()
    )
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    // The harness starts its own runtime; it must not be first asked for inside this one.
    let _ = harness();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn client(agent: &str, db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &conn_string(harness().addr, agent, db),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("{agent} cannot connect to {db}: {e}"));
    tokio::spawn(connection);
    client
}

/// The error of a connection attempt that must fail.
async fn refused(conn: &str) -> tokio_postgres::Error {
    tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .map(|_| ())
        .unwrap_err()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

fn upstream(db: &str, sql: &str) -> String {
    harness().cluster.psql(db, sql).unwrap()
}

#[test]
fn tokio_postgres_reads_and_writes_staging_with_simple_and_prepared_statements() {
    let rows = block(async {
        let c = client("worker", "staging").await;
        c.simple_query("INSERT INTO scratch VALUES (1, 'simple')")
            .await
            .unwrap();
        let stmt = c
            .prepare("INSERT INTO scratch VALUES ($1, $2)")
            .await
            .unwrap();
        for i in 2..5 {
            c.execute(&stmt, &[&i, &"prepared"]).await.unwrap();
        }
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM scratch WHERE id BETWEEN $1 AND $2",
                &[&1i32, &4i32],
            )
            .await
            .unwrap()
            .get(0);
        c.execute("DELETE FROM scratch WHERE id BETWEEN 1 AND 4", &[])
            .await
            .unwrap();
        n
    });
    assert_eq!(rows, 4);
    assert_eq!(
        upstream(
            "staging",
            "SELECT count(*) FROM scratch WHERE id BETWEEN 1 AND 4"
        ),
        "0"
    );
}

#[test]
fn an_agent_without_a_grant_cannot_connect_to_that_environment() {
    let err = block(async { refused(&conn_string(harness().addr, "reader", "production")).await });
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message()
            .contains("no grant in environment `production`"),
        "{}",
        db.message()
    );
}

#[test]
fn a_wrong_token_or_unknown_agent_is_refused_alike() {
    for (user, password) in [
        ("worker", "belay_agent_wrong"),
        ("nobody", "belay_agent_wrong"),
    ] {
        let err = block(async {
            let s = format!(
                "host=127.0.0.1 port={} user={user} password={password} dbname=staging",
                harness().addr.port()
            );
            refused(&s).await
        });
        assert_eq!(code(&err), "28P01", "{user}");
    }
}

#[test]
fn a_refusal_inside_a_transaction_fails_it_and_commit_rolls_back() {
    let (after, commit_tag) = block(async {
        let c = client("worker", "staging").await;
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("INSERT INTO scratch VALUES (500, 'in transaction')")
            .await
            .unwrap();
        // ALTER SYSTEM is admin: denied.
        let denied = c
            .simple_query("ALTER SYSTEM SET work_mem = '1GB'")
            .await
            .unwrap_err();
        assert_eq!(code(&denied), "42501");
        let after = c.simple_query("SELECT 1").await.unwrap_err();
        let commit = c.simple_query("COMMIT").await.unwrap();
        let tag = commit.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        (code(&after), tag)
    });
    assert_eq!(after, "25P02");
    let _ = commit_tag;
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM scratch WHERE id = 500"),
        "0"
    );
}

#[test]
fn copy_in_and_out_go_through() {
    use futures_util::SinkExt;
    let out = block(async {
        let c = client("worker", "staging").await;
        let sink = c
            .copy_in("COPY scratch (id, note) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"900\tcopied\n901\tcopied\n"))
            .await
            .unwrap();
        let n = sink.finish().await.unwrap();
        assert_eq!(n, 2);
        let stream = c
            .copy_out("COPY (SELECT id FROM scratch WHERE note = 'copied' ORDER BY id) TO STDOUT")
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            out.extend_from_slice(&chunk.unwrap());
        }
        c.simple_query("DELETE FROM scratch WHERE note = 'copied'")
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    });
    assert_eq!(out, "900\n901\n");
}

#[test]
fn cancel_requests_reach_the_upstream_backend() {
    let err = block(async {
        let c = client("worker", "staging").await;
        let token = c.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        });
        let r = c.simple_query("SELECT pg_sleep(20)").await;
        canceller.await.unwrap();
        r.unwrap_err()
    });
    assert_eq!(code(&err), "57014");
}

#[test]
fn an_unreachable_upstream_is_a_clear_error() {
    let err = block(async { refused(&conn_string(harness().addr, "worker", "broken")).await });
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "08006");
    assert!(
        db.message()
            .contains("cannot reach the upstream database broken.main"),
        "{}",
        db.message()
    );
    assert!(!db.message().contains("upstream-secret"));
}

// ---- The protocol by hand ---------------------------------------------------------------

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

struct Raw {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    /// The process id belay gave in BackendKeyData.
    pid: i32,
    /// The settings reported at login (ParameterStatus), and the notices.
    params: Vec<(String, String)>,
    notices: Vec<String>,
}

/// Negotiates TLS with the gateway, accepting any certificate.
async fn tls_stream(addr: SocketAddr) -> Box<dyn Stream> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    Startup::SslRequest.encode(&mut out);
    tcp.write_all(&out).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S', "the gateway offers TLS");
    let config = belay_pg::tls::client_config(belay_pg::SslMode::Require, None)
        .unwrap()
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Box::new(
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap(),
    )
}

impl Raw {
    async fn connect(
        addr: SocketAddr,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<Raw, ErrorFields> {
        let stream: Box<dyn Stream> = Box::new(TcpStream::connect(addr).await.unwrap());
        Raw::start(stream, params, password).await
    }

    async fn start(
        stream: Box<dyn Stream>,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<Raw, ErrorFields> {
        let startup = Startup::Startup {
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Raw::start_with(stream, startup, password).await
    }

    async fn start_with(
        mut stream: Box<dyn Stream>,
        startup: Startup,
        password: &str,
    ) -> Result<Raw, ErrorFields> {
        let mut out = BytesMut::new();
        startup.encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            pid: 0,
            params: Vec::new(),
            notices: Vec::new(),
        };
        let mut scram = None;
        loop {
            match raw.next().await {
                Backend::AuthenticationSasl(_) => {
                    let (ex, first) =
                        belay_scram::ClientExchange::new(password.as_bytes()).unwrap();
                    scram = Some(ex);
                    let mut body = BytesMut::new();
                    body.extend_from_slice(b"SCRAM-SHA-256\0");
                    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    body.extend_from_slice(first.as_bytes());
                    raw.send(&[Frontend::Password(body.freeze())]).await;
                }
                Backend::AuthenticationSaslContinue(data) => {
                    let reply = scram.as_mut().unwrap().respond(&data).unwrap();
                    raw.send(&[Frontend::Password(Bytes::from(reply))]).await;
                }
                Backend::AuthenticationCleartextPassword => {
                    let mut body = BytesMut::from(password.as_bytes());
                    body.extend_from_slice(&[0]);
                    raw.send(&[Frontend::Password(body.freeze())]).await;
                }
                Backend::ErrorResponse(e) => return Err(e),
                Backend::BackendKeyData { pid, .. } => raw.pid = pid,
                Backend::ParameterStatus { name, value } => raw.params.push((name, value)),
                Backend::NoticeResponse(n) => raw.notices.push(n.message),
                Backend::ReadyForQuery(_) => return Ok(raw),
                _ => {}
            }
        }
    }

    async fn agent(agent: &str, db: &str) -> Raw {
        let token = harness().tokens[agent].expose().to_owned();
        Raw::connect(harness().addr, &[("user", agent), ("database", db)], &token)
            .await
            .unwrap()
    }

    async fn send(&mut self, messages: &[Frontend]) {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out);
        }
        self.stream.write_all(&out).await.unwrap();
    }

    /// A Query of bytes as they are, in whatever encoding the session has.
    async fn send_query_bytes(&mut self, sql: &[u8]) {
        let mut out = BytesMut::new();
        out.extend_from_slice(b"Q");
        out.extend_from_slice(&(sql.len() as i32 + 5).to_be_bytes());
        out.extend_from_slice(sql);
        out.extend_from_slice(b"\0");
        self.stream.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> Backend {
        loop {
            if let Some(frame) = codec::read_frame(&mut self.buf, 1 << 20).unwrap() {
                return Backend::decode(&frame).unwrap();
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert!(n > 0, "the gateway closed the connection");
        }
    }

    /// Everything up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Backend> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = matches!(m, Backend::ReadyForQuery(_));
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

fn parse(name: &str, sql: &str) -> Frontend {
    Frontend::Parse {
        name: name.to_owned(),
        query: sql.to_owned(),
        param_types: vec![],
    }
}

fn bind(portal: &str, statement: &str) -> Frontend {
    Frontend::Bind {
        portal: portal.to_owned(),
        statement: statement.to_owned(),
        param_formats: vec![],
        params: vec![],
        result_formats: vec![],
    }
}

fn execute(portal: &str) -> Frontend {
    Frontend::Execute {
        portal: portal.to_owned(),
        max_rows: 0,
    }
}

fn errors(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Backend::ErrorResponse(e) => Some(e.code.clone()),
            _ => None,
        })
        .collect()
}

fn tags(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Backend::CommandComplete(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn tls_for_clients_required_when_configured_and_cleartext_only_over_tls() {
    let h = harness();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let options = belay_pg::Options {
        tls: Some(belay_pg::tls::server_config(&cert_path, &key_path).unwrap()),
        require_tls: true,
        allow_cleartext_password: true,
        ..belay_pg::Options::default()
    };
    let (addr, (stop, handle)) = start_gateway(&h.runtime, h.app.clone(), options);
    let token = h.tokens["worker"].expose().to_owned();
    let params = [("user", "worker"), ("database", "staging")];
    block(async {
        // Without TLS: refused before any password is asked for.
        let plain = Raw::connect(addr, &params, &token).await.err().unwrap();
        assert_eq!(plain.code, "28000");
        // Over TLS the token may travel as a cleartext password, and only the right one works.
        let mut c = Raw::start(tls_stream(addr).await, &params, &token)
            .await
            .unwrap();
        c.send(&[Frontend::Query("SELECT count(*) FROM items".to_owned())])
            .await;
        assert_eq!(tags(&c.until_ready().await), vec!["SELECT 1".to_owned()]);
        let wrong = Raw::start(tls_stream(addr).await, &params, "belay_agent_wrong")
            .await
            .err()
            .unwrap();
        assert_eq!(wrong.code, "28P01");
    });
    stop.send(true).unwrap();
    h.runtime.block_on(handle).unwrap().unwrap();
}

#[test]
fn upstream_tls_follows_sslmode() {
    let in_tls = |db: &str| {
        block(async {
            let c = client("worker", db).await;
            let rows = c
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            rows.get::<_, bool>(0)
        })
    };
    // verify-full against the CA that signed the server's certificate, and prefer (which
    // takes TLS when the server offers it).
    assert!(in_tls("secure"));
    assert!(in_tls("production"));
    // verify-full against another CA: refused, with the reason.
    let err = block(async { refused(&conn_string(harness().addr, "worker", "wrongca")).await });
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("TLS"), "{}", db.message());
}

/// The first row's first column of a simple query through the gateway.
async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .expect("a row")
}
