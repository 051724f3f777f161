//! The audit writer: one thread, one connection, group commit.
//!
//! Callers hand drafts over a channel; the writer takes everything waiting (up to a batch
//! limit), chains and inserts it in one `BEGIN IMMEDIATE` transaction and commits, which with
//! `synchronous=FULL` is one fsync for the whole batch. Only then does each caller learn its
//! sequence number. The head is read inside the transaction, so several processes appending
//! to the same file still form one chain.
//!
//! An event nobody waits for (`StateStore::record`: reads, outcomes) goes to a second channel
//! that never wakes the writer: it is committed with the next batch, which the writer makes
//! when somebody waits for an event or every `LINGER` at the latest (the decisions of writes
//! that commit through an upstream's ledger are among them: the ledger holds them meanwhile). A steady stream of reads
//! so costs neither a wake-up nor an fsync per event.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use belay_audit::{CheckpointKey, Draft, Event, GENESIS};
use rusqlite::{params, Connection, OptionalExtension};

use crate::held::HeldKeys;
use crate::Error;

const MAX_BATCH: usize = 4096;

/// Events the writer inserts between two offers of its CPU to other threads.
const YIELD_EVERY: usize = 8;

/// How long events nobody waits for may wait for company before they are committed.
pub const LINGER: Duration = Duration::from_millis(50);

pub(crate) enum Job {
    /// An event and, when somebody waits for it, where to say its sequence number.
    Append(Box<Draft>, Option<SyncSender<Result<u64, Error>>>),
    /// An event as the JSON text of its `Draft`, read back by the writer, and where to say
    /// its sequence number.
    AppendText(std::sync::Arc<str>, SyncSender<Result<u64, Error>>),
    Checkpoint(i64, SyncSender<Result<Option<u64>, Error>>),
    /// Nothing of its own: commit what was recorded now (`StateStore::wake`).
    Wake,
}

/// A submitted event; `wait` returns once it is durable.
#[derive(Debug)]
pub struct Ticket(Result<mpsc::Receiver<Result<u64, Error>>, Error>);

impl Ticket {
    pub(crate) fn pending(rx: Receiver<Result<u64, Error>>) -> Ticket {
        Ticket(Ok(rx))
    }

    pub(crate) fn failed(e: Error) -> Ticket {
        Ticket(Err(e))
    }

    /// Whether the writer accepted the event, without waiting for it to be durable.
    pub fn submitted(&self) -> Result<(), Error> {
        self.0.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// The event's sequence number if it is durable by now, or why it will not be; `None`
    /// while the writer is still at it. Once it has answered, the ticket answers no more.
    pub fn try_wait(&mut self) -> Option<Result<u64, Error>> {
        let rx = match &self.0 {
            Ok(rx) => rx,
            Err(e) => return Some(Err(e.clone())),
        };
        match rx.try_recv() {
            Ok(answer) => Some(answer),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(Error::AuditUnavailable(
                "the audit writer stopped before confirming the event".to_owned(),
            ))),
        }
    }

    /// The event's sequence number once it is durable, or why it is not.
    pub fn wait(self) -> Result<u64, Error> {
        let rx = self.0?;
        rx.recv().unwrap_or_else(|_| {
            Err(Error::AuditUnavailable(
                "the audit writer stopped before confirming the event".to_owned(),
            ))
        })
    }
}

pub(crate) struct Writer {
    conn: Connection,
    key: Option<CheckpointKey>,
    checkpoint_file: Option<PathBuf>,
    checkpoint_every: u64,
    last_checkpoint: u64,
    /// Where the ledger keys of what it made durable go (`held.rs`).
    held: Arc<HeldKeys>,
}

/// The writer's two inboxes: jobs somebody waits for wake it; records do not.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub jobs: Sender<Job>,
    pub records: Sender<Job>,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    conn: Connection,
    key: Option<CheckpointKey>,
    checkpoint_file: Option<PathBuf>,
    checkpoint_every: u64,
    held: Arc<HeldKeys>,
) -> Result<(Inbox, JoinHandle<()>), Error> {
    let last_checkpoint = match &checkpoint_file {
        Some(path) => last_checkpoint_seq(path),
        None => 0,
    };
    let mut writer = Writer {
        conn,
        key,
        checkpoint_file,
        checkpoint_every: checkpoint_every.max(1),
        last_checkpoint,
        held,
    };
    let (jobs, jobs_rx) = mpsc::channel::<Job>();
    let (records, records_rx) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("belay-audit-writer".to_owned())
        .spawn(move || writer.run(jobs_rx, records_rx))
        .map_err(|e| Error::Storage(format!("cannot start the audit writer: {e}")))?;
    Ok((Inbox { jobs, records }, handle))
}

/// Events to write: each draft, who waits for it, and its detail as the JSON text it came in
/// (stored as it is, instead of written out again).
type Appends = Vec<(
    Box<Draft>,
    Option<SyncSender<Result<u64, Error>>>,
    Option<Box<str>>,
)>;
type Checkpoints = Vec<(i64, SyncSender<Result<Option<u64>, Error>>)>;

fn take(job: Job, appends: &mut Appends, checkpoints: &mut Checkpoints) {
    match job {
        Job::Append(d, reply) => appends.push((d, reply, None)),
        Job::AppendText(text, reply) => match read_text(&text) {
            Ok((d, detail)) => appends.push((Box::new(d), Some(reply), Some(detail))),
            Err(e) => {
                let _ = reply.send(Err(Error::Storage(format!(
                    "an event handed to the audit writer is not an event: {e}"
                ))));
            }
        },
        Job::Checkpoint(now, reply) => checkpoints.push((now, reply)),
        Job::Wake => {}
    }
}

impl Writer {
    fn run(&mut self, jobs: Receiver<Job>, records: Receiver<Job>) {
        loop {
            let (woke, stopping) = match jobs.recv_timeout(LINGER) {
                Ok(job) => (Some(job), false),
                Err(RecvTimeoutError::Timeout) => (None, false),
                // Stopping: write what was recorded, then end.
                Err(RecvTimeoutError::Disconnected) => (None, true),
            };
            let mut appends = Vec::new();
            let mut checkpoints = Vec::new();
            // Before each job somebody waits for, the records already sent: a session's
            // record sent before its durable event is in the inbox by the time that event is,
            // so each session's events keep their order in the chain.
            let mut next = woke;
            loop {
                while appends.len() < MAX_BATCH {
                    match records.try_recv() {
                        Ok(job) => {
                            // Each is read back from its text: as for the inserts below.
                            if !appends.is_empty() && appends.len() % YIELD_EVERY == 0 {
                                std::thread::yield_now();
                            }
                            take(job, &mut appends, &mut checkpoints);
                        }
                        Err(_) => break,
                    }
                }
                let Some(job) = next.take() else { break };
                take(job, &mut appends, &mut checkpoints);
                if appends.len() >= MAX_BATCH {
                    break;
                }
                next = jobs.try_recv().ok();
            }
            if stopping && appends.is_empty() && checkpoints.is_empty() {
                return;
            }
            if !appends.is_empty() {
                let mut drafts: Vec<(&mut Draft, Option<&str>)> = appends
                    .iter_mut()
                    .map(|(d, _, text)| (d.as_mut(), text.as_deref()))
                    .collect();
                match self.write_batch(&mut drafts) {
                    Ok(first_seq) => {
                        self.held.add(appends.iter().filter_map(|(d, _, _)| {
                            d.detail.get("ledger").and_then(|k| k.as_str())
                        }));
                        for (i, (_, reply, _)) in appends.iter().enumerate() {
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(first_seq + i as u64));
                            }
                        }
                        let last = first_seq + appends.len() as u64 - 1;
                        if last / self.checkpoint_every
                            > self.last_checkpoint / self.checkpoint_every
                        {
                            let now = appends
                                .last()
                                .map(|(d, _, _)| d.time_us)
                                .unwrap_or_default();
                            // A failed checkpoint does not undo durable events; the next one
                            // covers them.
                            let _ = self.checkpoint(now);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = appends.len(), "the audit log could not be written");
                        for (_, reply, _) in &appends {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
            for (now, reply) in checkpoints {
                let _ = reply.send(self.checkpoint(now));
            }
        }
    }

    fn write_batch(&mut self, drafts: &mut [(&mut Draft, Option<&str>)]) -> Result<u64, Error> {
        let unavailable = |e: rusqlite::Error| Error::AuditUnavailable(e.to_string());
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let (mut seq, mut prev) = head(&tx).map_err(unavailable)?;
        // Events are in time order as in sequence order: a draft made before one already
        // written (sessions race to the writer) takes that one's time.
        let mut last_time: i64 = tx
            .prepare_cached("SELECT time_us FROM audit_events ORDER BY seq DESC LIMIT 1")
            .and_then(|mut q| q.query_row([], |r| r.get(0)).optional())
            .map_err(unavailable)?
            .unwrap_or(i64::MIN);
        let first = seq + 1;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit_events (seq, time_us, actor, kind, environment, fingerprint, \
                     class, verdict, reasons, policies, outcome, detail, prev_hash, hash, ledger) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(unavailable)?;
            for (i, (draft, text)) in drafts.iter_mut().enumerate() {
                // A batch is milliseconds of work: the sessions' threads, woken on this CPU
                // meanwhile, run between its pieces instead of after it.
                if i > 0 && i % YIELD_EVERY == 0 {
                    std::thread::yield_now();
                }
                seq += 1;
                draft.time_us = draft.time_us.max(last_time);
                last_time = draft.time_us;
                let hash = Event::hash_for(seq, &prev, draft);
                let prev_hash = hex::encode(prev);
                prev = hash;
                let d = &**draft;
                insert
                    .execute(params![
                        seq as i64,
                        d.time_us,
                        d.actor,
                        d.kind,
                        d.environment,
                        d.fingerprint,
                        d.class,
                        d.verdict,
                        serde_json::to_string(&d.reasons).unwrap_or_default(),
                        serde_json::to_string(&d.policies).unwrap_or_default(),
                        d.outcome,
                        text.map_or_else(|| d.detail.to_string(), str::to_owned),
                        prev_hash,
                        hex::encode(hash),
                        // Found by it when an upstream's ledger is reconciled.
                        d.detail.get("ledger").and_then(|k| k.as_str()),
                    ])
                    .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(first)
    }

    fn checkpoint(&mut self, now_us: i64) -> Result<Option<u64>, Error> {
        let (Some(key), Some(path)) = (&self.key, &self.checkpoint_file) else {
            return Ok(None);
        };
        let (seq, hash) = head(&self.conn).map_err(|e| Error::AuditUnavailable(e.to_string()))?;
        if seq == 0 || seq <= self.last_checkpoint {
            return Ok(None);
        }
        let checkpoint = key.sign(seq, &hash, now_us);
        let mut line =
            serde_json::to_string(&checkpoint).map_err(|e| Error::Storage(e.to_string()))?;
        line.push('\n');
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Storage(format!("cannot open `{}`: {e}", path.display())))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::Storage(format!("cannot write `{}`: {e}", path.display())))?;
        self.last_checkpoint = seq;
        Ok(Some(seq))
    }
}

/// A draft given as JSON text (`Job::AppendText`), and its detail's own text.
fn read_text(text: &str) -> Result<(Draft, Box<str>), serde_json::Error> {
    /// `Draft` with its detail left as text.
    #[derive(serde::Deserialize)]
    struct Text<'a> {
        time_us: i64,
        actor: String,
        kind: String,
        environment: Option<String>,
        fingerprint: Option<String>,
        class: Option<String>,
        verdict: Option<String>,
        reasons: Vec<String>,
        policies: Vec<String>,
        outcome: Option<String>,
        #[serde(borrow)]
        detail: &'a serde_json::value::RawValue,
    }
    let t: Text<'_> = serde_json::from_str(text)?;
    let draft = Draft {
        time_us: t.time_us,
        actor: t.actor,
        kind: t.kind,
        environment: t.environment,
        fingerprint: t.fingerprint,
        class: t.class,
        verdict: t.verdict,
        reasons: t.reasons,
        policies: t.policies,
        outcome: t.outcome,
        detail: serde_json::from_str(t.detail.get())?,
    };
    Ok((draft, t.detail.get().into()))
}

/// The last event's sequence number and hash; (0, zeros) for an empty log.
pub(crate) fn head(conn: &Connection) -> rusqlite::Result<(u64, [u8; 32])> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => (0, GENESIS),
        Some((seq, hash)) => {
            let bytes = hex::decode(&hash)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .unwrap_or(GENESIS);
            (u64::try_from(seq).unwrap_or(0), bytes)
        }
    })
}

fn last_checkpoint_seq(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<belay_audit::Checkpoint>(l).ok())
        })
        .map_or(0, |c| c.seq)
}
