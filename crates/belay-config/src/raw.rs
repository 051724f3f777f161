//! The file as written (serde types with `deny_unknown_fields`) and its validation into
//! `Config`. Every error carries the file and, where it can be found, the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use belay_core::units::{measure, Unit};
use belay_core::Secret;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    Audit, BackupStore, Config, Env, Environment, Error, Limits, Listen, Notify, Postgres,
    ReadRole, Sql, SslMode, Tls, DEFAULT_AGENT_CONNECTIONS, DEFAULT_ENV_CONNECTIONS,
    DEFAULT_IDLE_IN_TRANSACTION, DEFAULT_IDLE_SESSION, DEFAULT_LOCK_TIMEOUT, MAX_APPROVAL_WAIT,
    RISKS,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    policy: PathBuf,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    sql: RawSql,
    #[serde(default)]
    notify: RawNotify,
    environments: BTreeMap<String, Spanned<RawEnvironment>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    postgres: Option<SocketAddr>,
    http: Option<SocketAddr>,
    max_connections: Option<usize>,
    handshake_timeout: Option<String>,
    shutdown_grace: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_tls: Option<bool>,
    allow_cleartext_password: Option<bool>,
    relay_threads: Option<usize>,
    memory_budget: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_file: Option<PathBuf>,
    checkpoint_every: Option<u64>,
    upstream_ledger: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    max_input_bytes: Option<usize>,
    max_statements: Option<usize>,
    catalog_refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    #[serde(default)]
    owners: BTreeMap<String, RawOwnerNotify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwnerNotify {
    webhook: SecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    tier: Tier,
    statement_timeout: Option<String>,
    approval_wait: Option<String>,
    notify_webhook: Option<SecretSource>,
    #[serde(default)]
    postgres: BTreeMap<String, Spanned<RawPostgres>>,
    backups: Option<Spanned<RawBackups>>,
    #[serde(default)]
    limits: RawLimits,
}

/// `[environments.NAME.limits]`: what an agent's session may use. Timeouts are pinned at
/// login and may only be lowered; the others may be set up to the value given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_connections_per_agent: Option<usize>,
    idle_session_timeout: Option<String>,
    statement_timeout_max: Option<String>,
    lock_timeout: Option<String>,
    idle_in_transaction_session_timeout: Option<String>,
    work_mem: Option<String>,
    maintenance_work_mem: Option<String>,
    logical_decoding_work_mem: Option<String>,
    temp_buffers: Option<String>,
    hash_mem_multiplier: Option<f64>,
    max_parallel_workers_per_gather: Option<u32>,
    max_parallel_maintenance_workers: Option<u32>,
    max_parallel_workers: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Tier {
    Production,
    NonProduction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    database: String,
    user: String,
    password: Option<SecretSource>,
    #[serde(default = "default_sslmode")]
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
    failure_domain: String,
    /// Roles of the cluster that belong to this environment besides `user`.
    #[serde(default)]
    roles: Vec<String>,
    /// Tablespaces of the cluster that belong to this environment.
    #[serde(default)]
    tablespaces: Vec<String>,
    /// The role sessions of agents granted only `read` log in as: one the database itself
    /// forbids to write.
    read_user: Option<String>,
    read_password: Option<SecretSource>,
    /// Role attributes the inspection would refuse in production, accepted anyway.
    #[serde(default)]
    accept_risks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackups {
    path: PathBuf,
    failure_domain: String,
}

/// A secret is never written in the file itself: it comes from an environment variable or a
/// file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSource {
    env: Option<String>,
    file: Option<PathBuf>,
}

/// The environment's session limits, each measured in its setting's unit (bytes,
/// milliseconds, a number), defaults filled in. `Err` names the key and what is wrong.
fn limits(raw: &RawLimits, statement_timeout: Duration) -> Result<Limits, String> {
    let millis = |key: &str, value: &Option<String>, default: Duration| -> Result<f64, String> {
        let d = duration(value.as_deref(), default).map_err(|m| format!("{key}`: {m}"))?;
        if d.is_zero() || d.as_millis() > i32::MAX as u128 {
            return Err(format!(
                "{key}`: must be more than zero (zero would turn the limit off) and at most 24 days"
            ));
        }
        Ok(d.as_millis() as f64)
    };
    let bytes = |key: &str, value: &Option<String>, default: &str| -> Result<f64, String> {
        let text = value.as_deref().unwrap_or(default);
        measure(Unit::Bytes { base: 1024 }, text)
            .filter(|b| *b > 0.0)
            .ok_or_else(|| format!("{key}`: `{text}` is not a size such as `64MB` or `1GB`"))
    };
    let mut caps = BTreeMap::new();
    // The longest statement timeout an agent may set; the environment's `statement_timeout`
    // is what a session starts with.
    let statement_max = millis(
        "statement_timeout_max",
        &raw.statement_timeout_max,
        statement_timeout,
    )?;
    if statement_max < statement_timeout.as_millis() as f64 {
        return Err(
            "statement_timeout_max`: must be at least the environment's `statement_timeout`"
                .to_owned(),
        );
    }
    caps.insert("statement_timeout", statement_max);
    caps.insert(
        "lock_timeout",
        millis("lock_timeout", &raw.lock_timeout, DEFAULT_LOCK_TIMEOUT)?,
    );
    caps.insert(
        "idle_in_transaction_session_timeout",
        millis(
            "idle_in_transaction_session_timeout",
            &raw.idle_in_transaction_session_timeout,
            DEFAULT_IDLE_IN_TRANSACTION,
        )?,
    );
    caps.insert(
        "idle_session_timeout",
        millis(
            "idle_session_timeout",
            &raw.idle_session_timeout,
            DEFAULT_IDLE_SESSION,
        )?,
    );
    // transaction_timeout (PostgreSQL 17) may be set up to the longest statement timeout.
    caps.insert("transaction_timeout", statement_max);
    caps.insert("work_mem", bytes("work_mem", &raw.work_mem, "256MB")?);
    caps.insert(
        "maintenance_work_mem",
        bytes("maintenance_work_mem", &raw.maintenance_work_mem, "1GB")?,
    );
    caps.insert(
        "logical_decoding_work_mem",
        bytes(
            "logical_decoding_work_mem",
            &raw.logical_decoding_work_mem,
            "256MB",
        )?,
    );
    caps.insert(
        "temp_buffers",
        bytes("temp_buffers", &raw.temp_buffers, "256MB")?,
    );
    let multiplier = raw.hash_mem_multiplier.unwrap_or(4.0);
    if !(1.0..=1000.0).contains(&multiplier) {
        return Err("hash_mem_multiplier`: must be between 1 and 1000".to_owned());
    }
    caps.insert("hash_mem_multiplier", multiplier);
    caps.insert(
        "max_parallel_workers_per_gather",
        f64::from(raw.max_parallel_workers_per_gather.unwrap_or(4)),
    );
    caps.insert(
        "max_parallel_maintenance_workers",
        f64::from(raw.max_parallel_maintenance_workers.unwrap_or(4)),
    );
    caps.insert(
        "max_parallel_workers",
        f64::from(raw.max_parallel_workers.unwrap_or(8)),
    );
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_ENV_CONNECTIONS);
    let per_agent = raw
        .max_connections_per_agent
        .unwrap_or(DEFAULT_AGENT_CONNECTIONS.min(max_connections));
    if max_connections == 0 || per_agent == 0 {
        return Err("max_connections`: a limit of 0 would admit no one".to_owned());
    }
    if per_agent > max_connections {
        return Err(format!(
            "max_connections_per_agent`: {per_agent} is more than the environment's max_connections ({max_connections})"
        ));
    }
    Ok(Limits {
        caps,
        max_connections,
        max_connections_per_agent: per_agent,
    })
}

fn default_port() -> u16 {
    5432
}

fn default_sslmode() -> SslMode {
    SslMode::Prefer
}

pub(crate) fn parse(path: &Path, text: &str, env: &dyn Env) -> Result<Config, Error> {
    let at = |span: Option<Range<usize>>, message: String| -> Error {
        match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                Error::At {
                    path: path.to_owned(),
                    line,
                    column,
                    message,
                }
            }
            None => Error::Invalid {
                path: path.to_owned(),
                message,
            },
        }
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };

    if raw.environments.is_empty() {
        return Err(at(
            None,
            "no environment is configured: add at least one `[environments.NAME]` table".to_owned(),
        ));
    }
    let mut environments = BTreeMap::new();
    for (name, spanned) in raw.environments {
        let span = spanned.span();
        let raw_env = spanned.into_inner();
        if !valid_name(&name) {
            return Err(at(Some(span), format!(
                "environment name `{name}` must be lowercase letters, digits, `-` or `_`, starting with a letter"
            )));
        }
        let mut postgres = BTreeMap::new();
        for (db, spanned_pg) in raw_env.postgres {
            let pg_span = spanned_pg.span();
            let pg = spanned_pg.into_inner();
            if !valid_name(&db) {
                return Err(at(
                    Some(pg_span),
                    format!(
                    "database name `{db}` in `{name}` must be lowercase letters, digits, `-` or `_`"
                ),
                ));
            }
            if matches!(pg.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
                && pg.sslrootcert.is_none()
            {
                return Err(at(Some(pg_span), format!(
                    "`environments.{name}.postgres.{db}.sslmode` verifies the server's certificate: \
                     give `sslrootcert` (the CA certificate file) too"
                )));
            }
            if pg.failure_domain.trim().is_empty() {
                return Err(at(Some(pg_span), format!(
                    "`environments.{name}.postgres.{db}.failure_domain` must name where the data lives"
                )));
            }
            let password = match pg.password {
                None => None,
                Some(source) => Some(secret(&source, env, &resolve).map_err(|m| {
                    at(
                        Some(pg_span.clone()),
                        format!("`environments.{name}.postgres.{db}.password`: {m}"),
                    )
                })?),
            };
            let read = match (pg.read_user, pg.read_password) {
                (None, None) => None,
                (Some(user), source) => {
                    let password = match source {
                        None => None,
                        Some(source) => Some(secret(&source, env, &resolve).map_err(|m| {
                            at(
                                Some(pg_span.clone()),
                                format!("`environments.{name}.postgres.{db}.read_password`: {m}"),
                            )
                        })?),
                    };
                    Some(ReadRole { user, password })
                }
                (None, Some(_)) => {
                    return Err(at(
                        Some(pg_span),
                        format!(
                            "`environments.{name}.postgres.{db}.read_password` needs `read_user`"
                        ),
                    ))
                }
            };
            for risk in &pg.accept_risks {
                if !RISKS.contains(&risk.as_str()) {
                    return Err(at(
                        Some(pg_span),
                        format!(
                            "`environments.{name}.postgres.{db}.accept_risks`: `{risk}` is not one of {}",
                            RISKS.join(", ")
                        ),
                    ));
                }
            }
            postgres.insert(
                db,
                Postgres {
                    host: pg.host,
                    port: pg.port,
                    database: pg.database,
                    user: pg.user,
                    password,
                    sslmode: pg.sslmode,
                    sslrootcert: pg.sslrootcert.map(|p| resolve(&p)),
                    failure_domain: pg.failure_domain,
                    roles: pg.roles,
                    tablespaces: pg.tablespaces,
                    read,
                    accept_risks: pg.accept_risks,
                },
            );
        }
        let backups = match raw_env.backups {
            None => None,
            Some(spanned_b) => {
                let b_span = spanned_b.span();
                let b = spanned_b.into_inner();
                if b.failure_domain.trim().is_empty() {
                    return Err(at(
                        Some(b_span),
                        format!(
                        "`environments.{name}.backups.failure_domain` must name where backups live"
                    ),
                    ));
                }
                if let Some((db, _)) = postgres
                    .iter()
                    .find(|(_, p)| p.failure_domain == b.failure_domain)
                {
                    return Err(at(Some(b_span), format!(
                        "backups of `{name}` share the failure domain `{}` with its database `{db}`; \
                         a backup must live where losing the data cannot take it too",
                        b.failure_domain
                    )));
                }
                Some(BackupStore {
                    path: resolve(&b.path),
                    failure_domain: b.failure_domain,
                })
            }
        };
        let statement_timeout = duration(
            raw_env.statement_timeout.as_deref(),
            DEFAULT_STATEMENT_TIMEOUT,
        )
        .map_err(|m| {
            at(
                Some(span.clone()),
                format!("`environments.{name}.statement_timeout`: {m}"),
            )
        })?;
        let approval_wait = duration(raw_env.approval_wait.as_deref(), Duration::ZERO)
            .and_then(|d| {
                if d > MAX_APPROVAL_WAIT {
                    Err(format!(
                        "`{}` is longer than the longest wait belay allows ({})",
                        raw_env.approval_wait.as_deref().unwrap_or_default(),
                        humantime::format_duration(MAX_APPROVAL_WAIT)
                    ))
                } else {
                    Ok(d)
                }
            })
            .map_err(|m| {
                at(
                    Some(span.clone()),
                    format!("`environments.{name}.approval_wait`: {m}"),
                )
            })?;
        let limits = limits(&raw_env.limits, statement_timeout).map_err(|m| {
            at(
                Some(span.clone()),
                format!("`environments.{name}.limits.{m}"),
            )
        })?;
        let notify_webhook = match &raw_env.notify_webhook {
            None => None,
            Some(source) => Some(webhook(source, env, &resolve).map_err(|m| {
                at(
                    Some(span.clone()),
                    format!("`environments.{name}.notify_webhook`: {m}"),
                )
            })?),
        };
        environments.insert(
            name.clone(),
            Environment {
                name,
                production: matches!(raw_env.tier, Tier::Production),
                statement_timeout,
                postgres,
                backups,
                approval_wait,
                notify_webhook,
                limits,
            },
        );
    }

    let mut owners = BTreeMap::new();
    for (owner, n) in &raw.notify.owners {
        let url = webhook(&n.webhook, env, &resolve)
            .map_err(|m| at(None, format!("`notify.owners.{owner}.webhook`: {m}")))?;
        owners.insert(owner.clone(), url);
    }

    let state_dir = resolve(&raw.state_dir);
    let checkpoint_every = raw.audit.checkpoint_every.unwrap_or(1000);
    if checkpoint_every == 0 {
        return Err(at(
            None,
            "`audit.checkpoint_every` must be at least 1".to_owned(),
        ));
    }
    Ok(Config {
        path: path.to_owned(),
        policy: resolve(&raw.policy),
        audit: Audit {
            checkpoint_file: raw
                .audit
                .checkpoint_file
                .map(|p| resolve(&p))
                .unwrap_or_else(|| state_dir.join("audit-checkpoints.jsonl")),
            checkpoint_every,
            upstream_ledger: raw.audit.upstream_ledger.unwrap_or(true),
        },
        state_dir,
        listen: listen(raw.listen, &resolve).map_err(|m| at(None, m))?,
        sql: Sql {
            max_input_bytes: raw.sql.max_input_bytes.unwrap_or(1024 * 1024),
            max_statements: raw.sql.max_statements.unwrap_or(1000).max(1),
            catalog_refresh: duration(raw.sql.catalog_refresh.as_deref(), Duration::from_secs(60))
                .map_err(|m| at(None, format!("sql.catalog_refresh: {m}")))?,
        },
        notify: Notify { owners },
        environments,
    })
}

const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// A duration written as `30s`, `5min` or `1h`; `None` takes `default`.
fn duration(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| format!("`{t}` is not a duration such as `30s` or `5min` ({e})")),
    }
}

fn listen(raw: RawListen, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Listen, String> {
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(Tls {
            cert: resolve(&cert),
            key: resolve(&key),
        }),
        _ => return Err("`listen.tls_cert` and `listen.tls_key` go together".to_owned()),
    };
    let require_tls = raw.require_tls.unwrap_or(false);
    if require_tls && tls.is_none() {
        return Err("`listen.require_tls` needs `listen.tls_cert` and `listen.tls_key`".to_owned());
    }
    let allow_cleartext_password = raw.allow_cleartext_password.unwrap_or(false);
    if allow_cleartext_password && tls.is_none() {
        return Err(
            "`listen.allow_cleartext_password` needs TLS (`listen.tls_cert`, `listen.tls_key`): \
             a token must never cross the network in the clear"
                .to_owned(),
        );
    }
    let max_connections = raw.max_connections.unwrap_or(1000);
    if max_connections == 0 {
        return Err("`listen.max_connections` must be at least 1".to_owned());
    }
    if let Some(n) = raw.relay_threads {
        if !(1..=MAX_RELAY_THREADS).contains(&n) {
            return Err(format!(
                "`listen.relay_threads` must be between 1 and {MAX_RELAY_THREADS} (it is {n})"
            ));
        }
    }
    let budget_text = raw.memory_budget.as_deref().unwrap_or("256MB");
    let memory_budget = measure(Unit::Bytes { base: 1024 }, budget_text)
        .filter(|b| *b >= 1024.0 * 1024.0)
        .map(|b| b as usize)
        .ok_or_else(|| {
            format!("`listen.memory_budget`: `{budget_text}` is not a size of at least 1MB, such as `256MB`")
        })?;
    Ok(Listen {
        postgres: raw.postgres,
        http: raw.http,
        max_connections,
        memory_budget,
        handshake_timeout: duration(raw.handshake_timeout.as_deref(), Duration::from_secs(10))
            .map_err(|m| format!("`listen.handshake_timeout`: {m}"))?,
        shutdown_grace: duration(raw.shutdown_grace.as_deref(), Duration::from_secs(30))
            .map_err(|m| format!("`listen.shutdown_grace`: {m}"))?,
        tls,
        require_tls,
        allow_cleartext_password,
        relay_threads: raw.relay_threads,
    })
}

/// More relay threads than this is a typo, not a tuning.
const MAX_RELAY_THREADS: usize = 1024;

fn secret(
    source: &SecretSource,
    env: &dyn Env,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Secret, String> {
    match (&source.env, &source.file) {
        (Some(var), None) => env
            .var(var)
            .map(Secret::new)
            .ok_or_else(|| format!("the environment variable `{var}` is not set")),
        (None, Some(file)) => {
            let file = resolve(file);
            env.read_file(&file)
                .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
                .map_err(|e| format!("cannot read the secret file `{}`: {e}", file.display()))
        }
        _ => Err("give exactly one of `env = \"VARIABLE\"` or `file = \"PATH\"`".to_owned()),
    }
}

/// A webhook URL from a secret source; only its scheme is checked and named, since the URL
/// itself is a credential.
fn webhook(
    source: &SecretSource,
    env: &dyn Env,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Secret, String> {
    let url = secret(source, env, resolve)?;
    let text = url.expose();
    if text.starts_with("https://") || text.starts_with("http://") {
        Ok(url)
    } else {
        Err("the webhook must be an `https://` (or `http://`) URL".to_owned())
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
