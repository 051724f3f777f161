//! Human approval of held statements, over the wire: a real PostgreSQL (a scratch cluster
//! started here), agents on tokio-postgres, humans through `App` and the HTTP API, and a
//! webhook receiver on loopback. What must not have run is checked upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use belay_app::{App, AppGate, Retry};
use belay_config::{Config, Env};
use belay_core::{Class, Secret};
use belay_scratch::Cluster;
use belay_store::{ApprovalStatus, Human};

struct FilesOnly;
impl Env for FilesOnly {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Environments (all production, all on one database each), with what sets them apart.
const ENVIRONMENTS: &[(&str, &str)] = &[
    ("production", ""),
    ("vault", ""),
    ("brief", ""),
    ("waiting", "approval_wait = \"30s\"\n"),
    ("lingering", "approval_wait = \"10min\"\n"),
    ("notified", "notify_webhook = { file = \"webhook-url\" }\n"),
];

/// The default policy, and three holds of the test's own.
const EXTRA_POLICY: &str = r#"
@id("vault-two-person")
@approvals("2")
@reason("the vault needs two people")
forbid (principal, action == Belay::Action::"destructive", resource == Belay::Environment::"vault");

@id("brief-hold")
@approvals("1")
@expires("2s")
@run_within("2s")
@reason("brief approvals")
forbid (principal, action == Belay::Action::"destructive", resource == Belay::Environment::"brief");
"#;

struct World {
    dir: tempfile::TempDir,
    cluster: Cluster,
    app: Arc<App>,
    _runtime: tokio::runtime::Runtime,
    gateway: SocketAddr,
    http: SocketAddr,
    agents: BTreeMap<&'static str, Secret>,
    humans: BTreeMap<&'static str, (Human, Secret)>,
    webhook: Mutex<mpsc::Receiver<String>>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cluster = Cluster::start(&dir.path().join("pg"), None).unwrap();
        cluster.stop_when_gone(std::process::id()).unwrap();
        cluster
            .psql("postgres", "CREATE ROLE belay LOGIN PASSWORD 'upstream-secret'")
            .unwrap();
        let mut config = String::from("state_dir = \"state\"\npolicy = \"policy.cedar\"\n");
        for (env, extra) in ENVIRONMENTS {
            cluster
                .psql("postgres", &format!("CREATE DATABASE {env} OWNER belay"))
                .unwrap();
            config.push_str(&format!(
                "[environments.{env}]\ntier = \"production\"\n{extra}\
                 [environments.{env}.postgres.main]\nhost = \"127.0.0.1\"\nport = {}\n\
                 database = \"{env}\"\nuser = \"belay\"\npassword = {{ file = \"upstream-password\" }}\n\
                 failure_domain = \"db\"\n",
                cluster.port
            ));
        }
        std::fs::write(dir.path().join("upstream-password"), "upstream-secret\n").unwrap();
        let (hook, bodies) = webhook_receiver();
        std::fs::write(dir.path().join("webhook-url"), format!("http://{hook}/hooks/T0/B0/secret\n")).unwrap();
        std::fs::write(
            dir.path().join("policy.cedar"),
            format!("{}\n{EXTRA_POLICY}", belay_policy::DEFAULT_POLICY),
        )
        .unwrap();
        let path = dir.path().join("belay.toml");
        std::fs::write(&path, config).unwrap();
        let mut app = App::open(Config::load(&path, &FilesOnly).unwrap()).unwrap();
        app.set_notify_retry(Retry {
            attempts: 4,
            first_backoff: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        });
        let app = Arc::new(app);
        let mut humans = BTreeMap::new();
        for name in ["alice", "bob"] {
            humans.insert(name, app.add_human("test", name).unwrap());
        }
        let all = |class: Class| -> BTreeMap<String, Class> {
            ENVIRONMENTS.iter().map(|(e, _)| ((*e).to_owned(), class)).collect()
        };
        let mut agents = BTreeMap::new();
        for (name, class) in [
            ("reader", Class::Read),
            ("writer", Class::Write),
            ("flooder", Class::Write),
        ] {
            let (_, token) = app.add_agent("test", name, "alice", &all(class), None).unwrap();
            agents.insert(name, token);
        }
        let Gateway {
            runtime,
            addr: gateway,
            stop,
            ..
        } = start_gateway(&app);
        std::mem::forget(stop);
        let http_listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let http = http_listener.local_addr().unwrap();
        runtime.spawn(belay_app::http::serve(http_listener, app.clone(), std::future::pending()));
        World {
            dir,
            cluster,
            app,
            _runtime: runtime,
            gateway,
            http,
            agents,
            humans,
            webhook: Mutex::new(bodies),
        }
    })
}

/// A webhook that fails its first delivery (HTTP 500) and accepts the rest; every body it
/// receives goes to the channel.
fn webhook_receiver() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    .as_bytes(),
            );
            let _ = tx.send(format!(
                "{} {}",
                request_line.trim(),
                String::from_utf8_lossy(&body)
            ));
        }
    });
    (addr, rx)
}

/// A gateway in front of `app`, on a runtime of its own.
struct Gateway {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start_gateway(app: &Arc<App>) -> Gateway {
    start_gateway_with(app, belay_pg::Options::default())
}

fn start_gateway_with(app: &Arc<App>, options: belay_pg::Options) -> Gateway {
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
    let server = runtime.spawn(belay_pg::serve(
        listener,
        Arc::new(AppGate::new(app.clone())),
        options,
        stopped,
    ));
    Gateway {
        runtime,
        addr,
        stop,
        server,
    }
}

/// A second belay on the world's state and configuration, to stop or break on its own.
fn second_belay() -> (Arc<App>, Gateway) {
    let config = Config::load(&world().dir.path().join("belay.toml"), &FilesOnly).unwrap();
    let app = Arc::new(App::open(config).unwrap());
    let gateway = start_gateway(&app);
    (app, gateway)
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    let _ = world();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn client(agent: &str, env: &str) -> tokio_postgres::Client {
    client_at(world().gateway, agent, env).await
}

async fn client_at(gateway: SocketAddr, agent: &str, env: &str) -> tokio_postgres::Client {
    let conn = format!(
        "host=127.0.0.1 port={} user={agent} password={} dbname={env}",
        gateway.port(),
        world().agents[agent].expose()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{agent} cannot connect to {env}: {e}"));
    tokio::spawn(connection);
    client
}

fn upstream(env: &str, sql: &str) -> String {
    world().cluster.psql(env, sql).unwrap()
}

/// Creates what a test works on, owned by the role belay logs in as.
fn setup(env: &str, sql: &str) {
    upstream(env, &format!("SET ROLE belay; {sql}"));
}

/// Runs `sql` as a simple query; the error's SQLSTATE, message and hint, or `None`.
async fn run(c: &tokio_postgres::Client, sql: &str) -> Option<(String, String, String)> {
    c.simple_query(sql).await.err().map(|e| {
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("not a database error: {e}"));
        (
            db.code().code().to_owned(),
            db.message().to_owned(),
            db.hint().unwrap_or_default().to_owned(),
        )
    })
}

/// The approval request id a refusal names.
fn request_id(message: &str) -> u64 {
    message
        .split("approval request ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request id in `{message}`"))
}

fn human(name: &str) -> &'static Human {
    &world().humans[name].0
}

fn approve(id: u64, by: &str) -> belay_store::Approval {
    world()
        .app
        .approve(human(by), id, Some("looks right"), belay_app::CHANNEL_CLI)
        .unwrap()
}

/// In another thread: waits for `action`'s pending request in `app`, then runs `then` on it.
fn when_pending<T: Send + 'static>(
    app: Arc<App>,
    action: &'static str,
    then: impl FnOnce(&belay_store::Approval) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        for _ in 0..300 {
            let pending = app.approvals(&[ApprovalStatus::Pending], 1000).unwrap();
            if let Some(a) = pending.iter().find(|a| a.request.action == action) {
                return then(a);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("`{action}` never became a pending request");
    })
}

#[test]
fn approved_once_runs_once_and_one_byte_different_is_refused() {
    upstream(
        "production",
        "CREATE TABLE IF NOT EXISTS doomed (id int); CREATE TABLE IF NOT EXISTS kept (id int)",
    );
    let (first, other, one_byte, after, again) = block(async {
        let c = client("reader", "production").await;
        let first = run(&c, "DROP TABLE doomed").await.unwrap();
        approve(request_id(&first.1), "alice");
        let other = run(&c, "DROP TABLE kept").await.unwrap();
        let one_byte = run(&c, "DROP TABLE doomed ").await.unwrap();
        let after = run(&c, "DROP TABLE doomed").await;
        let again = run(&c, "DROP TABLE doomed").await.unwrap();
        (first, other, one_byte, after, again)
    });
    assert_eq!(first.0, belay_pg::SQLSTATE_APPROVAL, "{first:?}");
    let id = request_id(&first.1);
    assert!(
        first.2.contains(&format!("belay approve {id}")),
        "{first:?}"
    );
    assert!(first.2.contains("exactly once"), "{first:?}");
    // Another statement and the same one with one more byte are not covered.
    assert_eq!(other.0, belay_pg::SQLSTATE_APPROVAL);
    assert_ne!(request_id(&other.1), id);
    assert_eq!(one_byte.0, belay_pg::SQLSTATE_APPROVAL);
    assert_ne!(request_id(&one_byte.1), id);
    assert_eq!(
        upstream("production", "SELECT to_regclass('kept') IS NOT NULL"),
        "t"
    );
    // The identical statement ran, once.
    assert_eq!(after, None);
    assert_eq!(
        upstream("production", "SELECT to_regclass('doomed') IS NULL"),
        "t"
    );
    assert_eq!(again.0, belay_pg::SQLSTATE_APPROVAL);
    assert_ne!(request_id(&again.1), id);
    let used = world().app.approval(id).unwrap();
    assert_eq!(used.status, ApprovalStatus::Executed);
    assert!(used.executed_us.is_some());
    // A used approval cannot be approved again.
    assert!(world()
        .app
        .approve(human("bob"), id, None, belay_app::CHANNEL_CLI)
        .is_err());
}

#[test]
fn a_prepared_statement_is_approved_with_its_parameters() {
    setup("production", "CREATE TABLE IF NOT EXISTS labels (id int, name text); INSERT INTO labels VALUES (1, 'a'), (2, 'b')");
    let sql = "UPDATE labels SET name = $1";
    let (first, other, ran, again) = block(async {
        let c = client("writer", "production").await;
        let held = |e: tokio_postgres::Error| {
            let db = e.as_db_error().unwrap();
            (db.code().code().to_owned(), db.message().to_owned())
        };
        let first = held(c.execute(sql, &[&"approved"]).await.unwrap_err());
        approve(request_id(&first.1), "alice");
        let other = held(c.execute(sql, &[&"something else"]).await.unwrap_err());
        let ran = c.execute(sql, &[&"approved"]).await.unwrap();
        let again = held(c.execute(sql, &[&"approved"]).await.unwrap_err());
        (first, other, ran, again)
    });
    assert_eq!(first.0, belay_pg::SQLSTATE_APPROVAL, "{first:?}");
    let id = request_id(&first.1);
    let request = world().app.approval(id).unwrap();
    assert_eq!(request.request.action, sql);
    // tokio-postgres binds text in binary form.
    assert_eq!(
        request.request.parameters.as_deref(),
        Some("$1 = x'617070726f766564' (binary; reads as 'approved')")
    );
    assert_eq!(other.0, belay_pg::SQLSTATE_APPROVAL);
    assert_ne!(
        request_id(&other.1),
        id,
        "other parameters, another request"
    );
    assert_eq!(ran, 2);
    assert_eq!(again.0, belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(
        upstream(
            "production",
            "SELECT string_agg(name, ',' ORDER BY id) FROM labels"
        ),
        "approved,approved"
    );
}

#[test]
fn a_read_only_session_keeps_an_approval_it_cannot_use_over_the_extended_protocol() {
    upstream(
        "production",
        "CREATE TABLE IF NOT EXISTS gone_later (id int)",
    );
    let sql = "DROP TABLE gone_later";
    let (extended, simple) = block(async {
        let c = client("reader", "production").await;
        let first = run(&c, sql).await.unwrap();
        approve(request_id(&first.1), "alice");
        let extended = c.execute(sql, &[]).await.unwrap_err();
        let extended = extended.as_db_error().unwrap().message().to_owned();
        (extended, run(&c, sql).await)
    });
    assert!(extended.contains("is approved, but"), "{extended}");
    assert!(extended.contains("simple query"), "{extended}");
    assert_eq!(
        simple, None,
        "the approval was still there for the simple query"
    );
    assert_eq!(
        upstream("production", "SELECT to_regclass('gone_later') IS NULL"),
        "t"
    );
}

#[test]
fn a_quorum_of_two_counts_each_human_once_and_a_denial_stands() {
    upstream(
        "vault",
        "CREATE TABLE IF NOT EXISTS secrets (id int); CREATE TABLE IF NOT EXISTS keys (id int)",
    );
    let w = world();
    let (twice, after_one, ran, denied, denied_again) = block(async {
        let c = client("reader", "vault").await;
        let held = run(&c, "DROP TABLE secrets").await.unwrap();
        assert!(held.1.contains("2 approvals"), "{held:?}");
        let id = request_id(&held.1);
        approve(id, "alice");
        let twice = w
            .app
            .approve(human("alice"), id, None, belay_app::CHANNEL_HTTP)
            .unwrap_err();
        let after_one = run(&c, "DROP TABLE secrets").await.unwrap();
        assert_eq!(
            request_id(&after_one.1),
            id,
            "the same request, still pending"
        );
        approve(id, "bob");
        let ran = run(&c, "DROP TABLE secrets").await;

        let held = run(&c, "DROP TABLE keys").await.unwrap();
        let id = request_id(&held.1);
        approve(id, "alice");
        w.app
            .deny(human("bob"), id, "keys stay", belay_app::CHANNEL_CLI)
            .unwrap();
        let denied = run(&c, "DROP TABLE keys").await.unwrap();
        let denied_again = run(&c, "DROP TABLE keys").await.unwrap();
        (twice.to_string(), after_one, ran, denied, denied_again)
    });
    assert!(twice.contains("one human counts once"), "{twice}");
    assert_eq!(after_one.0, belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(ran, None);
    assert_eq!(
        upstream("vault", "SELECT to_regclass('secrets') IS NULL"),
        "t"
    );
    assert_eq!(denied.0, belay_pg::SQLSTATE_DENIED, "{denied:?}");
    assert!(
        denied.1.contains("bob") && denied.1.contains("keys stay"),
        "{denied:?}"
    );
    assert_eq!(
        request_id(&denied.1),
        request_id(&denied_again.1),
        "a denial stands"
    );
    assert_eq!(
        upstream("vault", "SELECT to_regclass('keys') IS NOT NULL"),
        "t"
    );
}

#[test]
fn expired_requests_and_lapsed_approvals_cannot_be_used() {
    setup("brief", "CREATE TABLE IF NOT EXISTS fleeting (id int)");
    let w = world();
    let (late, lapsed, fresh) = block(async {
        let c = client("reader", "brief").await;
        let held = run(&c, "DROP TABLE fleeting").await.unwrap();
        let id = request_id(&held.1);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let late = w
            .app
            .approve(human("alice"), id, None, belay_app::CHANNEL_CLI)
            .unwrap_err();
        assert_eq!(w.app.approval(id).unwrap().status, ApprovalStatus::Expired);

        let held = run(&c, "DROP TABLE fleeting").await.unwrap();
        let second = request_id(&held.1);
        assert_ne!(second, id);
        approve(second, "alice");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let lapsed = run(&c, "DROP TABLE fleeting").await.unwrap();
        assert_eq!(
            w.app.approval(second).unwrap().status,
            ApprovalStatus::Expired
        );
        let fresh = request_id(&lapsed.1);
        assert!(fresh != id && fresh != second);
        (late.to_string(), lapsed, fresh)
    });
    assert!(late.contains("expired"), "{late}");
    assert_eq!(lapsed.0, belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(
        w.app.approval(fresh).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(
        upstream("brief", "SELECT to_regclass('fleeting') IS NOT NULL"),
        "t"
    );
    let kinds: Vec<String> = w
        .app
        .store()
        .events(1, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.draft.environment.as_deref() == Some("brief"))
        .map(|e| e.draft.kind)
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "approval.expired").count() >= 2,
        "{kinds:?}"
    );
}

#[test]
fn wait_mode_holds_the_statement_until_a_human_approves() {
    setup("waiting", "CREATE TABLE IF NOT EXISTS patient (id int)");
    let approver = when_pending(world().app.clone(), "DROP TABLE patient", |a| {
        approve(a.id, "bob").id
    });
    let result = block(async {
        let c = client("reader", "waiting").await;
        run(&c, "DROP TABLE patient").await
    });
    let id = approver.join().unwrap();
    assert_eq!(result, None, "the statement ran once the human approved");
    assert_eq!(
        world().app.approval(id).unwrap().status,
        ApprovalStatus::Executed
    );
    assert_eq!(
        upstream("waiting", "SELECT to_regclass('patient') IS NULL"),
        "t"
    );
}

#[test]
fn a_statement_waiting_for_approval_does_not_stall_other_sessions_on_its_thread() {
    setup("waiting", "CREATE TABLE IF NOT EXISTS chart (id int)");
    // One session thread: the waiting statement and the read below share it.
    let gateway = start_gateway_with(
        &world().app,
        belay_pg::Options {
            relay_threads: 1,
            ..belay_pg::Options::default()
        },
    );
    let addr = gateway.addr;
    let app = world().app.clone();
    let reader = when_pending(world().app.clone(), "DROP TABLE chart", move |a| {
        // The bound only keeps a broken gateway from hanging the test.
        let read = block(async move {
            let c = client_at(addr, "reader", "waiting").await;
            tokio::time::timeout(Duration::from_secs(25), c.simple_query("SELECT 1")).await
        });
        let during = app.approval(a.id).unwrap().status;
        approve(a.id, "bob");
        (matches!(read, Ok(Ok(_))), during)
    });
    let result = block(async move {
        let c = client_at(addr, "reader", "waiting").await;
        run(&c, "DROP TABLE chart").await
    });
    let (read, during) = reader.join().unwrap();
    assert!(
        read,
        "a read on the same session thread did not complete while a statement waited"
    );
    assert_eq!(
        during,
        ApprovalStatus::Pending,
        "the read completed only after the wait ended"
    );
    assert_eq!(result, None, "the statement ran once the human approved");
}

/// One HTTP/1.1 request to the human API; the status and the JSON body.
fn http(method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut stream = std::net::TcpStream::connect(world().http).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: belay\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_http_api_serves_humans_and_refuses_agents() {
    setup("production", "CREATE TABLE IF NOT EXISTS via_http (id int); CREATE TABLE IF NOT EXISTS refused_http (id int)");
    let w = world();
    let alice = w.humans["alice"].1.expose();
    let agent = w.agents["writer"].expose();
    let (id, deny_id) = block(async {
        let c = client("reader", "production").await;
        let a = request_id(&run(&c, "DROP TABLE via_http").await.unwrap().1);
        let b = request_id(&run(&c, "DROP TABLE refused_http").await.unwrap().1);
        (a, b)
    });
    assert_eq!(http("GET", "/v1/approvals", None, "").0, 401);
    assert_eq!(
        http("GET", "/v1/approvals", Some("belay_human_wrong"), "").0,
        401
    );
    let (status, body) = http(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(agent),
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("agent"), "{body}");
    assert_eq!(w.app.approval(id).unwrap().status, ApprovalStatus::Pending);

    let (status, list) = http("GET", "/v1/approvals", Some(alice), "");
    assert_eq!(status, 200, "{list}");
    let listed = list["approvals"].as_array().unwrap();
    let mine = listed
        .iter()
        .find(|a| a["id"].as_u64() == Some(id))
        .unwrap();
    assert_eq!(mine["action"], "DROP TABLE via_http");
    assert_eq!(mine["approve_command"], format!("belay approve {id}"));
    assert_eq!(http("GET", "/v1/approvals/999999", Some(alice), "").0, 404);
    assert_eq!(
        http("GET", "/v1/approvals?status=bogus", Some(alice), "").0,
        400
    );

    let (status, body) = http(
        "POST",
        &format!("/v1/approvals/{deny_id}/deny"),
        Some(alice),
        "{}",
    );
    assert_eq!(status, 400, "a denial needs a reason: {body}");
    let (status, body) = http(
        "POST",
        &format!("/v1/approvals/{deny_id}/deny"),
        Some(alice),
        r#"{"reason": "not today"}"#,
    );
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );

    let (status, body) = http(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(alice),
        r#"{"comment": "ok"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["votes"][0]["channel"], "http");
    let (status, _) = http(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(alice),
        "",
    );
    assert_eq!(status, 409, "one human counts once");
    let ran = block(async {
        let c = client("reader", "production").await;
        run(&c, "DROP TABLE via_http").await
    });
    assert_eq!(ran, None);
    assert_eq!(
        upstream("production", "SELECT to_regclass('via_http') IS NULL"),
        "t"
    );
    assert_eq!(
        upstream(
            "production",
            "SELECT to_regclass('refused_http') IS NOT NULL"
        ),
        "t"
    );
}

#[test]
fn the_webhook_hears_of_each_request_and_a_failed_delivery_is_retried() {
    setup("notified", "CREATE TABLE IF NOT EXISTS watched (id int)");
    let id = block(async {
        let c = client("reader", "notified").await;
        request_id(&run(&c, "DROP TABLE watched").await.unwrap().1)
    });
    let bodies = world().webhook.lock().unwrap();
    let first = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    let second = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    drop(bodies);
    assert_eq!(first, second, "the same message again after the failure");
    assert!(second.starts_with("POST /hooks/T0/B0/secret "), "{second}");
    let json: serde_json::Value = serde_json::from_str(
        second
            .split_once(' ')
            .unwrap()
            .1
            .split_once(' ')
            .unwrap()
            .1
            .split_once(' ')
            .unwrap()
            .1,
    )
    .unwrap();
    let text = json["text"].as_str().unwrap();
    assert!(text.contains(&format!("belay approve {id}")), "{text}");
    assert!(
        text.contains("destructive") && text.contains("DROP TABLE watched"),
        "{text}"
    );
    assert_eq!(json["belay"]["approval"].as_u64(), Some(id));
    // The delivery is recorded, without the webhook's secret URL.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = world().app.store().events(1, 100_000).unwrap();
        let notes: Vec<_> = events
            .iter()
            .filter(|e| {
                e.draft.kind == "approval.notify" && e.draft.detail["approval"].as_u64() == Some(id)
            })
            .collect();
        if let Some(e) = notes.first() {
            let line = serde_json::to_string(e).unwrap();
            assert!(
                e.draft
                    .outcome
                    .as_deref()
                    .unwrap()
                    .starts_with("delivered (attempt 2"),
                "{line}"
            );
            assert!(!line.contains("secret"), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no approval.notify event"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(belay_app::verify_audit(&world().app)
        .unwrap()
        .broken
        .is_none());
}

#[test]
fn an_approved_execute_is_bound_to_what_the_name_was_prepared_as() {
    setup(
        "production",
        "CREATE TABLE IF NOT EXISTS rows_by_name (id int); INSERT INTO rows_by_name VALUES (1), (2)",
    );
    let (bound_to, second) = block(async {
        let c = client("reader", "production").await;
        // Each PREPARE of a held statement is itself held and approved.
        let prepare = |sql: &'static str| {
            let c = &c;
            async move {
                let held = run(c, sql).await.unwrap();
                approve(request_id(&held.1), "alice");
                assert_eq!(run(c, sql).await, None, "{sql}");
            }
        };
        prepare("PREPARE d AS DELETE FROM rows_by_name WHERE id = 1").await;
        let first = run(&c, "EXECUTE d").await.unwrap();
        let first_id = request_id(&first.1);
        approve(first_id, "alice");
        let bound_to = world().app.approval(first_id).unwrap().request.parameters;
        // The name is prepared again as something else before the approved EXECUTE runs.
        assert_eq!(run(&c, "DEALLOCATE d").await, None);
        prepare("PREPARE d AS DELETE FROM rows_by_name WHERE id = 2").await;
        let second = run(&c, "EXECUTE d").await.unwrap();
        assert_ne!(request_id(&second.1), first_id);
        (bound_to, second)
    });
    assert!(
        bound_to
            .as_deref()
            .unwrap_or_default()
            .contains("WHERE id = 1"),
        "{bound_to:?}"
    );
    assert_eq!(second.0, belay_pg::SQLSTATE_APPROVAL, "{second:?}");
    assert_eq!(
        upstream(
            "production",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM rows_by_name"
        ),
        "1,2",
        "neither DELETE ran"
    );
}

#[test]
fn inside_a_transaction_a_held_statement_is_refused_at_once_instead_of_holding_locks() {
    setup("waiting", "CREATE TABLE IF NOT EXISTS locked (id int)");
    let approver = when_pending(world().app.clone(), "DROP TABLE locked", |a| {
        approve(a.id, "bob").id
    });
    let refused = block(async {
        let c = client("writer", "waiting").await;
        c.simple_query("BEGIN").await.unwrap();
        let refused = run(&c, "DROP TABLE locked").await;
        let _ = c.simple_query("ROLLBACK").await;
        refused
    });
    let id = approver.join().unwrap();
    let refused = refused.expect("refused, not held until approved");
    assert_eq!(refused.0, belay_pg::SQLSTATE_APPROVAL, "{refused:?}");
    assert_eq!(request_id(&refused.1), id);
    assert_eq!(
        world().app.approval(id).unwrap().status,
        ApprovalStatus::Approved,
        "the approval waits for the statement to be sent again"
    );
    assert_eq!(
        upstream("waiting", "SELECT to_regclass('locked') IS NOT NULL"),
        "t"
    );
}

#[test]
fn stopping_belay_answers_statements_still_waiting_for_approval() {
    setup(
        "lingering",
        "CREATE TABLE IF NOT EXISTS waiting_on_shutdown (id int)",
    );
    // A second belay, so that stopping it leaves the others running.
    let (app, gateway) = second_belay();
    let Gateway {
        runtime,
        addr,
        stop,
        server,
    } = gateway;
    let stopper = {
        let stopping = app.clone();
        when_pending(app.clone(), "DROP TABLE waiting_on_shutdown", move |_| {
            stopping.stop_waiting();
            stop.send(true).unwrap();
        })
    };
    let answer = block(async move {
        let c = client_at(addr, "reader", "lingering").await;
        // The environment would wait ten minutes; stopping answers well before.
        tokio::time::timeout(
            Duration::from_secs(120),
            run(&c, "DROP TABLE waiting_on_shutdown"),
        )
        .await
        .expect("answered once belay stopped")
    });
    stopper.join().unwrap();
    let answer = answer.expect("refused");
    assert_eq!(answer.0, belay_pg::SQLSTATE_APPROVAL, "{answer:?}");
    runtime.block_on(server).unwrap().unwrap();
    assert_eq!(
        upstream(
            "lingering",
            "SELECT to_regclass('waiting_on_shutdown') IS NOT NULL"
        ),
        "t"
    );
}

/// Not about approvals, but this file can start a belay of its own: reads are counted and
/// written later, and still refused the moment the audit log cannot take them.
#[test]
fn a_read_is_refused_once_the_audit_log_is_closed() {
    let (app, gateway) = second_belay();
    let addr = gateway.addr;
    let closing = app.clone();
    let (before, after) = block(async move {
        let c = client_at(addr, "reader", "production").await;
        let before = c.query("SELECT 1", &[]).await.map(|_| ());
        closing.close().unwrap();
        let after = c.query("SELECT 1", &[]).await.map(|_| ());
        (before, after)
    });
    assert!(before.is_ok(), "{before:?}");
    let err = after.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), belay_pg::SQLSTATE_DENIED, "{db:?}");
    assert!(db.message().contains("audit"), "{}", db.message());
}

#[test]
fn an_approved_statement_never_leaves_a_read_only_session_read_write() {
    setup(
        "production",
        "CREATE TABLE IF NOT EXISTS pinned (id int); INSERT INTO pinned VALUES (1)",
    );
    // Inside the approved text, BEGIN would carry the lifted pin into a transaction block
    // that outlives it.
    let with_begin = "BEGIN; UPDATE pinned SET id = 2 WHERE id = 1";
    let (first, used, still_read_only) = block(async {
        let c = client("reader", "production").await;
        let first = run(&c, with_begin).await.unwrap();
        approve(request_id(&first.1), "alice");
        let used = run(&c, with_begin).await;
        let _ = c.simple_query("ROLLBACK").await;
        let row = c
            .simple_query("SHOW transaction_read_only")
            .await
            .unwrap()
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
                _ => None,
            })
            .unwrap();
        (first, used, row)
    });
    assert_eq!(first.0, belay_pg::SQLSTATE_APPROVAL, "{first:?}");
    let used = used.expect("the approval cannot be used with BEGIN in the text");
    assert!(used.1.contains("implicit transaction"), "{used:?}");
    assert_eq!(still_read_only, "on");
    assert_eq!(upstream("production", "SELECT id FROM pinned"), "1");

    // Pipelined behind a BEGIN whose answer has not come yet, the approved statement is
    // inside a transaction block too: the approval is kept, not spent.
    let sql = "UPDATE pinned SET id = 3 WHERE id = 1";
    let (held, pipelined) = block(async {
        let c = client("reader", "production").await;
        let held = run(&c, sql).await.unwrap();
        approve(request_id(&held.1), "alice");
        let token = world().agents["reader"].expose().to_owned();
        let s = format!(
            "host=127.0.0.1 port={} user=reader password={token} dbname=production",
            world().gateway.port()
        );
        let (raw, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // Both queries go out before either answer comes back.
        let (begin, update) = tokio::join!(raw.simple_query("BEGIN"), raw.simple_query(sql));
        begin.unwrap();
        let pipelined = update
            .err()
            .map(|e| e.as_db_error().unwrap().message().to_owned());
        let _ = raw.simple_query("ROLLBACK").await;
        (held, pipelined)
    });
    assert_eq!(held.0, belay_pg::SQLSTATE_APPROVAL);
    let pipelined = pipelined.expect("refused inside the transaction block");
    assert!(pipelined.contains("is approved, but"), "{pipelined}");
    assert_eq!(upstream("production", "SELECT id FROM pinned"), "1");
}

#[test]
fn copy_from_stdin_is_not_approvable() {
    setup("production", "CREATE TABLE IF NOT EXISTS loaded (id int)");
    let refused = block(async {
        let c = client("reader", "production").await;
        run(&c, "COPY loaded FROM STDIN").await.unwrap()
    });
    assert_eq!(refused.0, "42501", "{refused:?}");
    assert!(refused.1.contains("COPY FROM STDIN"), "{refused:?}");
    let pending = world()
        .app
        .approvals(&[ApprovalStatus::Pending], 1000)
        .unwrap();
    assert!(pending
        .iter()
        .all(|a| a.request.action != "COPY loaded FROM STDIN"));
}

#[test]
fn one_agent_cannot_open_more_than_twenty_approval_requests() {
    setup("production", "CREATE TABLE IF NOT EXISTS flood (id int)");
    let codes = block(async {
        let c = client("flooder", "production").await;
        let mut codes = Vec::new();
        for i in 0..25 {
            let e = run(&c, &format!("DROP TABLE flood_{i}")).await.unwrap();
            codes.push(e.0);
        }
        // Asking again for one already open is not a new request.
        codes.push(run(&c, "DROP TABLE flood_0").await.unwrap().0);
        codes
    });
    let open = world()
        .app
        .approvals(&[ApprovalStatus::Pending], 1000)
        .unwrap()
        .into_iter()
        .filter(|a| a.request.agent == "flooder")
        .count();
    assert_eq!(open, 20, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "42501").count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes.last().unwrap(),
        belay_pg::SQLSTATE_APPROVAL,
        "{codes:?}"
    );
}

#[test]
fn a_held_statement_that_calls_user_code_runs_none_of_it_at_bind() {
    // An IMMUTABLE function is folded while the planner plans at Bind: if the Bind went
    // upstream before the decision, its advisory lock would outlive the refusal.
    setup(
        "production",
        "CREATE OR REPLACE FUNCTION bind_probe(k int) RETURNS int IMMUTABLE LANGUAGE plpgsql \
         AS $$ BEGIN PERFORM pg_advisory_lock(k); RETURN k; END $$",
    );
    let (held, locks) = block(async {
        let c = client("reader", "production").await;
        let e = c
            .query("SELECT bind_probe($1)", &[&424_242i32])
            .await
            .unwrap_err();
        let held = e.as_db_error().unwrap().code().code().to_owned();
        let locks = c
            .simple_query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242",
            )
            .await
            .unwrap()
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
                _ => None,
            })
            .unwrap();
        (held, locks)
    });
    assert_eq!(held, belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(locks, "0", "the function ran before its decision");
}
