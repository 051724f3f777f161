//! The durable record of a decision: which decisions are recorded one by one (anything that
//! writes, every refusal, a rewritten text) and which are counted (`reads.rs`), and what an
//! event says of the statements and their text, bounded in size.

use belay_audit::{fingerprint, Draft};
use belay_core::{Class, Decision, Verdict};
use belay_pg::Phase;
use belay_sql::Analysis;
use serde_json::json;

use super::held::Action;
use super::reads::phase_name;
use super::AppSession;
use crate::now_us;

/// Statements an audit event lists one by one; past this, the rest are counted by kind.
pub(super) const RECORDED_STATEMENTS: usize = 32;

/// Recorded SQL longer than this is kept as a prefix, its length and its hash.
const RECORDED_SQL_BYTES: usize = 4096;

/// What the audit log says of each statement of an analysis: each of the first
/// `RECORDED_STATEMENTS`, and how many more of each kind, so that one huge input cannot make
/// an event of megabytes.
pub(super) fn statements_json(analysis: &Analysis) -> serde_json::Value {
    let listed: Vec<serde_json::Value> = analysis
        .statements
        .iter()
        .take(RECORDED_STATEMENTS)
        .map(|s| {
            json!({
                "kind": s.kind, "class": s.class, "flags": s.flags, "relations": s.relations,
            })
        })
        .collect();
    if analysis.statements.len() <= RECORDED_STATEMENTS {
        return json!(listed);
    }
    let mut more: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for s in &analysis.statements[RECORDED_STATEMENTS..] {
        *more.entry(format!("{} ({})", s.kind, s.class)).or_default() += 1;
    }
    json!({
        "total": analysis.statements.len(),
        "listed": listed,
        "more_by_kind": more,
    })
}

/// Puts a statement's text, constants replaced by `$n`, into an event's detail: whole up to
/// `RECORDED_SQL_BYTES`, past that as a prefix with the redacted text's length and SHA-256.
pub(super) fn record_sql(detail: &mut serde_json::Value, sql: &str) {
    let redacted = belay_sql::redact(sql).unwrap_or_else(|| "(does not parse)".to_owned());
    if redacted.len() <= RECORDED_SQL_BYTES {
        detail["sql"] = json!(redacted);
        return;
    }
    let mut end = 1024;
    while !redacted.is_char_boundary(end) {
        end -= 1;
    }
    detail["sql"] = json!(format!("{}…", &redacted[..end]));
    detail["sql_bytes"] = json!(redacted.len());
    detail["sql_sha256"] = json!(fingerprint(&[&redacted]));
}

impl AppSession {
    /// Records the decision: durably (returning its sequence number) for anything that writes
    /// and for every refusal; allowed reads are counted and summarised (`tally_read`).
    pub(super) fn audit_decision(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        phase: Phase,
        action: Option<&Action>,
        forwarded: Option<&str>,
    ) -> Result<Option<u64>, String> {
        // A text belay rewrites is recorded one by one, with what went upstream instead.
        let durable = analysis.class >= Class::Write
            || decision.verdict != Verdict::Allow
            || forwarded.is_some();
        if !durable {
            // Reads are counted and written later, but only while the log can take them.
            if !self.app.store().writer_open() {
                return Err("the audit writer has stopped".to_owned());
            }
            self.tally_read(sql, analysis, decision, phase);
            return Ok(None);
        }
        // What was read so far goes first, so that the log keeps the session's order up to
        // an event it waits for. (A deferred write's event does not flush them: the reads of
        // a busy session are summarised once a second, not once per write.)
        self.flush_reads()?;
        let draft = self.statement_draft(sql, analysis, decision, phase, action, forwarded)?;
        self.app
            .store()
            .submit(draft)
            .wait()
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The record of a decision on `sql`.
    pub(super) fn statement_draft(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        phase: Phase,
        action: Option<&Action>,
        forwarded: Option<&str>,
    ) -> Result<Draft, String> {
        let mut detail = json!({
            "peer": self.peer,
            "phase": phase_name(phase),
            "statements": statements_json(analysis),
        });
        // Constants are replaced by $n: values (passwords, personal data) stay out.
        record_sql(&mut detail, sql);
        if let Some(forwarded) = forwarded {
            let mut shown = json!({});
            record_sql(&mut shown, forwarded);
            detail["forwarded"] = shown;
        }
        if let Some(id) = action.and_then(|a| a.approval) {
            detail["approval"] = json!(id);
        }
        let draft = Draft {
            time_us: now_us(),
            actor: format!("agent:{}", self.agent.name),
            kind: "statement".to_owned(),
            environment: Some(self.environment.clone()),
            fingerprint: Some(match action {
                Some(a) => a.fingerprint.clone(),
                None => fingerprint(&[&self.agent.name, &self.environment, sql]),
            }),
            class: Some(analysis.class.as_str().to_owned()),
            verdict: Some(decision.verdict.to_string()),
            reasons: vec![decision.reason.clone()],
            policies: decision.policies.clone(),
            outcome: None,
            detail,
        };
        Ok(draft)
    }
}
