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
        for db in ["staging", "production", "watched"] {
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
                match name { "production" | "watched" => name, _ => "staging" }
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
            + "[environments.capped.limits]\nmax_connections = 3\nmax_connections_per_agent = 2\n";
        let path = dir.path().join("belay.toml");
        std::fs::write(&path, &text).unwrap();
        let app = Arc::new(App::open(Config::load(&path, &NoEnv).unwrap()).unwrap());
        app.add_human("test", "owner").unwrap();
        let mut tokens = BTreeMap::new();
        for (name, grants) in [
            ("worker", &[("staging", Class::Destructive), ("production", Class::Read), ("broken", Class::Read), ("secure", Class::Read), ("wrongca", Class::Read), ("capped", Class::Read), ("watched", Class::Read)][..]),
            ("reader", &[("staging", Class::Read), ("capped", Class::Read)][..]),
            ("capper", &[("capped", Class::Read)][..]),
            ("revokable", &[("staging", Class::Read)][..]),
            ("repeating", &[("staging", Class::Read)][..]),
            ("counted", &[("staging", Class::Read)][..]),
            ("summarised", &[("staging", Class::Read)][..]),
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
fn read_only_agent_cannot_drop_or_write_in_production_and_the_refusal_is_audited() {
    let before = harness().app.store().head_seq().unwrap();
    let (drop_err, update_err) = block(async {
        let c = client("worker", "production").await;
        let d = c.simple_query("DROP TABLE items").await.unwrap_err();
        let u = c
            .execute("UPDATE items SET name = 'x' WHERE id = $1", &[&1i32])
            .await
            .unwrap_err();
        (d, u)
    });
    let db = drop_err.as_db_error().unwrap();
    assert_eq!(db.code().code(), belay_pg::SQLSTATE_APPROVAL, "{db:?}");
    assert!(
        db.message().contains("DROP TABLE") && db.message().contains("destructive"),
        "{}",
        db.message()
    );
    assert!(db.detail().unwrap().contains("production-destructive"));
    assert_eq!(code(&update_err), belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(
        upstream("production", "SELECT count(*) FROM items WHERE name = 'x'"),
        "0"
    );
    assert_eq!(
        upstream("production", "SELECT to_regclass('items') IS NOT NULL"),
        "t"
    );
    let events = harness().app.store().events(before + 1, 1000).unwrap();
    assert!(events.iter().any(|e| e.draft.kind == "statement"
        && e.draft.class.as_deref() == Some("destructive")
        && e.draft.verdict.as_deref() == Some("approve(1)")
        && e.draft.detail["sql"].as_str() == Some("DROP TABLE items")));
}

#[test]
fn production_session_is_pinned_read_only_and_settings_cannot_be_changed() {
    let (app_name, ro, set_err, rw_err, after_reset) = block(async {
        let c = client("worker", "production").await;
        let get = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap().to_owned())
                    }
                    _ => None,
                })
                .expect("a row")
        };
        let app_name = get(c.simple_query("SHOW application_name").await.unwrap());
        let ro = get(c
            .simple_query("SHOW default_transaction_read_only")
            .await
            .unwrap());
        let set_err = c
            .simple_query("SET statement_timeout = 0")
            .await
            .unwrap_err();
        let rw_err = c.simple_query("BEGIN READ WRITE").await.unwrap_err();
        c.simple_query("RESET ALL").await.unwrap();
        let after = get(c.simple_query("SHOW application_name").await.unwrap());
        (app_name, ro, set_err, rw_err, after)
    });
    assert_eq!(app_name, "belay:worker");
    assert_eq!(ro, "on");
    assert_eq!(code(&set_err), belay_pg::SQLSTATE_DENIED);
    assert_eq!(code(&rw_err), belay_pg::SQLSTATE_DENIED);
    assert_eq!(after_reset, "belay:worker");
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
fn more_than_the_buffers_hold_flows_both_ways_with_back_pressure() {
    // Each direction holds at most about a megabyte before belay stops reading: a 20 MB
    // answer to a client that does not read yet, and 2.6 MB of queries pipelined behind a
    // query that keeps the server busy, must both resume and arrive whole.
    let (big, pipelined) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "SELECT repeat('x', 10000) FROM generate_series(1, 2000)".to_owned(),
        )])
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let big = c.until_ready().await;
        let query = format!("SELECT '{}'", "y".repeat(1000));
        let mut batch = vec![Frontend::Query("SELECT pg_sleep(0.5)".to_owned())];
        batch.extend((0..12_000).map(|_| Frontend::Query(query.clone())));
        c.send(&batch).await;
        let mut pipelined = Vec::new();
        for _ in 0..batch.len() {
            pipelined.extend(tags(&c.until_ready().await));
        }
        (big, pipelined)
    });
    assert_eq!(tags(&big), vec!["SELECT 2000".to_owned()]);
    assert_eq!(
        big.len(),
        2000 + 3,
        "RowDescription, 2,000 rows, CommandComplete, ReadyForQuery"
    );
    assert_eq!(pipelined.len(), 12_001);
    assert!(
        pipelined.iter().all(|t| t == "SELECT 1"),
        "{:?}",
        &pipelined[..3]
    );
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
fn several_statements_in_one_string_are_refused_together() {
    let got = block(async {
        let mut c = Raw::agent("worker", "production").await;
        c.send(&[Frontend::Query(
            "SELECT 1; DELETE FROM items WHERE id = 1; SELECT 2".to_owned(),
        )])
        .await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert!(tags(&got).is_empty(), "nothing ran: {got:?}");
    assert_eq!(
        upstream("production", "SELECT count(*) FROM items WHERE id = 1"),
        "1"
    );
}

#[test]
fn a_repeated_sql_execute_is_resolved_again_after_deallocate() {
    // `EXECUTE q` means what the session's PREPARE q says at the time: the same text
    // repeated must not be counted as the read it was before DEALLOCATE.
    let (first, again, after) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "PREPARE rq AS SELECT count(*) FROM items".to_owned(),
        )])
        .await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        let first = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        let again = c.until_ready().await;
        c.send(&[Frontend::Query("DEALLOCATE rq".to_owned())]).await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        (first, again, c.until_ready().await)
    });
    assert_eq!(tags(&first), vec!["SELECT 1".to_owned()]);
    assert_eq!(tags(&again), vec!["SELECT 1".to_owned()]);
    // Refused by belay (unresolved), not forwarded to fail upstream with 26000.
    assert_eq!(errors(&after), vec!["42501".to_owned()]);
}

#[test]
fn sql_prepare_and_execute_are_resolved_across_queries() {
    let (ok, refused_prepare, unresolved, reserved) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "PREPARE q AS SELECT count(*) FROM items".to_owned(),
        )])
        .await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE q".to_owned())]).await;
        let ok = c.until_ready().await;
        c.send(&[Frontend::Query(
            "PREPARE d AS DELETE FROM items WHERE id = 2".to_owned(),
        )])
        .await;
        let refused = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE d".to_owned())]).await;
        let unresolved = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE belay_1".to_owned())])
            .await;
        let reserved = c.until_ready().await;
        (ok, refused, unresolved, reserved)
    });
    assert_eq!(tags(&ok), vec!["SELECT 1".to_owned()]);
    assert_eq!(
        errors(&refused_prepare),
        vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]
    );
    assert_eq!(errors(&unresolved), vec!["42501".to_owned()]);
    assert_eq!(errors(&reserved), vec!["42501".to_owned()]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 2"),
        "1"
    );
}

#[test]
fn protocol_parse_of_a_delete_then_execute_runs_nothing() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("del", "DELETE FROM items WHERE id = 3"),
            bind("", "del"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let first = c.until_ready().await;
        // A held statement is prepared (a Parse runs nothing) and held at every Execute,
        // where its parameters are known: the same approval request each time.
        c.send(&[bind("", "del"), execute(""), Frontend::Sync])
            .await;
        let second = c.until_ready().await;
        (first, second)
    });
    assert_eq!(
        errors(&got.0),
        vec![belay_pg::SQLSTATE_APPROVAL.to_owned()],
        "{:?}",
        got.0
    );
    assert_eq!(errors(&got.1), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    let request_id = |m: &[Backend]| {
        m.iter()
            .find_map(|m| match m {
                Backend::ErrorResponse(e) => e
                    .message
                    .split("approval request ")
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(request_id(&got.0), request_id(&got.1));
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 3"),
        "1"
    );
}

#[test]
fn a_statement_name_reused_after_close_is_decided_again() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("s1", "SELECT name FROM items WHERE id = 4"),
            bind("", "s1"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let first = c.until_ready().await;
        c.send(&[
            Frontend::Close(codec::Close {
                target: codec::Target::Statement,
                name: "s1".to_owned(),
            }),
            parse("s1", "DELETE FROM items WHERE id = 4"),
            bind("", "s1"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        (first, c.until_ready().await)
    });
    assert_eq!(tags(&got.0), vec!["SELECT 1".to_owned()]);
    assert_eq!(errors(&got.1), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 4"),
        "1"
    );
}

#[test]
fn pipelined_messages_without_sync_are_each_decided() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("", "SELECT id FROM items WHERE id = 5"),
            bind("", ""),
            execute(""),
            Frontend::Flush,
            parse("", "DELETE FROM items WHERE id = 5"),
            bind("", ""),
            execute(""),
            parse("", "SELECT 42"),
            bind("", ""),
            execute(""),
        ])
        .await;
        // Without Sync, the first result arrives (after Flush), then the refusal.
        let mut seen = Vec::new();
        loop {
            let m = c.next().await;
            let stop = matches!(m, Backend::ErrorResponse(_));
            seen.push(m);
            if stop {
                break;
            }
        }
        c.send(&[Frontend::Sync]).await;
        seen.extend(c.until_ready().await);
        seen
    });
    assert_eq!(
        tags(&got),
        vec!["SELECT 1".to_owned()],
        "the statement after the refusal was skipped: {got:?}"
    );
    assert_eq!(errors(&got), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 5"),
        "1"
    );
}

#[test]
fn a_grant_revoked_between_parse_and_execute_takes_effect() {
    let got = block(async {
        let mut c = Raw::agent("revokable", "staging").await;
        c.send(&[parse("s", "SELECT count(*) FROM items"), Frontend::Sync])
            .await;
        let parsed = c.until_ready().await;
        assert!(errors(&parsed).is_empty());
        harness().app.revoke_agent("test", "revokable").unwrap();
        c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
}

#[test]
fn a_revocation_takes_effect_on_a_read_the_session_repeats() {
    // The session counts a read it has just allowed without deciding it again; the agent's
    // revocation must still reach the next execution of that same statement.
    let got = block(async {
        let mut c = Raw::agent("repeating", "staging").await;
        c.send(&[parse("s", "SELECT count(*) FROM items"), Frontend::Sync])
            .await;
        assert!(errors(&c.until_ready().await).is_empty());
        for _ in 0..3 {
            c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
            assert!(errors(&c.until_ready().await).is_empty());
        }
        harness().app.revoke_agent("test", "repeating").unwrap();
        c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
}

#[test]
fn function_call_messages_are_refused() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::FunctionCall(Bytes::from_static(&[
            0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
        ]))])
        .await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
    // The refusal is a decision event, named in the error.
    let detail = got
        .iter()
        .find_map(|m| match m {
            Backend::ErrorResponse(e) => e.detail.clone(),
            _ => None,
        })
        .expect("a detail naming the audit event");
    let seq: u64 = detail.trim_start_matches("audit event ").parse().unwrap();
    let event = &harness().app.store().events(seq, 1).unwrap()[0];
    assert_eq!(event.draft.kind, "statement");
    assert_eq!(event.draft.verdict.as_deref(), Some("deny"));
    assert_eq!(event.draft.detail["phase"], "protocol");
    assert!(
        event.draft.reasons[0].contains("fast-path"),
        "{:?}",
        event.draft.reasons
    );
}

#[test]
fn malformed_messages_close_the_connection_with_an_error() {
    let last = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.stream.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
        let mut seen = Vec::new();
        loop {
            if let Ok(Some(f)) = codec::read_frame(&mut c.buf, 1 << 20) {
                seen.push(Backend::decode(&f).unwrap());
                continue;
            }
            if c.stream.read_buf(&mut c.buf).await.unwrap_or(0) == 0 {
                return seen;
            }
        }
    });
    assert!(
        matches!(&last[..], [Backend::ErrorResponse(e)] if e.code == "08P01"),
        "{last:?}"
    );
    // The gateway still serves others.
    block(async {
        client("reader", "staging")
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap()
    });
}

#[test]
fn startup_options_and_replication_are_refused() {
    for (key, value) in [
        ("options", "-c default_transaction_read_only=off"),
        ("replication", "database"),
        ("search_path", "evil,pg_catalog"),
    ] {
        let err = block(async {
            let token = harness().tokens["worker"].expose().to_owned();
            Raw::connect(
                harness().addr,
                &[("user", "worker"), ("database", "production"), (key, value)],
                &token,
            )
            .await
            .err()
            .unwrap()
        });
        assert_eq!(err.code, "08P01", "{key}");
    }
}

#[test]
fn connection_limit_and_handshake_timeout() {
    let h = harness();
    let options = belay_pg::Options {
        max_connections: 1,
        // Long enough for a real client's SCRAM exchange and upstream login on a loaded
        // machine (a debug build), short against the 20 s the silent client below waits.
        handshake_timeout: Duration::from_secs(3),
        ..belay_pg::Options::default()
    };
    let (addr, (stop, handle)) = start_gateway(&h.runtime, h.app.clone(), options);
    block(async {
        let (first, conn) = tokio_postgres::connect(
            &conn_string(addr, "worker", "staging"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let second = refused(&conn_string(addr, "worker", "staging")).await;
        assert_eq!(code(&second), "53300");
        first.simple_query("SELECT 1").await.unwrap();
        // A client that says nothing is disconnected.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), silent.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        let _ = n;
    });
    stop.send(true).unwrap();
    h.runtime.block_on(handle).unwrap().unwrap();
}

#[test]
fn shutdown_lets_open_transactions_finish_and_ends_idle_sessions() {
    let h = harness();
    let (addr, (stop, handle)) =
        start_gateway(&h.runtime, h.app.clone(), belay_pg::Options::default());
    block(async {
        let url = conn_string(addr, "worker", "staging");
        let connect = || tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let (busy, c1) = connect().await.unwrap();
        let busy_conn = tokio::spawn(c1);
        let (idle, c2) = connect().await.unwrap();
        let idle_conn = tokio::spawn(c2);
        busy.simple_query("BEGIN").await.unwrap();
        busy.simple_query("INSERT INTO scratch VALUES (700, 'during shutdown')")
            .await
            .unwrap();
        stop.send(true).unwrap();
        // The idle session is ended by belay.
        let _ = tokio::time::timeout(Duration::from_secs(20), idle_conn)
            .await
            .unwrap();
        assert!(idle.simple_query("SELECT 1").await.is_err());
        // The busy one may still commit, then it is ended too.
        busy.simple_query("COMMIT").await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(20), busy_conn)
            .await
            .unwrap();
    });
    h.runtime.block_on(handle).unwrap().unwrap();
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM scratch WHERE id = 700"),
        "1"
    );
    assert!(
        block(async { TcpStream::connect(addr).await.is_err() }),
        "the listener is closed"
    );
}

#[test]
fn the_audit_log_records_outcomes_and_verifies() {
    let before = harness().app.store().head_seq().unwrap();
    block(async {
        let c = client("worker", "staging").await;
        c.simple_query("INSERT INTO scratch VALUES (800, 'secret-value-123')")
            .await
            .unwrap();
        c.simple_query("DELETE FROM scratch WHERE id = 800")
            .await
            .unwrap();
        // A failure records its SQLSTATE, not a row count.
        let e = c
            .simple_query("INSERT INTO items VALUES (1, 'duplicate')")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "23505");
    });
    // Outcomes are written without waiting; give the group commit a moment.
    let outcome_tags = |events: &[belay_audit::Event]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.draft.kind == "statement.outcome")
            .map(|e| e.draft.detail["tag"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let mut events = Vec::new();
    for _ in 0..100 {
        events = harness().app.store().events(before + 1, 10_000).unwrap();
        let tags = outcome_tags(&events);
        let failed = events
            .iter()
            .any(|e| e.draft.outcome.as_deref() == Some("failed"));
        if tags.iter().any(|t| t == "DELETE 1") && tags.iter().any(|t| t == "INSERT 0 1") && failed
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed = events
        .iter()
        .find(|e| {
            e.draft.kind == "statement.outcome" && e.draft.outcome.as_deref() == Some("failed")
        })
        .expect("the failed INSERT's outcome");
    assert_eq!(failed.draft.detail["sqlstate"], "23505");
    assert!(
        failed.draft.detail["rows"].is_null(),
        "{:?}",
        failed.draft.detail
    );
    let outcomes = outcome_tags(&events);
    assert!(
        outcomes.contains(&"INSERT 0 1".to_owned()) && outcomes.contains(&"DELETE 1".to_owned()),
        "{outcomes:?}"
    );
    let text =
        serde_json::to_string(&events.iter().map(|e| &e.draft.detail).collect::<Vec<_>>()).unwrap();
    assert!(
        !text.contains("secret-value-123"),
        "constants are redacted: {text}"
    );
    assert!(!text.contains(harness().tokens["worker"].expose()));
    let report = belay_app::verify_audit(&harness().app).unwrap();
    assert_eq!(report.broken, None);
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

#[test]
fn allowed_reads_are_summarised_with_their_count_even_while_the_session_idles() {
    let before = harness().app.store().head_seq().unwrap();
    let sql = "SELECT name FROM items WHERE id = 42";
    let counted = block(async {
        // Its own agent: other tests read the same table as `reader` at the same time.
        let c = client("counted", "staging").await;
        for _ in 0..5 {
            c.query(sql, &[]).await.unwrap();
        }
        c.simple_query("SELECT count(*) FROM items").await.unwrap();
        // The session stays open and idle: the summary must not wait for it to end.
        let mut counted = 0;
        for _ in 0..200 {
            let events = harness().app.store().events(before + 1, 10_000).unwrap();
            counted = events
                .iter()
                .filter(|e| {
                    e.draft.kind == "statement.reads"
                        && e.draft.actor == "agent:counted"
                        && e.draft.detail["phase"] == "execute"
                        && e.draft.detail["statements"][0]["relations"][0]["name"] == "items"
                })
                .map(|e| e.draft.detail["count"].as_u64().unwrap())
                .sum::<u64>();
            if counted >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(c);
        counted
    });
    assert_eq!(counted, 5, "five executions of one read, counted");
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

#[test]
fn client_encodings_that_hide_backslashes_are_refused_at_startup_by_every_name() {
    for name in [
        "windows932",
        "Windows-936",
        "WINDOWS949",
        "windows_950",
        "SJIS",
        "Shift_JIS",
        "ms kanji",
        "GBK",
        "win936",
        "BIG5",
        "UHC",
        "GB18030",
        "JOHAB",
        "SHIFT_JIS_2004",
        "no-such-encoding",
    ] {
        let err = block(async {
            let token = harness().tokens["worker"].expose().to_owned();
            Raw::connect(
                harness().addr,
                &[
                    ("user", "worker"),
                    ("database", "production"),
                    ("client_encoding", name),
                ],
                &token,
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("`{name}` was accepted"))
        });
        assert_eq!(err.code, "22023", "{name}: {}", err.message);
    }
    // ASCII-safe encodings work as before.
    let got = block(async {
        let token = harness().tokens["worker"].expose().to_owned();
        let mut c = Raw::connect(
            harness().addr,
            &[
                ("user", "worker"),
                ("database", "staging"),
                ("client_encoding", "LATIN9"),
            ],
            &token,
        )
        .await
        .unwrap();
        c.send(&[Frontend::Query("SHOW client_encoding".to_owned())])
            .await;
        c.until_ready().await
    });
    assert!(errors(&got).is_empty(), "{got:?}");
}

#[test]
fn the_encoding_smuggling_line_changes_nothing_and_no_spelling_of_the_encoding_change_passes() {
    let smuggled = "SET x.y = E'\u{c1}\\'; SET transaction_read_only = off; \
                    UPDATE public.items SET name = $$pwned$$ WHERE id = 1; --'";
    let refused: Vec<String> = block(async {
        let c = client("worker", "production").await;
        // Read as UTF-8 (the only way belay lets the session read it) it is one SET.
        c.simple_query(smuggled).await.unwrap();
        let mut codes = Vec::new();
        for sql in [
            "SET client_encoding = 'windows932'",
            "SET NAMES 'windows936'",
            "SET client_encoding TO 'Windows-949'",
            "SELECT set_config('client_encoding', 'windows950', false)",
            "SELECT set_config('client_encoding', 'WIN' || '932', false)",
            "SELECT set_config(new_value => 'SJIS', setting_name => 'client_encoding', is_local => false)",
            "SELECT pg_catalog.set_config('client_encoding', current_setting('x.enc', true), false)",
            "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            codes.push(format!("{sql} -> {}", code(&e)));
        }
        let stmt = c
            .prepare("SELECT set_config('client_encoding', $1, false)")
            .await;
        match stmt {
            Ok(s) => codes.push(format!(
                "bound -> {}",
                code(&c.query(&s, &[&"SJIS"]).await.unwrap_err())
            )),
            Err(e) => codes.push(format!("bound -> {}", code(&e))),
        }
        assert_eq!(value(&c, "SHOW client_encoding").await, "UTF8");
        codes
    });
    for r in &refused {
        assert!(r.ends_with("-> 42501"), "{r}");
    }
    assert_eq!(
        upstream("production", "SELECT name FROM items WHERE id = 1"),
        "item 1"
    );
}

#[test]
fn an_upstream_encoding_change_belay_did_not_see_coming_ends_the_session() {
    // A function changed behind belay's back, after belay read the catalog, changes the
    // encoding when called: belay still takes it for the read it was, and the server's
    // report of the new encoding must end the session before anything else is read under
    // it. (Its own environment, so that no other test's statement reads the catalog again
    // in between, nor into its database.)
    upstream(
        "watched",
        "SET ROLE belay; CREATE OR REPLACE FUNCTION switch_encoding() RETURNS text \
         LANGUAGE sql AS $$ SELECT 'none'::text $$",
    );
    block(async {
        let c = client("worker", "watched").await;
        c.simple_query("SELECT switch_encoding()").await.unwrap();
    });
    upstream(
        "watched",
        "SET ROLE belay; CREATE OR REPLACE FUNCTION switch_encoding() RETURNS text \
         LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'SJIS', false) $$",
    );
    let before = harness().app.store().head_seq().unwrap();
    let got = block(async {
        let mut c = Raw::agent("worker", "watched").await;
        c.send(&[Frontend::Query("SELECT switch_encoding()".to_owned())])
            .await;
        let mut seen = Vec::new();
        loop {
            let m = c.next().await;
            if let Backend::ErrorResponse(e) = &m {
                seen.push(e.clone());
                break;
            }
        }
        seen
    });
    assert_eq!(got[0].code, "08P01");
    assert!(
        got[0].message.contains("client_encoding"),
        "{}",
        got[0].message
    );
    // The session's end is recorded as it closes, just after the client hears of it.
    let audited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let events = harness().app.store().events(before + 1, 1000).unwrap();
        events.iter().any(|e| {
            e.draft.kind == "connection"
                && e.draft.outcome.as_deref() == Some("closed")
                && e.draft
                    .reasons
                    .iter()
                    .any(|r| r.contains("client_encoding"))
        })
    });
    assert!(audited, "the end of the session is audited");
}

#[test]
fn a_staging_agent_cannot_name_production_s_database_or_role() {
    let results = block(async {
        let c = client("worker", "staging").await;
        let mut out = Vec::new();
        for sql in [
            "DROP DATABASE IF EXISTS production WITH (FORCE)",
            "DROP DATABASE production",
            "COMMENT ON DATABASE production IS 'owned from staging'",
            "ALTER DATABASE production CONNECTION LIMIT 0",
            "ALTER DATABASE production RENAME TO gone",
            "CREATE DATABASE copy_of_production TEMPLATE production",
            "GRANT CONNECT ON DATABASE production TO PUBLIC",
            "REINDEX DATABASE production",
            "CREATE TABLESPACE elsewhere LOCATION '/tmp'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            let db = e.as_db_error().unwrap();
            out.push((sql, db.code().code().to_owned(), db.message().to_owned()));
        }
        // Its own database is its own.
        c.simple_query("COMMENT ON DATABASE staging IS 'staging data'")
            .await
            .unwrap();
        out
    });
    for (sql, code, message) in &results[..8] {
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("database `production` belongs to environment `production`"),
            "{sql}: {message}"
        );
    }
    assert_eq!(results[8].1, "42501", "{:?}", results[8]);
    assert_eq!(
        upstream(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'production' AND datconnlimit = -1"
        ),
        "1"
    );
    assert_eq!(
        upstream(
            "postgres",
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = 'production'"
        ),
        ""
    );
    assert_eq!(
        upstream(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy_of_production'"
        ),
        "0"
    );
}

#[test]
fn writes_to_the_catalog_are_the_settings_they_stand_for() {
    let (errs, timeout) = block(async {
        let c = client("worker", "staging").await;
        let mut errs = Vec::new();
        for sql in [
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
            "WITH s AS (UPDATE pg_settings SET setting = '0' WHERE name = 'lock_timeout' RETURNING 1) SELECT * FROM s",
        ] {
            errs.push(code(&c.simple_query(sql).await.unwrap_err()));
        }
        (errs, value(&c, "SHOW statement_timeout").await)
    });
    assert_eq!(errs, vec!["42501"; 3]);
    assert_eq!(timeout, "30s");
}

#[test]
fn resource_settings_and_timeouts_may_be_lowered_but_not_raised_past_the_environment_s_limits() {
    let (pinned, lowered, refused) = block(async {
        let c = client("worker", "staging").await;
        let pinned = (
            value(&c, "SHOW lock_timeout").await,
            value(&c, "SHOW idle_in_transaction_session_timeout").await,
        );
        c.simple_query("SET statement_timeout = '10s'")
            .await
            .unwrap();
        c.simple_query("SET LOCAL lock_timeout = '5s'")
            .await
            .unwrap();
        c.simple_query("SET work_mem = '64MB'").await.unwrap();
        let lowered = (
            value(&c, "SHOW statement_timeout").await,
            value(&c, "SHOW work_mem").await,
        );
        let mut refused = Vec::new();
        for sql in [
            "SET work_mem = '4GB'",
            "SET maintenance_work_mem = '64GB'",
            "SET statement_timeout = '1h'",
            "SET lock_timeout = 0",
            "SET idle_in_transaction_session_timeout = 0",
            "SET max_parallel_workers_per_gather = 64",
            "SET hash_mem_multiplier = 1000",
            "SELECT set_config('work_mem', '4GB', false)",
            "SELECT set_config('work_mem', repeat('9', 3) || 'GB', false)",
            "SET temp_buffers = '100GB'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            let db = e.as_db_error().unwrap();
            refused.push((
                sql,
                db.code().code().to_owned(),
                db.message().to_owned(),
                db.detail().unwrap_or_default().to_owned(),
            ));
        }
        assert_eq!(value(&c, "SHOW work_mem").await, "64MB");
        (pinned, lowered, refused)
    });
    assert_eq!(pinned, ("30s".to_owned(), "2min".to_owned()));
    assert_eq!(lowered, ("10s".to_owned(), "64MB".to_owned()));
    for (sql, code, message, _) in &refused {
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    assert!(
        refused[0]
            .3
            .contains("over the limit environment `staging` sets"),
        "{}",
        refused[0].3
    );
}

#[test]
fn a_huge_text_is_bounded_in_memory_and_in_the_audit_log() {
    let before = harness().app.store().head_seq().unwrap();
    let (too_many, ran) = block(async {
        let c = client("worker", "staging").await;
        // Past the statement limit: refused before it is analysed.
        let e = c.simple_query(&"SELECT 1;".repeat(5000)).await.unwrap_err();
        // Within it, but long: runs, and its event is a prefix, a length and a hash.
        let batch = "INSERT INTO scratch VALUES (9000, 'bulk');".repeat(600);
        c.simple_query(&batch).await.unwrap();
        c.simple_query("DELETE FROM scratch WHERE id = 9000")
            .await
            .unwrap();
        (e, 600)
    });
    let db = too_many.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.detail().unwrap_or_default().contains("5000 statements"),
        "{db:?}"
    );
    let events = harness().app.store().events(before + 1, 10_000).unwrap();
    let bulk = events
        .iter()
        .find(|e| {
            e.draft.kind == "statement"
                && e.draft.detail["statements"]["total"].as_u64() == Some(ran)
        })
        .expect("the bulk insert's decision");
    let size = serde_json::to_string(&bulk.draft.detail).unwrap().len();
    assert!(size < 16 * 1024, "the event is {size} bytes");
    assert!(bulk.draft.detail["sql_sha256"].is_string());
    assert_eq!(
        bulk.draft.detail["statements"]["more_by_kind"]["INSERT (write)"],
        600 - 32
    );
}

#[test]
fn a_syntax_error_is_the_parser_s_own_answer_without_a_hint_about_grants() {
    let e = block(async {
        let c = client("worker", "staging").await;
        let e = c.simple_query("SELEC 1").await.unwrap_err();
        // The session goes on as after any server error.
        assert_eq!(value(&c, "SELECT 2").await, "2");
        e
    });
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42601");
    assert!(
        db.message().contains("syntax error at or near"),
        "{}",
        db.message()
    );
    assert!(db.hint().is_none(), "{:?}", db.hint());
}

#[test]
fn a_syntax_error_points_where_the_server_would() {
    let texts = [
        "SELEC 1",
        "SELECT 1 FROM FROM items",
        "SELECT (1",
        "SELECT a FROM items WHERE a = 1 AND AND b",
        "SELECT 'é', 'ü' FROM FROM items",
        "SELECT 1;\nSELECT 2 FROM WHERE",
        "SELECT 'unterminated",
    ];
    let (through, direct) = block(async {
        let c = client("worker", "staging").await;
        let (d, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=belay password=upstream-secret dbname=staging",
                harness().cluster.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let answer = |e: tokio_postgres::Error| {
            let db = e.as_db_error().unwrap().clone();
            let position = match db.position() {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                _ => None,
            };
            (
                db.code().code().to_owned(),
                db.message().to_owned(),
                position,
            )
        };
        let (mut through, mut direct) = (Vec::new(), Vec::new());
        for text in texts {
            through.push(answer(c.simple_query(text).await.unwrap_err()));
            direct.push(answer(d.simple_query(text).await.unwrap_err()));
        }
        (through, direct)
    });
    for ((text, through), direct) in texts.iter().zip(&through).zip(&direct) {
        assert_eq!(through, direct, "{text}");
        assert!(through.2.is_some(), "{text}: {through:?}");
    }
}

#[test]
fn refused_startups_are_recorded_and_failed_logins_cannot_flood_the_log() {
    // A gateway of its own: its count of refusals per source starts at zero.
    let h = harness();
    let (addr, _stop) = start_gateway(&h.runtime, h.app.clone(), belay_pg::Options::default());
    let before = harness().app.store().head_seq().unwrap();
    let err = block(async {
        let token = harness().tokens["worker"].expose().to_owned();
        Raw::connect(
            addr,
            &[
                ("user", "worker"),
                ("database", "staging"),
                ("options", "-c work_mem=1TB"),
            ],
            &token,
        )
        .await
        .err()
        .unwrap()
    });
    assert_eq!(err.code, "08P01");
    let events = harness().app.store().events(before + 1, 10_000).unwrap();
    assert!(
        events.iter().any(|e| e.draft.kind == "connection"
            && e.draft.outcome.as_deref() == Some("refused")
            && e.draft.reasons.iter().any(|r| r.contains("options"))),
        "the refused startup is recorded"
    );
    let before = harness().app.store().head_seq().unwrap();
    for _ in 0..40 {
        let err = block(async {
            Raw::connect(
                addr,
                &[("user", "worker"), ("database", "staging")],
                "belay_agent_wrong",
            )
            .await
            .err()
            .unwrap()
        });
        assert_eq!(err.code, "28P01");
    }
    let written = harness()
        .app
        .store()
        .events(before + 1, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.draft.kind == "connection" && e.draft.outcome.as_deref() == Some("refused"))
        .count();
    // At most ten per source and minute (twice that if a minute turns during the test).
    assert!(written <= 20, "{written} refusals recorded one by one");
}

#[test]
fn a_portal_dies_with_its_transaction_and_a_cursor_of_its_name_is_not_mistaken_for_it() {
    let got = block(async {
        let mut c = Raw::agent("worker", "staging").await;
        c.send(&[parse("s1", "SELECT 1"), bind("p1", "s1"), Frontend::Sync])
            .await;
        c.until_ready().await;
        // The portal ended with its implicit transaction; a SQL cursor now has its name.
        c.send(&[Frontend::Query(
            "DECLARE p1 CURSOR WITH HOLD FOR SELECT 'the cursor'".to_owned(),
        )])
        .await;
        c.until_ready().await;
        c.send(&[execute("p1"), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["34000".to_owned()], "{got:?}");
    assert!(
        !got.iter()
            .any(|m| matches!(m, Backend::Other(f) if f.tag == b'D')),
        "nothing ran as the old portal: {got:?}"
    );
}

#[test]
fn sessions_are_capped_per_agent_and_per_environment_and_a_closed_one_frees_its_place() {
    let (per_agent, per_env, after_close) = block(async {
        let a = client("worker", "capped").await;
        let _b = client("worker", "capped").await;
        let per_agent = refused(&conn_string(harness().addr, "worker", "capped")).await;
        let _c = client("capper", "capped").await;
        let per_env = refused(&conn_string(harness().addr, "reader", "capped")).await;
        drop(a);
        // The session ends when belay sees the client go.
        let mut after = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok((c, conn)) = tokio_postgres::connect(
                &conn_string(harness().addr, "reader", "capped"),
                tokio_postgres::NoTls,
            )
            .await
            {
                tokio::spawn(conn);
                after = Some(c);
                break;
            }
        }
        (per_agent, per_env, after.is_some())
    });
    let db = per_agent.as_db_error().unwrap();
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("max_connections_per_agent"),
        "{}",
        db.message()
    );
    let db = per_env.as_db_error().unwrap();
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("environment `capped`"),
        "{}",
        db.message()
    );
    assert!(after_close, "a closed session gives its place back");
}

#[test]
fn idle_timeouts_are_pinned_from_the_environment_s_limits() {
    let (idle_session, idle_in_transaction) = block(async {
        let c = client("worker", "staging").await;
        (
            value(&c, "SHOW idle_session_timeout").await,
            value(&c, "SHOW idle_in_transaction_session_timeout").await,
        )
    });
    assert_eq!(idle_session, "1h");
    assert_eq!(idle_in_transaction, "2min");
}

#[test]
fn rows_larger_than_any_buffer_stream_through_and_an_oversized_text_is_refused_unread() {
    // A 70 MB value is more than belay frames whole (64 MB): it streams through.
    let (len, copied) = block(async {
        let c = client("reader", "staging").await;
        let len = value(&c, "SELECT length(repeat('x', 70 * 1024 * 1024))").await;
        let rows = c
            .simple_query("SELECT repeat('x', 70 * 1024 * 1024) AS big")
            .await
            .unwrap();
        let got = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().len()),
                _ => None,
            })
            .unwrap();
        assert_eq!(len, got.to_string());
        let stream = c
            .copy_out("COPY (SELECT repeat('y', 300000) FROM generate_series(1, 3)) TO STDOUT")
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        let mut copied = 0;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            copied += chunk.unwrap().len();
        }
        (got, copied)
    });
    assert_eq!(len, 70 * 1024 * 1024);
    assert_eq!(copied, 3 * 300_001);

    // A text longer than belay reads is read past and refused; the session goes on.
    let before = harness().app.store().head_seq().unwrap();
    let (code_seen, after) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        let huge = format!("SELECT '{}'", "z".repeat(3 * 1024 * 1024));
        c.send(&[Frontend::Query(huge)]).await;
        let answer = c.until_ready().await;
        c.send(&[Frontend::Query("SELECT 1".to_owned())]).await;
        (errors(&answer), c.until_ready().await)
    });
    assert_eq!(code_seen, vec!["54000".to_owned()]);
    assert!(errors(&after).is_empty(), "{after:?}");
    let events = harness().app.store().events(before + 1, 10_000).unwrap();
    assert!(events.iter().any(|e| e.draft.kind == "statement"
        && e.draft.verdict.as_deref() == Some("deny")
        && e.draft
            .reasons
            .iter()
            .any(|r| r.contains("bytes, more than belay reads"))));
}

#[test]
fn past_the_memory_budget_sessions_still_move_everything_a_little_at_a_time() {
    let h = harness();
    let options = belay_pg::Options {
        memory_budget: 0,
        ..belay_pg::Options::default()
    };
    let (addr, _stop) = start_gateway(&h.runtime, h.app.clone(), options);
    let total = block(async {
        let (c, conn) = tokio_postgres::connect(
            &conn_string(addr, "reader", "staging"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let rows = c
            .simple_query("SELECT repeat('x', 10000) FROM generate_series(1, 500)")
            .await
            .unwrap();
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().len()),
                _ => None,
            })
            .sum::<usize>()
    });
    assert_eq!(total, 500 * 10_000);
}

#[test]
fn a_client_asking_for_protocol_3_2_is_told_3_0_and_goes_on() {
    let (negotiated, rows) = block(async {
        let token = harness().tokens["reader"].expose().to_owned();
        let stream: Box<dyn Stream> = Box::new(TcpStream::connect(harness().addr).await.unwrap());
        let startup = Startup::Newer {
            minor: 2,
            params: vec![
                ("user".to_owned(), "reader".to_owned()),
                ("database".to_owned(), "staging".to_owned()),
                ("_pq_.future_option".to_owned(), "on".to_owned()),
            ],
        };
        // The first answer is NegotiateProtocolVersion: 3.0, and the option it does not know.
        let mut probe = stream;
        let mut out = BytesMut::new();
        startup.encode(&mut out);
        probe.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let first = loop {
            if let Some(f) = codec::read_frame(&mut buf, 1 << 20).unwrap() {
                break f;
            }
            probe.read_buf(&mut buf).await.unwrap();
        };
        drop(probe);
        let stream: Box<dyn Stream> = Box::new(TcpStream::connect(harness().addr).await.unwrap());
        let mut c = Raw::start_with(stream, startup, &token).await.unwrap();
        c.send(&[Frontend::Query("SELECT 1".to_owned())]).await;
        (first, c.until_ready().await)
    });
    assert_eq!(negotiated.tag, b'v');
    assert_eq!(&negotiated.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(negotiated.body.ends_with(b"_pq_.future_option\0"));
    assert!(errors(&rows).is_empty(), "{rows:?}");
}

#[test]
fn read_summaries_keep_each_distinct_statement_redacted_with_its_count() {
    let before = harness().app.store().head_seq().unwrap();
    let texts = block(async {
        let c = client("summarised", "staging").await;
        for id in [7, 8, 9] {
            c.simple_query(&format!(
                "SELECT name FROM items WHERE id = {id} AND name <> 'secret-{id}'"
            ))
            .await
            .unwrap();
        }
        c.simple_query("SELECT id FROM items WHERE id = 1")
            .await
            .unwrap();
        let mut texts = Vec::new();
        for _ in 0..200 {
            let events = harness().app.store().events(before + 1, 10_000).unwrap();
            texts = events
                .iter()
                .filter(|e| {
                    e.draft.kind == "statement.reads" && e.draft.actor == "agent:summarised"
                })
                .flat_map(|e| {
                    e.draft.detail["texts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|t| {
                    (
                        t["sql"].as_str().unwrap().to_owned(),
                        t["count"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>();
            if texts.iter().map(|(_, n)| n).sum::<u64>() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        texts
    });
    let all = format!("{texts:?}");
    assert!(!all.contains("secret-"), "constants are redacted: {all}");
    assert!(
        texts
            .iter()
            .any(|(sql, n)| sql.starts_with("SELECT name FROM items WHERE id = $1") && *n == 3),
        "{all}"
    );
    assert!(
        texts
            .iter()
            .any(|(sql, n)| sql == "SELECT id FROM items WHERE id = $1" && *n == 1),
        "{all}"
    );
}

#[test]
fn a_message_left_half_sent_ends_the_session_instead_of_holding_it_forever() {
    let last = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        // A Query that says it is 100 bytes long, and 5 of them.
        c.stream
            .write_all(&[b'Q', 0, 0, 0, 104, b'S', b'E', b'L', b'E', b'C'])
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = codec::read_frame(&mut buf, 1 << 20).unwrap() {
                break Backend::decode(&frame).unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(60), c.stream.read_buf(&mut buf))
                .await
                .expect("the gateway ends the session within a minute")
                .unwrap();
            assert!(n > 0, "closed without a word");
        }
    });
    match last {
        Backend::ErrorResponse(e) => {
            assert_eq!(e.code, "08P01");
            assert!(e.message.contains("part of a message"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}
