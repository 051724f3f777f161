//! belay's configuration: one TOML file with environments, the policy file, the state
//! directory and listen addresses.
//!
//! The file is parsed and validated completely before anything starts; an unknown key, a
//! missing secret or a backup store sharing a failure domain with the data it protects is an
//! error naming the file and line, never a silent default. Secrets come from environment
//! variables or files (read through the `Env` trait so tests can supply them) and are held as
//! `Secret`, which never prints.

mod env;
mod raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use belay_core::Secret;
pub use belay_core::SslMode;

/// The longest `approval_wait` an environment may set: a held statement keeps its client
/// (and any open transaction's locks) waiting.
pub const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(600);

pub use env::{Env, ProcessEnv};

/// Where the configuration file is looked for when neither `--config` nor `BELAY_CONFIG` says.
pub const DEFAULT_PATH: &str = "belay.toml";

/// A configuration that was read and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub policy: PathBuf,
    pub listen: Listen,
    pub audit: Audit,
    pub sql: Sql,
    pub notify: Notify,
    pub environments: BTreeMap<String, Environment>,
}

/// Where belay tells people that an action waits for them.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// Slack-compatible webhook URLs by owner (a human's name): the owner hears of every
    /// request by their agents. The URL is a secret (whoever has it can post).
    pub owners: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub postgres: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Client connections the gateway holds at once; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Time a client has from connecting to being authenticated.
    pub handshake_timeout: Duration,
    /// On shutdown, how long sessions have to finish their transaction.
    pub shutdown_grace: Duration,
    /// Certificate and key (PEM) for TLS with clients.
    pub tls: Option<Tls>,
    /// Refuse clients that do not use TLS.
    pub require_tls: bool,
    /// Accept a token as a cleartext password (only over TLS) for clients without SCRAM.
    pub allow_cleartext_password: bool,
    /// Threads that relay sessions; `None`: the gateway's default (half the cores).
    pub relay_threads: Option<usize>,
    /// Bytes all sessions' buffers may hold before each reads only a little ahead.
    pub memory_budget: usize,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// Signed checkpoints of the chain head go here; put it on other storage than the state.
    pub checkpoint_file: PathBuf,
    /// Write a checkpoint after this many events (and when belay stops).
    pub checkpoint_every: u64,
    /// Commit the decisions of a transaction's writes with the transaction, in a table of
    /// belay's own in the upstream database (`belay_ledger.decisions`), rather than wait for the
    /// audit log's fsync before the COMMIT.
    pub upstream_ledger: bool,
}

#[derive(Debug, Clone)]
pub struct Sql {
    pub max_input_bytes: usize,
    /// Statements one text may hold; more are refused as unanalysable.
    pub max_statements: usize,
    /// How often belay reads each database's catalog again (its functions, views,
    /// triggers, ...) for changes made without it; changes made through belay are read
    /// before the next statement that depends on them.
    pub catalog_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub production: bool,
    /// The upstream session's `statement_timeout`, which agents cannot change.
    pub statement_timeout: Duration,
    /// PostgreSQL databases of the environment, by name (`ENV.NAME` selects one).
    pub postgres: BTreeMap<String, Postgres>,
    pub backups: Option<BackupStore>,
    /// How long the gateway holds a statement that needs approval, waiting for the humans,
    /// before it answers; zero answers at once.
    pub approval_wait: Duration,
    /// A Slack-compatible webhook URL told of every approval requested in this environment.
    pub notify_webhook: Option<Secret>,
    /// What an agent's session may use.
    pub limits: Limits,
}

/// How long an agent's statement waits for a lock, unless the environment says otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an agent's session may sit idle inside a transaction (holding its locks) before
/// the server ends it, unless the environment says otherwise.
pub const DEFAULT_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(120);

/// An environment's limits on agents' sessions: for each capped setting, the largest value an
/// agent may set, in the setting's unit (bytes, milliseconds or a plain number). The
/// timeouts are also pinned at login to that value, so they can only be lowered.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub caps: BTreeMap<&'static str, f64>,
    /// Agents' sessions open at once in the environment; keep it below what the upstream
    /// accepts, so that one environment (or one runaway agent) cannot take every slot of a
    /// server it shares.
    pub max_connections: usize,
    /// Sessions one agent may hold at once in the environment.
    pub max_connections_per_agent: usize,
}

/// Agents' sessions open at once in one environment, unless it says otherwise.
pub const DEFAULT_ENV_CONNECTIONS: usize = 50;

/// Sessions one agent may hold at once in one environment, unless it says otherwise.
pub const DEFAULT_AGENT_CONNECTIONS: usize = 20;

/// How long an agent's session may sit idle outside a transaction before the server ends
/// it, unless the environment says otherwise.
pub const DEFAULT_IDLE_SESSION: Duration = Duration::from_secs(3600);

impl Limits {
    /// The cap on setting `name`, if it is capped.
    pub fn cap(&self, name: &str) -> Option<f64> {
        self.caps.get(name).copied()
    }

    /// The key under `[environments.NAME.limits]` that sets the cap on setting `name`.
    pub fn key(name: &str) -> &str {
        match name {
            "statement_timeout" | "transaction_timeout" => "statement_timeout_max",
            other => other,
        }
    }

    /// The settings pinned at login: the timeouts belay enforces, in milliseconds.
    pub fn pinned(&self) -> Vec<(&'static str, String)> {
        [
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "idle_session_timeout",
        ]
        .into_iter()
        .filter_map(|n| self.cap(n).map(|ms| (n, format!("{}", ms as u64))))
        .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    /// CA certificate (PEM) that `verify-ca` and `verify-full` check the server against.
    pub sslrootcert: Option<PathBuf>,
    pub failure_domain: String,
    /// Roles of the cluster that belong to this environment besides `user`.
    pub roles: Vec<String>,
    /// Tablespaces of the cluster that belong to this environment.
    pub tablespaces: Vec<String>,
    /// The role for sessions of agents granted only `read`; `None`: they log in as `user`,
    /// and only belay's read-only pin keeps them from writing.
    pub read: Option<ReadRole>,
    /// What the role inspection finds and the operator accepts anyway (see `RISKS`).
    pub accept_risks: Vec<String>,
}

/// The role a read-only session logs in as.
#[derive(Debug, Clone)]
pub struct ReadRole {
    pub user: String,
    pub password: Option<Secret>,
}

/// What the inspection of an upstream role can find that a production environment refuses,
/// each of which `accept_risks` can accept by name.
pub const RISKS: &[&str] = &[
    "superuser",
    "createrole",
    "createdb",
    "bypassrls",
    "replication",
    "write_all_data",
    "signal_backend",
    "server_files",
    "server_programs",
    "read_all_stats",
    "other_environments",
    "read_role_can_write",
    "no_read_role",
];

#[derive(Debug, Clone)]
pub struct BackupStore {
    pub path: PathBuf,
    pub failure_domain: String,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates the file at `path`, resolving secrets through `env`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text, env)
    }

    /// Validates `text` as if read from `path` (relative paths in it are taken from `path`'s
    /// directory).
    pub fn parse(path: &Path, text: &str, env: &dyn Env) -> Result<Config, Error> {
        raw::parse(path, text, env)
    }

    /// The environment and database an agent's `database` startup parameter names: `ENV`
    /// (when the environment has one database) or `ENV.DATABASE`.
    pub fn upstream(&self, database: &str) -> Result<(&Environment, &str, &Postgres), String> {
        let (env_name, db) = match database.split_once('.') {
            Some((e, d)) => (e, Some(d)),
            None => (database, None),
        };
        let env =
            self.environments.get(env_name).ok_or_else(|| {
                format!(
                "there is no environment named `{env_name}`; connect with database = one of: {}",
                self.environments.keys().cloned().collect::<Vec<_>>().join(", ")
            )
            })?;
        match db {
            Some(d) => env
                .postgres
                .get_key_value(d)
                .map(|(k, p)| (env, k.as_str(), p))
                .ok_or_else(|| format!("environment `{env_name}` has no database named `{d}`")),
            None => {
                let mut dbs = env.postgres.iter();
                match (dbs.next(), dbs.next()) {
                    (Some((k, p)), None) => Ok((env, k.as_str(), p)),
                    (None, _) => Err(format!("environment `{env_name}` has no PostgreSQL database configured")),
                    _ => Err(format!(
                        "environment `{env_name}` has several databases; connect with database = {}",
                        env.postgres.keys().map(|k| format!("{env_name}.{k}")).collect::<Vec<_>>().join(" or ")
                    )),
                }
            }
        }
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }
}

/// The configuration file `belay init` writes, for a directory holding `policy.cedar` and
/// `state/`.
pub fn init_template() -> &'static str {
    include_str!("init.toml")
}
