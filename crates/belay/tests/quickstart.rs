//! The README's first command, end to end: `belay quickstart` starts a scratch cluster and the
//! gateway, and real clients work through it: psql, pgbench (`-M simple` and `-M prepared`,
//! including COPY during `pgbench -i`), psycopg 3 and node-postgres. SIGTERM stops it all.
//!
//! psycopg and node-postgres are installed by `scripts/test.sh`; without them this test fails
//! and says so.

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
