//! The event of a write forwarded before its record was durable (`deferred.rs`), kept as the
//! JSON text of its `Draft` and put together from pieces: what every run of one analysis
//! under one decision shares (its actor, class, verdict, reasons, policies, peer, phase and
//! statements: a `Head`, kept per session), what every run of one text shares (its
//! fingerprint and recorded SQL), and what is its own (time, ledger key, outcomes). Each
//! piece is the reference record's (`statement_draft`) own serialisation, made once: a write
//! run again costs the session's thread a few copies instead of a JSON tree and its
//! serialisation, the audit writer reads the text back into a `Draft`, and the ledger takes it
//! as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use belay_audit::Draft;
use belay_core::Decision;
use belay_pg::Phase;
use belay_sql::Analysis;

use super::deferred::Outcome;
use super::record::RECORDED_STATEMENTS;

/// Analyses a session keeps the `Head` of.
pub(super) const HEADS: usize = 8;

/// What the events of one analysis under one decision share, serialised.
#[derive(Debug)]
pub(super) struct Head {
    analysis: Arc<Analysis>,
    phase: Phase,
    decision: Decision,
    /// The draft's fields but time, fingerprint, outcome and detail: `"actor":…,…` with no
    /// braces.
    fields: Arc<str>,
    /// The detail's entries but the SQL, ledger key and outcomes.
    detail: Arc<str>,
    /// The last text recorded under it, with its fingerprint and recorded SQL entries.
    text: String,
    fingerprint: Arc<str>,
    sql: Arc<str>,
}

impl Head {
    /// The pieces of `draft`, the reference record of `sql` (analysed as `analysis`, decided
    /// as `decision`, in `phase`). `None` if it does not serialise as a record does.
    pub(super) fn of(
        analysis: Arc<Analysis>,
        phase: Phase,
        decision: &Decision,
        sql: &str,
        draft: &Draft,
    ) -> Option<Head> {
        let mut fields = String::new();
        let whole = serde_json::to_value(draft).ok()?;
        let whole = whole.as_object()?;
        for key in [
            "actor",
            "kind",
            "environment",
            "class",
            "verdict",
            "reasons",
            "policies",
        ] {
            push_entry(&mut fields, key, whole.get(key)?)?;
        }
        let detail = draft.detail.as_object()?;
        let mut shared = String::new();
        let mut sql_entries = String::new();
        for (key, value) in detail {
            match key.as_str() {
                "sql" | "sql_bytes" | "sql_sha256" => push_entry(&mut sql_entries, key, value)?,
                "ledger" | "outcomes" | "more_outcomes" => {}
                _ => push_entry(&mut shared, key, value)?,
            }
        }
        Some(Head {
            analysis,
            phase,
            decision: decision.clone(),
            fields: fields.into(),
            detail: shared.into(),
            text: sql.to_owned(),
            fingerprint: serde_json::to_string(&draft.fingerprint).ok()?.into(),
            sql: sql_entries.into(),
        })
    }

    /// Whether events of `analysis` decided as `decision` in `phase` share this head.
    pub(super) fn fits(&self, analysis: &Arc<Analysis>, phase: Phase, decision: &Decision) -> bool {
        Arc::ptr_eq(&self.analysis, analysis) && self.phase == phase && self.decision == *decision
    }

    /// Records `sql` under this head from now on, with its fingerprint and recorded SQL as
    /// the reference record gives them (`fingerprint`, `sql_entries`).
    pub(super) fn text(&mut self, sql: &str, fingerprint: &str, sql_entries: &str) {
        sql.clone_into(&mut self.text);
        self.fingerprint = fingerprint.into();
        self.sql = sql_entries.into();
    }

    /// Whether the last text recorded under it is `sql`.
    pub(super) fn has_text(&self, sql: &str) -> bool {
        self.text == sql
    }

    /// The event of a run of this head's text at `time_us`.
    pub(super) fn written(&self, time_us: i64) -> Written {
        Written {
            time_us,
            fields: self.fields.clone(),
            detail: self.detail.clone(),
            fingerprint: self.fingerprint.clone(),
            sql: self.sql.clone(),
            outcome: None,
            outcomes: String::new(),
            more: BTreeMap::new(),
        }
    }
}

/// The SQL entries of a detail (`sql`, and for a long text `sql_bytes` and `sql_sha256`) as
/// `record_sql` makes them, serialised.
pub(super) fn sql_entries(sql: &str) -> String {
    let mut detail = serde_json::json!({});
    super::record::record_sql(&mut detail, sql);
    let mut out = String::new();
    for (key, value) in detail.as_object().into_iter().flatten() {
        let _ = push_entry(&mut out, key, value);
    }
    out
}

/// `"key":value` onto `out`, after a comma unless it is the first entry.
fn push_entry(out: &mut String, key: &str, value: &serde_json::Value) -> Option<()> {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(&serde_json::to_string(key).ok()?);
    out.push(':');
    out.push_str(&serde_json::to_string(value).ok()?);
    Some(())
}

/// One deferred write's event, while its statements answer.
#[derive(Debug)]
pub(super) struct Written {
    time_us: i64,
    fields: Arc<str>,
    detail: Arc<str>,
    fingerprint: Arc<str>,
    sql: Arc<str>,
    /// The last outcome's name.
    outcome: Option<&'static str>,
    /// The first statements' outcomes, serialised and joined by commas.
    outcomes: String,
    /// How many of the rest ended each way.
    more: BTreeMap<&'static str, u64>,
}

impl Written {
    /// Adds the outcome of statement `index`: one by one for the first statements, the rest
    /// counted, as their statements are (`statements_json`).
    pub(super) fn outcome(&mut self, index: usize, outcome: &Outcome) {
        let (name, tag, sqlstate, rows) = outcome.fields();
        self.outcome = Some(name);
        if index >= RECORDED_STATEMENTS {
            *self.more.entry(name).or_default() += 1;
            return;
        }
        if !self.outcomes.is_empty() {
            self.outcomes.push(',');
        }
        let out = &mut self.outcomes;
        let _ = write!(out, "{{\"statement\":{index},\"tag\":");
        push_string(out, tag);
        match rows {
            Some(n) => {
                let _ = write!(out, ",\"rows\":{n},\"sqlstate\":");
            }
            None => out.push_str(",\"rows\":null,\"sqlstate\":"),
        }
        push_string(out, sqlstate);
        out.push('}');
    }

    /// The event, whose ledger key is `key`, as the JSON text of its `Draft`.
    pub(super) fn json(&self, key: &str) -> String {
        let mut out = String::with_capacity(
            96 + self.fields.len()
                + self.detail.len()
                + self.sql.len()
                + self.fingerprint.len()
                + key.len()
                + self.outcomes.len(),
        );
        let _ = write!(
            out,
            "{{\"time_us\":{},{},\"fingerprint\":{},\"outcome\":",
            self.time_us, self.fields, self.fingerprint
        );
        match self.outcome {
            Some(name) => {
                let _ = write!(out, "\"{name}\"");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"detail\":{");
        out.push_str(&self.detail);
        out.push(',');
        out.push_str(&self.sql);
        out.push_str(",\"ledger\":");
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        if !self.outcomes.is_empty() {
            out.push_str(",\"outcomes\":[");
            out.push_str(&self.outcomes);
            out.push(']');
        }
        if !self.more.is_empty() {
            out.push_str(",\"more_outcomes\":");
            out.push_str(&serde_json::to_string(&self.more).unwrap_or_default());
        }
        out.push_str("}}");
        out
    }
}

/// `text` as a JSON string (or `null`) onto `out`.
fn push_string(out: &mut String, text: Option<&str>) {
    match text.and_then(|t| serde_json::to_string(t).ok()) {
        Some(quoted) => out.push_str(&quoted),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_written_as_the_reference_record_writes_them() {
        let head = Head {
            analysis: Arc::new(Analysis {
                class: belay_core::Class::Write,
                statements: Vec::new(),
            }),
            phase: Phase::Execute,
            decision: Decision::deny("x"),
            fields: r#""actor":"agent:a","kind":"statement","environment":"staging","class":"write","verdict":"allow","reasons":["r"],"policies":[]"#.into(),
            detail: r#""peer":"p""#.into(),
            text: "UPDATE t SET a = 1".to_owned(),
            fingerprint: r#""f""#.into(),
            sql: r#""sql":"UPDATE t SET a = $1""#.into(),
        };
        let mut w = head.written(7);
        w.outcome(0, &Outcome::Completed("UPDATE 3".to_owned()));
        w.outcome(1, &Outcome::Failed("23\"505".to_owned()));
        w.outcome(2, &Outcome::Skipped);
        for i in RECORDED_STATEMENTS..RECORDED_STATEMENTS + 3 {
            w.outcome(i, &Outcome::Skipped);
        }
        let draft: Draft = serde_json::from_str(&w.json("k-1")).unwrap();
        assert_eq!(draft.time_us, 7);
        assert_eq!(draft.fingerprint.as_deref(), Some("f"));
        assert_eq!(draft.outcome.as_deref(), Some("skipped"));
        assert_eq!(
            draft.detail,
            serde_json::json!({
                "peer": "p", "sql": "UPDATE t SET a = $1", "ledger": "k-1",
                "outcomes": [
                    { "statement": 0, "tag": "UPDATE 3", "rows": 3, "sqlstate": null },
                    { "statement": 1, "tag": null, "rows": null, "sqlstate": "23\"505" },
                    { "statement": 2, "tag": null, "rows": null, "sqlstate": null },
                ],
                "more_outcomes": { "skipped": 3 },
            })
        );
    }
}
