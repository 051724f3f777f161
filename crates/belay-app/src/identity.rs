//! Identity changes (humans, agents, grants, credentials), each recorded in the audit log
//! before it is applied. Tokens never enter an event.

use std::collections::BTreeMap;

use belay_audit::Draft;
use belay_core::{Class, Secret};
use belay_store::{Agent, Human};
use serde_json::json;

use crate::{now_us, App, Error};

impl App {
    /// Records `kind` by `actor` about `subject`, then runs `change`; a failed change is
    /// recorded too.
    fn audited<T>(
        &self,
        actor: &str,
        kind: &str,
        detail: serde_json::Value,
        change: impl FnOnce(i64) -> Result<T, belay_store::Error>,
    ) -> Result<T, Error> {
        let now = now_us();
        let draft = Draft {
            time_us: now,
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            outcome: Some("requested".to_owned()),
            detail: detail.clone(),
            ..Draft::default()
        };
        self.audit(draft)?;
        match change(now) {
            Ok(value) => Ok(value),
            Err(e) => {
                let failed = Draft {
                    time_us: now_us(),
                    actor: actor.to_owned(),
                    kind: kind.to_owned(),
                    outcome: Some(format!("failed: {e}")),
                    detail,
                    ..Draft::default()
                };
                // The request event is already durable; losing this one loses no decision.
                let _ = self.audit(failed);
                Err(e.into())
            }
        }
    }

    pub fn add_human(&self, actor: &str, name: &str) -> Result<(Human, Secret), Error> {
        self.audited(actor, "human.add", json!({ "human": name }), |now| {
            self.store().add_human(name, now)
        })
    }

    pub fn revoke_human(&self, actor: &str, name: &str) -> Result<(), Error> {
        self.audited(actor, "human.revoke", json!({ "human": name }), |now| {
            self.store().revoke_human(name, now)
        })
    }

    pub fn rotate_human(&self, actor: &str, name: &str) -> Result<Secret, Error> {
        self.audited(actor, "human.rotate", json!({ "human": name }), |now| {
            self.store().rotate_human(name, now)
        })
    }

    pub fn add_agent(
        &self,
        actor: &str,
        name: &str,
        owner: &str,
        grants: &BTreeMap<String, Class>,
        expires_us: Option<i64>,
    ) -> Result<(Agent, Secret), Error> {
        for env in grants.keys() {
            if self.config.environment(env).is_none() {
                let known: Vec<&str> = self
                    .config
                    .environments
                    .keys()
                    .map(String::as_str)
                    .collect();
                return Err(Error::Invalid(format!(
                    "grant for `{env}`: no such environment (configured: {})",
                    known.join(", ")
                )));
            }
        }
        let detail = json!({
            "agent": name,
            "owner": owner,
            "grants": grants,
            "expires_us": expires_us,
        });
        self.audited(actor, "agent.add", detail, |now| {
            self.store().add_agent(name, owner, grants, expires_us, now)
        })
    }

    pub fn revoke_agent(&self, actor: &str, name: &str) -> Result<(), Error> {
        self.audited(actor, "agent.revoke", json!({ "agent": name }), |now| {
            self.store().revoke_agent(name, now)
        })
    }

    pub fn rotate_agent(&self, actor: &str, name: &str) -> Result<Secret, Error> {
        self.audited(actor, "agent.rotate", json!({ "agent": name }), |now| {
            self.store().rotate_agent(name, now)
        })
    }
}
