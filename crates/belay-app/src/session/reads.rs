//! Allowed reads, counted instead of recorded one by one: a session tallies them by kind of
//! read (statement kinds, relations, protocol phase, deciding policies), keeps each distinct
//! text with its count, and writes one `statement.reads` event per tally at least every
//! second. Texts are redacted only when written.

use std::sync::Arc;
use std::time::Duration;

use belay_audit::{fingerprint, Draft};
use belay_core::{Class, Decision, Verdict};
use belay_pg::{Check, Phase};
use belay_sql::Analysis;
use serde_json::json;

use super::{statements_json, AppSession, MAX_CACHED};
use crate::now_us;

/// Allowed reads are written as summaries at least this often (and before anything else the
/// session records, and when it ends).
pub(crate) const READS_EVERY: Duration = Duration::from_secs(1);

/// Allowed reads of one kind, not yet written.
#[derive(Debug)]
pub(crate) struct ReadTally {
    pub(crate) count: u64,
    pub(crate) first_us: i64,
    pub(crate) last_us: i64,
    /// The fingerprint of the first text counted.
    pub(crate) fingerprint: String,
    pub(crate) phase: &'static str,
    pub(crate) statements: serde_json::Value,
    pub(crate) reason: String,
    pub(crate) policies: Vec<String>,
    /// The distinct texts counted, each with its count (redacted only when written).
    pub(crate) texts: Vec<ReadText>,
    /// Reads counted past `TEXTS_PER_TALLY` distinct texts, or of texts too long to keep.
    pub(crate) other_texts: u64,
}

/// One distinct text of a kind of read, as the agent sent it (constants and all: it is
/// redacted before it is written).
#[derive(Debug)]
pub(crate) struct ReadText {
    hash: u64,
    sql: String,
    count: u64,
}

/// Distinct texts a read summary keeps one by one.
const TEXTS_PER_TALLY: usize = 16;
/// Longer texts are only counted.
const TEXT_BYTES: usize = 4096;

impl ReadTally {
    /// Counts one more read of `sql`.
    pub(crate) fn count_text(&mut self, sql: &str) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sql.hash(&mut h);
        let hash = h.finish();
        if let Some(t) = self
            .texts
            .iter_mut()
            .find(|t| t.hash == hash && t.sql == sql)
        {
            t.count += 1;
        } else if self.texts.len() < TEXTS_PER_TALLY && sql.len() <= TEXT_BYTES {
            self.texts.push(ReadText {
                hash,
                sql: sql.to_owned(),
                count: 1,
            });
        } else {
            self.other_texts += 1;
        }
    }

    /// The distinct texts, constants replaced by `$n` (texts that differ only in their
    /// constants are one), with their counts.
    pub(crate) fn texts_json(&self) -> serde_json::Value {
        let mut merged: Vec<(String, u64)> = Vec::new();
        for t in &self.texts {
            let redacted =
                belay_sql::redact(&t.sql).unwrap_or_else(|| "(does not parse)".to_owned());
            match merged.iter_mut().find(|(s, _)| *s == redacted) {
                Some((_, n)) => *n += t.count,
                None => merged.push((redacted, t.count)),
            }
        }
        json!(merged
            .into_iter()
            .map(|(sql, count)| json!({ "sql": sql, "count": count }))
            .collect::<Vec<_>>())
    }
}

pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Query => "query",
        Phase::Parse => "parse",
        Phase::Execute => "execute",
    }
}

impl AppSession {
    /// Counts an allowed read: reads are summarised, one `statement.reads` event per kind of
    /// read (statement kinds, relations, phase) and session, at least every `READS_EVERY`.
    pub(super) fn tally_read(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        phase: Phase,
    ) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        phase_name(phase).hash(&mut h);
        for s in &analysis.statements {
            s.kind.hash(&mut h);
            for r in &s.relations {
                (&r.name, r.object, r.access).hash(&mut h);
            }
        }
        decision.policies.hash(&mut h);
        let now = now_us();
        let key = h.finish();
        self.tallied = Some(key);
        let tally = self.reads.entry(key).or_insert_with(|| ReadTally {
            count: 0,
            first_us: now,
            last_us: now,
            fingerprint: fingerprint(&[&self.agent.name, &self.environment, sql]),
            phase: phase_name(phase),
            statements: statements_json(analysis),
            reason: decision.reason.clone(),
            policies: decision.policies.clone(),
            texts: Vec::new(),
            other_texts: 0,
        });
        tally.count += 1;
        tally.last_us = now;
        tally.count_text(sql);
        self.flush_reads_when_due();
    }

    /// Counts `analysis` again in the tally of the last allowed read when it is the same
    /// analysis in the same phase: the decision would be the same (`decide` is a function of
    /// the analysis and the agent, and the agent's `generation` is current), so only the
    /// count changes. `None`: decide in full.
    pub(super) fn repeat_read(
        &mut self,
        sql: &str,
        analysis: &Arc<Analysis>,
        phase: Phase,
    ) -> Option<Check> {
        let repeat = self.repeat.as_ref()?;
        if !Arc::ptr_eq(&repeat.analysis, analysis) || repeat.phase != phase {
            return None;
        }
        // A stopped writer, a tally already written, or a COMMIT that must wait for the
        // records of the writes before it: the full path says what to do.
        if !self.app.store().writer_open() || self.must_settle(analysis) {
            return None;
        }
        let tally = self.reads.get_mut(&repeat.tally)?;
        tally.count += 1;
        tally.last_us = now_us();
        tally.count_text(sql);
        self.flush_reads_when_due();
        Some(Check::allow())
    }

    /// Writes the read summaries once the oldest is `READS_EVERY` old, or when too many kinds
    /// of read are waiting.
    pub(super) fn flush_reads_when_due(&mut self) {
        let since = *self.reads_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= READS_EVERY || self.reads.len() >= MAX_CACHED {
            let _ = self.flush_reads();
        }
    }

    /// Writes the read summaries (without waiting: reads are not durable before forwarding).
    pub(super) fn flush_reads(&mut self) -> Result<(), String> {
        self.reads_since = None;
        for (_, t) in self.reads.drain() {
            let texts = t.texts_json();
            self.app
                .store()
                .record(Draft {
                    time_us: t.last_us,
                    actor: format!("agent:{}", self.agent.name),
                    kind: "statement.reads".to_owned(),
                    environment: Some(self.environment.clone()),
                    fingerprint: Some(t.fingerprint),
                    class: Some(Class::Read.as_str().to_owned()),
                    verdict: Some(Verdict::Allow.to_string()),
                    reasons: vec![t.reason],
                    policies: t.policies,
                    outcome: None,
                    detail: json!({
                        "peer": self.peer,
                        "phase": t.phase,
                        "count": t.count,
                        "first_us": t.first_us,
                        "last_us": t.last_us,
                        "statements": t.statements,
                        "texts": texts,
                        "other_texts": t.other_texts,
                    }),
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
