//! The database as the second wall: what each upstream role belay logs in as may do, seen
//! from inside the database. A production environment is refused when one of its roles can
//! do more than agents' grants there need (a superuser, a role that creates roles or
//! databases, bypasses row security, replicates, signals other backends, reads server files
//! or runs programs, writes every table, or owns or reaches another environment's
//! databases), when it has no separate role for read-only sessions, or when that role can
//! write. Each finding names the attribute and how to fix it; `accept_risks` accepts one by
//! name for those who must. In non-production environments findings are warnings.

use std::time::Duration;

use belay_config::{Config, Environment, Postgres};
use belay_pg::UpstreamSpec;

/// One thing a role can do that its environment's grants do not need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub environment: String,
    pub production: bool,
    /// `ENV.DATABASE` as the configuration names the upstream.
    pub upstream: String,
    pub role: String,
    /// One of `belay_config::RISKS`.
    pub risk: &'static str,
    pub what: String,
    pub fix: String,
    /// Listed in the upstream's `accept_risks`.
    pub accepted: bool,
}

impl Finding {
    /// Whether this finding stops belay from serving the environment.
    pub fn refuses(&self) -> bool {
        self.production && !self.accepted
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (role `{}`): {} [{}]; fix: {}",
            self.upstream, self.role, self.what, self.risk, self.fix
        )
    }
}

/// What the inspection found, and which upstreams it could not reach.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// `(ENV.DATABASE, role, why)`.
    pub unreachable: Vec<(String, String, String)>,
    /// What is worth an operator's look without refusing anything (connection limits that
    /// add up to more than a server accepts).
    pub warnings: Vec<String>,
}

impl Report {
    /// The findings that refuse a production environment.
    pub fn refusals(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.refuses()).collect()
    }
}

/// The attributes and memberships of the role a connection logged in as, in one row.
const ROLE_SQL: &str = "SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, \
     r.rolreplication, \
     pg_has_role(current_user, 'pg_write_all_data', 'USAGE'), \
     pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), \
     pg_has_role(current_user, 'pg_read_server_files', 'USAGE') \
       OR pg_has_role(current_user, 'pg_write_server_files', 'USAGE'), \
     pg_has_role(current_user, 'pg_execute_server_program', 'USAGE'), \
     current_setting('default_transaction_read_only'), \
     coalesce((SELECT string_agg(datname, ',') FROM pg_database \
       WHERE has_database_privilege(current_user, datname, 'CONNECT') \
          OR pg_has_role(current_user, datdba, 'USAGE')), ''), \
     pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
     FROM pg_roles r WHERE r.rolname = current_user";

/// What a read-only session's role could change in its database: relations it owns or may
/// write, sequences it may advance, schemas it may create in, and SECURITY DEFINER functions
/// of other roles it may call.
const WRITES_SQL: &str = "SELECT \
     (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
         AND (pg_has_role(current_user, c.relowner, 'USAGE') \
           OR (c.relkind = 'S' AND has_sequence_privilege(c.oid, 'UPDATE')) \
           OR (c.relkind <> 'S' AND (has_table_privilege(c.oid, 'INSERT') \
             OR has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE') \
             OR has_table_privilege(c.oid, 'TRUNCATE'))))), \
     (SELECT count(*) FROM pg_namespace n \
       WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
         AND (has_schema_privilege(n.oid, 'CREATE') \
           OR pg_has_role(current_user, n.nspowner, 'USAGE'))), \
     (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
       WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND has_function_privilege(p.oid, 'EXECUTE') \
         AND NOT pg_has_role(current_user, p.proowner, 'USAGE'))";

/// How long an inspection waits for one upstream.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Inspects every role every upstream of `config` logs in as.
pub async fn inspect(config: &Config) -> Report {
    let mut report = Report::default();
    // Per server: the sessions it accepts from roles that are not superusers, and the
    // environments whose sessions go there.
    let mut servers: std::collections::BTreeMap<(String, u16), Server<'_>> =
        std::collections::BTreeMap::new();
    for env in config.environments.values() {
        for (db, pg) in &env.postgres {
            let (findings, unreachable) = inspect_upstream(config, env, db).await;
            report.findings.extend(findings);
            report.unreachable.extend(unreachable);
            let server = servers.entry((pg.host.clone(), pg.port)).or_default();
            if server.0.is_none() {
                server.0 = connection_slots(pg).await;
            }
            if !server.1.iter().any(|e| e.name == env.name) {
                server.1.push(env);
            }
        }
    }
    for ((host, port), (slots, envs)) in servers {
        let wanted: usize = envs.iter().map(|e| e.limits.max_connections).sum();
        if let Some(slots) = slots.filter(|s| usize::try_from(*s).is_ok_and(|s| wanted > s)) {
            let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
            report.warnings.push(format!(
                "the environments on {host}:{port} ({}) may open {wanted} sessions together, more than the {slots} the server accepts from roles that are not superusers: lower their limits.max_connections, or one environment can take every slot",
                names.join(", ")
            ));
        }
    }
    report
}

/// One server's sessions for roles that are not superusers (when known), and the
/// environments that reach it.
type Server<'a> = (Option<i64>, Vec<&'a Environment>);

/// A connection of belay's own to `pg` as `user`, named `application_name` upstream (so
/// that the server's logs tell it from agents' sessions), for a look at the server.
pub(crate) fn own_connection(
    pg: &Postgres,
    user: &str,
    password: Option<belay_core::Secret>,
    application_name: &str,
    timeout: std::time::Duration,
    label: &str,
) -> UpstreamSpec {
    UpstreamSpec {
        host: pg.host.clone(),
        port: pg.port,
        database: pg.database.clone(),
        user: user.to_owned(),
        password,
        elevated: None,
        sslmode: pg.sslmode,
        sslrootcert: pg.sslrootcert.clone(),
        params: vec![("application_name".to_owned(), application_name.to_owned())],
        connect_timeout: timeout,
        label: label.to_owned(),
        application_prefix: None,
        notices: Vec::new(),
    }
}

/// How many sessions the server behind `pg` accepts from roles that are not superusers.
async fn connection_slots(pg: &Postgres) -> Option<i64> {
    let spec = own_connection(
        pg,
        &pg.user,
        pg.password.clone(),
        "belay:inspection",
        INSPECT_TIMEOUT,
        &pg.database,
    );
    let rows = belay_pg::simple_query(
        &spec,
        "SELECT current_setting('max_connections')::int \
           - current_setting('superuser_reserved_connections')::int",
    )
    .await
    .ok()?;
    rows.first()?.first()?.as_deref()?.parse().ok()
}

/// Inspects the roles of upstream `db` of `env`: the findings, and the roles it could not
/// reach.
pub async fn inspect_upstream(
    config: &Config,
    env: &Environment,
    db: &str,
) -> (Vec<Finding>, Vec<(String, String, String)>) {
    let (mut findings, mut unreachable) = (Vec::new(), Vec::new());
    let Some(pg) = env.postgres.get(db) else {
        return (findings, unreachable);
    };
    let upstream = format!("{}.{db}", env.name);
    let finding = |role: &str, risk: &'static str, what: String, fix: String| Finding {
        environment: env.name.clone(),
        production: env.production,
        upstream: upstream.clone(),
        role: role.to_owned(),
        risk,
        what,
        fix,
        accepted: pg.accept_risks.iter().any(|r| r == risk),
    };
    if env.production && pg.read.is_none() {
        findings.push(finding(
            &pg.user,
            "no_read_role",
            "agents granted only `read` log in as the same role as writers, so only belay's read-only pin keeps them from writing".to_owned(),
            format!("create a role that may only read (`CREATE ROLE {}_read LOGIN; ALTER ROLE {0}_read SET default_transaction_read_only = on; GRANT SELECT ...`) and set `read_user` and `read_password`", pg.user),
        ));
    }
    let mut roles = vec![(pg.user.clone(), pg.password.clone(), false)];
    if let Some(read) = &pg.read {
        roles.push((read.user.clone(), read.password.clone(), true));
    }
    for (user, password, read_only) in roles {
        let spec = own_connection(
            pg,
            &user,
            password,
            "belay:inspection",
            INSPECT_TIMEOUT,
            &upstream,
        );
        match inspect_role(config, env, pg, &spec, read_only).await {
            Ok(found) => findings.extend(
                found
                    .into_iter()
                    .map(|(risk, what, fix)| finding(&user, risk, what, fix)),
            ),
            Err(e) => unreachable.push((upstream.clone(), user, e)),
        }
    }
    (findings, unreachable)
}

/// Which production upstreams were inspected and found to need no more than their grants,
/// once `serve` has inspected them; sessions to any other production upstream inspect it
/// first and are refused while it fails.
#[derive(Debug, Default)]
pub struct RoleGuard {
    clear: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl RoleGuard {
    /// A guard that knows what `report` found clear.
    pub fn from_report(config: &Config, report: &Report) -> RoleGuard {
        let mut clear = std::collections::HashSet::new();
        for env in config.environments.values().filter(|e| e.production) {
            for db in env.postgres.keys() {
                let label = format!("{}.{db}", env.name);
                let refused = report.refusals().iter().any(|f| f.upstream == label);
                let unreachable = report.unreachable.iter().any(|(u, _, _)| *u == label);
                if !refused && !unreachable {
                    clear.insert(label);
                }
            }
        }
        RoleGuard {
            clear: std::sync::Mutex::new(clear),
        }
    }

    /// `Ok` when sessions may go to upstream `db` of `env`: it is not production, or it was
    /// found clear, or an inspection now finds it clear. `Err` says what stands in the way.
    pub fn admit(&self, config: &Config, env: &Environment, db: &str) -> Result<(), String> {
        if !env.production {
            return Ok(());
        }
        let label = format!("{}.{db}", env.name);
        if self
            .clear
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&label)
        {
            return Ok(());
        }
        let inspect = inspect_upstream(config, env, db);
        let (findings, unreachable) = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(inspect),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot inspect the upstream's roles: {e}"))?
                .block_on(inspect),
        };
        let refused: Vec<String> = findings
            .iter()
            .filter(|f| f.refuses())
            .map(ToString::to_string)
            .collect();
        if let Some((_, role, why)) = unreachable.first() {
            return Err(format!(
                "belay has not inspected role `{role}` of `{label}` yet and cannot now ({why})"
            ));
        }
        if !refused.is_empty() {
            return Err(format!(
                "the database roles of `{label}` can do more than its grants need: {}",
                refused.join("; ")
            ));
        }
        self.clear
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label);
        Ok(())
    }
}

/// The other environments' databases and roles on the same server as `pg`.
fn neighbours<'a>(
    config: &'a Config,
    env: &Environment,
    pg: &Postgres,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut databases = Vec::new();
    let mut roles = Vec::new();
    for other in config.environments.values().filter(|e| e.name != env.name) {
        for o in other
            .postgres
            .values()
            .filter(|o| o.host == pg.host && o.port == pg.port)
        {
            databases.push(o.database.as_str());
            roles.push(o.user.as_str());
            if let Some(r) = &o.read {
                roles.push(r.user.as_str());
            }
        }
    }
    (databases, roles)
}

type Found = Vec<(&'static str, String, String)>;

async fn inspect_role(
    config: &Config,
    env: &Environment,
    pg: &Postgres,
    spec: &UpstreamSpec,
    read_only: bool,
) -> Result<Found, String> {
    let rows = belay_pg::simple_query(spec, ROLE_SQL).await?;
    let row = rows
        .first()
        .ok_or_else(|| "the role is not in pg_roles".to_owned())?;
    let flag = |i: usize| row.get(i).and_then(|v| v.as_deref()) == Some("t");
    let text = |i: usize| row.get(i).and_then(|v| v.clone()).unwrap_or_default();
    let user = &spec.user;
    let mut found: Found = Vec::new();
    let attribute = |found: &mut Found, i: usize, risk: &'static str, what: &str, fix: String| {
        if flag(i) {
            found.push((risk, what.to_owned(), fix));
        }
    };
    attribute(
        &mut found,
        0,
        "superuser",
        "is a superuser: the database checks nothing it does",
        format!("`ALTER ROLE {user} NOSUPERUSER`"),
    );
    attribute(
        &mut found,
        1,
        "createrole",
        "may create and alter roles",
        format!("`ALTER ROLE {user} NOCREATEROLE`"),
    );
    attribute(
        &mut found,
        2,
        "createdb",
        "may create databases on the cluster",
        format!("`ALTER ROLE {user} NOCREATEDB`"),
    );
    attribute(
        &mut found,
        3,
        "bypassrls",
        "bypasses row-level security",
        format!("`ALTER ROLE {user} NOBYPASSRLS`"),
    );
    attribute(
        &mut found,
        4,
        "replication",
        "may start replication and read every change",
        format!("`ALTER ROLE {user} NOREPLICATION`"),
    );
    attribute(
        &mut found,
        5,
        "write_all_data",
        "is a member of pg_write_all_data: it writes every table of every database",
        format!("`REVOKE pg_write_all_data FROM {user}`"),
    );
    attribute(
        &mut found,
        6,
        "signal_backend",
        "is a member of pg_signal_backend: it may cancel and end other sessions",
        format!("`REVOKE pg_signal_backend FROM {user}`"),
    );
    attribute(
        &mut found,
        7,
        "server_files",
        "may read or write the server's files",
        format!("`REVOKE pg_read_server_files, pg_write_server_files FROM {user}`"),
    );
    attribute(
        &mut found,
        8,
        "server_programs",
        "may run programs on the server",
        format!("`REVOKE pg_execute_server_program FROM {user}`"),
    );
    attribute(&mut found, 11, "read_all_stats", "is a member of pg_read_all_stats: it sees every session's statements, constants and all, in pg_stat_activity", format!("`REVOKE pg_read_all_stats, pg_monitor FROM {user}`"));
    let (their_databases, their_roles) = neighbours(config, env, pg);
    if their_roles.contains(&user.as_str()) {
        found.push((
            "other_environments",
            "is also a role of another environment on this server: each sees and may change what the other does".to_owned(),
            format!("give each environment a role of its own instead of `{user}`"),
        ));
    }
    let reachable = text(10);
    for db in reachable.split(',').filter(|d| their_databases.contains(d)) {
        found.push((
            "other_environments",
            format!("owns or may connect to `{db}`, a database of another environment"),
            format!("`REVOKE CONNECT ON DATABASE {db} FROM PUBLIC, {user}` and give it an owner of its own environment"),
        ));
    }
    if !their_roles.is_empty() {
        let list = their_roles
            .iter()
            .map(|r| format!("'{}'", r.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let member = belay_pg::simple_query(
            spec,
            &format!(
                "SELECT rolname FROM pg_roles WHERE rolname IN ({list}) AND rolname <> current_user \
                 AND pg_has_role(current_user, oid, 'MEMBER')"
            ),
        )
        .await?;
        for r in member.iter().filter_map(|r| r.first().cloned().flatten()) {
            found.push((
                "other_environments",
                format!("is a member of `{r}`, a role of another environment"),
                format!("`REVOKE {r} FROM {user}`"),
            ));
        }
    }
    if read_only {
        if text(9) != "on" {
            found.push((
                "read_role_can_write",
                "does not default to read-only transactions".to_owned(),
                format!("`ALTER ROLE {user} SET default_transaction_read_only = on`"),
            ));
        }
        let writes = belay_pg::simple_query(spec, WRITES_SQL).await?;
        let count = |i: usize| {
            writes
                .first()
                .and_then(|r| r.get(i).cloned().flatten())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let (relations, schemas, definers) = (count(0), count(1), count(2));
        if relations > 0 {
            found.push((
                "read_role_can_write",
                format!("owns or may write {relations} relations or sequences of `{}`", pg.database),
                format!("grant it SELECT only, and give the objects another owner (`REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA ... FROM {user}`)"),
            ));
        }
        if schemas > 0 {
            found.push((
                "read_role_can_write",
                format!("owns or may create objects in {schemas} schemas"),
                format!("`REVOKE CREATE ON SCHEMA ... FROM {user}, PUBLIC`"),
            ));
        }
        if definers > 0 {
            found.push((
                "read_role_can_write",
                format!("may call {definers} SECURITY DEFINER functions of other roles, which run with their rights"),
                format!("`REVOKE EXECUTE ON FUNCTION ... FROM {user}, PUBLIC`"),
            ));
        }
    }
    Ok(found)
}
