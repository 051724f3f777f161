//! Statements held for approval: the exact action a held statement is (text, parameters,
//! what an `EXECUTE` name was prepared as), using an approved request for it once, creating
//! or finding the request and waiting for its humans, and the refusal that says where it
//! stands.

use std::time::Duration;

use belay_audit::fingerprint;
use belay_core::{Class, Decision, Verdict};
use belay_pg::{Parameters, Refusal, SQLSTATE_APPROVAL, SQLSTATE_DENIED};
use belay_sql::Analysis;
use belay_store::{Approval, ApprovalStatus, NewApproval};
use serde_json::json;

use super::{record_sql, AppSession};
use crate::approvals::{approval_event, approve_command, approvers_text};
use crate::gateway::SQLSTATE_STATE;
use crate::now_us;

/// Approval requests one agent may have waiting for humans at once.
const MAX_OPEN_REQUESTS: usize = 20;

/// How often a statement held with `approval_wait` looks for its humans' decision.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// The exact action a held statement is, as approvals are bound to it.
#[derive(Debug)]
pub(crate) struct Action {
    /// At Execute, the parameters the agent bound, in canonical text.
    pub(super) parameters: Option<String>,
    /// Agent, environment, text and parameters.
    pub(super) fingerprint: String,
    /// The approval request it runs under or waits on.
    pub(super) approval: Option<u64>,
    /// Why an approval cannot be used for it in this session, if it cannot.
    pub(super) blocked: Option<&'static str>,
    /// How long to wait for the humans' decision before answering.
    pub(super) wait: Duration,
}

/// The humans who approved, for the record.
fn approved_by(approval: &Approval) -> String {
    approval
        .votes
        .iter()
        .filter(|v| v.approve)
        .map(|v| v.human.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl AppSession {
    /// The exact action a held statement is: its text and, at Execute, its parameters.
    pub(super) fn action(&self, sql: &str, params: &Parameters) -> Result<Action, String> {
        let mut parameters = params.canonical()?;
        // `EXECUTE name` of a statement this session prepared earlier means what it was
        // prepared as: the approval is bound to that text too, so a name prepared again
        // with other text is another action.
        let prepared: Vec<String> = self
            .app
            .classifier
            .classify(sql)
            .statements
            .iter()
            .filter_map(|s| s.unresolved_prepared.as_ref())
            .filter_map(|name| {
                self.prepared
                    .get(name)
                    .map(|text| format!("{name}: {text}"))
            })
            .collect();
        if !prepared.is_empty() {
            let runs = format!("prepared earlier as {}", prepared.join("; "));
            parameters = Some(match parameters {
                Some(p) => format!("{p}; {runs}"),
                None => runs,
            });
        }
        let fingerprint = match &parameters {
            None => fingerprint(&[&self.agent.name, &self.environment, sql]),
            Some(p) => fingerprint(&[&self.agent.name, &self.environment, sql, p]),
        };
        Ok(Action {
            parameters,
            fingerprint,
            approval: None,
            blocked: None,
            wait: Duration::ZERO,
        })
    }

    /// Uses an approved request for exactly `action`, if there is one, and returns the
    /// decision with its approvals counted. `Err` is a denial: the approval cannot be used.
    pub(super) fn use_approval(
        &self,
        analysis: &Analysis,
        action: &mut Action,
    ) -> Result<Option<Decision>, Decision> {
        if action.blocked.is_some() {
            return Ok(None);
        }
        let used = self
            .app
            .store()
            .consume_approval(
                &self.agent.name,
                &self.environment,
                &action.fingerprint,
                now_us(),
            )
            .map_err(|e| Decision::deny(format!("belay cannot read its approvals ({e})")))?;
        let Some(approval) = used else {
            return Ok(None);
        };
        action.approval = Some(approval.id);
        let mut request = self.request(analysis);
        request.approvals = approval.approvals();
        let decision = self.app.policy.evaluate(&request);
        let actor = format!("agent:{}", self.agent.name);
        // The same text may now do more than what the humans saw: the database's code it
        // calls changed since (a function replaced, a trigger added).
        let approved_class = approval
            .request
            .class
            .parse::<Class>()
            .unwrap_or(Class::Unknown);
        let grown = (analysis.class > approved_class).then(|| {
            format!(
                "approval request {} was given for a {approved_class} statement, and the same text is now {}: {}; ask for a new approval",
                approval.id,
                analysis.class,
                analysis.reason()
            )
        });
        if decision.verdict != Verdict::Allow || grown.is_some() {
            // Something other than the hold forbids it now (a grant revoked, a policy
            // changed, the code it runs): the approval can never be used.
            let why = grown.unwrap_or_else(|| {
                format!(
                    "approval request {} was approved, but policy no longer allows the action: {}",
                    approval.id, decision.reason
                )
            });
            let _ = self.app.store().abandon_approval(approval.id);
            let mut event = approval_event("approval.abandoned", &actor, &approval, "abandoned");
            event.reasons = vec![why.clone()];
            let _ = self.app.store().append(event);
            let mut denied = Decision::deny(why);
            denied.policies = decision.policies;
            return Err(denied);
        }
        let mut event = approval_event("approval.executed", &actor, &approval, "forwarded once");
        event.reasons = vec![format!("approved by {}", approved_by(&approval))];
        self.app.store().append(event).map_err(|e| {
            Decision::deny(format!(
                "the use of approval {} could not be written to the audit log ({e}); belay forwards nothing it has not recorded",
                approval.id
            ))
        })?;
        Ok(Some(decision))
    }

    /// Finds or creates the approval request for `action`, tells its humans, and waits up to
    /// `action.wait` for them. `Ok` is the decision once approved (the
    /// approval is then used); `Err` is the refusal the agent reads.
    pub(super) fn hold(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        action: &mut Action,
        seq: Option<u64>,
    ) -> Result<Decision, Refusal> {
        let state_error = |e: &dyn std::fmt::Display| {
            Refusal::new(
                SQLSTATE_STATE,
                format!("belay cannot record the approval request ({e}), so it forwards nothing"),
            )
            .hint("an operator must check belay's state directory")
        };
        self.app.expire_approvals().map_err(|e| state_error(&e))?;
        // One agent cannot bury its humans in requests: past the cap, a new one is refused
        // (asking again for one already open is not new).
        let open = self
            .app
            .store()
            .approvals(&[ApprovalStatus::Pending], 10_000)
            .map_err(|e| state_error(&e))?;
        let mine: Vec<&Approval> = open
            .iter()
            .filter(|a| a.request.agent == self.agent.name)
            .collect();
        if mine.len() >= MAX_OPEN_REQUESTS
            && !mine
                .iter()
                .any(|a| a.request.fingerprint == action.fingerprint)
        {
            return Err(Refusal::new(
                SQLSTATE_DENIED,
                format!(
                    "agent `{}` already has {} approval requests waiting for humans, the most belay keeps open for one agent",
                    self.agent.name,
                    mine.len()
                ),
            )
            .hint("wait for the humans to decide (`belay pending` lists them), or withdraw by letting them expire"));
        }
        let now = now_us();
        let hold = &decision.hold;
        // The relations as policy saw them.
        let relations = self.request(analysis).relations;
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let mut approvers: Vec<String> = Vec::new();
        for name in &hold.approvers {
            let name = if name == "owner" {
                &self.agent.owner
            } else {
                name
            };
            if !approvers.contains(name) {
                approvers.push(name.clone());
            }
        }
        let new = NewApproval {
            agent: self.agent.name.clone(),
            environment: self.environment.clone(),
            action: sql.to_owned(),
            parameters: action.parameters.clone(),
            fingerprint: action.fingerprint.clone(),
            class: analysis.class.as_str().to_owned(),
            flags: analysis
                .flags()
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
            relations: relations.into_iter().collect(),
            policies: decision.policies.clone(),
            reason: decision.reason.clone(),
            blast_radius: None,
            required: decision.verdict.approvals_required().max(1),
            approvers,
            expires_us: now.saturating_add(micros(hold.expires)),
            run_within_us: micros(hold.run_within),
            request_seq: seq,
        };
        let (mut approval, created) = self
            .app
            .store()
            .request_approval(&new, now)
            .map_err(|e| state_error(&e))?;
        action.approval = Some(approval.id);
        if created {
            let mut event = approval_event(
                "approval.requested",
                &format!("agent:{}", self.agent.name),
                &approval,
                "pending",
            );
            event.reasons = vec![decision.reason.clone()];
            record_sql(&mut event.detail, sql);
            event.detail["approvers"] = json!(approval.request.approvers);
            event.detail["decision"] = json!(seq);
            self.app.audit(event).map_err(|e| state_error(&e))?;
            self.app.notify_requested(&approval, &self.agent.owner);
        }
        let deadline = std::time::Instant::now() + action.wait;
        loop {
            // A blocked action leaves the approval unused (`use_approval` says `None`).
            if approval.status == ApprovalStatus::Approved {
                match self.use_approval(analysis, action) {
                    Ok(Some(approved)) => return Ok(approved),
                    // Used by another session of this agent in the meantime.
                    Ok(None) => {}
                    Err(denied) => return Err(self.refusal(Some(analysis), &denied, seq)),
                }
            }
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if approval.status != ApprovalStatus::Pending
                || remaining.is_zero()
                || approval.request.expires_us <= now_us()
                || self.app.stopping()
            {
                break;
            }
            std::thread::sleep(remaining.min(WAIT_POLL));
            approval = match self.app.store().approval(approval.id) {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => return Err(state_error(&e)),
            };
        }
        Err(self.hold_refusal(analysis, &approval, seq, action.blocked))
    }

    /// The refusal of a statement whose approval request `approval` is not (or no longer)
    /// usable.
    pub(super) fn hold_refusal(
        &self,
        analysis: &Analysis,
        approval: &Approval,
        seq: Option<u64>,
        blocked: Option<&str>,
    ) -> Refusal {
        let id = approval.id;
        let what = analysis
            .statements
            .iter()
            .map(|s| s.kind.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let class = analysis.class.as_str();
        let mut detail = format!(
            "class: {class} ({}); policy: {}; approval request {id}: {}, {} approved so far, needs {}",
            analysis.reason(),
            approval.request.policies.join(", "),
            approval.status,
            approval.approvals(),
            approvers_text(approval),
        );
        if let Some(seq) = seq {
            detail.push_str(&format!("; audit event {seq}"));
        }
        let window = humantime::format_duration(Duration::from_secs(
            u64::try_from(approval.request.run_within_us / 1_000_000).unwrap_or(0),
        ));
        let (code, message, hint) = match approval.status {
            ApprovalStatus::Denied => {
                let by = approval
                    .votes
                    .iter()
                    .find(|v| !v.approve)
                    .map(|v| format!("`{}`: {}", v.human, v.comment.as_deref().unwrap_or("no reason given")))
                    .unwrap_or_else(|| "a human".to_owned());
                (
                    SQLSTATE_DENIED,
                    format!("belay denied this {class} statement ({what}): approval request {id} was denied by {by}"),
                    "do not send it again; ask the human who denied it, or change the approach".to_owned(),
                )
            }
            ApprovalStatus::Approved => (
                SQLSTATE_APPROVAL,
                format!(
                    "belay holds this {class} statement ({what}): approval request {id} is approved, but {}",
                    blocked.unwrap_or("it could not be used")
                ),
                format!("the approval stays usable until it lapses; send the identical statement again as belay asks, within {window}"),
            ),
            ApprovalStatus::Expired => (
                SQLSTATE_APPROVAL,
                format!("belay holds this {class} statement ({what}): approval request {id} expired without a decision"),
                "send the identical statement again to ask anew".to_owned(),
            ),
            _ => (
                SQLSTATE_APPROVAL,
                format!(
                    "belay holds this {class} statement ({what}) for approval: {}; approval request {id} needs {}",
                    approval.request.reason,
                    approvers_text(approval)
                ),
                format!(
                    "a human approves it with `{}` (or `belay deny {id} --reason TEXT`); then send the identical statement again within {window} and it runs exactly once; any other text needs its own approval",
                    approve_command(id)
                ),
            ),
        };
        Refusal::new(code, message).detail(detail).hint(hint)
    }
}
