//! Crash safety of the write path: a write inside a transaction block is forwarded while its
//! decision's record becomes durable, and the COMMIT carries the decisions into the
//! upstream's ledger (`belay_ledger.decisions`), committing with the rows. `kill -9` of belay (the
//! quickstart's gateway, in front of a server that outlives it) must leave nothing committed
//! whose decision is not durable: a block left open is rolled back by the server, and every
//! committed row has its decision in the audit log or in the ledger; belay started again
//! adds what the ledger holds to the audit log, and the chain verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use belay_scratch::Cluster;

struct Gateway {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(upstream: &str, dir: PathBuf) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(["quickstart", "--port", "0", "--upstream", upstream, "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = dir.join("quickstart.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "quickstart did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    Gateway {
        child,
        dir,
        url: info["staging_url"].as_str().unwrap().to_owned(),
    }
}

/// `psql` through belay reading statements from a pipe, so that the test decides when each
/// is sent.
fn session(url: &str) -> Child {
    Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit log of the gateway in `dir`, as `belay audit export` gives it.
fn exported(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(dir.join("belay.toml"))
        .args(["audit", "export"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// Whether `e` is a decision on an INSERT into `crash_probe`.
fn probe_insert(e: &serde_json::Value) -> bool {
    e["kind"] == "statement"
        && e["detail"]["sql"]
            .as_str()
            .is_some_and(|s| s.starts_with("INSERT INTO crash_probe"))
}

/// The allowed INSERT decisions into `crash_probe` in the audit log of the gateway in `dir`.
fn recorded_inserts(dir: &std::path::Path) -> usize {
    exported(dir)
        .iter()
        .filter(|e| probe_insert(e) && e["verdict"] == "allow")
        .count()
}

/// Blocks the busy session sends, far more than commit before belay is killed.
const TRANSACTIONS: usize = 100_000;

#[test]
fn a_killed_gateway_leaves_nothing_committed_without_its_durable_decision() {
    let tmp = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster = Cluster::start(&tmp.path().join("pg"), None).unwrap();
    cluster.stop_when_gone(std::process::id()).unwrap();
    let upstream = format!(
        "postgres://postgres:{}@127.0.0.1:{}",
        cluster.superuser_password, cluster.port
    );
    let mut gateway = start(&upstream, tmp.path().join("qs"));
    let out = Command::new("psql")
        .arg(&gateway.url)
        .args(["-X", "-c", "CREATE TABLE crash_probe (id int, note text)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A block left open when belay dies: its write ran upstream, and the server rolls it back.
    let mut open = session(&gateway.url);
    let stdin = open.stdin.as_mut().unwrap();
    writeln!(stdin, "BEGIN;").unwrap();
    writeln!(
        stdin,
        "INSERT INTO crash_probe VALUES (0, 'never committed');"
    )
    .unwrap();
    stdin.flush().unwrap();
    wait_for("the write to run inside the open block", || {
        cluster
            .psql(
                "staging",
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
                 AND application_name LIKE 'belay:%' AND query LIKE 'INSERT INTO crash_probe%'",
            )
            .unwrap()
            == "1"
    });

    // Blocks committing one after another, as fast as psql sends them, when belay dies.
    let mut busy = session(&gateway.url);
    let mut stdin = busy.stdin.take().unwrap();
    // More than can finish before the kill; the writer stops when psql dies.
    let writer = std::thread::spawn(move || {
        for i in 1..=TRANSACTIONS {
            let sent = writeln!(
                stdin,
                "BEGIN; INSERT INTO crash_probe VALUES ({i}, 'a'); INSERT INTO crash_probe VALUES ({i}, 'b'); COMMIT;"
            );
            if sent.is_err() {
                return;
            }
        }
    });
    wait_for("some blocks to commit", || {
        cluster
            .psql("staging", "SELECT count(*) > 20 FROM crash_probe")
            .unwrap()
            == "t"
    });
    gateway.child.kill().unwrap(); // SIGKILL: no shutdown of any kind
    gateway.child.wait().unwrap();
    for mut psql in [open, busy] {
        let _ = psql.kill();
        let _ = psql.wait();
    }
    writer.join().unwrap();
    wait_for("the server to end belay's sessions", || {
        cluster
            .psql(
                "staging",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'belay:demo%'",
            )
            .unwrap()
            == "0"
    });

    let committed: usize = cluster
        .psql("staging", "SELECT count(*) FROM crash_probe")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        cluster
            .psql("staging", "SELECT count(*) FROM crash_probe WHERE id = 0")
            .unwrap(),
        "0",
        "the open block was rolled back"
    );
    assert!(
        committed > 20 && committed < 2 * TRANSACTIONS,
        "committed {committed}: belay must die while blocks still commit"
    );
    let recorded = recorded_inserts(&gateway.dir);
    let in_ledger = |cluster: &Cluster| -> usize {
        cluster
            .psql(
                "staging",
                // A row holds every decision of its transaction.
                "SELECT coalesce(sum((length(event) - length(replace(event, 'INSERT INTO crash_probe', ''))) \
                 / length('INSERT INTO crash_probe')), 0) FROM belay_ledger.decisions",
            )
            .unwrap()
            .parse()
            .unwrap()
    };
    let ledger = in_ledger(&cluster);
    assert!(
        committed <= recorded + ledger,
        "{committed} rows committed, only {recorded} INSERT decisions in the audit log and {ledger} in the ledger"
    );

    // Started again, belay adds to its audit log what only the ledger holds, and empties it.
    let serve = Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(gateway.dir.join("belay.toml"))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = Gateway {
        child: serve,
        dir: gateway.dir.clone(),
        url: String::new(),
    };
    wait_for("the ledger to be reconciled", || in_ledger(&cluster) == 0);
    let after = recorded_inserts(&serve.dir);
    assert!(
        committed <= after,
        "{committed} rows committed, only {after} INSERT decisions in the audit log after the restart"
    );
    let recovered = recovered_inserts(&serve.dir);
    assert_eq!(
        after - recorded,
        recovered,
        "what the restart added is marked as recovered from the ledger"
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--config")
        .arg(serve.dir.join("belay.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    serve.child.kill().unwrap();
    let _ = serve.child.wait();
}

/// Of `recorded_inserts`, those added from an upstream's ledger after a crash.
fn recovered_inserts(dir: &std::path::Path) -> usize {
    exported(dir)
        .iter()
        .filter(|e| probe_insert(e) && e["detail"]["recovered_from"].is_string())
        .count()
}
