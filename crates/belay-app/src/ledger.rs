//! The ledger in each upstream database: a table of belay's own (`belay_ledger.decisions`) into
//! which a session writes, just before a COMMIT, the decisions of the transaction's writes
//! whose audit events are not on disk yet, so that they commit atomically with the effects
//! they allowed. One fsync, the database's own, then covers the effects and their
//! decisions; the audit log catches up on its own.
//!
//! A reconciler per upstream database creates the table, and every `EVERY` deletes the rows
//! whose events the audit log holds (found by the key in their detail, `ledger`). A row whose
//! event the log does not hold, written by an earlier run of belay (which died before its
//! audit writer made the event durable), is added to the chain then, marked as recovered.
//! See ARCHITECTURE.md, "The write path".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use belay_audit::Draft;
use belay_config::Postgres;
use belay_store::{SqliteStore, StateStore};

/// The schema of belay's own in each upstream database; agents' statements may read it, and
/// nothing else (`touches`). Not `belay`: a role of that name, which is what many will call
/// belay's upstream role, finds its own schema first on the default path (`"$user"`).
pub use belay_sql::LEDGER_SCHEMA as SCHEMA;

/// How often the reconciler empties the ledger of what the audit log holds.
const EVERY: Duration = Duration::from_secs(1);

/// How soon a ledger that could not be made or read is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// Rows one pass reads.
const BATCH: usize = 5000;

/// Readable by every role, so that `pg_dump` of the database, by any role, still works (what
/// it holds is what the audit log holds: redacted texts, no constants); written by none but
/// the role belay logs in as, and by no agent statement (`touches`).
const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS belay_ledger; \
    CREATE TABLE IF NOT EXISTS belay_ledger.decisions (\
        key text PRIMARY KEY, store text NOT NULL, event text NOT NULL, \
        written timestamptz NOT NULL DEFAULT now()); \
    REVOKE ALL ON SCHEMA belay_ledger FROM PUBLIC; \
    REVOKE ALL ON belay_ledger.decisions FROM PUBLIC; \
    GRANT USAGE ON SCHEMA belay_ledger TO PUBLIC; \
    GRANT SELECT ON belay_ledger.decisions TO PUBLIC; \
    COMMENT ON TABLE belay_ledger.decisions IS 'belay: decisions committed with the transactions they allowed, until belay''s audit log holds them; do not change'";

/// Where a ledger's keys come from: this store's identity and this run of belay.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Identifies the audit log, so that two belays sharing an upstream keep to their rows.
    pub(crate) store: String,
    run: String,
    next: AtomicU64,
}

impl Keys {
    pub(crate) fn new(store: String) -> Keys {
        let mut run = [0u8; 8];
        getrandom::fill(&mut run).unwrap_or_default();
        Keys {
            store,
            run: format!("{:016x}", u64::from_le_bytes(run)),
            next: AtomicU64::new(0),
        }
    }

    /// A key no other decision of any run has.
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.run)
    }

    fn of_this_run(&self, key: &str) -> bool {
        key.strip_prefix(self.run.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// One upstream database's ledger.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    started: AtomicBool,
    ready: AtomicBool,
}

impl Ledger {
    /// Whether sessions may commit their decisions here: the table exists and what an
    /// earlier run left in it is reconciled. Starts the reconciler at the first ask.
    pub(crate) fn ready(self: &Arc<Self>, start: impl FnOnce() -> Option<Reconciler>) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        if !self.started.swap(true, Ordering::AcqRel) {
            match start() {
                Some(r) => r.spawn(self.clone()),
                None => self.started.store(false, Ordering::Release),
            }
        }
        false
    }
}

/// What the reconciler of one upstream database needs.
pub(crate) struct Reconciler {
    pub(crate) pg: Postgres,
    pub(crate) label: String,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) keys: Arc<Keys>,
}

impl Reconciler {
    fn spawn(self, ledger: Arc<Ledger>) {
        let spawned = std::thread::Builder::new()
            .name("belay-ledger".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the ledger's runtime");
                    return;
                };
                runtime.block_on(self.run(ledger));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the ledger's reconciler");
        }
    }

    async fn run(self, ledger: Arc<Ledger>) {
        let mut made = false;
        let mut warned = false;
        let mut conn: Option<belay_pg::OwnConnection> = None;
        loop {
            let pass = async {
                if conn.is_none() {
                    conn = Some(belay_pg::OwnConnection::connect(&self.spec()).await?);
                }
                let c = conn.as_mut().ok_or("no connection")?;
                if !made {
                    let user = c.query("SELECT current_user").await?;
                    if user
                        .first()
                        .and_then(|r| r.first())
                        .and_then(|u| u.as_deref())
                        == Some(SCHEMA)
                    {
                        return Err(format!("the upstream role is named `{SCHEMA}` like the ledger's schema, which the default search path (\"$user\") would put first for its sessions; rename the role, or set audit.upstream_ledger = false"));
                    }
                    c.query(CREATE).await?;
                    made = true;
                }
                self.pass(c).await
            };
            match pass.await {
                Ok(()) => {
                    ledger.ready.store(true, Ordering::Release);
                    warned = false;
                    tokio::time::sleep(EVERY).await;
                }
                Err(e) => {
                    // Sessions wait for the audit log before their COMMITs meanwhile; the
                    // connection is made again.
                    conn = None;
                    if !warned {
                        tracing::warn!(upstream = %self.label, error = %e, "the ledger of decisions in the upstream database is unavailable: a COMMIT waits for the audit log instead");
                        warned = true;
                    }
                    tokio::time::sleep(if made { EVERY } else { RETRY }).await;
                }
            }
        }
    }

    fn spec(&self) -> belay_pg::UpstreamSpec {
        crate::roles::own_connection(
            &self.pg,
            &self.pg.user,
            self.pg.password.clone(),
            "belay:ledger",
            Duration::from_secs(15),
            &self.label,
        )
    }

    /// Deletes the rows whose events the audit log holds, adding to it first those an
    /// earlier run left unrecorded.
    async fn pass(&self, conn: &mut belay_pg::OwnConnection) -> Result<(), String> {
        let rows = conn
            .query(&format!(
                "SELECT key FROM belay_ledger.decisions WHERE store = {} ORDER BY written, key LIMIT {BATCH}",
                literal(&self.keys.store)
            ))
            .await?;
        let mut done = Vec::new();
        for row in rows {
            let Some(Some(key)) = row.first() else {
                continue;
            };
            if self.store.has_ledger_key(key).map_err(|e| e.to_string())? {
                done.push(key.clone());
                continue;
            }
            if self.keys.of_this_run(key) {
                // Its event is on its way to the log.
                continue;
            }
            let event = conn
                .query(&format!(
                    "SELECT event FROM belay_ledger.decisions WHERE key = {}",
                    literal(key)
                ))
                .await?;
            let Some(Some(event)) = event.first().and_then(|r| r.first()) else {
                continue;
            };
            let mut draft: Draft = match serde_json::from_str(event) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(upstream = %self.label, %key, error = %e, "a row of the ledger is not an event belay wrote; left in place");
                    continue;
                }
            };
            draft.detail["recovered_from"] = serde_json::json!(self.label);
            self.store.append(draft).map_err(|e| e.to_string())?;
            tracing::warn!(upstream = %self.label, %key, "a decision committed in the upstream but missing from the audit log was added to it");
            done.push(key.clone());
        }
        if !done.is_empty() {
            let keys: Vec<String> = done.iter().map(|k| literal(k)).collect();
            conn.query(&format!(
                "DELETE FROM belay_ledger.decisions WHERE key IN ({})",
                keys.join(", ")
            ))
            .await?;
        }
        Ok(())
    }
}

/// The statement a session sends just ahead of a COMMIT (or of a write in an implicit
/// transaction): each event (its key, its JSON) into the ledger.
pub(crate) fn insert(store: &str, events: &[(&str, std::borrow::Cow<'_, str>)]) -> String {
    let size: usize = events.iter().map(|(k, e)| k.len() + e.len() + 64).sum();
    let mut sql = String::with_capacity(96 + size);
    sql.push_str("INSERT INTO belay_ledger.decisions (key, store, event) VALUES ");
    for (i, (key, event)) in events.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_literal(&mut sql, key);
        sql.push_str(", ");
        push_literal(&mut sql, store);
        sql.push_str(", ");
        push_literal(&mut sql, event);
        sql.push(')');
    }
    sql
}

/// A string literal (belay pins `standard_conforming_strings` on, so only quotes double).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as a string literal onto `sql`: quotes doubled (belay pins
/// `standard_conforming_strings` on), and every character past ASCII written as a JSON
/// escape (`text` is JSON), so that the text is the same in every client encoding the
/// session may use.
fn push_literal(sql: &mut String, text: &str) {
    sql.push('\'');
    for c in text.chars() {
        match c {
            '\'' => sql.push_str("''"),
            c if c.is_ascii() => sql.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    use std::fmt::Write;
                    let _ = write!(sql, "\\u{unit:04x}");
                }
            }
        }
    }
    sql.push('\'');
}

/// Whether `analysis` (of `sql`) does anything but read to belay's own schema: a statement
/// that is more than a read and names the schema or anything in it, however the statement
/// names it (the relations belay extracts, a schema named only as a string of the parse
/// tree, as `ALTER SCHEMA ... RENAME` and `SET SCHEMA` do, or an identifier spelled with
/// Unicode escapes). Such a statement is refused whatever the grants; reads (`pg_dump`'s
/// `COPY ... TO` and `LOCK ... IN ACCESS SHARE MODE` among them) are not.
pub(crate) fn touches(sql: &str, analysis: &belay_sql::Analysis) -> Option<String> {
    use belay_core::Class;
    use belay_sql::ObjectKind;
    analysis.statements.iter().find_map(|s| {
        if s.class <= Class::Read {
            return None;
        }
        let named = s.relations.iter().find_map(|r| {
            let ours = match r.object {
                ObjectKind::Schema => r.name.eq_ignore_ascii_case(SCHEMA),
                ObjectKind::Relation => r
                    .name
                    .split_once('.')
                    .is_some_and(|(schema, _)| schema.eq_ignore_ascii_case(SCHEMA)),
                _ => false,
            };
            ours.then(|| r.name.clone())
        });
        if named.is_some() {
            return named;
        }
        let text = sql.get(s.span.clone()).unwrap_or(sql).as_bytes();
        if contains_ignoring_case(text, SCHEMA.as_bytes()) {
            return Some(SCHEMA.to_owned());
        }
        // A name in Unicode escapes may spell it; in a definition, that is not worth the doubt.
        (s.class >= Class::Ddl && contains_ignoring_case(text, b"u&\""))
            .then(|| format!("{SCHEMA} (a name written in Unicode escapes)"))
    })
}

/// Whether `text` holds `needle` (lowercase ASCII) in any ASCII case: on every write's
/// path, so without a lowered copy of the text.
fn contains_ignoring_case(text: &[u8], needle: &[u8]) -> bool {
    text.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn an_event_goes_into_the_ledger_as_ascii_and_comes_back_the_same() {
        let draft = Draft {
            actor: "agent:o'brien".to_owned(),
            reasons: vec!["naïve — 𝄞".to_owned()],
            detail: serde_json::json!({ "ledger": "ab-1", "sql": "UPDATE t SET a = $1" }),
            ..Draft::default()
        };
        let event = serde_json::to_string(&draft).unwrap();
        let sql = insert("store'1", &[("ab-1", event.into())]);
        assert!(sql.is_ascii(), "{sql}");
        assert!(sql.contains("'ab-1', 'store''1', '"), "{sql}");
        let event = sql.split(", '").nth(2).unwrap().trim_end_matches("')");
        let back: Draft = serde_json::from_str(&event.replace("''", "'")).unwrap();
        assert_eq!(back, draft);
    }

    #[test]
    fn a_key_tells_its_run() {
        let keys = Keys::new("s".to_owned());
        let key = keys.next();
        assert!(keys.of_this_run(&key));
        assert_ne!(keys.next(), key);
        assert!(!Keys::new("s".to_owned()).of_this_run(&key));
    }
}
