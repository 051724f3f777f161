//! Policy: belay's Cedar schema, the shipped default policy, and the evaluation of one action
//! to a `Decision` (allow, deny or approve(n), with modifiers, deciding policies and a reason).
//!
//! Approval requirements live in the policy, not here: a forbid annotated `@approvals("n")`
//! holds an action until n humans approve it, and is lifted once they have; `@expires`,
//! `@run_within` and `@approvers` on the same forbid set the terms of that approval. Any
//! evaluation error denies. The crate does no IO: callers hand it policy text.
//!
//! `cedar-policy` types stay inside this crate (a façade), so the rest of belay speaks in
//! `belay_core` terms.

mod diff;

use std::collections::BTreeSet;
use std::str::FromStr;

use belay_core::{Class, Decision, Hold, Verdict};
use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};
use serde_json::json;

pub use diff::{diff, Change};

/// The default policy belay ships, as written by `belay init`.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");

/// The Cedar schema policies are validated against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// Why a policy could not be loaded or an action not evaluated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the policy does not parse: {0}")]
    Parse(String),
    #[error("the policy does not validate against belay's schema: {0}")]
    Invalid(String),
    #[error("policy `{id}`: {message}")]
    Annotation { id: String, message: String },
    #[error("belay's Cedar schema is invalid: {0}")]
    Schema(String),
}

/// A loaded, validated policy set.
#[derive(Debug)]
pub struct PolicyEngine {
    policies: PolicySet,
    schema: Schema,
    /// For each held forbid (`@approvals`), its id and the number of approvals it needs.
    held: Vec<(PolicyId, u32)>,
}

/// Everything policy needs to know about one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    pub agent: String,
    pub owner: String,
    pub environment: String,
    pub production: bool,
    pub class: Class,
    /// The agent's grant in this environment; `None` when it has none.
    pub grant: Option<Class>,
    pub flags: BTreeSet<String>,
    pub relations: BTreeSet<String>,
    pub row_estimate: Option<u64>,
    /// Distinct humans who approved this exact action so far.
    pub approvals: u32,
    pub foreign_target: bool,
    /// `sql`, `http` or `shell`.
    pub surface: String,
}

impl ActionRequest {
    /// A request with no flags, relations, row estimate or approvals.
    pub fn new(
        agent: &str,
        owner: &str,
        environment: &str,
        production: bool,
        class: Class,
        grant: Option<Class>,
    ) -> ActionRequest {
        ActionRequest {
            agent: agent.to_owned(),
            owner: owner.to_owned(),
            environment: environment.to_owned(),
            production,
            class,
            grant,
            flags: BTreeSet::new(),
            relations: BTreeSet::new(),
            row_estimate: None,
            approvals: 0,
            foreign_target: false,
            surface: "sql".to_owned(),
        }
    }
}

/// The rank of a class in policies' `class_level`.
pub fn class_level(class: Class) -> i64 {
    match class {
        Class::Read => 1,
        Class::Write => 2,
        Class::Ddl => 3,
        Class::Destructive => 4,
        Class::Privilege => 5,
        Class::Admin => 6,
        Class::Unknown => 7,
    }
}

/// The classes an agent can be granted in an environment.
pub const GRANTABLE: [Class; 4] = [Class::Read, Class::Write, Class::Ddl, Class::Destructive];

impl PolicyEngine {
    /// Parses and validates `text`. Every policy must carry an `@id`; ids must be unique;
    /// `@approvals` must be a positive whole number and only on forbid policies.
    pub fn new(text: &str) -> Result<PolicyEngine, Error> {
        let schema = Schema::from_str(SCHEMA).map_err(|e| Error::Schema(e.to_string()))?;
        let parsed = PolicySet::from_str(text).map_err(|e| {
            Error::Parse(
                e.iter()
                    .map(|d| located(text, d))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let mut policies = PolicySet::new();
        let mut held = Vec::new();
        for (index, policy) in parsed.policies().enumerate() {
            let Some(id) = policy.annotation("id") else {
                return Err(Error::Annotation {
                    id: format!("#{}", index + 1),
                    message: "every policy needs an @id(\"...\") annotation, so that explanations and audit events can name it".to_owned(),
                });
            };
            let id = PolicyId::new(id);
            if let Some(n) = policy.annotation("approvals") {
                let count =
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| Error::Annotation {
                            id: id.to_string(),
                            message: format!(
                                "@approvals(\"{n}\") must be a whole number of at least 1"
                            ),
                        })?;
                if policy.effect() != cedar_policy::Effect::Forbid {
                    return Err(Error::Annotation {
                        id: id.to_string(),
                        message: "@approvals belongs on a forbid policy: it holds what the forbid would deny".to_owned(),
                    });
                }
                held.push((id.clone(), count));
            }
            for key in ["expires", "run_within", "approvers"] {
                if let Some(v) = policy.annotation(key) {
                    if policy.annotation("approvals").is_none() {
                        return Err(Error::Annotation {
                            id: id.to_string(),
                            message: format!("@{key} sets a term of an approval: it belongs on a forbid with @approvals"),
                        });
                    }
                    let valid = match key {
                        "approvers" => approvers(v).is_some(),
                        _ => humantime::parse_duration(v).is_ok_and(|d| !d.is_zero()),
                    };
                    if !valid {
                        return Err(Error::Annotation {
                            id: id.to_string(),
                            message: match key {
                                "approvers" => format!("@approvers(\"{v}\") must list human names (or `owner`) separated by commas"),
                                _ => format!("@{key}(\"{v}\") must be a duration such as \"15m\" or \"1h\""),
                            },
                        });
                    }
                }
            }
            for flag in ["reversible", "backup_first"] {
                if let Some(v) = policy.annotation(flag) {
                    if v != "true" && v != "false" {
                        return Err(Error::Annotation {
                            id: id.to_string(),
                            message: format!("@{flag}(\"{v}\") must be \"true\" or \"false\""),
                        });
                    }
                }
            }
            policies
                .add(policy.new_id(id.clone()))
                .map_err(|_| Error::Annotation {
                    id: id.to_string(),
                    message: "two policies share this @id".to_owned(),
                })?;
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let problems: Vec<String> = validation
                .validation_errors()
                .map(|e| format!("policy `{}`: {}", e.policy_id(), located(text, e)))
                .collect();
            return Err(Error::Invalid(problems.join("; ")));
        }
        Ok(PolicyEngine {
            policies,
            schema,
            held,
        })
    }

    /// The number of policies loaded.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides `request`. Never fails: any error denies, with the error as the reason.
    pub fn evaluate(&self, request: &ActionRequest) -> Decision {
        match self.try_evaluate(request) {
            Ok(decision) => decision,
            Err(message) => Decision::deny(format!(
                "denied because the policy could not be evaluated: {message}"
            )),
        }
    }

    fn try_evaluate(&self, request: &ActionRequest) -> Result<Decision, String> {
        // Held forbids whose approvals are in are lifted.
        let lifted: Vec<&PolicyId> = self
            .held
            .iter()
            .filter(|(_, n)| request.approvals >= *n)
            .map(|(id, _)| id)
            .collect();
        let lifted_set;
        let policies = if lifted.is_empty() {
            &self.policies
        } else {
            let kept = self
                .policies
                .policies()
                .filter(|p| !lifted.contains(&p.id()))
                .cloned();
            lifted_set = PolicySet::from_policies(kept).map_err(|e| e.to_string())?;
            &lifted_set
        };

        let (cedar_request, entities) = self.cedar_request(request)?;
        let response = Authorizer::new().is_authorized(&cedar_request, policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let deciding: Vec<&Policy> = {
            let mut ids: Vec<&PolicyId> = response.diagnostics().reason().collect();
            ids.sort_by_key(|id| id.to_string());
            ids.iter().filter_map(|id| policies.policy(id)).collect()
        };
        let ids: Vec<String> = deciding.iter().map(|p| p.id().to_string()).collect();
        let annotated = |key: &str| deciding.iter().any(|p| p.annotation(key) == Some("true"));
        let reasons = |ps: &[&Policy]| -> String {
            let mut seen = Vec::new();
            for p in ps {
                let r = p
                    .annotation("reason")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("policy `{}` decided", p.id()));
                if !seen.contains(&r) {
                    seen.push(r);
                }
            }
            seen.join("; ")
        };

        if response.decision() == cedar_policy::Decision::Allow {
            return Ok(Decision {
                verdict: Verdict::Allow,
                reversible: annotated("reversible"),
                backup_first: annotated("backup_first"),
                policies: ids,
                reason: reasons(&deciding),
                hold: Hold::default(),
            });
        }
        if deciding.is_empty() {
            return Ok(Decision {
                verdict: Verdict::Deny,
                reversible: false,
                backup_first: false,
                policies: Vec::new(),
                reason: format!(
                    "no policy permits a {} action by agent `{}` in `{}`",
                    request.class, request.agent, request.environment
                ),
                hold: Hold::default(),
            });
        }
        let denying: Vec<&Policy> = deciding
            .iter()
            .copied()
            .filter(|p| p.annotation("approvals").is_none())
            .collect();
        if !denying.is_empty() {
            return Ok(Decision {
                verdict: Verdict::Deny,
                reversible: false,
                backup_first: false,
                policies: denying.iter().map(|p| p.id().to_string()).collect(),
                reason: reasons(&denying),
                hold: Hold::default(),
            });
        }
        let needed = deciding
            .iter()
            .filter_map(|p| {
                p.annotation("approvals")
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .max()
            .unwrap_or(1);
        Ok(Decision {
            verdict: Verdict::Approve(needed),
            reversible: annotated("reversible"),
            backup_first: annotated("backup_first"),
            policies: ids,
            reason: reasons(&deciding),
            hold: hold(&deciding),
        })
    }

    fn cedar_request(&self, r: &ActionRequest) -> Result<(Request, Entities), String> {
        let uid = |ty: &str, id: &str| -> Result<EntityUid, String> {
            EntityUid::from_json(json!({"type": ty, "id": id})).map_err(|e| e.to_string())
        };
        let agent = uid("Belay::Agent", &r.agent)?;
        let action = uid("Belay::Action", r.class.as_str())?;
        let environment = uid("Belay::Environment", &r.environment)?;
        let grant_level = r.grant.map(class_level).unwrap_or(0);
        let mut context = json!({
            "class": r.class.as_str(),
            "class_level": class_level(r.class),
            "grant": r.grant.map(Class::as_str).unwrap_or("none"),
            "grant_level": grant_level,
            "flags": r.flags.iter().collect::<Vec<_>>(),
            "relations": r.relations.iter().collect::<Vec<_>>(),
            "approvals": r.approvals,
            "foreign_target": r.foreign_target,
            "surface": r.surface,
        });
        if let (Some(rows), Some(map)) = (r.row_estimate, context.as_object_mut()) {
            map.insert(
                "row_estimate".to_owned(),
                json!(i64::try_from(rows).unwrap_or(i64::MAX)),
            );
        }
        let context = Context::from_json_value(context, Some((&self.schema, &action)))
            .map_err(|e| e.to_string())?;
        let entities = Entities::from_json_value(
            json!([
                {"uid": {"type": "Belay::Agent", "id": r.agent},
                 "attrs": {"owner": {"__entity": {"type": "Belay::Human", "id": r.owner}}},
                 "parents": []},
                {"uid": {"type": "Belay::Human", "id": r.owner}, "attrs": {}, "parents": []},
                {"uid": {"type": "Belay::Environment", "id": r.environment},
                 "attrs": {"production": r.production}, "parents": []},
            ]),
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        let request = Request::new(agent, action, environment, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

/// The terms of an approval held by `deciding`: the shortest expiry and run window any of them
/// sets, and every approver any of them names.
fn hold(deciding: &[&Policy]) -> Hold {
    let mut hold = Hold::default();
    let shortest = |key: &str, default| {
        deciding
            .iter()
            .filter_map(|p| p.annotation(key))
            .filter_map(|v| humantime::parse_duration(v).ok())
            .min()
            .unwrap_or(default)
    };
    hold.expires = shortest("expires", Hold::DEFAULT_EXPIRES);
    hold.run_within = shortest("run_within", Hold::DEFAULT_RUN_WITHIN);
    for p in deciding {
        for name in p
            .annotation("approvers")
            .and_then(approvers)
            .unwrap_or_default()
        {
            if !hold.approvers.contains(&name) {
                hold.approvers.push(name);
            }
        }
    }
    hold
}

/// The names in an `@approvers` list, or `None` when one is not a valid name.
fn approvers(list: &str) -> Option<Vec<String>> {
    let names: Vec<String> = list.split(',').map(|n| n.trim().to_owned()).collect();
    let valid = |n: &str| {
        n.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    names.iter().all(|n| valid(n)).then_some(names)
}

/// `line L: message`, from the first source span the diagnostic labels.
fn located(text: &str, diagnostic: &dyn miette::Diagnostic) -> String {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let help = diagnostic
        .help()
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    match offset {
        Some(offset) => {
            let before = text.get(..offset.min(text.len())).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            format!("line {line}: {diagnostic}{help}")
        }
        None => format!("{diagnostic}{help}"),
    }
}
