//! Human approval of held actions, the humans' side: authenticating a human (never an
//! agent), listing requests, approving and denying, expiring what ran out of time. Every
//! step is an audit event, durable before the state changes.
//!
//! The agents' side (asking, waiting, running an approved action once) is in `session/held.rs`.

use belay_audit::Draft;
use belay_core::Secret;
use belay_store::{Approval, ApprovalStatus, AuthError, Human, Vote, TOKEN_PREFIX_AGENT};
use serde_json::{json, Value};

use crate::{now_us, App, Error};

/// How a human reached belay, as recorded with their vote.
pub const CHANNEL_CLI: &str = "cli";
pub const CHANNEL_HTTP: &str = "http";

/// Why a human could not act on an approval.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No valid human credential (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential that may not approve: an agent's (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such request (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is not in a state that allows this, or the human already voted (409).
    #[error("{0}")]
    Conflict(String),
    /// The request was malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// belay's state or audit log failed (503); nothing changed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<belay_store::Error> for ApprovalError {
    fn from(e: belay_store::Error) -> Self {
        match e {
            belay_store::Error::NotFound(m) => ApprovalError::NotFound(m),
            belay_store::Error::Conflict(m) => ApprovalError::Conflict(m),
            belay_store::Error::Invalid(m) => ApprovalError::Forbidden(m),
            other => ApprovalError::Unavailable(other.to_string()),
        }
    }
}

impl From<Error> for ApprovalError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            other => ApprovalError::Unavailable(other.to_string()),
        }
    }
}

/// The command a human runs to approve request `id`.
pub fn approve_command(id: u64) -> String {
    format!("belay approve {id}")
}

/// The humans an approver list names, in words (an empty list means any human).
pub fn who_approves(approvers: &[String]) -> String {
    if approvers.is_empty() {
        "any human".to_owned()
    } else {
        approvers.join(", ")
    }
}

/// Who may approve, and how many must, in words.
pub fn approvers_text(approval: &Approval) -> String {
    let who = who_approves(&approval.request.approvers);
    let n = approval.request.required;
    if n == 1 {
        format!("1 approval from {who}")
    } else {
        format!("{n} approvals from distinct humans ({who})")
    }
}

/// An approval request as JSON, for `belay pending --json` and the HTTP API.
pub fn approval_json(a: &Approval) -> Value {
    let time = |us: Option<i64>| us.map(crate::rfc3339);
    json!({
        "id": a.id,
        "status": a.status.as_str(),
        "agent": a.request.agent,
        "environment": a.request.environment,
        "action": a.request.action,
        "parameters": a.request.parameters,
        "fingerprint": a.request.fingerprint,
        "class": a.request.class,
        "flags": a.request.flags,
        "relations": a.request.relations,
        "policies": a.request.policies,
        "reason": a.request.reason,
        "blast_radius": a.request.blast_radius,
        "approvals_required": a.request.required,
        "approvals": a.approvals(),
        "approvers": a.request.approvers,
        "created": time(Some(a.created_us)),
        "expires": time(Some(a.request.expires_us)),
        "approved": time(a.approved_us),
        "run_by": time(a.run_by_us),
        "executed": time(a.executed_us),
        "request_event": a.request.request_seq,
        "votes": a.votes.iter().map(|v| json!({
            "human": v.human,
            "vote": if v.approve { "approve" } else { "deny" },
            "time": crate::rfc3339(v.time_us),
            "channel": v.channel,
            "comment": v.comment,
        })).collect::<Vec<_>>(),
        "approve_command": approve_command(a.id),
    })
}

/// The event that records a step of approval `a`.
pub(crate) fn approval_event(kind: &str, actor: &str, a: &Approval, outcome: &str) -> Draft {
    Draft {
        time_us: now_us(),
        actor: actor.to_owned(),
        kind: kind.to_owned(),
        environment: Some(a.request.environment.clone()),
        fingerprint: Some(a.request.fingerprint.clone()),
        class: Some(a.request.class.clone()),
        outcome: Some(outcome.to_owned()),
        policies: a.request.policies.clone(),
        detail: json!({
            "approval": a.id,
            "agent": a.request.agent,
            "status": a.status.as_str(),
            "approvals": a.approvals(),
            "approvals_required": a.request.required,
        }),
        ..Draft::default()
    }
}

impl App {
    /// The human presenting `token`. An agent's token is refused, whoever it belongs to, and
    /// the attempt is recorded.
    pub fn authenticate_human(
        &self,
        token: &Secret,
        channel: &str,
    ) -> Result<Human, ApprovalError> {
        let now = now_us();
        let refused = |actor: String, why: &str| {
            let _ = self.store().append(Draft {
                time_us: now,
                actor,
                kind: "approval.authentication".to_owned(),
                verdict: Some("deny".to_owned()),
                reasons: vec![why.to_owned()],
                detail: json!({ "channel": channel }),
                ..Draft::default()
            });
        };
        if token.expose().starts_with(TOKEN_PREFIX_AGENT) {
            let actor = match self.store().authenticate_agent(token, now) {
                Ok(Ok(agent)) => format!("agent:{}", agent.name),
                _ => "unauthenticated".to_owned(),
            };
            let why = "an agent's token can never approve or deny; only a human's can";
            refused(actor, why);
            return Err(ApprovalError::Forbidden(why.to_owned()));
        }
        match self.store().authenticate_human(token, now)? {
            Ok(human) => Ok(human),
            Err(e) => {
                refused("unauthenticated".to_owned(), &e.to_string());
                Err(ApprovalError::Unauthenticated(match e {
                    AuthError::Unknown(_) => {
                        "the token is not a valid human token (`belay human rotate NAME` issues a new one)".to_owned()
                    }
                    other => other.to_string(),
                }))
            }
        }
    }

    /// Marks requests that ran out of time as expired, recording each.
    pub(crate) fn expire_approvals(&self) -> Result<(), Error> {
        for a in self.store().expire_approvals(now_us())? {
            let why = if a.approved_us.is_some() {
                "approved, but not run within its window"
            } else {
                "no decision before it expired"
            };
            let mut event = approval_event("approval.expired", "belay", &a, "expired");
            event.reasons = vec![why.to_owned()];
            self.audit(event)?;
        }
        Ok(())
    }

    /// Requests with one of `statuses` (all when empty), oldest first.
    pub fn approvals(
        &self,
        statuses: &[ApprovalStatus],
        limit: usize,
    ) -> Result<Vec<Approval>, ApprovalError> {
        self.expire_approvals()?;
        Ok(self.store().approvals(statuses, limit)?)
    }

    pub fn approval(&self, id: u64) -> Result<Approval, ApprovalError> {
        self.expire_approvals()?;
        self.store().approval(id)?.ok_or_else(|| {
            ApprovalError::NotFound(format!("no approval request {id} (see `belay pending`)"))
        })
    }

    /// `human` approves request `id`. The vote is recorded before it is applied.
    pub fn approve(
        &self,
        human: &Human,
        id: u64,
        comment: Option<&str>,
        channel: &str,
    ) -> Result<Approval, ApprovalError> {
        self.vote(human, id, true, comment, channel)
    }

    /// `human` denies request `id`; a reason is required.
    pub fn deny(
        &self,
        human: &Human,
        id: u64,
        reason: &str,
        channel: &str,
    ) -> Result<Approval, ApprovalError> {
        if reason.trim().is_empty() {
            return Err(ApprovalError::Invalid(
                "a denial needs a reason: the agent and its owner read it".to_owned(),
            ));
        }
        self.vote(human, id, false, Some(reason), channel)
    }

    fn vote(
        &self,
        human: &Human,
        id: u64,
        approve: bool,
        comment: Option<&str>,
        channel: &str,
    ) -> Result<Approval, ApprovalError> {
        let before = self.approval(id)?;
        let kind = if approve {
            "approval.approve"
        } else {
            "approval.deny"
        };
        let actor = format!("human:{}", human.name);
        let mut event = approval_event(kind, &actor, &before, "requested");
        event.reasons = comment.map(|c| vec![c.to_owned()]).unwrap_or_default();
        event.detail["channel"] = json!(channel);
        self.audit(event)?;
        let vote = Vote {
            human: human.name.clone(),
            approve,
            time_us: now_us(),
            channel: channel.to_owned(),
            comment: comment.map(str::to_owned),
        };
        match self.store().vote(id, &vote) {
            Ok(after) => {
                let outcome = match after.status {
                    ApprovalStatus::Approved => "approved: the agent may run it once",
                    ApprovalStatus::Denied => "denied",
                    _ => "recorded: more approvals needed",
                };
                self.audit(approval_event(kind, &actor, &after, outcome))?;
                Ok(after)
            }
            Err(e) => {
                let mut failed = approval_event(kind, &actor, &before, &format!("refused: {e}"));
                failed.detail["approvers"] = json!(before.request.approvers);
                let _ = self.audit(failed);
                Err(e.into())
            }
        }
    }
}
