//! The write path's deferral: a plain write inside an open transaction block is forwarded
//! while its audit event becomes durable (`defer`); a plain COMMIT carries the events not
//! durable yet into the upstream's ledger (`ledger_insert`), and whatever else may end the
//! block waits for them first (`must_settle`, `settle`). See ARCHITECTURE.md, "The write
//! path".

use std::sync::Arc;

use belay_audit::Draft;
use belay_core::{Class, Decision};
use belay_pg::{Check, Phase};
use belay_sql::{Analysis, Flag};
use serde_json::json;

use super::written::{self, Head, Written, HEADS};
use super::{AppSession, Record, MAX_CACHED, TRANSACTION_CONTROL};
use crate::catalog;
use crate::now_us;

impl AppSession {
    /// Forwards an allowed write inside an open transaction block while its record becomes
    /// durable; `None` when the audit log cannot take it now (the full path then decides).
    pub(super) fn defer(
        &mut self,
        sql: &str,
        analysis: &Arc<Analysis>,
        decision: &Decision,
        phase: Phase,
    ) -> Option<Check> {
        if !self.app.store().writer_open() {
            return None;
        }
        // Found by this in the audit log when the ledger is reconciled.
        let key = self.app.ledger_keys.next();
        let written = self.written(sql, analysis, decision, phase, &key)?;
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
        self.unconfirmed.push(Unconfirmed {
            record: self.next_record,
            key,
            written: Some(Box::new(written)),
            row: None,
            ticket: None,
            covered: false,
        });
        Some(Check::Allow {
            record: Some(self.next_record),
            read_write: false,
            rewrite: None,
        })
    }

    /// Forwards an allowed write outside any block (and no read-only session's) behind its
    /// ledger row, in the implicit transaction of its message, so that it commits with its
    /// decision or not at all; `None` when it cannot go so (the full path decides).
    pub(super) fn autocommit(
        &mut self,
        sql: &str,
        analysis: &Arc<Analysis>,
        decision: &Decision,
        phase: Phase,
    ) -> Option<Check> {
        if self.read_only || !deferrable(analysis) || !self.catalog.ledger_ready(&self.app) {
            return None;
        }
        let Some(Check::Allow { record, .. }) = self.defer(sql, analysis, decision, phase) else {
            return None;
        };
        match self.ledger_insert() {
            Some(own) => {
                self.covered();
                Some(Check::AllowAfter { own, record })
            }
            None => {
                // Not kept for the ledger.
                self.forget_deferred(record);
                None
            }
        }
    }

    /// The event of a deferred write of `sql`, from the head its analysis and decision share
    /// with earlier ones (made from the reference record, `statement_draft`, when there is
    /// none yet). `key`, the event's ledger key, is for the debug builds' check.
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    fn written(
        &mut self,
        sql: &str,
        analysis: &Arc<Analysis>,
        decision: &Decision,
        phase: Phase,
        key: &str,
    ) -> Option<Written> {
        let time_us = now_us();
        let found = self
            .heads
            .iter()
            .position(|h| h.fits(analysis, phase, decision));
        let at = match found {
            Some(at) => at,
            None => {
                let draft = self
                    .statement_draft(sql, analysis, decision, phase, None, None)
                    .ok()?;
                let head = Head::of(analysis.clone(), phase, decision, sql, &draft)?;
                if self.heads.len() >= HEADS {
                    self.heads.remove(0);
                }
                self.heads.push(head);
                self.heads.len() - 1
            }
        };
        if !self.heads[at].has_text(sql) {
            let fingerprint = serde_json::to_string(&belay_audit::fingerprint(&[
                &self.agent.name,
                &self.environment,
                sql,
            ]))
            .ok()?;
            self.heads[at].text(sql, &fingerprint, &written::sql_entries(sql));
        }
        let written = self.heads[at].written(time_us);
        // The pieces are the reference record's: checked in every debug build, so that the
        // whole test suite compares the two.
        #[cfg(debug_assertions)]
        if let Ok(mut reference) = self.statement_draft(sql, analysis, decision, phase, None, None)
        {
            reference.time_us = time_us;
            reference.detail["ledger"] = json!(key);
            let pieces: Option<Draft> = serde_json::from_str(&written.json(key)).ok();
            debug_assert_eq!(pieces.as_ref(), Some(&reference), "{}", written.json(key));
        }
        Some(written)
    }

    /// Whether the records of writes forwarded before they were durable must be durable
    /// before `analysis` runs: it may end the transaction block (a COMMIT, anything but a
    /// read or another such write).
    pub(super) fn must_settle(&self, analysis: &Analysis) -> bool {
        self.uncovered().next().is_some()
            && (analysis.class >= Class::Write
                || analysis
                    .statements
                    .iter()
                    .any(|s| TRANSACTION_CONTROL.contains(&s.kind.as_str())))
    }

    /// The outcome of statement `index` of deferred record `record`: part of its event while
    /// that is not submitted (one event per write), which it is once every statement has
    /// answered. `false` when the event went before its outcome came.
    pub(super) fn deferred_outcome(
        &mut self,
        record: u64,
        index: usize,
        outcome: &Outcome,
        done: bool,
    ) -> bool {
        let uncovered = self.uncovered().count();
        // The write answering now is one of the last forwarded.
        let Some(u) = self
            .unconfirmed
            .iter_mut()
            .rev()
            .find(|u| u.record == record && u.ticket.is_none())
        else {
            return false;
        };
        let Some(written) = u.written.as_mut() else {
            return false;
        };
        written.outcome(index, outcome);
        if done {
            // Kept for the ledger while a COMMIT may still carry it; past that many the
            // block's end waits for the audit log instead.
            let keep = !u.covered && uncovered <= MAX_LEDGER;
            let text: Arc<str> = written.json(&u.key).into();
            u.written = None;
            if keep {
                u.row = Some(text.clone());
            }
            u.ticket = Some(self.app.store().submit_lazily_text(text));
        }
        true
    }

    /// Learns which records of deferred writes are durable (waiting for all of them when
    /// `wait`), and writes the outcomes that waited for them. `Err` when one will not be.
    /// A write's event not submitted yet (its statements have not all answered) goes now.
    pub(super) fn settle(&mut self, wait: bool) -> Result<(), String> {
        for u in &mut self.unconfirmed {
            if u.ticket.is_none() {
                let text = u.written.take().map(|w| w.json(&u.key)).unwrap_or_default();
                u.ticket = Some(self.app.store().submit_lazily_text(text.into()));
            }
        }
        if wait && !self.unconfirmed.is_empty() {
            self.app.store().wake();
        }
        let mut failed = None;
        let mut still = Vec::new();
        for mut u in std::mem::take(&mut self.unconfirmed) {
            let id = u.record;
            let Some(ticket) = u.ticket.as_mut() else {
                continue;
            };
            let answer = if wait {
                match u.ticket.take() {
                    Some(t) => t.wait(),
                    None => continue,
                }
            } else {
                match ticket.try_wait() {
                    Some(answer) => answer,
                    None => {
                        still.push(u);
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

    /// The ledger's row for each decision no COMMIT carried yet (`ledger::insert`); `None`
    /// when one of them is no longer kept for it (`MAX_LEDGER`).
    pub(super) fn ledger_insert(&self) -> Option<belay_pg::Own> {
        let mut rows = Vec::new();
        let first = self.unconfirmed.len() - self.uncovered().count();
        for u in &self.unconfirmed[first..] {
            let event = match (&u.row, &u.written) {
                (Some(row), _) => std::borrow::Cow::Borrowed(&**row),
                (None, Some(w)) => w.json(&u.key).into(),
                (None, None) => return None,
            };
            rows.push((u.key.as_str(), event));
        }
        Some(crate::ledger::insert(&self.app.ledger_keys.store, &rows))
    }

    /// The decisions not carried yet are carried by the statement now going upstream behind
    /// the ledger's row: if it commits, so do they; if it does not, neither do their
    /// effects. Their events go to the audit log without anybody waiting, each once its
    /// statements have answered.
    pub(super) fn covered(&mut self) {
        for u in self.unconfirmed.iter_mut().rev().take_while(|u| !u.covered) {
            u.covered = true;
            u.row = None;
        }
    }

    /// The writes no COMMIT carried yet, last first. They are the end of `unconfirmed`:
    /// writes are added at its end, and a COMMIT covers all there are, so that what a
    /// session's every statement asks of it costs what the open block holds, not what the
    /// last second's blocks left there until `tick` settles them.
    fn uncovered(&self) -> impl Iterator<Item = &Unconfirmed> {
        self.unconfirmed.iter().rev().take_while(|u| !u.covered)
    }

    /// Undoes `defer` for `record`, which will not run as deferred after all.
    pub(super) fn forget_deferred(&mut self, record: Option<u64>) {
        if let Some(record) = record {
            self.unconfirmed.retain(|u| u.record != record);
            self.records.remove(&record);
        }
    }

    /// The outcome of statement `index` of the decision recorded as `seq`.
    pub(super) fn write_outcome(&self, seq: u64, index: usize, outcome: &Outcome) {
        let (name, tag, sqlstate, rows) = outcome.fields();
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

/// Deferred writes one COMMIT carries into the ledger at most; a block with more waits for
/// the audit log at its end.
const MAX_LEDGER: usize = 64;

/// A write forwarded before its record was durable.
#[derive(Debug)]
pub(super) struct Unconfirmed {
    pub(super) record: u64,
    /// Its key in the ledger (`detail.ledger`).
    key: String,
    /// Its event, until submitted.
    written: Option<Box<Written>>,
    /// The event as the ledger takes it, once submitted, while a COMMIT may still carry it.
    row: Option<Arc<str>>,
    /// Once submitted to the audit log.
    ticket: Option<belay_store::Ticket>,
    /// A COMMIT carried it into the ledger: nothing need wait for it any more.
    covered: bool,
}

/// Whether `analysis` is one plain COMMIT (or END, or COMMIT AND CHAIN): what may carry the
/// block's decisions into the ledger just before it.
pub(super) fn commits_alone(analysis: &Analysis) -> bool {
    matches!(analysis.statements.as_slice(), [s] if s.kind == "COMMIT")
        && catalog::changes(analysis).is_none()
}

/// How a forwarded statement ended, kept until its decision's record is durable.
#[derive(Debug)]
pub(super) enum Outcome {
    Completed(String),
    Failed(String),
    Skipped,
}

impl Outcome {
    /// What the audit log says of it: its name, command tag, SQLSTATE and row count (the
    /// tag's last word, `INSERT 0 5`, `DELETE 42`; only a completed statement has one).
    pub(super) fn fields(&self) -> (&'static str, Option<&str>, Option<&str>, Option<u64>) {
        let (name, tag, sqlstate) = match self {
            Outcome::Completed(tag) => ("completed", Some(tag.as_str()), None),
            Outcome::Failed(code) => ("failed", None, Some(code.as_str())),
            Outcome::Skipped => ("skipped", None, None),
        };
        let rows = tag
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        (name, tag, sqlstate, rows)
    }
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
