//! The server as a witness: a real PostgreSQL logs every statement it runs (`log_statement =
//! 'all'`), a generated corpus goes through the gateway (statements × client encodings ×
//! environments × protocol paths, hostile ones among them), and every statement the server
//! ran for an agent must be one belay decided and allowed, as its audit log says. This
//! catches a parser divergence whatever it is: belay would have recorded one text and the
//! server run another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use belay_app::{App, AppGate};
use belay_config::{Config, Env};
use belay_core::Class;
use belay_scratch::Cluster;

struct FilesOnly;
impl Env for FilesOnly {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Statements of every class and of the shapes that have fooled proxies: smuggling through
/// encodings and string syntax, settings by every spelling, catalog writes, another
/// environment's database, several statements in one text.
const CORPUS: &[&str] = &[
    "SELECT id, name FROM items WHERE id = 3",
    "SELECT count(*) FROM items",
    "SHOW work_mem",
    "EXPLAIN SELECT * FROM items WHERE id = 1",
    "SELECT 'caf\u{e9}' AS word",
    "INSERT INTO notes VALUES (1, 'from the witness')",
    "UPDATE notes SET body = 'changed' WHERE id = 1",
    "DELETE FROM notes WHERE id = 1",
    "BEGIN; INSERT INTO notes VALUES (2, 'in a block'); COMMIT",
    "SELECT 1; SELECT 2; SELECT 3",
    "CREATE TABLE IF NOT EXISTS witness_scratch (id int)",
    "SET work_mem = '64MB'",
    "SET work_mem = '4GB'",
    "SET statement_timeout = '5s'",
    "SET statement_timeout = 0",
    "SET client_encoding = 'windows932'",
    "SET NAMES 'LATIN1'",
    "SET client_encoding = 'UTF8'",
    "SELECT set_config('client_encoding', 'WIN' || '936', false)",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SET standard_conforming_strings = off",
    "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
    "SET x.y = E'\u{c1}\\'; SET transaction_read_only = off; UPDATE items SET name = $$pwned$$ WHERE id = 1; --'",
    "SET x.y = 'a\\'; DELETE FROM items; --'",
    "SELECT E'\\x27; DELETE FROM items; --'",
    "SELECT $q$ '; DELETE FROM items; -- $q$",
    "DROP DATABASE IF EXISTS production WITH (FORCE)",
    "COMMENT ON DATABASE production IS 'owned'",
    "ALTER DATABASE production CONNECTION LIMIT 0",
    "SELEC 1",
    "SELECT pg_sleep(0)",
    "SELECT nextval('witness_seq')",
    "COPY items TO STDOUT",
];

struct Run {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    app: Arc<App>,
}

fn setup() -> (
    Run,
    tokio::runtime::Runtime,
    std::net::SocketAddr,
    BTreeMap<&'static str, String>,
) {
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster = Cluster::start(&dir.path().join("pg"), None).unwrap();
    cluster.stop_when_gone(std::process::id()).unwrap();
    for sql in [
        "CREATE ROLE belay LOGIN PASSWORD 'pw'",
        "CREATE ROLE belay_read LOGIN PASSWORD 'pw'",
        "ALTER ROLE belay_read SET default_transaction_read_only = on",
        "CREATE DATABASE staging OWNER belay",
        "CREATE DATABASE production OWNER belay",
        "ALTER SYSTEM SET log_statement = 'all'",
        "ALTER SYSTEM SET log_line_prefix = '@@@%a@@@ '",
        "SELECT pg_reload_conf()",
    ] {
        cluster.psql("postgres", sql).unwrap();
    }
    for db in ["staging", "production"] {
        cluster
            .psql(
                db,
                "SET ROLE belay; CREATE TABLE items (id int PRIMARY KEY, name text); \
                 INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) i; \
                 CREATE TABLE notes (id int, body text); CREATE SEQUENCE witness_seq; \
                 GRANT USAGE ON SCHEMA public TO belay_read; \
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO belay_read",
            )
            .unwrap();
    }
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    std::fs::write(
        dir.path().join("policy.cedar"),
        belay_policy::DEFAULT_POLICY,
    )
    .unwrap();
    let env = |name: &str, tier: &str, read: &str| {
        format!(
            "[environments.{name}]\ntier = \"{tier}\"\n\
             [environments.{name}.postgres.main]\nhost = \"127.0.0.1\"\nport = {}\n\
             database = \"{name}\"\nuser = \"belay\"\npassword = {{ file = \"pw\" }}\n{read}\
             failure_domain = \"db\"\n",
            cluster.port
        )
    };
    let text = format!(
        "state_dir = \"state\"\npolicy = \"policy.cedar\"\n{}{}",
        env("staging", "non-production", ""),
        env(
            "production",
            "production",
            "read_user = \"belay_read\"\nread_password = { file = \"pw\" }\n"
        )
    );
    let path = dir.path().join("belay.toml");
    std::fs::write(&path, text).unwrap();
    let app = Arc::new(App::open(Config::load(&path, &FilesOnly).unwrap()).unwrap());
    app.add_human("test", "owner").unwrap();
    let mut tokens = BTreeMap::new();
    let grants = [
        ("staging".to_owned(), Class::Destructive),
        ("production".to_owned(), Class::Read),
    ]
    .into_iter()
    .collect();
    let (_, token) = app
        .add_agent("test", "worker", "owner", &grants, None)
        .unwrap();
    tokens.insert("worker", token.expose().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    runtime.spawn(belay_pg::serve(
        listener,
        Arc::new(AppGate::new(app.clone())),
        belay_pg::Options::default(),
        stopped,
    ));
    (
        Run {
            _dir: dir,
            cluster,
            app,
        },
        runtime,
        addr,
        tokens,
    )
}

/// Every corpus statement, in every environment, client encoding and protocol path: psql
/// (the simple protocol) under each encoding, tokio-postgres (UTF8) for the extended
/// protocol and for pipelines. psql blocks this thread; the gateway runs on its own runtime.
async fn drive(addr: std::net::SocketAddr, token: &str) {
    for env in ["staging", "production"] {
        for encoding in ["UTF8", "LATIN1", "EUC_JP", "windows932", "Windows-949"] {
            for sql in CORPUS {
                let _ = std::process::Command::new("psql")
                    .args([
                        "-X",
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &addr.port().to_string(),
                    ])
                    .args(["-U", "worker", "-d", env, "-c", sql])
                    .env("PGPASSWORD", token)
                    .env("PGCLIENTENCODING", encoding)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap();
            }
        }
        let conn = format!(
            "host=127.0.0.1 port={} user=worker password={token} dbname={env}",
            addr.port()
        );
        let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        for sql in CORPUS {
            let _ = c.simple_query(sql).await;
            // The extended protocol, where the text is one statement.
            if !sql.contains(';') {
                let _ = c.query(*sql, &[]).await;
            }
        }
        // Pipelined: several texts before the first answer.
        for chunk in CORPUS.chunks(4) {
            if let [a, b, cc, d] = chunk {
                let _ = tokio::join!(
                    c.simple_query(a),
                    c.simple_query(b),
                    c.simple_query(cc),
                    c.simple_query(d)
                );
            }
        }
    }
}

/// The statements the server logged for agents' sessions (application_name `belay:...`),
/// as it ran them.
fn server_statements(log: &str) -> Vec<String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("@@@") {
            if let Some((app, message)) = rest.split_once("@@@ ") {
                entries.push((app.to_owned(), message.to_owned()));
                continue;
            }
        }
        // A continuation of the previous entry (a statement of several lines).
        if let Some(last) = entries.last_mut() {
            last.1.push('\n');
            last.1.push_str(line.strip_prefix('\t').unwrap_or(line));
        }
    }
    entries
        .into_iter()
        .filter(|(app, _)| {
            app.starts_with("belay:")
                && app != "belay:inspection"
                && app != "belay:catalog"
                && app != "belay:ledger"
        })
        .fold(Vec::new(), |mut ran: Vec<String>, (_, message)| {
            if let Some(body) = message.strip_prefix("LOG:  ") {
                if let Some(sql) = body.strip_prefix("statement: ") {
                    ran.push(sql.to_owned());
                } else if let Some((_, sql)) = body
                    .strip_prefix("execute ")
                    .and_then(|rest| rest.split_once(": "))
                {
                    ran.push(sql.to_owned());
                }
            } else if let Some(values) = message.strip_prefix("DETAIL:  parameters: ") {
                // The values bound to belay's prepared ledger INSERT, put where they go.
                if let Some(last) = ran.last_mut().filter(|l| **l == LEDGER_PREPARED) {
                    let quoted: Vec<String> = literals(values)
                        .iter()
                        .map(|v| format!("'{}'", v.replace('\'', "''")))
                        .collect();
                    *last = format!("{LEDGER_INSERT}{})", quoted.join(", "));
                }
            }
            ran
        })
}

/// belay's ledger INSERT as it prepares it.
const LEDGER_PREPARED: &str =
    "INSERT INTO belay_ledger.decisions (key, store, event) VALUES ($1, $2, $3)";

/// `sql` with belay's preparation of its ledger INSERT taken off its start, and a run of the
/// prepared INSERT (`EXECUTE`) written as the INSERT it runs.
fn ledger_run_as_insert(sql: &str) -> std::borrow::Cow<'_, str> {
    let prepare = format!("PREPARE belay_ledger AS {LEDGER_PREPARED}; ");
    let sql = sql.strip_prefix(prepare.as_str()).unwrap_or(sql);
    match sql.strip_prefix("EXECUTE belay_ledger(") {
        Some(args) => format!("{LEDGER_INSERT}{args}").into(),
        None => sql.into(),
    }
}

/// The statements in the server's log `log` that no allowed decision in `events` explains,
/// and how many read texts the audit log only counted (without them no check is whole).
fn unexplained(events: &[belay_audit::Event], ran: &[String]) -> (Vec<String>, u64) {
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    let mut hashes: BTreeSet<String> = BTreeSet::new();
    let mut ledger_keys: BTreeSet<String> = BTreeSet::new();
    let mut uncounted = 0;
    for e in events {
        match e.draft.kind.as_str() {
            "statement" if e.draft.verdict.as_deref() == Some("allow") => {
                if let Some(key) = e.draft.detail["ledger"].as_str() {
                    ledger_keys.insert(key.to_owned());
                }
                if let Some(sql) = e.draft.detail["sql"].as_str() {
                    allowed.insert(sql.to_owned());
                }
                if let Some(h) = e.draft.detail["sql_sha256"].as_str() {
                    hashes.insert(h.to_owned());
                }
                // What belay sent upstream instead of the client's text.
                if let Some(sql) = e.draft.detail["forwarded"]["sql"].as_str() {
                    allowed.insert(sql.to_owned());
                }
                if let Some(h) = e.draft.detail["forwarded"]["sql_sha256"].as_str() {
                    hashes.insert(h.to_owned());
                }
            }
            "statement.reads" => {
                for t in e.draft.detail["texts"].as_array().into_iter().flatten() {
                    allowed.insert(t["sql"].as_str().unwrap_or_default().to_owned());
                }
                uncounted += e.draft.detail["other_texts"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    let mut unexplained = Vec::new();
    for sql in ran {
        // An approved statement in a session pinned read-only runs behind belay's own prefix.
        let sql = sql
            .strip_prefix("SET transaction_read_only = off; ")
            .unwrap_or(sql);
        let sql = &*ledger_run_as_insert(sql);
        let mut redacted = belay_sql::redact(sql).unwrap_or_else(|| "(does not parse)".to_owned());
        // Before a COMMIT, belay's own row for the block's decisions, in its ledger: its keys
        // are those of allowed decisions in the audit log.
        if redacted.starts_with(LEDGER_INSERT) {
            let (own, client) = split_ledger_insert(sql);
            if !ledger_rows_explained(own, &ledger_keys) {
                unexplained.push(sql.to_owned());
                continue;
            }
            match client {
                Some(client) => {
                    redacted =
                        belay_sql::redact(client).unwrap_or_else(|| "(does not parse)".to_owned())
                }
                // Alone: run ahead of the Execute of a COMMIT or a write.
                None => continue,
            }
        }
        let hash = belay_audit::fingerprint(&[&redacted]);
        if !allowed.contains(&redacted) && !hashes.contains(&hash) {
            unexplained.push(sql.to_owned());
        }
    }
    (unexplained, uncounted)
}

/// How belay's row for a transaction's decisions in an upstream's ledger begins, redacted.
const LEDGER_INSERT: &str = "INSERT INTO belay_ledger.decisions (key, store, event) VALUES (";

/// belay's ledger INSERT at the start of `sql`, and the client's text after it, if any: the
/// first `; ` outside a string literal ends the INSERT.
fn split_ledger_insert(sql: &str) -> (&str, Option<&str>) {
    let bytes = sql.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' if quoted && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => quoted = !quoted,
            b';' if !quoted && bytes.get(i + 1) == Some(&b' ') => {
                return (&sql[..i], Some(&sql[i + 2..]));
            }
            _ => {}
        }
        i += 1;
    }
    (sql, None)
}

/// Whether the ledger INSERT `sql` writes one row, for one transaction, whose keys are those of
/// allowed decisions in `keys`, and whose events are those decisions (each names its key).
fn ledger_rows_explained(sql: &str, keys: &BTreeSet<String>) -> bool {
    let Some((_, values)) = sql.split_once(" VALUES (") else {
        return false;
    };
    let fields = literals(values);
    let [row_keys, _store, events] = fields.as_slice() else {
        return false;
    };
    let row_keys: BTreeSet<&str> = row_keys.split(' ').collect();
    let Ok(serde_json::Value::Array(events)) = serde_json::from_str(events) else {
        return false;
    };
    let named: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["detail"]["ledger"].as_str())
        .collect();
    !row_keys.is_empty()
        && named.len() == events.len()
        && named == row_keys
        && row_keys.iter().all(|k| keys.contains(*k))
}

/// The string literals of `sql`, in order, with their quotes undoubled.
fn literals(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut text = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    break;
                }
            }
            text.push(c);
        }
        out.push(text);
    }
    out
}

#[test]
fn every_statement_the_server_ran_is_one_belay_allowed() {
    let (run, runtime, addr, tokens) = setup();
    runtime.block_on(drive(addr, &tokens["worker"]));
    // Read summaries are written at least every second, and recorded events within 50 ms.
    std::thread::sleep(Duration::from_millis(2500));
    let events = run.app.store().events(1, 1_000_000).unwrap();
    let ran = server_statements(&run.cluster.log());
    assert!(
        ran.len() > 100,
        "the corpus ran: {} statements logged",
        ran.len()
    );
    let (unexplained, uncounted) = unexplained(&events, &ran);
    assert_eq!(uncounted, 0, "every read text was kept one by one");
    assert!(
        unexplained.is_empty(),
        "the server ran statements belay did not allow:\n{}",
        unexplained.join("\n---\n")
    );
    // And what belay refused never ran (the smuggling line ran, as the one SET of a custom
    // setting that belay read it as: its UPDATE changed nothing, below).
    for refused in [
        "DROP DATABASE",
        "pg_settings",
        "'windows932'",
        "WIN' || '936",
        "SELEC 1",
    ] {
        assert!(
            !ran.iter().any(|s| s.contains(refused)),
            "`{refused}` reached the server"
        );
    }
    assert_eq!(
        run.cluster
            .psql(
                "production",
                "SELECT count(*) FROM items WHERE name = 'pwned'"
            )
            .unwrap(),
        "0"
    );
}

/// The gateway's own test suite (`tests/gateway/`: every bypass, every protocol path, TLS,
/// approvals, limits) run once more with its server logging every statement: every statement
/// the server ran for an agent must be one belay allowed there too. The suite's binary is the
/// one cargo built beside this one.
#[test]
fn every_statement_the_gateway_suite_ran_is_one_belay_allowed() {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let suite = std::fs::read_dir(deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gateway-") && !n.contains('.'))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no gateway test binary beside {}: build it with `cargo test -p belay-app --no-run`",
                me.display()
            )
        });
    let witness = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&suite)
        .env("BELAY_WITNESS_DIR", witness.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the gateway suite failed under the witness:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_dir(witness.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("belay.toml").exists())
        .expect("the suite's directory");
    let app = App::open(Config::load(&run.join("belay.toml"), &FilesOnly).unwrap()).unwrap();
    let events = app.store().events(1, 10_000_000).unwrap();
    let log = std::fs::read_to_string(run.join("pg").join("server.log")).unwrap();
    let ran = server_statements(&log);
    assert!(
        ran.len() > 200,
        "the suite ran: {} statements logged",
        ran.len()
    );
    // The check can fail: without belay's decisions nothing would be explained.
    assert_eq!(unexplained(&[], &ran).0.len(), ran.len());
    let (unexplained, uncounted) = unexplained(&events, &ran);
    assert!(
        unexplained.is_empty(),
        "the server ran statements belay did not allow ({uncounted} read texts only counted):\n{}",
        unexplained.join("\n---\n")
    );
}
