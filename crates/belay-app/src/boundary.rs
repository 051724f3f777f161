//! The environment's side of a decision that the classifier cannot know: which environment
//! each cluster-level object a statement names belongs to (a database, role, tablespace or
//! subscription of another environment on the same server is a foreign target, denied by
//! policy), whether a change to a capped setting stays within the environment's limits, and
//! how the session setup drivers send (`SET application_name`, a timeout longer than the
//! environment allows, startup `options`) keeps what belay pins while doing what the client
//! asked.

use std::sync::Arc;

use belay_config::{Config, Environment, Limits};
use belay_core::units::{measure, Unit};
use belay_core::{encoding, Class, Decision, Verdict};
use belay_pg::{literal, Rewrite};
use belay_sql::{capped, Analysis, Flag, ObjectKind, SessionCommand, SettingChange, SettingValue};

/// A cluster-level object outside the acting environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignTarget {
    pub object: ObjectKind,
    pub name: String,
    /// The environment it belongs to; `None` when it belongs to none that belay knows, which
    /// is as foreign as another environment's: the cluster is shared.
    pub owner: Option<String>,
}

impl std::fmt::Display for ForeignTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.owner {
            Some(env) => write!(
                f,
                "{} `{}` belongs to environment `{env}`",
                self.object, self.name
            ),
            None => write!(
                f,
                "{} `{}` belongs to no environment of belay's (a cluster-wide object outside this environment)",
                self.object, self.name
            ),
        }
    }
}

/// Whether environment `env` owns the cluster object `name` of kind `object`.
fn owns(env: &Environment, object: ObjectKind, name: &str) -> bool {
    env.postgres.values().any(|pg| match object {
        ObjectKind::Database => pg.database == name,
        ObjectKind::Role => pg.user == name || pg.roles.iter().any(|r| r == name),
        ObjectKind::Tablespace => pg.tablespaces.iter().any(|t| t == name),
        _ => false,
    })
}

/// The cluster-level objects `analysis` names that lie outside `environment`: owned by
/// another environment at least as protected (a production environment's, from a
/// non-production one), or by none. `pg_default` is every environment's tablespace.
pub fn foreign_targets(
    config: &Config,
    environment: &str,
    analysis: &Analysis,
) -> Vec<ForeignTarget> {
    let Some(own) = config.environment(environment) else {
        return Vec::new();
    };
    let mut found: Vec<ForeignTarget> = Vec::new();
    for relation in analysis.statements.iter().flat_map(|s| s.relations.iter()) {
        if !relation.object.cluster_level()
            || (relation.object == ObjectKind::Tablespace && relation.name == "pg_default")
        {
            continue;
        }
        let others: Vec<&Environment> = config
            .environments
            .values()
            .filter(|e| e.name != own.name && owns(e, relation.object, &relation.name))
            .collect();
        let mine = owns(own, relation.object, &relation.name);
        let stronger = others
            .iter()
            .find(|e| e.production && !own.production)
            .or_else(|| others.first().filter(|_| !mine));
        let foreign = match (mine, stronger) {
            (true, None) => None,
            (_, Some(e)) => Some(Some(e.name.clone())),
            (false, None) => Some(None),
        };
        if let Some(owner) = foreign {
            let target = ForeignTarget {
                object: relation.object,
                name: relation.name.clone(),
                owner,
            };
            if !found.contains(&target) {
                found.push(target);
            }
        }
    }
    found
}

/// `analysis` with every statement that raises a capped setting past the environment's limit
/// raised to `admin`, saying so; the same `Arc` when nothing is over.
pub fn apply_caps(env: &Environment, read_only: bool, analysis: Arc<Analysis>) -> Arc<Analysis> {
    let over = |change: &SettingChange| -> Option<(Class, String)> {
        if read_only && belay_sql::lifts_read_only(change) {
            return Some((
                Class::Privilege,
                format!(
                    "this session is read-only because the agent's grant in environment `{}` is below `write`, and `{}` would lift that; writing here takes a `write` grant, which only the agent's owner can give",
                    env.name, change.name
                ),
            ));
        }
        let name = change.name.as_str();
        let unit = capped(name)?;
        let cap = env.limits.cap(name)?;
        match &change.value {
            SettingValue::Const(v) => match measure(unit, v) {
                Some(m) if within(unit, m, cap) => None,
                _ => Some((
                    Class::Admin,
                    format!(
                        "`{name}` = `{v}` is over the limit environment `{}` sets for agents ({}, `environments.{}.limits.{}`); a `SET` of it alone is lowered to the limit instead",
                        env.name,
                        shown(unit, cap),
                        env.name,
                        Limits::key(name),
                    ),
                )),
            },
            // Checked by the classifier (a computed value is already `admin`), and a reset
            // returns to the value at login.
            _ => None,
        }
    };
    if !analysis
        .statements
        .iter()
        .any(|s| s.settings.iter().any(|c| over(c).is_some()))
    {
        return analysis;
    }
    let mut capped_analysis = (*analysis).clone();
    for statement in &mut capped_analysis.statements {
        let why: Vec<(Class, String)> = statement.settings.iter().filter_map(over).collect();
        if let Some((class, first)) = why.iter().max_by_key(|(c, _)| *c) {
            statement.class = statement.class.max(*class);
            statement.flags.insert(Flag::SafetySetting);
            statement.reason = first.clone();
        }
    }
    capped_analysis.reclassify();
    Arc::new(capped_analysis)
}

/// Whether `value` of a setting in `unit` is within `cap`; a time limit of zero or less is
/// off, over every cap.
fn within(unit: Unit, value: f64, cap: f64) -> bool {
    value <= cap && !(unit == Unit::Millis && value <= 0.0)
}

/// `cap` as a value of a setting in `unit`, in a form the server reads the same way whatever
/// the setting's own unit (`30000ms`, `262144kB`).
fn setting_text(unit: Unit, cap: f64) -> String {
    match unit {
        Unit::Bytes { .. } => format!("{}kB", (cap / 1024.0) as u64),
        Unit::Millis => millis(cap),
        Unit::Number => format!("{cap}"),
    }
}

/// A time in milliseconds as PostgreSQL reads it, in whole seconds where it is.
fn millis(ms: f64) -> String {
    let ms = ms as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The upstream's `application_name` for agent `agent` whose client calls itself `own`
/// (PostgreSQL keeps the first 63 bytes).
pub fn application_name(agent: &str, own: Option<&str>) -> String {
    match own.filter(|o| !o.is_empty()) {
        Some(own) => format!("belay:{agent}/{own}"),
        None => format!("belay:{agent}"),
    }
}

/// The session commands in `analysis` that belay runs changed, with `sql` rewritten to
/// match (`None` when nothing is): `SET application_name` keeps the agent's name in front
/// (and is then a `read`), `SHOW application_name` shows the client's own part, and a
/// capped setting set past the environment's limit is set to the limit, with a notice.
pub fn session_commands(
    env: &Environment,
    agent: &str,
    sql: &str,
    analysis: Arc<Analysis>,
) -> (Arc<Analysis>, Option<Rewrite>) {
    if analysis.statements.iter().all(|s| s.session.is_none()) {
        return (analysis, None);
    }
    let mut changed = (*analysis).clone();
    let mut pieces: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut notices = Vec::new();
    let mut tags = Vec::new();
    for (index, statement) in changed.statements.iter_mut().enumerate() {
        let Some(command) = &statement.session else {
            continue;
        };
        let span = statement.span.clone();
        match command {
            SessionCommand::Set {
                name,
                value: SettingValue::Const(own),
                local,
            } if name == "application_name" => {
                let local = if *local { "LOCAL " } else { "" };
                pieces.push((
                    span,
                    format!(
                        "SET {local}application_name TO {}",
                        literal(&application_name(agent, Some(own)))
                    ),
                ));
                statement.class = Class::Read;
                statement.flags.remove(&Flag::SafetySetting);
                statement.reason = format!(
                    "sets the name the session reports; the database sees it after the agent's (`belay:{agent}/...`)"
                );
            }
            SessionCommand::Show { name } if name == "application_name" => {
                pieces.push((
                    span,
                    format!(
                        "SELECT pg_catalog.substr(pg_catalog.current_setting('application_name'), {}) AS application_name",
                        format!("belay:{agent}/").chars().count() + 1
                    ),
                ));
                tags.push((index, "SHOW".to_owned()));
            }
            SessionCommand::Set {
                name,
                value: SettingValue::Const(asked),
                local,
            } => {
                let (Some(unit), Some(cap)) = (capped(name), env.limits.cap(name)) else {
                    continue;
                };
                let Some(m) = measure(unit, asked) else {
                    continue;
                };
                if within(unit, m, cap) {
                    continue;
                }
                let value = setting_text(unit, cap);
                let local = if *local { "LOCAL " } else { "" };
                pieces.push((span, format!("SET {local}{name} TO {}", literal(&value))));
                notices.push(format!(
                    "belay set `{name}` to `{value}`, not `{asked}`: environment `{}` limits agents to {} (`environments.{}.limits.{}`)",
                    env.name,
                    shown(unit, cap),
                    env.name,
                    Limits::key(name),
                ));
                for change in statement.settings.iter_mut().filter(|c| c.name == *name) {
                    change.value = SettingValue::Const(value.clone());
                }
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return (analysis, None);
    }
    changed.reclassify();
    let mut text = String::with_capacity(sql.len() + 64);
    let mut at = 0;
    for (span, piece) in pieces {
        text.push_str(&sql[at..span.start]);
        text.push_str(&piece);
        at = span.end;
    }
    text.push_str(&sql[at..]);
    let rewrite = Rewrite {
        sql: text,
        notices,
        tags,
    };
    (Arc::new(changed), Some(rewrite))
}

/// What belay does with a setting a client asks for at startup (in `options`, or as a
/// startup parameter of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupSetting {
    /// Passed upstream as it is (a harmless setting, a limit within the environment's cap).
    Pass(String, String),
    /// A limit past the environment's cap, passed as the cap, with the notice that says so.
    Lowered(String, String, String),
    /// The client's own `application_name`.
    ApplicationName(String),
}

/// Decides startup setting `name` = `value` for a session of environment `env` (`read_only`
/// where belay pins read-only mode); `Err` says why it is refused, naming the setting and
/// what governs it.
pub fn startup_setting(
    env: &Environment,
    read_only: bool,
    name: &str,
    value: &str,
) -> Result<StartupSetting, String> {
    let refused = |why: String| format!("belay refuses the startup setting `{name}`: {why}");
    if name == "application_name" {
        return Ok(StartupSetting::ApplicationName(value.to_owned()));
    }
    if matches!(name, "client_encoding" | "names") && !encoding::parsable(value) {
        return Err(refused(format!(
            "`{value}` is not an encoding belay reads SQL in the way the server does; use UTF8"
        )));
    }
    let change = SettingChange {
        name: name.to_owned(),
        value: SettingValue::Const(value.to_owned()),
    };
    if read_only && belay_sql::lifts_read_only(&change) {
        return Err(refused(format!(
            "this session is read-only because agent's grant in environment `{}` is below `write` (the agent's `grants` in belay's configuration); only a `write` grant lifts it",
            env.name
        )));
    }
    if let Some((_, why)) = belay_sql::setting_class(name, &change.value) {
        return Err(refused(why));
    }
    if let (Some(unit), Some(cap)) = (capped(name), env.limits.cap(name)) {
        let Some(m) = measure(unit, value) else {
            return Err(refused(format!(
                "belay cannot read `{value}` as a value of it"
            )));
        };
        if !within(unit, m, cap) {
            let lowered = setting_text(unit, cap);
            let notice = format!(
                "belay set `{name}` to `{lowered}`, not `{value}`: environment `{}` limits agents to {} (`environments.{}.limits.{}`)",
                env.name,
                shown(unit, cap),
                env.name,
                Limits::key(name),
            );
            return Ok(StartupSetting::Lowered(name.to_owned(), lowered, notice));
        }
    }
    Ok(StartupSetting::Pass(name.to_owned(), value.to_owned()))
}

/// A cap in the unit people write it in.
fn shown(unit: belay_core::units::Unit, cap: f64) -> String {
    use belay_core::units::Unit;
    match unit {
        Unit::Bytes { .. } => {
            let mb = cap / (1024.0 * 1024.0);
            if mb >= 1024.0 && (mb / 1024.0).fract() == 0.0 {
                format!("{}GB", mb / 1024.0)
            } else {
                format!("{mb}MB")
            }
        }
        Unit::Millis => millis(cap),
        Unit::Number => format!("{cap}"),
    }
}

/// A denial for foreign targets names each one and its environment.
pub fn name_foreign(mut decision: Decision, foreign: &[ForeignTarget]) -> Decision {
    if foreign.is_empty() || decision.verdict != Verdict::Deny {
        return decision;
    }
    if decision.policies.iter().any(|p| p == "foreign-target") {
        let names: Vec<String> = foreign.iter().map(ToString::to_string).collect();
        decision.reason = format!("{}: {}", decision.reason, names.join("; "));
    }
    decision
}
