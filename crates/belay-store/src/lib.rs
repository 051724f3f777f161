//! belay's state: humans, agents with their grants, credentials (stored only as hashes),
//! held actions waiting for approval, and the audit log.
//!
//! `StateStore` is the seam; `SqliteStore` is the embedded default (WAL, `synchronous=FULL`,
//! numbered migrations). Audit appends go through one writer thread that commits whatever is
//! waiting in one transaction (group commit), so concurrent appends share an fsync and each
//! append returns only once it is durable.

mod appender;
mod approval;
mod held;
mod identity;
mod sqlite;
mod token;

use std::collections::BTreeMap;

use belay_audit::{Draft, Event};
use belay_core::{Class, Secret};

pub use appender::{Ticket, LINGER};
pub use approval::{Approval, ApprovalStatus, NewApproval, Vote};
pub use sqlite::{AuditOptions, SqliteStore, GENERATION_TTL};
pub use token::{TokenKind, TOKEN_PREFIX_AGENT, TOKEN_PREFIX_HUMAN};

/// What can go wrong with the state store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the state store failed: {0}")]
    Storage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the audit log is unavailable: {0}")]
    AuditUnavailable(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// A person who owns agents and approves held actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Human {
    pub name: String,
    pub created_us: i64,
    pub revoked_us: Option<i64>,
    pub last_used_us: Option<i64>,
}

/// A non-human identity with an owner and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub owner: String,
    pub created_us: i64,
    pub expires_us: Option<i64>,
    pub revoked_us: Option<i64>,
    pub last_used_us: Option<i64>,
    /// Environment -> highest class it may run without approval.
    pub grants: BTreeMap<String, Class>,
}

/// Why a token was not accepted. Deliberately vague towards the caller: the audit event
/// records which case it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not a valid {0} token")]
    Unknown(&'static str),
    #[error("the credential of `{0}` was revoked")]
    Revoked(String),
    #[error("the credential of `{0}` expired")]
    Expired(String),
}

/// The state store.
pub trait StateStore: Send + Sync {
    fn add_human(&self, name: &str, now_us: i64) -> Result<(Human, Secret), Error>;
    fn humans(&self) -> Result<Vec<Human>, Error>;
    fn revoke_human(&self, name: &str, now_us: i64) -> Result<(), Error>;
    fn rotate_human(&self, name: &str, now_us: i64) -> Result<Secret, Error>;
    fn authenticate_human(
        &self,
        token: &Secret,
        now_us: i64,
    ) -> Result<Result<Human, AuthError>, Error>;

    fn add_agent(
        &self,
        name: &str,
        owner: &str,
        grants: &BTreeMap<String, Class>,
        expires_us: Option<i64>,
        now_us: i64,
    ) -> Result<(Agent, Secret), Error>;
    fn agents(&self) -> Result<Vec<Agent>, Error>;
    fn agent(&self, name: &str) -> Result<Option<Agent>, Error>;
    fn revoke_agent(&self, name: &str, now_us: i64) -> Result<(), Error>;
    fn rotate_agent(&self, name: &str, now_us: i64) -> Result<Secret, Error>;
    fn authenticate_agent(
        &self,
        token: &Secret,
        now_us: i64,
    ) -> Result<Result<Agent, AuthError>, Error>;

    /// The SCRAM-SHA-256 verifier of the agent's live credential (PostgreSQL's text form), if
    /// it has one. Credentials made before verifiers were stored have none: rotate them.
    fn agent_verifier(&self, name: &str) -> Result<Option<String>, Error>;
    /// The agent, once its credential was proven some other way (SCRAM), if it is neither
    /// revoked nor expired; records the use.
    fn agent_login(&self, name: &str, now_us: i64) -> Result<Result<Agent, AuthError>, Error>;
    /// A number that grows whenever agents, grants or credentials change, in any process.
    /// The value is read from disk at most every `GENERATION_TTL`, so a change made by another
    /// process is seen within that; a change made through this store invalidates it.
    fn identity_generation(&self) -> Result<u64, Error>;
    /// The identity generation if it was read less than `GENERATION_TTL` ago, without any IO
    /// or waiting; `None` when it must be read again.
    fn fresh_identity_generation(&self) -> Option<u64>;

    /// Appends an event and returns its sequence number once it is durable.
    fn append(&self, draft: Draft) -> Result<u64, Error>;
    /// Hands an event to the writer without waiting; `Ticket::wait` waits for durability.
    fn submit(&self, draft: Draft) -> Ticket;
    /// Hands an event nobody will wait for to the writer, which commits it with the next
    /// batch, within `LINGER`. `Err` when the writer is gone.
    fn record(&self, draft: Draft) -> Result<(), Error>;
    /// Hands an event to the writer without waking it: committed with the next batch (within
    /// `LINGER`, or at once after `wake`), so that the events of one transaction share an
    /// fsync; `Ticket::wait` waits for durability.
    fn submit_lazily(&self, draft: Draft) -> Ticket;
    /// `submit_lazily` of an event given as the JSON text of its `Draft`, which the writer
    /// reads back: the caller's thread pays for no tree, and may keep the text (an upstream's
    /// ledger takes it as it is). A text that is not a `Draft` fails its ticket.
    fn submit_lazily_text(&self, event: std::sync::Arc<str>) -> Ticket;
    /// Makes the writer commit what was handed to it lazily now, instead of within `LINGER`.
    fn wake(&self);
    /// Whether the audit writer still takes events (it stops only when the store is closed).
    fn writer_open(&self) -> bool;
    /// Events with `seq >= from`, at most `limit`, in order.
    fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, Error>;
    /// A small piece of belay's own bookkeeping, such as the hash of the last configuration
    /// seen.
    fn meta(&self, key: &str) -> Result<Option<String>, Error>;
    fn set_meta(&self, key: &str, value: &str) -> Result<(), Error>;
    /// Marks requests whose time ran out (pending past expiry, approved past their run
    /// window) as expired, and returns them.
    fn expire_approvals(&self, now_us: i64) -> Result<Vec<Approval>, Error>;
    /// The open request for this exact action (same agent, environment and fingerprint), or
    /// a new one; `true` when it was created.
    fn request_approval(&self, new: &NewApproval, now_us: i64) -> Result<(Approval, bool), Error>;
    fn approval(&self, id: u64) -> Result<Option<Approval>, Error>;
    /// Requests with one of `statuses` (every status when empty), oldest first.
    fn approvals(&self, statuses: &[ApprovalStatus], limit: usize) -> Result<Vec<Approval>, Error>;
    /// Records a human's vote: one per human, only on a pending request, only by a listed
    /// approver; a denial denies, the last approval needed approves.
    fn vote(&self, id: u64, vote: &Vote) -> Result<Approval, Error>;
    /// Takes the approved, unexpired request for this exact action, which becomes executed
    /// in the same transaction: an approval is used at most once.
    fn consume_approval(
        &self,
        agent: &str,
        environment: &str,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<Option<Approval>, Error>;
    /// Marks a request that can never run.
    fn abandon_approval(&self, id: u64) -> Result<(), Error>;
    /// Which of `keys` the chain holds, as the `ledger` of an event's detail (decisions that
    /// were also written to an upstream's ledger): one look-up for a whole batch. A key this
    /// process's writer made durable lately is answered from memory, once; asked again, it
    /// is looked up in the chain.
    fn ledger_keys_held(&self, keys: &[&str]) -> Result<std::collections::HashSet<String>, Error>;
    /// The sequence number of the last event (0 when the log is empty).
    fn head_seq(&self) -> Result<u64, Error>;
    /// Writes a signed checkpoint of the current head, if it moved since the last one.
    fn checkpoint(&self, now_us: i64) -> Result<Option<u64>, Error>;
}
