//! The environment's side of a decision that the classifier cannot know: which environment
//! each cluster-level object a statement names belongs to (a database, role, tablespace or
//! subscription of another environment on the same server is a foreign target, denied by
//! policy), and whether a change to a capped setting stays within the environment's limits.

use std::sync::Arc;

use belay_config::{Config, Environment};
use belay_core::units::measure;
use belay_core::{Class, Decision, Verdict};
use belay_sql::{capped, Analysis, Flag, ObjectKind, SettingChange, SettingValue};

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
                Some(m) if m <= cap => None,
                _ => Some((
                    Class::Admin,
                    format!(
                        "`{name}` = `{v}` is over the limit environment `{}` sets for agents ({})",
                        env.name,
                        shown(unit, cap)
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
        Unit::Millis => format!("{}ms", cap),
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
