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
use belay_pg::literal;
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

/// How many rows deleted since the last VACUUM make the reconciler vacuum the table: a
/// table that churns thousands of rows a second would otherwise grow until autovacuum comes
/// by (once a minute), and every pass would scan what it left.
const VACUUM_AFTER: usize = 2000;

/// Readable by every role, so that `pg_dump` of the database, by any role, still works (what
/// it holds is what the audit log holds: redacted texts, no constants); written by none but
/// the role belay logs in as, and by no agent statement (`touches`). A transaction's row stays
/// in its page, uncompressed, up to 8 KB (`toast_tuple_target`): compressing it would cost
/// the database more than the bytes it saves.
const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS belay_ledger; \
    CREATE TABLE IF NOT EXISTS belay_ledger.decisions (\
        key text PRIMARY KEY, store text NOT NULL, event text NOT NULL, \
        written timestamptz NOT NULL DEFAULT now()); \
    REVOKE ALL ON SCHEMA belay_ledger FROM PUBLIC; \
    REVOKE ALL ON belay_ledger.decisions FROM PUBLIC; \
    GRANT USAGE ON SCHEMA belay_ledger TO PUBLIC; \
    GRANT SELECT ON belay_ledger.decisions TO PUBLIC; \
    ALTER TABLE belay_ledger.decisions SET (toast_tuple_target = 8160); \
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
    /// Keys for this run: `Err` when no random run identity can be drawn (a run reusing an
    /// earlier one's keys would have its rows taken for that run's, already in the log).
    pub(crate) fn new(store: String) -> Result<Keys, String> {
        let mut run = [0u8; 8];
        getrandom::fill(&mut run).map_err(|e| format!("cannot draw this run's identity: {e}"))?;
        Ok(Keys {
            store,
            run: format!("{:016x}", u64::from_le_bytes(run)),
            next: AtomicU64::new(0),
        })
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
        // Rows deleted since the table was last vacuumed.
        let mut deleted = 0;
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
                self.pass(c, &mut deleted).await
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
    /// earlier run left unrecorded; batch after batch, so that it keeps up with any rate of
    /// commits.
    async fn pass(
        &self,
        conn: &mut belay_pg::OwnConnection,
        deleted: &mut usize,
    ) -> Result<(), String> {
        loop {
            let rows = conn
                .query(&format!(
                    "SELECT key FROM belay_ledger.decisions WHERE store = {} ORDER BY written, key LIMIT {BATCH}",
                    literal(&self.keys.store)
                ))
                .await?;
            let read = rows.len();
            let keys: Vec<&str> = rows
                .iter()
                .filter_map(|r| r.first().and_then(|k| k.as_deref()))
                .collect();
            let events: Vec<&str> = keys.iter().flat_map(|k| row_keys(k)).collect();
            let held = self
                .store
                .ledger_keys_held(&events)
                .map_err(|e| e.to_string())?;
            let mut done = Vec::new();
            for key in keys {
                if self.reconcile(conn, key, &held).await? {
                    done.push(literal(key));
                }
            }
            if !done.is_empty() {
                conn.query(&format!(
                    "DELETE FROM belay_ledger.decisions WHERE key IN ({})",
                    done.join(", ")
                ))
                .await?;
                *deleted += done.len();
            }
            if read < BATCH || done.is_empty() {
                break;
            }
        }
        if *deleted >= VACUUM_AFTER {
            // Never waits for a lock (another belay's reconciler, autovacuum): the next time
            // will do, and a failure here costs nothing but the space.
            let _ = conn
                .query("VACUUM (SKIP_LOCKED) belay_ledger.decisions")
                .await;
            *deleted = 0;
        }
        Ok(())
    }

    /// Whether the row `key` may go: every event it holds is in the audit log, or has just
    /// been added to it. A row of this run whose events are not all in the log yet stays:
    /// they are on their way. A row whose events do not name exactly the keys it is filed
    /// under stays too, said in the log: belay never wrote it so.
    async fn reconcile(
        &self,
        conn: &mut belay_pg::OwnConnection,
        key: &str,
        held: &std::collections::HashSet<String>,
    ) -> Result<bool, String> {
        let mut missing = false;
        for k in row_keys(key) {
            if !held.contains(k) {
                if self.keys.of_this_run(k) {
                    return Ok(false);
                }
                missing = true;
            }
        }
        if !missing && row_keys(key).next().is_some() {
            return Ok(true);
        }
        let event = conn
            .query(&format!(
                "SELECT event FROM belay_ledger.decisions WHERE key = {}",
                literal(key)
            ))
            .await?;
        let Some(Some(event)) = event.first().and_then(|r| r.first()) else {
            return Ok(false);
        };
        let drafts = match row_events(event) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(upstream = %self.label, %key, error = %e, "a row of the ledger is not an event belay wrote; left in place");
                return Ok(false);
            }
        };
        let named: std::collections::BTreeSet<&str> = drafts
            .iter()
            .filter_map(|d| d.detail["ledger"].as_str())
            .collect();
        if named.len() != drafts.len() || named != row_keys(key).collect() {
            tracing::error!(upstream = %self.label, %key, "a row of the ledger holds events other than the keys it is filed under; left in place");
            return Ok(false);
        }
        for mut draft in drafts {
            let own = draft.detail["ledger"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if held.contains(&own) {
                continue;
            }
            draft.detail["recovered_from"] = serde_json::json!(self.label);
            self.store.append(draft).map_err(|e| e.to_string())?;
            tracing::warn!(upstream = %self.label, key = %own, "a decision committed in the upstream but missing from the audit log was added to it");
        }
        Ok(true)
    }
}

/// The statement a session runs just ahead of a COMMIT (or of a write in an implicit
/// transaction), prepared once per upstream connection (`belay_pg::Own`): one row for the
/// transaction, whatever the number of its writes. Its key is the events' keys joined by
/// spaces (each event keeps its own in `detail.ledger`) and its event a JSON array of the
/// events: one tuple, one index entry and one statement per transaction, which is most of
/// what the ledger costs the database.
pub(crate) const INSERT: &str =
    "INSERT INTO belay_ledger.decisions (key, store, event) VALUES ($1, $2, $3)";

/// The row `INSERT` writes for `events` (each with its key) of the store `store`. Every
/// character past ASCII is written as a JSON escape, so that the values are the same in
/// every client encoding the session may use.
pub(crate) fn insert(store: &str, events: &[(&str, std::borrow::Cow<'_, str>)]) -> belay_pg::Own {
    let mut keys = String::with_capacity(events.iter().map(|(k, _)| k.len() + 1).sum());
    let mut array =
        String::with_capacity(events.iter().map(|(_, e)| e.len() + 1).sum::<usize>() + 2);
    array.push('[');
    for (i, (key, event)) in events.iter().enumerate() {
        if i > 0 {
            keys.push(' ');
            array.push(',');
        }
        push_ascii(&mut keys, key);
        push_ascii(&mut array, event);
    }
    array.push(']');
    let mut store_ascii = String::with_capacity(store.len());
    push_ascii(&mut store_ascii, store);
    belay_pg::Own {
        sql: INSERT,
        params: vec![keys, store_ascii, array],
        tag: "INSERT 0 1",
    }
}

/// The keys of the events a row holds (`insert`).
fn row_keys(key: &str) -> impl Iterator<Item = &str> {
    key.split(' ').filter(|k| !k.is_empty())
}

/// The events a row holds: an array (`insert`), or one event (rows of earlier versions).
fn row_events(event: &str) -> Result<Vec<Draft>, serde_json::Error> {
    if event.trim_start().starts_with('[') {
        serde_json::from_str(event)
    } else {
        serde_json::from_str(event).map(|d| vec![d])
    }
}

/// `text` with every character past ASCII written as a JSON escape (`text` is JSON or a
/// key), so that it is the same in every client encoding the session may use. ASCII runs are
/// copied whole.
fn push_ascii(sql: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| !c.is_ascii()) {
        sql.push_str(&rest[..at]);
        let mut chars = rest[at..].chars();
        if let Some(c) = chars.next() {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                use std::fmt::Write;
                let _ = write!(sql, "\\u{unit:04x}");
            }
        }
        rest = chars.as_str();
    }
    sql.push_str(rest);
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
    fn a_transaction_s_events_go_into_one_row_as_ascii_and_come_back_the_same() {
        let draft = |key: &str| Draft {
            actor: "agent:o'brien".to_owned(),
            reasons: vec!["naïve — 𝄞".to_owned()],
            detail: serde_json::json!({ "ledger": key, "sql": "UPDATE t SET a = $1" }),
            ..Draft::default()
        };
        let (one, two) = (draft("ab-1"), draft("ab-7"));
        let events = [
            ("ab-1", serde_json::to_string(&one).unwrap().into()),
            ("ab-7", serde_json::to_string(&two).unwrap().into()),
        ];
        let own = insert("store'1", &events);
        assert_eq!(own.sql, INSERT);
        assert!(own.params.iter().all(|p| p.is_ascii()), "{:?}", own.params);
        assert_eq!(own.params.len(), 3, "{:?}", own.params);
        let (keys, store, event) = (&own.params[0], &own.params[1], &own.params[2]);
        assert_eq!((keys.as_str(), store.as_str()), ("ab-1 ab-7", "store'1"));
        let back = row_events(event).unwrap();
        assert_eq!(back, vec![one.clone(), two]);
        assert_eq!(row_keys("ab-1 ab-7").collect::<Vec<_>>(), ["ab-1", "ab-7"]);
        // A row of one event, as earlier versions wrote them, reads as well.
        let single = serde_json::to_string(&one).unwrap();
        assert_eq!(row_events(&single).unwrap(), vec![one]);
        assert_eq!(row_keys("ab-1").collect::<Vec<_>>(), ["ab-1"]);
    }

    #[test]
    fn a_key_tells_its_run() {
        let keys = Keys::new("s".to_owned()).unwrap();
        let key = keys.next();
        assert!(keys.of_this_run(&key));
        assert_ne!(keys.next(), key);
        assert!(!Keys::new("s".to_owned()).unwrap().of_this_run(&key));
    }
}
