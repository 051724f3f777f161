//! The file as written (serde types with `deny_unknown_fields`) and its validation into
//! `Config`. Every error carries the file and, where it can be found, the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use belay_core::Secret;
use serde::Deserialize;
use toml::Spanned;

use crate::{Audit, BackupStore, Config, Env, Environment, Error, Listen, Postgres, Sql, SslMode};

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
    environments: BTreeMap<String, Spanned<RawEnvironment>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    postgres: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_file: Option<PathBuf>,
    checkpoint_every: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    max_input_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    tier: Tier,
    #[serde(default)]
    postgres: BTreeMap<String, Spanned<RawPostgres>>,
    backups: Option<Spanned<RawBackups>>,
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
    failure_domain: String,
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
            postgres.insert(
                db,
                Postgres {
                    host: pg.host,
                    port: pg.port,
                    database: pg.database,
                    user: pg.user,
                    password,
                    sslmode: pg.sslmode,
                    failure_domain: pg.failure_domain,
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
        environments.insert(
            name.clone(),
            Environment {
                name,
                production: matches!(raw_env.tier, Tier::Production),
                postgres,
                backups,
            },
        );
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
        },
        state_dir,
        listen: Listen {
            postgres: raw.listen.postgres,
            http: raw.listen.http,
        },
        sql: Sql {
            max_input_bytes: raw.sql.max_input_bytes.unwrap_or(1024 * 1024),
        },
        environments,
    })
}

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
