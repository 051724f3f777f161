//! `SqliteStore`: the embedded state store. WAL mode, `synchronous=FULL` (a commit is on disk
//! before it returns), foreign keys on, numbered migrations recorded in `user_version`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use belay_audit::{CheckpointKey, Draft, Event};
use belay_core::{Class, Secret};
use rusqlite::{params, Connection, OptionalExtension};

use crate::appender::{self, Inbox, Job, Ticket};
use crate::approval::{self, Approval, ApprovalStatus, NewApproval, Vote};
use crate::held::HeldKeys;
use crate::{identity, Agent, AuthError, Error, Human, StateStore};

/// Schema changes, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE humans (
    name TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER,
    last_used_us INTEGER
);
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES humans (name),
    created_us INTEGER NOT NULL,
    expires_us INTEGER,
    revoked_us INTEGER,
    last_used_us INTEGER
);
CREATE TABLE grants (
    agent TEXT NOT NULL REFERENCES agents (name),
    environment TEXT NOT NULL,
    class TEXT NOT NULL,
    PRIMARY KEY (agent, environment)
);
CREATE TABLE credentials (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'human')),
    subject TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER
);
CREATE INDEX credentials_subject ON credentials (kind, subject);
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    time_us INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    environment TEXT,
    fingerprint TEXT,
    class TEXT,
    verdict TEXT,
    reasons TEXT NOT NULL,
    policies TEXT NOT NULL,
    outcome TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
",
    r"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
",
    // SCRAM verifiers for the gateway, and a generation number that every change to who may
    // do what bumps, so that a running gateway knows when its cached decisions are stale.
    r"
ALTER TABLE credentials ADD COLUMN scram TEXT;
CREATE TABLE identity_generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO identity_generation VALUES (1, 0);
CREATE TRIGGER agents_insert AFTER INSERT ON agents
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER agents_update AFTER UPDATE OF revoked_us, expires_us, owner ON agents
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER grants_insert AFTER INSERT ON grants
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER grants_update AFTER UPDATE ON grants
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER grants_delete AFTER DELETE ON grants
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER credentials_insert AFTER INSERT ON credentials
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER credentials_update AFTER UPDATE OF revoked_us ON credentials
    BEGIN UPDATE identity_generation SET value = value + 1; END;
CREATE TRIGGER humans_update AFTER UPDATE OF revoked_us ON humans
    BEGIN UPDATE identity_generation SET value = value + 1; END;
",
    // Held actions and the humans' votes on them.
    approval::MIGRATION,
    // Decisions that committed with their effects in an upstream database (the ledger in
    // each upstream, `belay-app` `ledger.rs`) carry a key in their detail; after a crash the
    // ledger's rows are looked up by it, to add to the chain what never reached it.
    r"
CREATE INDEX audit_events_ledger ON audit_events (json_extract(detail, '$.ledger'));
",
    // The same key in a column of its own, set by the writer from the draft it holds: an
    // index on an expression parsed every event's detail again as it was inserted.
    r"
ALTER TABLE audit_events ADD COLUMN ledger TEXT;
UPDATE audit_events SET ledger = json_extract(detail, '$.ledger')
    WHERE json_extract(detail, '$.ledger') IS NOT NULL;
DROP INDEX audit_events_ledger;
CREATE INDEX audit_events_ledger_key ON audit_events (ledger) WHERE ledger IS NOT NULL;
",
];

/// How the audit log signs checkpoints.
#[derive(Debug, Default)]
pub struct AuditOptions {
    pub key: Option<CheckpointKey>,
    pub checkpoint_file: Option<PathBuf>,
    pub checkpoint_every: u64,
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// Identity operations and reads; the audit writer has its own connection.
    conn: Mutex<Connection>,
    /// Sends work to the audit writer thread; `close` takes it so the writer can finish.
    writer: Mutex<Option<Inbox>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// The identity generation as last read, and when (microseconds since `opened`; 0 means
    /// read it again), so that the gateway's per-statement check is not a query.
    generation: AtomicU64,
    generation_read: AtomicU64,
    opened: Instant,
    /// The ledger keys the writer made durable lately (`held.rs`).
    held: Arc<HeldKeys>,
}

/// How long a read of the identity generation stands: a change made by another process
/// (`belay agent revoke`) is seen within this; one made through this store at once.
pub const GENERATION_TTL: Duration = Duration::from_millis(20);

fn open_connection(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Storage(format!("cannot open `{}`: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the store at `path`.
    pub fn open(path: &Path, audit: AuditOptions) -> Result<SqliteStore, Error> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let writer_conn = open_connection(path)?;
        let held = Arc::new(HeldKeys::new());
        let (inbox, handle) = appender::spawn(
            writer_conn,
            audit.key,
            audit.checkpoint_file,
            audit.checkpoint_every,
            held.clone(),
        )?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            writer: Mutex::new(Some(inbox)),
            writer_thread: Mutex::new(Some(handle)),
            generation: AtomicU64::new(0),
            generation_read: AtomicU64::new(0),
            opened: Instant::now(),
            held,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs an identity change; the next generation check reads the store again.
    fn changing<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let result = self.with_conn(f);
        self.generation_read.store(0, Ordering::SeqCst);
        result
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Storage("the store's connection lock is poisoned".to_owned()))?;
        f(&mut conn)
    }

    /// Hands `job` to the writer: to the inbox that wakes it when somebody waits (`wake`),
    /// else to the one it empties with its next batch.
    fn send(&self, job: Job, wake: bool) -> Result<(), Error> {
        let writer = self
            .writer
            .lock()
            .map_err(|_| Error::AuditUnavailable("the writer lock is poisoned".to_owned()))?;
        let inbox = writer
            .as_ref()
            .ok_or_else(|| Error::AuditUnavailable("the store is closed".to_owned()))?;
        if wake { &inbox.jobs } else { &inbox.records }
            .send(job)
            .map_err(|_| Error::AuditUnavailable("the audit writer has stopped".to_owned()))
    }

    /// Stops the writer after it has written everything submitted.
    pub fn close(&self) {
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        if let Some(handle) = self.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(Error::Storage(format!(
            "the state store was written by a newer belay (schema version {done}, this one knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl StateStore for SqliteStore {
    fn add_human(&self, name: &str, now_us: i64) -> Result<(Human, Secret), Error> {
        self.changing(|c| identity::add_human(c, name, now_us))
    }

    fn humans(&self) -> Result<Vec<Human>, Error> {
        self.with_conn(identity::humans)
    }

    fn revoke_human(&self, name: &str, now_us: i64) -> Result<(), Error> {
        self.changing(|c| identity::revoke(c, crate::TokenKind::Human, name, now_us))
    }

    fn rotate_human(&self, name: &str, now_us: i64) -> Result<Secret, Error> {
        self.changing(|c| identity::rotate(c, crate::TokenKind::Human, name, now_us))
    }

    fn authenticate_human(
        &self,
        token: &Secret,
        now_us: i64,
    ) -> Result<Result<Human, AuthError>, Error> {
        self.with_conn(|c| identity::authenticate_human(c, token, now_us))
    }

    fn add_agent(
        &self,
        name: &str,
        owner: &str,
        grants: &std::collections::BTreeMap<String, Class>,
        expires_us: Option<i64>,
        now_us: i64,
    ) -> Result<(Agent, Secret), Error> {
        self.changing(|c| identity::add_agent(c, name, owner, grants, expires_us, now_us))
    }

    fn agents(&self) -> Result<Vec<Agent>, Error> {
        self.with_conn(|c| identity::agents(c, None))
    }

    fn agent(&self, name: &str) -> Result<Option<Agent>, Error> {
        self.with_conn(|c| Ok(identity::agents(c, Some(name))?.into_iter().next()))
    }

    fn revoke_agent(&self, name: &str, now_us: i64) -> Result<(), Error> {
        self.changing(|c| identity::revoke(c, crate::TokenKind::Agent, name, now_us))
    }

    fn rotate_agent(&self, name: &str, now_us: i64) -> Result<Secret, Error> {
        self.changing(|c| identity::rotate(c, crate::TokenKind::Agent, name, now_us))
    }

    fn authenticate_agent(
        &self,
        token: &Secret,
        now_us: i64,
    ) -> Result<Result<Agent, AuthError>, Error> {
        self.with_conn(|c| identity::authenticate_agent(c, token, now_us))
    }

    fn agent_verifier(&self, name: &str) -> Result<Option<String>, Error> {
        self.with_conn(|c| identity::agent_verifier(c, name))
    }

    fn agent_login(&self, name: &str, now_us: i64) -> Result<Result<Agent, AuthError>, Error> {
        self.with_conn(|c| identity::login_agent(c, name, now_us))
    }

    fn fresh_identity_generation(&self) -> Option<u64> {
        let now = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        let read = self.generation_read.load(Ordering::SeqCst);
        let ttl = u64::try_from(GENERATION_TTL.as_micros()).unwrap_or(u64::MAX);
        (read != 0 && now.saturating_sub(read) < ttl)
            .then(|| self.generation.load(Ordering::SeqCst))
    }

    fn identity_generation(&self) -> Result<u64, Error> {
        if let Some(generation) = self.fresh_identity_generation() {
            return Ok(generation);
        }
        let now = u64::try_from(self.opened.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let value = self.with_conn(|c| {
            let v: i64 = c
                .prepare_cached("SELECT value FROM identity_generation")?
                .query_row([], |r| r.get(0))?;
            Ok(u64::try_from(v).unwrap_or(0))
        })?;
        self.generation.store(value, Ordering::SeqCst);
        self.generation_read.store(now, Ordering::SeqCst);
        Ok(value)
    }

    fn append(&self, draft: Draft) -> Result<u64, Error> {
        self.submit(draft).wait()
    }

    fn submit(&self, draft: Draft) -> Ticket {
        let (tx, rx) = mpsc::sync_channel(1);
        match self.send(Job::Append(Box::new(draft), Some(tx)), true) {
            Ok(()) => Ticket::pending(rx),
            Err(e) => Ticket::failed(e),
        }
    }

    fn writer_open(&self) -> bool {
        self.writer.lock().is_ok_and(|w| w.is_some())
    }

    fn record(&self, draft: Draft) -> Result<(), Error> {
        self.send(Job::Append(Box::new(draft), None), false)
    }

    fn submit_lazily(&self, draft: Draft) -> Ticket {
        let (tx, rx) = mpsc::sync_channel(1);
        match self.send(Job::Append(Box::new(draft), Some(tx)), false) {
            Ok(()) => Ticket::pending(rx),
            Err(e) => Ticket::failed(e),
        }
    }

    fn submit_lazily_text(&self, event: std::sync::Arc<str>) -> Ticket {
        let (tx, rx) = mpsc::sync_channel(1);
        match self.send(Job::AppendText(event, tx), false) {
            Ok(()) => Ticket::pending(rx),
            Err(e) => Ticket::failed(e),
        }
    }

    fn wake(&self) {
        let _ = self.send(Job::Wake, true);
    }

    fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, Error> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, time_us, actor, kind, environment, fingerprint, class, verdict, \
                 reasons, policies, outcome, detail, prev_hash, hash \
                 FROM audit_events WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![
                    i64::try_from(from).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    let reasons: String = r.get(8)?;
                    let policies: String = r.get(9)?;
                    let detail: String = r.get(11)?;
                    Ok(Event {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        draft: Draft {
                            time_us: r.get(1)?,
                            actor: r.get(2)?,
                            kind: r.get(3)?,
                            environment: r.get(4)?,
                            fingerprint: r.get(5)?,
                            class: r.get(6)?,
                            verdict: r.get(7)?,
                            // A value that no longer parses keeps its text, so that verify
                            // reports the edit instead of the reader hiding it.
                            reasons: serde_json::from_str(&reasons)
                                .unwrap_or_else(|_| vec![reasons]),
                            policies: serde_json::from_str(&policies)
                                .unwrap_or_else(|_| vec![policies]),
                            outcome: r.get(10)?,
                            detail: serde_json::from_str(&detail)
                                .unwrap_or(serde_json::Value::String(detail)),
                        },
                        prev_hash: r.get(12)?,
                        hash: r.get(13)?,
                    })
                },
            )?;
            rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        self.with_conn(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(Error::from)
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), Error> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn expire_approvals(&self, now_us: i64) -> Result<Vec<Approval>, Error> {
        self.with_conn(|c| approval::expire(c, now_us))
    }

    fn request_approval(&self, new: &NewApproval, now_us: i64) -> Result<(Approval, bool), Error> {
        self.with_conn(|c| approval::request(c, new, now_us))
    }

    fn approval(&self, id: u64) -> Result<Option<Approval>, Error> {
        self.with_conn(|c| approval::one(c, id))
    }

    fn approvals(&self, statuses: &[ApprovalStatus], limit: usize) -> Result<Vec<Approval>, Error> {
        self.with_conn(|c| approval::list(c, statuses, limit))
    }

    fn vote(&self, id: u64, vote: &Vote) -> Result<Approval, Error> {
        self.with_conn(|c| approval::vote(c, id, vote))
    }

    fn consume_approval(
        &self,
        agent: &str,
        environment: &str,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<Option<Approval>, Error> {
        self.with_conn(|c| approval::consume(c, agent, environment, fingerprint, now_us))
    }

    fn abandon_approval(&self, id: u64) -> Result<(), Error> {
        self.with_conn(|c| approval::abandon(c, id))
    }

    fn ledger_keys_held(&self, keys: &[&str]) -> Result<std::collections::HashSet<String>, Error> {
        /// Keys one query looks up (SQLite allows 32,766 parameters): a fraction of a
        /// millisecond of work, after which the CPU is offered to the sessions' threads.
        const CHUNK: usize = 100;
        // What this process's writer made durable lately needs no query.
        let (mut held, others) = self.held.take(keys);
        if others.is_empty() {
            return Ok(held);
        }
        self.with_conn(|c| {
            for (i, chunk) in others.chunks(CHUNK).enumerate() {
                if i > 0 {
                    std::thread::yield_now();
                }
                // The column is not hashed, its event's detail is: a key counts only where
                // the two agree, so that editing the column cannot pass a decision off as
                // held (and have its upstream row deleted).
                let sql = format!(
                    "SELECT ledger FROM audit_events WHERE ledger IN ({}) \
                     AND json_extract(detail, '$.ledger') = ledger",
                    vec!["?"; chunk.len()].join(", ")
                );
                let mut query = c.prepare_cached(&sql)?;
                let found = query
                    .query_map(rusqlite::params_from_iter(chunk), |r| r.get::<_, String>(0))?;
                for key in found {
                    held.insert(key?);
                }
            }
            Ok(held)
        })
    }

    fn head_seq(&self) -> Result<u64, Error> {
        self.with_conn(|c| Ok(appender::head(c)?.0))
    }

    fn checkpoint(&self, now_us: i64) -> Result<Option<u64>, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Checkpoint(now_us, tx), true)?;
        rx.recv().unwrap_or_else(|_| {
            Err(Error::AuditUnavailable(
                "the audit writer stopped".to_owned(),
            ))
        })
    }
}
