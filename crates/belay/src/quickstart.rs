//! `belay quickstart`: everything a newcomer needs to see belay work, in one directory: a
//! scratch PostgreSQL cluster (or an existing server) with `staging` and `production`
//! databases holding a small car-rental schema, a configuration, a human, an agent that may
//! do anything in staging and only read production, and the gateway in front of them.
//! It prints the lines to try and writes `quickstart.json` for scripts; Ctrl-C or SIGTERM
//! stops the gateway and the cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::{bail, Context};
use belay_app::App;
use belay_config::{Config, ProcessEnv};
use belay_core::Class;
use belay_scratch::Cluster;
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Where to put the cluster, configuration and state. A directory left by an earlier
    /// quickstart is replaced; any other non-empty directory is refused.
    #[arg(long, default_value = "belay-quickstart")]
    dir: PathBuf,
    /// The gateway's port (0 picks a free one).
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// Use this PostgreSQL server instead of a scratch cluster:
    /// postgres://USER:PASSWORD@HOST:PORT (a role that may create databases).
    #[arg(long)]
    upstream: Option<String>,
    /// Sessions each environment (and each agent in it) may hold at once, instead of the
    /// demo's 50 (20 per agent): for load tests against a server sized for them.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

const MARKER: &str = "quickstart.json";
const HUMAN: &str = "alice";
const AGENT: &str = "demo-agent";
/// The upstream roles, one set per environment, so that the database itself keeps them
/// apart: each owns and may connect to its own database only, and production's read-only
/// sessions log in as a role that may only read.
const STAGING_ROLE: &str = "belay_staging";
const PRODUCTION_ROLE: &str = "belay_production";
const PRODUCTION_READ_ROLE: &str = "belay_production_read";

/// The car-rental schema and a few thousand rows, the same in both databases.
const SCHEMA: &str = r"
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE vehicles (
    id bigserial PRIMARY KEY,
    plate text NOT NULL UNIQUE,
    model text NOT NULL,
    daily_rate numeric(8,2) NOT NULL,
    status text NOT NULL DEFAULT 'available'
);
CREATE TABLE rentals (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    vehicle_id bigint NOT NULL REFERENCES vehicles,
    starts_on date NOT NULL,
    ends_on date NOT NULL,
    status text NOT NULL
);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    rental_id bigint NOT NULL REFERENCES rentals,
    amount numeric(10,2) NOT NULL,
    paid_at timestamptz NOT NULL
);
INSERT INTO customers (name, email)
    SELECT 'Customer ' || i, 'customer' || i || '@example.com' FROM generate_series(1, 2000) i;
INSERT INTO vehicles (plate, model, daily_rate, status)
    SELECT 'CAR-' || lpad(i::text, 4, '0'),
           (ARRAY['Corolla', 'Golf', 'Model 3', 'Transit', 'Clio'])[1 + i % 5],
           39 + (i % 7) * 10,
           CASE WHEN i % 9 = 0 THEN 'maintenance' ELSE 'available' END
    FROM generate_series(1, 300) i;
INSERT INTO rentals (customer_id, vehicle_id, starts_on, ends_on, status)
    SELECT 1 + i % 2000, 1 + i % 300, date '2026-01-01' + i % 300, date '2026-01-01' + i % 300 + 1 + i % 6,
           CASE WHEN i % 10 = 0 THEN 'cancelled' ELSE 'completed' END
    FROM generate_series(1, 5000) i;
INSERT INTO payments (rental_id, amount, paid_at)
    SELECT i, 40 + (i % 13) * 17.5, timestamptz '2026-01-02' + i * interval '1 hour'
    FROM generate_series(1, 5000) i WHERE i % 5 <> 0;
ANALYZE;
";

/// Where the databases live and how to reach them as a role that may create them.
enum Upstream {
    Scratch(Cluster),
    Existing(Url),
}

/// The parts of a `postgres://` URL the quickstart needs.
struct Url {
    user: String,
    password: String,
    host: String,
    port: u16,
}

fn parse_url(url: &str) -> anyhow::Result<Url> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("--upstream must look like postgres://USER:PASSWORD@HOST:PORT")?;
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (auth, hostport) = rest
        .rsplit_once('@')
        .context("--upstream needs USER:PASSWORD@")?;
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .context("the port in --upstream is not a number")?,
        ),
        None => (hostport, 5432),
    };
    Ok(Url {
        user: user.to_owned(),
        password: password.to_owned(),
        host: host.to_owned(),
        port,
    })
}

impl Upstream {
    fn host_port(&self) -> (String, u16) {
        match self {
            Upstream::Scratch(c) => ("127.0.0.1".to_owned(), c.port),
            Upstream::Existing(u) => (u.host.clone(), u.port),
        }
    }

    fn sql(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        match self {
            Upstream::Scratch(c) => {
                c.psql(database, sql).map_err(anyhow::Error::msg)?;
            }
            Upstream::Existing(u) => {
                let output = Command::new("psql")
                    .args([
                        "-h",
                        &u.host,
                        "-p",
                        &u.port.to_string(),
                        "-U",
                        &u.user,
                        "-d",
                        database,
                    ])
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
                    .env("PGPASSWORD", &u.password)
                    .output()
                    .context("cannot run psql (install the PostgreSQL client)")?;
                if !output.status.success() {
                    bail!(
                        "psql failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
            }
        }
        Ok(())
    }
}

fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.join(MARKER).exists() {
        // A previous quickstart: stop its cluster if it still runs, then start afresh.
        belay_scratch::stop_leftover(&dir.join("pg"));
        std::fs::remove_dir_all(dir).with_context(|| {
            format!(
                "cannot remove the previous quickstart in `{}`",
                dir.display()
            )
        })?;
    } else if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "`{}` is not empty and was not made by belay quickstart; pass --dir NEW_DIRECTORY",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    Ok(())
}

fn config_text(host: &str, port: u16, gateway: u16, max_connections: Option<usize>) -> String {
    let limits = match max_connections {
        Some(n) => format!("max_connections = {n}\nmax_connections_per_agent = {n}\n"),
        None => "max_connections = 50\nmax_connections_per_agent = 20\n".to_owned(),
    };
    let env = |name: &str, tier: &str, role: &str, read: &str| {
        format!(
            r#"
[environments.{name}]
tier = "{tier}"
statement_timeout = "1min"

# What an agent's session may use: timeouts are pinned at login and may only be lowered;
# resource settings may be raised up to these values.
[environments.{name}.limits]
{limits}lock_timeout = "30s"
idle_in_transaction_session_timeout = "2min"
idle_session_timeout = "1h"
work_mem = "256MB"

[environments.{name}.postgres.main]
host = "{host}"
port = {port}
database = "{name}"
# A role of this environment's own: it owns and may connect to this database only.
user = "{role}"
password = {{ file = "secrets/{name}-password" }}{read}
sslmode = "prefer"
failure_domain = "quickstart-cluster"

[environments.{name}.backups]
path = "backups/{name}"
failure_domain = "quickstart-backups"
"#
        )
    };
    let production_read = format!(
        "\n# Agents granted only `read` log in as a role the database forbids to write.\n\
         read_user = \"{PRODUCTION_READ_ROLE}\"\nread_password = {{ file = \"secrets/production-read-password\" }}"
    );
    format!(
        r#"# Written by `belay quickstart`: a scratch setup, not a production configuration.
state_dir = "state"
policy = "policy.cedar"

[listen]
postgres = "127.0.0.1:{gateway}"
http = "127.0.0.1:0"
handshake_timeout = "10s"
shutdown_grace = "5s"

[audit]
checkpoint_file = "state/audit-checkpoints.jsonl"
checkpoint_every = 1000
{}{}"#,
        env("staging", "non-production", STAGING_ROLE, ""),
        env(
            "production",
            "production",
            PRODUCTION_ROLE,
            &production_read
        )
    )
}

/// The roles and databases of the demo, in the shape belay's inspection accepts: each
/// environment's role owns its database and reaches no other, and production's read role
/// may only read. Returns each role's password, by the file it is kept in.
fn create_roles(upstream: &Upstream) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut passwords = Vec::new();
    for (role, file) in [
        (STAGING_ROLE, "staging-password"),
        (PRODUCTION_ROLE, "production-password"),
        (PRODUCTION_READ_ROLE, "production-read-password"),
    ] {
        let password = belay_scratch::random_hex(16).map_err(anyhow::Error::msg)?;
        upstream.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        )?;
        passwords.push((file, password));
    }
    upstream.sql(
        "postgres",
        &format!("ALTER ROLE {PRODUCTION_READ_ROLE} SET default_transaction_read_only = on"),
    )?;
    for (db, owner) in [("staging", STAGING_ROLE), ("production", PRODUCTION_ROLE)] {
        upstream.sql("postgres", &format!("CREATE DATABASE {db} OWNER {owner}"))?;
        upstream.sql(
            "postgres",
            &format!("REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {owner}"),
        )?;
        upstream.sql(db, &format!("SET ROLE {owner}; {SCHEMA}"))?;
    }
    upstream.sql(
        "postgres",
        &format!("GRANT CONNECT ON DATABASE production TO {PRODUCTION_READ_ROLE}"),
    )?;
    upstream.sql(
        "production",
        &format!(
            "GRANT USAGE ON SCHEMA public TO {PRODUCTION_READ_ROLE}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PRODUCTION_READ_ROLE}; \
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {PRODUCTION_READ_ROLE}; \
             SET ROLE {PRODUCTION_ROLE}; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {PRODUCTION_READ_ROLE}; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO {PRODUCTION_READ_ROLE}"
        ),
    )?;
    Ok(passwords)
}

pub(crate) fn quickstart(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    prepare_dir(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let upstream = match &args.upstream {
        Some(url) => Upstream::Existing(parse_url(url)?),
        None => {
            eprintln!(
                "belay: creating a scratch PostgreSQL cluster in {}",
                dir.join("pg").display()
            );
            if belay_scratch::is_root() {
                // The server runs as `postgres`, which must be able to enter the directory.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
            }
            Upstream::Scratch(Cluster::start(&dir.join("pg"), None).map_err(anyhow::Error::msg)?)
        }
    };
    let passwords = create_roles(&upstream)?;

    belay_app::init(&dir, &crate::operator())?;
    std::fs::create_dir_all(dir.join("secrets"))?;
    for (file, password) in &passwords {
        belay_app::write_private(&dir.join("secrets").join(file), password)?;
    }
    let gateway_port = if args.port == 0 {
        belay_scratch::free_port().map_err(anyhow::Error::msg)?
    } else {
        args.port
    };
    let (host, port) = upstream.host_port();
    let config_path = dir.join("belay.toml");
    std::fs::write(
        &config_path,
        config_text(&host, port, gateway_port, args.max_connections),
    )?;
    let config = Config::load(&config_path, &ProcessEnv)?;
    let app = Arc::new(App::open(config)?);
    let (_, human_token) = app.add_human(&crate::operator(), HUMAN)?;
    let grants = [
        ("staging".to_owned(), Class::Destructive),
        ("production".to_owned(), Class::Read),
    ]
    .into_iter()
    .collect();
    let (_, agent_token) = app.add_agent(&crate::operator(), AGENT, HUMAN, &grants, None)?;

    let addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let url = |db: &str| {
        format!(
            "postgres://{AGENT}:{}@127.0.0.1:{gateway_port}/{db}",
            agent_token.expose()
        )
    };
    let info = json!({
        "config": config_path,
        "agent": AGENT,
        "agent_token": agent_token.expose(),
        "human": HUMAN,
        "human_token": human_token.expose(),
        "pg_host": "127.0.0.1",
        "pg_port": gateway_port,
        "staging_url": url("staging"),
        "production_url": url("production"),
        "upstream_host": host,
        "upstream_port": port,
    });
    let marker = dir.join(MARKER);
    let http = app.config.listen.http;
    let mut info = info;
    let result = crate::serve::runtime()?.block_on(crate::serve::gateway(
        app.clone(),
        addr,
        http,
        |bound, http| {
            if let Some(http) = http {
                info["http_url"] = json!(format!("http://{http}"));
            }
            // The tokens go to private files, never to the terminal (whose scrollback and
            // logs outlive them): the lines printed read them from there. quickstart.json
            // is written last, once the gateway listens, so that scripts can wait for it.
            let written = belay_app::write_private(
                &dir.join(AGENT_TOKEN_FILE),
                &format!("{}\n", agent_token.expose()),
            )
            .and_then(|()| {
                belay_app::write_private(
                    &dir.join(HUMAN_TOKEN_FILE),
                    &format!("{}\n", human_token.expose()),
                )
            })
            .and_then(|()| belay_app::write_private(&marker, &format!("{info:#}\n")));
            if let Err(e) = written {
                eprintln!("belay: {e:#}");
            }
            print_intro(&dir, bound, http, port);
        },
    ));
    let closed = app.close();
    if let Upstream::Scratch(mut cluster) = upstream {
        let _ = cluster.stop();
    }
    result?;
    closed?;
    eprintln!(
        "belay: quickstart stopped (its files stay in {})",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the quickstart keeps the demo agent's and the human's tokens (mode 0600).
const AGENT_TOKEN_FILE: &str = "agent-token";
const HUMAN_TOKEN_FILE: &str = "human-token";

fn print_intro(dir: &Path, gateway: SocketAddr, http: Option<SocketAddr>, upstream_port: u16) {
    let port = gateway.port();
    let belay = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "belay".to_owned());
    let http = http.map_or_else(|| "off".to_owned(), |a| format!("http://{a}/v1/approvals"));
    let conn = |db: &str| format!("psql \"host=127.0.0.1 port={port} user={AGENT} dbname={db}\"");
    println!(
        r#"
belay is running.

  gateway    127.0.0.1:{port}   (agent `{AGENT}`: staging up to destructive, production read-only)
  upstream   PostgreSQL on 127.0.0.1:{upstream_port}, databases `staging` and `production`
  human API  {http}   (bearer: the human token in {dir}/{HUMAN_TOKEN_FILE})
  files      {dir}   (belay.toml, quickstart.json and the token files, private to you; state/ with the audit log)

Try it from another terminal (the tokens are read from their files, never printed):

  export PGPASSWORD="$(cat {dir}/{AGENT_TOKEN_FILE})"
  {staging} -c "SELECT count(*) FROM rentals"
  {staging} -c "DELETE FROM payments WHERE id = 1"
  {production} -c "SELECT plate, model FROM vehicles LIMIT 3"
  {production} -c "UPDATE vehicles SET status = 'sold' WHERE id = 1"   # held: production is read-only for it
  {production} -c "DROP TABLE payments"                                 # held for approval (YB001)

Approve the DROP as the human `{HUMAN}` (the error names the request), then send it again: it
runs exactly once; sent a third time, it is held anew.

  export BELAY_CONFIG={dir}/belay.toml BELAY_HUMAN_TOKEN="$(cat {dir}/{HUMAN_TOKEN_FILE})"
  {belay} pending
  {belay} approve N --comment "checked with the team"   # N: the request the error names
  {belay} audit tail -n 5
  {belay} audit verify

Ctrl-C stops the gateway and the scratch cluster."#,
        dir = dir.display(),
        staging = conn("staging"),
        production = conn("production"),
    );
}
