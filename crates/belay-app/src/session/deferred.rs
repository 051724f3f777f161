//! The write path's deferral: a plain write inside an open transaction block is forwarded
//! while its audit event becomes durable (`defer`), and whatever may end the block waits
//! for those events first (`must_settle`, `settle`). See ARCHITECTURE.md, "The write path".

use belay_audit::Draft;
use belay_core::{Class, Decision};
use belay_pg::{Check, Phase};
use belay_sql::{Analysis, Flag};
use serde_json::json;

use super::{AppSession, Record, MAX_CACHED, TRANSACTION_CONTROL};
use crate::catalog;
use crate::now_us;

impl AppSession {
    /// Forwards an allowed write inside an open transaction block while its record becomes
    /// durable; `None` when the audit log cannot take it now (the full path then decides).
    pub(super) fn defer(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        phase: Phase,
    ) -> Option<Check> {
        if !self.app.store().writer_open() {
            return None;
        }
        let draft = self
            .statement_draft(sql, analysis, decision, phase, None, None)
            .ok()?;
        // Not woken for it: the block's end wakes the writer, so that the events of one
        // transaction (and of every session committing then) share one fsync.
        let ticket = self.app.store().submit_lazily(draft);
        ticket.submitted().ok()?;
        if self.records.len() >= MAX_CACHED {
            self.records.retain(|_, r| r.pending);
        }
        self.next_record += 1;
        self.records.insert(
            self.next_record,
            Record {
                audit_seq: None,
                statements: analysis.statements.len(),
                effects: Vec::new(),
                pending: true,
                outcomes: Vec::new(),
                done: false,
            },
        );
        self.unconfirmed.push((self.next_record, ticket));
        Some(Check::Allow {
            record: Some(self.next_record),
            read_write: false,
            rewrite: None,
        })
    }

    /// Whether the records of writes forwarded before they were durable must be durable
    /// before `analysis` runs: it may end the transaction block (a COMMIT, anything but a
    /// read or another such write).
    pub(super) fn must_settle(&self, analysis: &Analysis) -> bool {
        !self.unconfirmed.is_empty()
            && (analysis.class >= Class::Write
                || analysis
                    .statements
                    .iter()
                    .any(|s| TRANSACTION_CONTROL.contains(&s.kind.as_str())))
    }

    /// Learns which records of deferred writes are durable (waiting for all of them when
    /// `wait`), and writes the outcomes that waited for them. `Err` when one will not be.
    pub(super) fn settle(&mut self, wait: bool) -> Result<(), String> {
        if wait && !self.unconfirmed.is_empty() {
            self.app.store().wake();
        }
        let mut failed = None;
        let mut still = Vec::new();
        for (id, mut ticket) in std::mem::take(&mut self.unconfirmed) {
            let answer = if wait {
                ticket.wait()
            } else {
                match ticket.try_wait() {
                    Some(answer) => answer,
                    None => {
                        still.push((id, ticket));
                        continue;
                    }
                }
            };
            match answer {
                Ok(seq) => {
                    let Some(r) = self.records.get_mut(&id) else {
                        continue;
                    };
                    r.audit_seq = Some(seq);
                    r.pending = false;
                    let done = r.done;
                    for (index, outcome) in std::mem::take(&mut r.outcomes) {
                        self.write_outcome(seq, index, &outcome);
                    }
                    if done {
                        self.records.remove(&id);
                    }
                }
                Err(e) => {
                    self.records.remove(&id);
                    failed = Some(e.to_string());
                }
            }
        }
        self.unconfirmed = still;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The outcome of statement `index` of the decision recorded as `seq`.
    pub(super) fn write_outcome(&self, seq: u64, index: usize, outcome: &Outcome) {
        let (name, tag, sqlstate) = match outcome {
            Outcome::Completed(tag) => ("completed", Some(tag.as_str()), None),
            Outcome::Failed(code) => ("failed", None, Some(code.as_str())),
            Outcome::Skipped => ("skipped", None, None),
        };
        // The row count is the tag's last word (`INSERT 0 5`, `DELETE 42`), and only a
        // completed statement has one.
        let rows = tag
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        let _ = self.app.store().record(Draft {
            time_us: now_us(),
            actor: format!("agent:{}", self.agent.name),
            kind: "statement.outcome".to_owned(),
            environment: Some(self.environment.clone()),
            outcome: Some(name.to_owned()),
            detail: json!({
                "decision": seq, "statement": index, "tag": tag, "rows": rows,
                "sqlstate": sqlstate,
            }),
            ..Draft::default()
        });
    }
}

/// How a forwarded statement ended, kept until its decision's record is durable.
#[derive(Debug)]
pub(super) enum Outcome {
    Completed(String),
    Failed(String),
    Skipped,
}

/// Statement kinds whose effect is undone with their transaction: only these run before
/// their record is durable.
const DEFERRABLE_KINDS: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE", "SELECT"];

/// Flags that say nothing of effects outside the transaction.
const DEFERRABLE_FLAGS: &[Flag] = &[
    Flag::NoWhere,
    Flag::TautologicalWhere,
    Flag::WritableCte,
    Flag::RowLock,
    Flag::MultipleStatements,
    Flag::PreparedStatement,
];

/// Whether `analysis` is a write whose every effect is rolled back with its transaction
/// (plain DML that calls no code with effects of its own), so that it may run inside an
/// open block before its record is durable.
pub(super) fn deferrable(analysis: &Analysis) -> bool {
    analysis.class == Class::Write
        && catalog::changes(analysis).is_none()
        && analysis.statements.iter().all(|s| {
            DEFERRABLE_KINDS.contains(&s.kind.as_str())
                && s.flags.iter().all(|f| DEFERRABLE_FLAGS.contains(f))
                && s.prepared_effect.is_none()
                && s.unresolved_prepared.is_none()
        })
}
