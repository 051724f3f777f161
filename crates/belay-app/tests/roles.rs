//! The database as the second wall, against a real PostgreSQL: the inspection of upstream
//! roles finds what a role can do beyond its environment's grants, production refuses it
//! (unless accepted by name), and the gateway refuses sessions to such an upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::{Arc, OnceLock};

use belay_app::roles::{inspect, Report};
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

struct World {
    dir: tempfile::TempDir,
    cluster: Cluster,
}

/// One cluster holding two environments' databases, with roles of both shapes: the broad
/// ones many installations start with, and the narrow ones belay asks for.
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
        for sql in [
            // Broad: creates databases and roles, reaches every database, and a "read" role
            // that may write.
            "CREATE ROLE broad LOGIN CREATEDB CREATEROLE PASSWORD 'pw'",
            "CREATE ROLE broad_read LOGIN PASSWORD 'pw'",
            "CREATE ROLE stage_owner LOGIN BYPASSRLS PASSWORD 'pw'",
            // Narrow: owns its database only; the read role reads only.
            "CREATE ROLE narrow LOGIN PASSWORD 'pw'",
            "CREATE ROLE narrow_read LOGIN PASSWORD 'pw'",
            "ALTER ROLE narrow_read SET default_transaction_read_only = on",
            "CREATE DATABASE staging OWNER stage_owner",
            "CREATE DATABASE wide OWNER broad",
            "CREATE DATABASE tight OWNER narrow",
            "REVOKE CONNECT, TEMPORARY ON DATABASE tight FROM PUBLIC",
            "REVOKE CONNECT, TEMPORARY ON DATABASE staging FROM PUBLIC",
            "GRANT CONNECT ON DATABASE staging TO stage_owner, broad",
            "GRANT CONNECT ON DATABASE tight TO narrow, narrow_read",
        ] {
            cluster.psql("postgres", sql).unwrap();
        }
        cluster
            .psql(
                "wide",
                "SET ROLE broad; CREATE TABLE accounts (id int); GRANT INSERT ON accounts TO broad_read",
            )
            .unwrap();
        cluster
            .psql(
                "tight",
                "SET ROLE narrow; CREATE TABLE accounts (id int); \
                 GRANT USAGE ON SCHEMA public TO narrow_read; GRANT SELECT ON accounts TO narrow_read",
            )
            .unwrap();
        std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
        std::fs::write(dir.path().join("policy.cedar"), belay_policy::DEFAULT_POLICY).unwrap();
        World { dir, cluster }
    })
}

/// A configuration with staging and a production environment on `database` with these
/// roles and accepted risks.
fn config(database: &str, user: &str, read_user: Option<&str>, accept: &[&str]) -> Config {
    config_with("stage_owner", database, user, read_user, accept, "")
}

/// The same, with staging logging in as `staging_user`.
fn config_with(
    staging_user: &str,
    database: &str,
    user: &str,
    read_user: Option<&str>,
    accept: &[&str],
    extra: &str,
) -> Config {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let w = world();
    let read = read_user
        .map(|r| format!("read_user = \"{r}\"\nread_password = {{ file = \"pw\" }}\n"))
        .unwrap_or_default();
    let accept = accept
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "state_dir = \"state-{n}\"\npolicy = \"policy.cedar\"\n\
         [environments.staging]\ntier = \"non-production\"\n\
         [environments.staging.postgres.main]\nhost = \"127.0.0.1\"\nport = {port}\n\
         database = \"staging\"\nuser = \"{staging_user}\"\npassword = {{ file = \"pw\" }}\n\
         failure_domain = \"db\"\n\
         [environments.production]\ntier = \"production\"\n\
         [environments.production.postgres.main]\nhost = \"127.0.0.1\"\nport = {port}\n\
         database = \"{database}\"\nuser = \"{user}\"\npassword = {{ file = \"pw\" }}\n{read}\
         accept_risks = [{accept}]\nfailure_domain = \"db\"\n{extra}",
        port = w.cluster.port
    );
    let path = w.dir.path().join(format!("belay-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    Config::load(&path, &FilesOnly).unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn risks(report: &Report, environment: &str) -> Vec<(&'static str, String, bool)> {
    let mut found: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.environment == environment)
        .map(|f| (f.risk, f.role.clone(), f.refuses()))
        .collect();
    found.sort();
    found
}

#[test]
fn broad_production_roles_are_found_and_refused_and_narrow_ones_pass() {
    let broad = run(inspect(&config("wide", "broad", Some("broad_read"), &[])));
    assert!(broad.unreachable.is_empty(), "{:?}", broad.unreachable);
    let found = risks(&broad, "production");
    for expected in [
        ("createdb", "broad"),
        ("createrole", "broad"),
        ("other_environments", "broad"),
        ("read_role_can_write", "broad_read"),
    ] {
        assert!(
            found
                .iter()
                .any(|(r, role, refuses)| (*r, role.as_str()) == expected && *refuses),
            "{expected:?} in {found:?}"
        );
    }
    // The read role may insert, and does not default to read-only: both are named.
    let read_findings: Vec<_> = broad
        .findings
        .iter()
        .filter(|f| f.role == "broad_read")
        .map(|f| f.what.clone())
        .collect();
    assert!(
        read_findings
            .iter()
            .any(|w| w.contains("read-only transactions")),
        "{read_findings:?}"
    );
    assert!(
        read_findings
            .iter()
            .any(|w| w.contains("may write 1 relations")),
        "{read_findings:?}"
    );
    // Every finding says how to fix it.
    assert!(broad.findings.iter().all(|f| f.fix.contains('`')));
    // Non-production findings are warnings, never refusals.
    let staging = risks(&broad, "staging");
    assert!(
        staging.contains(&("bypassrls", "stage_owner".to_owned(), false)),
        "{staging:?}"
    );

    // Accepting a risk by name lifts that refusal only.
    let accepted = run(inspect(&config(
        "wide",
        "broad",
        Some("broad_read"),
        &["createdb"],
    )));
    let createdb = accepted
        .findings
        .iter()
        .find(|f| f.risk == "createdb")
        .unwrap();
    assert!(createdb.accepted && !createdb.refuses());
    assert!(!accepted.refusals().is_empty());

    // Without a read role, production says so.
    let no_read = run(inspect(&config("tight", "narrow", None, &[])));
    assert_eq!(
        risks(&no_read, "production"),
        vec![("no_read_role", "narrow".to_owned(), true)]
    );

    let narrow = run(inspect(&config(
        "tight",
        "narrow",
        Some("narrow_read"),
        &[],
    )));
    assert_eq!(
        risks(&narrow, "production"),
        vec![],
        "{:?}",
        narrow.findings
    );
}

#[test]
fn the_gateway_refuses_sessions_to_a_production_upstream_whose_roles_were_refused() {
    let config = config("wide", "broad", Some("broad_read"), &[]);
    let report = run(inspect(&config));
    let app = Arc::new(App::open(config).unwrap());
    app.add_human("test", "owner").unwrap();
    let grants = [("production".to_owned(), Class::Read)]
        .into_iter()
        .collect();
    let (_, token) = app
        .add_agent("test", "agent", "owner", &grants, None)
        .unwrap();
    app.guard_roles(&report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    runtime.spawn(belay_pg::serve(
        listener,
        Arc::new(AppGate::new(app.clone())),
        belay_pg::Options::default(),
        stopped,
    ));
    let err = runtime.block_on(async {
        tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=agent password={} dbname=production",
                addr.port(),
                token.expose()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .map(|_| ())
        .unwrap_err()
    });
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("createdb"), "{}", db.message());
}
