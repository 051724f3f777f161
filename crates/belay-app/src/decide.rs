//! Deciding an action: authenticate, classify, evaluate the policy, write the decision to the
//! audit log, and only then answer. Every failure on this path is a denial.

use std::collections::BTreeSet;
use std::sync::Arc;

use belay_audit::{fingerprint, Draft};
use belay_core::{Class, Decision, Secret};
use belay_policy::ActionRequest;
use belay_sql::Analysis;
use belay_store::{Agent, AuthError};
use serde_json::json;

use crate::{boundary, now_us, App, Error};

/// What policy would decide about a statement, and why; nothing is recorded.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub analysis: Arc<Analysis>,
    pub decision: Decision,
}

/// A decision on the gateway path, with the audit event that records it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    /// The agent, when the token authenticated.
    pub agent: Option<String>,
    pub analysis: Option<Arc<Analysis>>,
    /// Sequence number of the decision event; `None` only when the log could not be written
    /// (and the decision is then a denial).
    pub audit_seq: Option<u64>,
}

/// `request` with the analysis's flags and relations, which policies can test.
pub(crate) fn with_analysis(mut request: ActionRequest, analysis: &Analysis) -> ActionRequest {
    request.flags = analysis
        .flags()
        .iter()
        .map(|f| f.as_str().to_owned())
        .collect();
    request.relations = analysis
        .statements
        .iter()
        .flat_map(|s| s.relations.iter().map(|r| r.name.clone()))
        .collect::<BTreeSet<_>>();
    request
}

/// Whether `agent`'s sessions in `env` are pinned read-only, as the gateway pins them: a
/// production environment where its grant is below `write`.
fn read_only(env: &belay_config::Environment, agent: &Agent, environment: &str) -> bool {
    env.production
        && agent
            .grants
            .get(environment)
            .is_none_or(|g| *g < Class::Write)
}

impl App {
    /// What would happen if agent `agent` ran `sql` in `environment`, and why.
    pub fn explain(&self, agent: &str, environment: &str, sql: &str) -> Result<Explanation, Error> {
        let agent = self.store().agent(agent)?.ok_or_else(|| {
            Error::Invalid(format!("no agent named `{agent}`: see `belay agent list`"))
        })?;
        let env = self.config.environment(environment).ok_or_else(|| {
            Error::Invalid(format!(
                "no environment named `{environment}` in `{}`",
                self.config.path.display()
            ))
        })?;
        let analysis = boundary::apply_caps(
            env,
            read_only(env, &agent, environment),
            self.classifier.classify(sql),
        );
        let decision = self.evaluate(&agent, environment, env.production, &analysis);
        Ok(Explanation { analysis, decision })
    }

    /// Policy's decision, with the cluster objects of other environments the statement names.
    fn evaluate(
        &self,
        agent: &Agent,
        environment: &str,
        production: bool,
        analysis: &Analysis,
    ) -> Decision {
        let foreign = boundary::foreign_targets(&self.config, environment, analysis);
        let mut request = self.request(agent, environment, production, analysis);
        request.foreign_target = !foreign.is_empty();
        boundary::name_foreign(self.policy.evaluate(&request), &foreign)
    }

    fn request(
        &self,
        agent: &Agent,
        environment: &str,
        production: bool,
        analysis: &Analysis,
    ) -> ActionRequest {
        with_analysis(
            ActionRequest::new(
                &agent.name,
                &agent.owner,
                environment,
                production,
                analysis.class,
                agent.grants.get(environment).copied(),
            ),
            analysis,
        )
    }

    /// The gateway's decision for an agent presenting `token` and running `sql` in
    /// `environment`. Never fails: any error denies. The decision event is durable before
    /// this returns.
    pub fn decide(&self, token: &Secret, environment: &str, sql: &str, peer: &str) -> Outcome {
        let now = now_us();
        let agent = match self.store().authenticate_agent(token, now) {
            Ok(Ok(agent)) => agent,
            Ok(Err(auth)) => return self.refuse_unauthenticated(&auth, environment, peer, now),
            Err(e) => {
                return self.denied(
                    None,
                    environment,
                    None,
                    Decision::deny(format!("denied because the state store failed: {e}")),
                    now,
                )
            }
        };
        let Some(env) = self.config.environment(environment) else {
            let d = Decision::deny(format!("there is no environment named `{environment}`"));
            return self.denied(Some(&agent.name), environment, None, d, now);
        };
        let analysis = boundary::apply_caps(
            env,
            read_only(env, &agent, environment),
            self.classifier.classify(sql),
        );
        let decision = self.evaluate(&agent, environment, env.production, &analysis);
        let draft = Draft {
            time_us: now,
            actor: format!("agent:{}", agent.name),
            kind: "decision".to_owned(),
            environment: Some(environment.to_owned()),
            fingerprint: Some(fingerprint(&[&agent.name, environment, sql])),
            class: Some(analysis.class.as_str().to_owned()),
            verdict: Some(decision.verdict.to_string()),
            reasons: vec![decision.reason.clone()],
            policies: decision.policies.clone(),
            outcome: None,
            detail: json!({
                "peer": peer,
                "statements": analysis.statements.iter().map(|s| json!({
                    "kind": s.kind, "class": s.class, "flags": s.flags, "relations": s.relations,
                })).collect::<Vec<_>>(),
                "reversible": decision.reversible,
                "backup_first": decision.backup_first,
            }),
        };
        match self.store().append(draft) {
            Ok(seq) => Outcome {
                decision,
                agent: Some(agent.name),
                analysis: Some(analysis),
                audit_seq: Some(seq),
            },
            Err(e) => Outcome {
                decision: Decision::deny(format!(
                    "denied because the decision could not be written to the audit log ({e}); \
                     belay forwards nothing it has not recorded"
                )),
                agent: Some(agent.name),
                analysis: Some(analysis),
                audit_seq: None,
            },
        }
    }

    fn refuse_unauthenticated(
        &self,
        auth: &AuthError,
        environment: &str,
        peer: &str,
        now: i64,
    ) -> Outcome {
        let draft = Draft {
            time_us: now,
            actor: "unauthenticated".to_owned(),
            kind: "authentication".to_owned(),
            environment: Some(environment.to_owned()),
            verdict: Some("deny".to_owned()),
            reasons: vec![auth.to_string()],
            detail: json!({ "peer": peer }),
            ..Draft::default()
        };
        let audit_seq = self.store().append(draft).ok();
        Outcome {
            decision: Decision::deny("authentication failed: the token is not valid for any agent"),
            agent: None,
            analysis: None,
            audit_seq,
        }
    }

    fn denied(
        &self,
        agent: Option<&str>,
        environment: &str,
        analysis: Option<Arc<Analysis>>,
        decision: Decision,
        now: i64,
    ) -> Outcome {
        let draft = Draft {
            time_us: now,
            actor: agent.map_or_else(|| "unauthenticated".to_owned(), |a| format!("agent:{a}")),
            kind: "decision".to_owned(),
            environment: Some(environment.to_owned()),
            verdict: Some("deny".to_owned()),
            reasons: vec![decision.reason.clone()],
            detail: json!({}),
            ..Draft::default()
        };
        let audit_seq = self.store().append(draft).ok();
        Outcome {
            decision,
            agent: agent.map(str::to_owned),
            analysis,
            audit_seq,
        }
    }
}
