//! The README's first command, end to end: `belay quickstart` starts a scratch cluster and the
//! gateway, and real clients work through it: psql, pgbench (`-M simple` and `-M prepared`,
//! including COPY during `pgbench -i`), psycopg 3, asyncpg, psycopg 2, SQLAlchemy with
//! Alembic, pgJDBC, node-postgres, pg_dump and psql's meta-commands. SIGTERM stops it all.
//!
//! The client libraries are installed by `scripts/test.sh`; without them this test fails and
//! says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Quickstart {
    child: Child,
    dir: PathBuf,
    info: serde_json::Value,
    _tmp: tempfile::TempDir,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start() -> Quickstart {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Quickstart {
    let tmp = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = tmp.path().join("qs");
    let child = Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(["quickstart", "--port", "0", "--dir"])
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = dir.join("quickstart.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut qs = Quickstart {
        child,
        dir,
        info: serde_json::Value::Null,
        _tmp: tmp,
    };
    while !marker.exists() {
        if let Some(status) = qs.child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            qs.child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("quickstart exited with {status}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "quickstart did not start within 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(100));
    qs.info = serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    qs
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Quickstart {
    fn url(&self, env: &str) -> String {
        self.info[format!("{env}_url")].as_str().unwrap().to_owned()
    }

    fn psql(&self, env: &str, sql: &str) -> Output {
        run(Command::new("psql").arg(self.url(env)).args([
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]))
    }

    fn pgbench(&self, env: &str, args: &[&str]) -> Output {
        run(Command::new("pgbench").args(args).arg(self.url(env)))
    }
}

#[test]
fn quickstart_serves_psql_pgbench_psycopg_and_node_postgres() {
    let qs = start();
    // The terminal never shows a token: the lines printed read them from private files.
    for (key, file) in [
        ("agent_token", "agent-token"),
        ("human_token", "human-token"),
    ] {
        let token = qs.info[key].as_str().unwrap();
        let on_disk = std::fs::read_to_string(qs.dir.join(file)).unwrap();
        assert_eq!(on_disk.trim(), token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(qs.dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is private");
    }
    for key in [
        "config",
        "agent",
        "agent_token",
        "human",
        "human_token",
        "pg_host",
        "pg_port",
        "staging_url",
        "production_url",
    ] {
        assert!(!qs.info[key].is_null(), "quickstart.json lacks {key}");
    }
    assert!(qs.info["agent_token"]
        .as_str()
        .unwrap()
        .starts_with("belay_agent_"));

    // psql: the lines the quickstart prints.
    let out = qs.psql("staging", "SELECT count(*) FROM rentals");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5000");
    let out = qs.psql("production", "DROP TABLE payments");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("YB001") && text(&out).contains("DROP TABLE"),
        "{}",
        text(&out)
    );
    let out = qs.psql("production", "SELECT count(*) FROM payments");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4000",
        "{}",
        text(&out)
    );

    // pgbench: initialisation (DDL, COPY) in staging, then both protocols.
    let out = qs.pgbench("staging", &["-i", "-I", "dtgp", "-s", "1", "-q"]);
    assert!(out.status.success(), "pgbench -i: {}", text(&out));
    for mode in ["simple", "prepared"] {
        let out = qs.pgbench("staging", &["-n", "-c", "2", "-t", "25", "-M", mode]);
        assert!(out.status.success(), "pgbench -M {mode}: {}", text(&out));
        assert!(
            text(&out).contains("number of transactions actually processed: 50/50"),
            "{}",
            text(&out)
        );
    }
    // The same initialisation is refused in production, and nothing of it happens there.
    let out = qs.pgbench("production", &["-i", "-I", "dt", "-q"]);
    assert!(!out.status.success());
    let out = qs.psql(
        "production",
        "SELECT to_regclass('pgbench_accounts') IS NULL",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "{}",
        text(&out)
    );

    // psycopg 3.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/psycopg_check.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(qs.url("staging"))
        .arg(qs.url("production")));
    assert!(
        out.status.success(),
        "psycopg (installed by scripts/test.sh): {}",
        text(&out)
    );

    // asyncpg, psycopg 2, SQLAlchemy and Alembic.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/python_drivers_check.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(qs.url("staging"))
        .arg(qs.url("production")));
    assert!(
        out.status.success(),
        "asyncpg, psycopg 2, SQLAlchemy, Alembic (installed by scripts/test.sh): {}",
        text(&out)
    );

    // pgJDBC (Debian's libpostgresql-jdbc-java), with its default properties.
    let jar = std::env::var("BELAY_PGJDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_owned());
    let out = run(Command::new("java")
        .arg("-cp")
        .arg(&jar)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/JdbcCheck.java"))
        .arg(qs.url("staging"))
        .arg(qs.url("production")));
    assert!(
        out.status.success(),
        "pgJDBC ({jar}, installed by scripts/test.sh): {}",
        text(&out)
    );

    // node-postgres.
    let modules = std::env::var("BELAY_NODE_MODULES").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/compat-node/node_modules")
            .display()
            .to_string()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/node_pg_check.js");
    let out = run(Command::new("node")
        .arg(script)
        .arg(qs.url("staging"))
        .arg(qs.url("production"))
        .env("NODE_PATH", &modules));
    assert!(
        out.status.success(),
        "node-postgres (installed by scripts/test.sh into {modules}): {}",
        text(&out)
    );

    // The audit log holds it all and verifies.
    let config = qs.dir.join("belay.toml");
    let out = run(Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(&config)
        .args(["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out));

    // SIGTERM stops the gateway and the cluster.
    let mut qs = qs;
    let upstream_port = qs.info["upstream_port"].as_u64().unwrap();
    Command::new("kill")
        .arg("-TERM")
        .arg(qs.child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = qs.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "quickstart did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", upstream_port as u16)).is_err(),
        "the scratch cluster stopped"
    );
    let mut printed = String::new();
    use std::io::Read;
    qs.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(printed.contains("agent-token"), "{printed}");
    for key in ["agent_token", "human_token"] {
        let token = qs.info[key].as_str().unwrap();
        assert!(!printed.contains(token), "the quickstart printed its {key}");
    }
}

#[test]
fn quickstart_can_use_an_existing_server_and_leaves_it_running() {
    let tmp = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster = belay_scratch::Cluster::start(&tmp.path().join("pg"), None).unwrap();
    cluster.stop_when_gone(std::process::id()).unwrap();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}",
        cluster.superuser_password, cluster.port
    );
    let mut qs = start_with(&["--upstream", &url]);
    assert_eq!(
        qs.info["upstream_port"].as_u64(),
        Some(u64::from(cluster.port))
    );
    let out = qs.psql("staging", "SELECT count(*) FROM customers");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2000",
        "{}",
        text(&out)
    );
    Command::new("kill")
        .arg("-TERM")
        .arg(qs.child.id().to_string())
        .status()
        .unwrap();
    assert!(qs.child.wait().unwrap().success());
    assert_eq!(
        cluster
            .psql("staging", "SELECT count(*) FROM vehicles")
            .unwrap(),
        "300",
        "the server was left running"
    );
}

impl Quickstart {
    /// `belay ARGS` against the quickstart's configuration, as the human (or with `token`).
    fn belay_as(&self, token: &str, args: &[&str]) -> Output {
        run(Command::new(env!("CARGO_BIN_EXE_belay"))
            .arg("--config")
            .arg(self.dir.join("belay.toml"))
            .args(args)
            .env("BELAY_HUMAN_TOKEN", token))
    }

    fn human_token(&self) -> String {
        self.info["human_token"].as_str().unwrap().to_owned()
    }
}

/// The id in "approval request N" of a refusal.
fn request_id(out: &Output) -> u64 {
    let t = text(out);
    t.split("approval request ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no approval request id in: {t}"))
}

#[test]
fn a_production_drop_waits_for_a_named_human_and_runs_exactly_once() {
    let qs = start();
    let human = qs.human_token();

    // The agent's DROP is held; its error names the request and how to approve it.
    let out = qs.psql("production", "DROP TABLE payments");
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("YB001"), "{t}");
    let id = request_id(&out);
    assert!(t.contains(&format!("belay approve {id}")), "{t}");
    assert!(t.contains("exactly once"), "{t}");

    // Nothing without a human's token, nothing with the agent's.
    let out = run(Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(qs.dir.join("belay.toml"))
        .args(["pending"])
        .env_remove("BELAY_HUMAN_TOKEN"));
    assert!(!out.status.success());
    assert!(text(&out).contains("BELAY_HUMAN_TOKEN"), "{}", text(&out));
    let agent = qs.info["agent_token"].as_str().unwrap();
    let out = qs.belay_as(agent, &["approve", &id.to_string()]);
    assert!(!out.status.success(), "an agent approved: {}", text(&out));
    assert!(text(&out).contains("agent"), "{}", text(&out));

    // The human sees the exact action and approves it.
    let out = qs.belay_as(&human, &["pending", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending = &list["approvals"][0];
    assert_eq!(pending["id"].as_u64(), Some(id));
    assert_eq!(pending["action"], "DROP TABLE payments");
    assert_eq!(pending["class"], "destructive");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["agent"], "demo-agent");
    let out = qs.belay_as(&human, &["approve", &id.to_string(), "--comment", "drill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("approved"), "{}", text(&out));

    // A different text is a different action: still held, under a new request.
    let out = qs.psql("production", "DROP TABLE  payments");
    assert!(text(&out).contains("YB001"), "{}", text(&out));
    assert_ne!(request_id(&out), id);
    let out = qs.psql("production", "SELECT count(*) FROM payments");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4000");

    // The identical statement runs once, through the read-only session's pin...
    let out = qs.psql("production", "DROP TABLE payments");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "DROP TABLE");
    let out = qs.psql("production", "SELECT to_regclass('payments') IS NULL");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    // ...and the session stays read-only afterwards.
    let out = qs.psql("production", "SHOW default_transaction_read_only");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "on");

    // Sent again, it is held anew: the approval was used up.
    let out = qs.psql("production", "DROP TABLE payments");
    assert!(text(&out).contains("YB001"), "{}", text(&out));
    assert_ne!(request_id(&out), id);
    let out = qs.belay_as(&human, &["pending", "--all", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_u64() == Some(id))
        .unwrap();
    assert_eq!(used["status"], "executed");
    assert_eq!(used["votes"][0]["human"], "alice");
    assert_eq!(used["votes"][0]["channel"], "cli");
    let out = qs.belay_as(&human, &["approve", &id.to_string()]);
    assert!(
        !out.status.success(),
        "an executed request was approved again"
    );

    // An approved statement's answer streams through the writing role's connection, a row
    // larger than belay frames whole among thousands of others.
    let big = "UPDATE rentals SET id = id WHERE id <= 3000 \
               RETURNING id, repeat('x', 2000) AS pad, \
               CASE WHEN id = 1 THEN repeat('y', 400000) END AS wide";
    let out = qs.psql("production", big);
    assert!(text(&out).contains("YB001"), "{}", text(&out));
    let big_id = request_id(&out);
    let out = qs.belay_as(&human, &["approve", &big_id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = qs.psql("production", big);
    assert!(out.status.success(), "{}", text(&out));
    let rows = String::from_utf8_lossy(&out.stdout);
    // The rows, then psql's line for the command tag.
    let mut lines: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
    let tag = lines.pop().unwrap_or_default();
    let wanted: usize = String::from_utf8_lossy(
        &qs.psql(
            "production",
            "SELECT count(*) FROM rentals WHERE id <= 3000",
        )
        .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    assert!(wanted > 100, "the demo has rentals: {wanted}");
    assert_eq!(lines.len(), wanted, "every row of the answer came through");
    assert_eq!(tag, format!("UPDATE {wanted}"));
    assert!(
        lines.iter().any(|l| l.contains(&"y".repeat(400000))),
        "the wide row came through whole"
    );

    // Every step is in the audit log, which verifies.
    let out = qs.belay_as(&human, &["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let about = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["detail"]["approval"].as_u64() == Some(id))
            .count()
    };
    assert_eq!(about("approval.requested"), 1);
    assert!(
        about("approval.approve") >= 2,
        "request and result of the vote"
    );
    assert_eq!(about("approval.executed"), 1);
    assert!(events.iter().any(|e| e["kind"] == "statement"
        && e["verdict"] == "allow"
        && e["detail"]["approval"].as_u64() == Some(id)));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "approval.authentication" && e["actor"] == "agent:demo-agent"));
    let out = qs.belay_as(&human, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_read_only_production_session_runs_as_a_role_the_database_forbids_to_write() {
    let qs = start();
    // Seen from inside the database: the read role, which may not write or reach staging.
    let out = qs.psql(
        "production",
        "SELECT current_user, has_table_privilege('vehicles', 'UPDATE'), \
         has_database_privilege('staging', 'CONNECT'), current_setting('default_transaction_read_only')",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "belay_production_read|f|f|on"
    );
    // Staging's role reaches no production database either.
    let out = qs.psql(
        "staging",
        "SELECT current_user, has_database_privilege('production', 'CONNECT')",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "belay_staging|f"
    );
    // The inspection agrees: nothing it would refuse.
    let out = run(Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(qs.dir.join("belay.toml"))
        .args(["config", "check", "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["roles"], serde_json::json!([]), "{report}");
}

/// What a command printed, both streams.
fn both(cmd: &mut Command) -> (bool, String) {
    let out = run(cmd);
    (out.status.success(), text(&out))
}

#[test]
fn a_read_agent_dumps_production_and_every_reading_psql_meta_command_answers_as_directly() {
    let qs = start();
    let upstream_port = qs.info["upstream_port"].as_u64().unwrap().to_string();
    let read_password =
        std::fs::read_to_string(qs.dir.join("secrets/production-read-password")).unwrap();
    // The same role belay's read-only production session logs in as, straight to the server.
    let direct = format!(
        "host=127.0.0.1 port={upstream_port} user=belay_production_read dbname=production password={}",
        read_password.trim()
    );
    // pg_dump (its session setup, ACCESS SHARE locks on every table, catalog functions and
    // COPY out), schema and data: the same dump as the superuser's straight from the server,
    // but for the random key of psql's `\restrict`.
    let strip = |dump: &str| -> String {
        dump.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let through = run(Command::new("pg_dump").arg(qs.url("production")));
    assert!(through.status.success(), "{}", text(&through));
    let socket = qs.dir.join("pg/run");
    let straight = run(Command::new("pg_dump").arg("-h").arg(&socket).args([
        "-p",
        &upstream_port,
        "-U",
        "postgres",
        "production",
    ]));
    assert!(straight.status.success(), "{}", text(&straight));
    let (through, straight) = (
        strip(&String::from_utf8_lossy(&through.stdout)),
        strip(&String::from_utf8_lossy(&straight.stdout)),
    );
    assert!(
        through.contains("CREATE TABLE public.vehicles")
            && through.contains("COPY public.vehicles"),
        "schema and data"
    );
    assert!(
        through == straight,
        "the dump through belay differs from the server's own"
    );
    let custom = run(Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(qs.dir.join("production.dump"))
        .arg(qs.url("production")));
    assert!(custom.status.success(), "{}", text(&custom));

    // Every meta-command of psql's `\?` that reads, answered exactly as the server answers
    // the same role directly (`\dconfig` shows belay's pins, so it only has to work).
    let meta = [
        "\\d",
        "\\d+",
        "\\d customers",
        "\\d+ customers",
        "\\da",
        "\\daS",
        "\\dA+",
        "\\dAc",
        "\\dAf",
        "\\dAo",
        "\\dAp",
        "\\db+",
        "\\dc+",
        "\\dC+",
        "\\dd",
        "\\dD+",
        "\\ddp",
        "\\dE+",
        "\\des+",
        "\\det+",
        "\\deu+",
        "\\dew+",
        "\\df+",
        "\\dfS",
        "\\dF+",
        "\\dFd+",
        "\\dFp+",
        "\\dFt+",
        "\\dg+",
        "\\di+",
        "\\dl+",
        "\\dL+",
        "\\dm+",
        "\\dn+",
        "\\do+",
        "\\dO+",
        "\\dp",
        "\\dP+",
        "\\drds",
        "\\dRp+",
        "\\dRs+",
        "\\ds+",
        "\\dS+",
        "\\dt+",
        "\\dT+",
        "\\du+",
        "\\dv+",
        "\\dx+",
        "\\dX",
        "\\dy+",
        "\\l+",
        "\\lo_list",
        "\\sf pg_catalog.lower(text)",
        "\\sv pg_catalog.pg_roles",
        "\\z",
    ];
    let mut differ = Vec::new();
    for m in meta {
        let via = both(
            Command::new("psql")
                .arg(qs.url("production"))
                .args(["-X", "-c", m]),
        );
        let own = both(Command::new("psql").arg(&direct).args(["-X", "-c", m]));
        if via != own {
            differ.push(format!(
                "{m}:\n  through belay: {}\n  directly: {}",
                via.1, own.1
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    let (ok, out) =
        both(
            Command::new("psql")
                .arg(qs.url("production"))
                .args(["-X", "-c", "\\dconfig"]),
        );
    assert!(ok && out.contains("statement_timeout"), "{out}");
}
