//! Allowed reads, counted instead of recorded one by one: a session tallies them by kind of
//! read (statement kinds, relations, protocol phase, deciding policies), keeps each distinct
//! text with its count, and writes one `statement.reads` event per tally at least every
//! second. Texts are redacted only when written.

use std::time::Duration;

use belay_pg::Phase;
use serde_json::json;

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
