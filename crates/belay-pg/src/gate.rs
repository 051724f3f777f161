//! The seam between the protocol and belay's decisions: `Gate` admits sessions, `Session`
//! decides each statement. The gateway knows PostgreSQL; the implementation (in the
//! composition root) knows agents, policy and the audit log.
//!
//! Both traits are synchronous: a decision may wait for the audit log to be durable. The
//! gateway asks `Session::check_now` on the session's own thread and sends anything that
//! may block (`check`, `Gate::credential`, `Gate::open`) to Tokio's blocking pool.

use std::time::Duration;

use belay_core::Secret;
pub use belay_core::SslMode;
use belay_scram::Verifier;

use crate::codec::{ErrorFields, Severity};

/// SQLSTATE of a statement belay denied.
pub const SQLSTATE_DENIED: &str = "42501";
/// SQLSTATE of a statement that waits for human approval (implementation-defined class `YB`).
pub const SQLSTATE_APPROVAL: &str = "YB001";

/// Why belay says no, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where in the statement's text the error is (1-based, in characters), as the server
    /// reports a syntax error's place.
    pub position: Option<usize>,
}

impl Refusal {
    /// What the server says of a prepared statement `name` that does not exist.
    pub(crate) fn missing_statement(name: &str) -> Refusal {
        if name.is_empty() {
            Refusal::new("26000", "unnamed prepared statement does not exist")
        } else {
            Refusal::new(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            )
        }
    }

    pub fn new(code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Refusal {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Refusal {
        self.hint = Some(hint.into());
        self
    }

    /// The ErrorResponse fields that carry this refusal.
    pub(crate) fn fields(self, severity: Severity) -> ErrorFields {
        let mut fields = ErrorFields::new(severity, &self.code, self.message);
        fields.detail = self.detail;
        fields.hint = self.hint;
        if let Some(position) = self.position {
            fields.other.push((b'P', position.to_string()));
        }
        fields
    }
}

/// Who is connecting, as the startup message and the socket say.
#[derive(Debug, Clone)]
pub struct Login {
    /// The agent name (the `user` parameter).
    pub user: String,
    /// The `database` parameter: `ENV` or `ENV.DATABASE`.
    pub database: String,
    /// The client's address.
    pub peer: String,
    /// What the client called itself (`application_name`): recorded, and forwarded after the
    /// agent's name (`belay:AGENT/NAME`).
    pub application_name: Option<String>,
    /// Settings the client asked for at startup, in its `options` (`-c name=value`) or as
    /// startup parameters of their own, in order; `Gate::open` decides each.
    pub settings: Vec<(String, String)>,
    pub tls: bool,
}

/// How to authenticate an agent.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The verifier of the agent's live token.
    Scram(Verifier),
    /// The agent is unknown, revoked or has no SCRAM verifier: the exchange runs to the end
    /// and fails, so a client cannot tell these cases from a wrong token.
    None,
}

/// Where and as whom the session connects upstream, and the settings it pins there.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// A host name, an IP address, or a directory holding PostgreSQL's Unix socket.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    /// For a session whose role may not write: the role (and password) an approved statement
    /// runs as, on a connection of its own (`Check::Allow` with `read_write`). `None`: the
    /// session's own role runs it, with the read-only pin lifted.
    pub elevated: Option<(String, Option<Secret>)>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Startup parameters belay sets (application_name, statement_timeout, ...). They become
    /// the session's defaults, so even `RESET ALL` returns to them.
    pub params: Vec<(String, String)>,
    pub connect_timeout: Duration,
    /// The upstream's `application_name` begins with this (`belay:AGENT`), then `/` and the
    /// client's own name; the client is shown only its own name (in ParameterStatus).
    pub application_prefix: Option<String>,
    /// Told to the client as NoticeResponses right after login (a startup setting lowered
    /// to the environment's limit).
    pub notices: Vec<String>,
    /// How this upstream is named in messages (`staging.main`): never its password.
    pub label: String,
}

/// Where a statement is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A simple-protocol Query: the statements run now.
    Query,
    /// A Parse: the statement is prepared, not run.
    Parse,
    /// An Execute of a portal bound to a statement checked at Parse: re-checked, since grants
    /// may have changed.
    Execute,
}

/// The parameter values a Bind gave a portal, as the client sent them; decoded only when a
/// decision needs them (an approval is bound to the statement and its parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters(bytes::Bytes);

impl Parameters {
    /// The part of a Bind message after the portal and statement names.
    pub fn from_bind(rest: bytes::Bytes) -> Parameters {
        Parameters(rest)
    }

    /// The values in a canonical text form, `$1 = '42', $2 = NULL, $3 = x'00ff'` (a binary
    /// value in hex), or `None` when there are none. `Err` when the message is malformed.
    pub fn canonical(&self) -> Result<Option<String>, String> {
        let buf = &self.0[..];
        if buf.is_empty() {
            // Not from a Bind: a simple Query or a Parse.
            return Ok(None);
        }
        let mut pos = 0;
        let formats_len = usize::try_from(read_i16(buf, &mut pos)?).map_err(|_| NEGATIVE)?;
        let mut formats = Vec::with_capacity(formats_len.min(1024));
        for _ in 0..formats_len {
            formats.push(read_i16(buf, &mut pos)?);
        }
        let count = usize::try_from(read_i16(buf, &mut pos)?).map_err(|_| NEGATIVE)?;
        if count == 0 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let len = read_i32(buf, &mut pos)?;
            let binary = match formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                many => many.get(i).copied().unwrap_or(0) == 1,
            };
            let value = if len < 0 {
                "NULL".to_owned()
            } else {
                let bytes = take(buf, &mut pos, usize::try_from(len).map_err(|_| NEGATIVE)?)?;
                let quoted = |t: &str| format!("'{}'", t.replace('\'', "''"));
                match (binary, std::str::from_utf8(bytes)) {
                    (false, Ok(text)) => quoted(text),
                    // A binary value's meaning depends on its type, which only the server
                    // knows: the bytes decide, and readable bytes are shown as text beside.
                    (true, Ok(text)) if !text.is_empty() && !text.chars().any(char::is_control) => {
                        format!("x'{}' (binary; reads as {})", hex(bytes), quoted(text))
                    }
                    _ => format!("x'{}'", hex(bytes)),
                }
            };
            out.push(format!("${} = {value}", i + 1));
        }
        Ok(Some(out.join(", ")))
    }
}

const NEGATIVE: &str = "the Bind message has a negative count";

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = pos.checked_add(n).filter(|e| *e <= buf.len());
    let Some(end) = end else {
        return Err("the Bind message's parameters are cut short".to_owned());
    };
    let out = &buf[*pos..end];
    *pos = end;
    Ok(out)
}

fn read_i16(buf: &[u8], pos: &mut usize) -> Result<i16, String> {
    let b = take(buf, pos, 2)?;
    Ok(i16::from_be_bytes([b[0], b[1]]))
}

fn read_i32(buf: &[u8], pos: &mut usize) -> Result<i32, String> {
    let b = take(buf, pos, 4)?;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One SQL text the gateway asks about.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub sql: &'a str,
    pub phase: Phase,
    /// At Execute, the parameters bound to the portal; empty otherwise.
    pub params: &'a Parameters,
    /// A transaction block is open, as of the upstream's last ReadyForQuery.
    pub in_transaction: bool,
    /// An explicit transaction block is open for sure: the upstream's last ReadyForQuery
    /// said so, and nothing forwarded since (a Query, an Execute) can have ended it. A
    /// statement run now commits only with a later statement that ends the block, so its
    /// record may become durable while it runs (`Session::check_now`), provided everything
    /// that may end the block waits for it.
    pub in_block: bool,
}

/// A decision on one SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Forward it. `record`, when set, asks for each statement's outcome to be reported
    /// through `Session::completed` with this value. `read_write` lifts the session's pinned
    /// `default_transaction_read_only` for this one simple Query (outside a transaction
    /// block), for an action humans approved.
    Allow {
        record: Option<u64>,
        read_write: bool,
        /// What goes upstream instead of the client's text, and what the client is told.
        rewrite: Option<Box<Rewrite>>,
    },
    /// At Parse only: forward it, but decide the statement again at each Bind, with the
    /// parameters bound, before the Bind goes upstream. For a statement whose decision at
    /// Execute may refuse it and that calls code the planner can run at Bind (IMMUTABLE and
    /// STABLE functions with constant arguments are folded while planning).
    DecideAtBind,
    /// Forward it (a Query or an Execute) just behind belay's own statement `own`, in the
    /// same transaction (the block's, or the implicit one of the client's statement): the
    /// client sees nothing of `own` but its failure, which the client's statement then
    /// shares (the server skips it). `record` as for `Allow`.
    AllowAfter {
        own: Own,
        record: Option<u64>,
    },
    Refuse(Refusal),
}

/// A statement of belay's own that runs ahead of a client's (`Check::AllowAfter`). The relay
/// prepares it once per upstream connection under a reserved name and binds `params` to it
/// each time, so that the server neither parses the values nor plans the statement again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    /// Its text, with the parameters `$1`, `$2`, ... (no other `$`, quote or comment): one
    /// text per session, whatever the parameters.
    pub sql: &'static str,
    /// The values of its parameters, as text: ASCII only, the same in every client
    /// encoding.
    pub params: Vec<String>,
    /// The command tag its run answers with (`INSERT 0 1`): any other answer means the
    /// statement under belay's name is not belay's, and the session ends.
    pub tag: &'static str,
}

impl Check {
    /// Forward the text as it is, nothing to report.
    pub fn allow() -> Check {
        Check::Allow {
            record: None,
            read_write: false,
            rewrite: None,
        }
    }
}

/// An allowed text that goes upstream changed, so that what belay pins stays pinned while the
/// client gets the effect it asked for: `SET application_name` keeps the agent's name in
/// front, a limit set past the environment's cap is set to the cap. Each notice reaches the
/// client (as a NoticeResponse) before the statement's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub sql: String,
    pub notices: Vec<String>,
    /// Statements of the text (by index) whose command tag the client is shown as this, the
    /// tag the statement it sent gives (`SHOW`, for a `SHOW` rewritten into a `SELECT`).
    pub tags: Vec<(usize, String)>,
}

/// How a statement that was forwarded ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion<'a> {
    /// The command tag, such as `DELETE 3`.
    Tag(&'a str),
    /// The SQLSTATE of the upstream's error.
    Error(&'a str),
    /// Never ran: an earlier message in the same pipeline failed.
    Skipped,
}

/// Admission: authenticates agents and opens sessions.
pub trait Gate: Send + Sync + 'static {
    /// How `user` proves who it is. An error refuses the connection (fail closed).
    fn credential(&self, user: &str) -> Result<Credential, Refusal>;

    /// After authentication: whether the session may open, where it goes, and the decisions
    /// for it. `authenticated` is false when the proof failed; the implementation records the
    /// attempt and refuses.
    fn open(
        &self,
        login: &Login,
        authenticated: bool,
    ) -> Result<(UpstreamSpec, Box<dyn Session>), Refusal>;

    /// A connection refused before `open` could decide it (startup parameters, encoding,
    /// TLS, the connection limit, a handshake that never finished), so that it is recorded
    /// like every other refusal. `user` and `database` are those the client sent, if it got
    /// that far. May block; called before the refusal is sent.
    fn refused(&self, peer: &str, user: Option<&str>, database: Option<&str>, refusal: &Refusal) {
        let _ = (peer, user, database, refusal);
    }
}

/// One agent's session in one environment.
pub trait Session: Send {
    /// Decides one SQL text. Called before anything of it is forwarded; a refusal forwards
    /// nothing. May block (on the audit log's fsync, on belay's state).
    fn check(&mut self, statement: Statement<'_>) -> Check;

    /// Decides without blocking when it can (the common case: a decision that needs no IO and
    /// no durable record); `None` hands the statement to `check`. The gateway asks this first,
    /// on its async task, and calls `check` where blocking is allowed only when it must.
    fn check_now(&mut self, statement: Statement<'_>) -> Option<Check> {
        let _ = statement;
        None
    }

    /// The outcome of statement `index` (0-based within the checked text) of a decision that
    /// asked for it.
    fn completed(&mut self, record: u64, index: usize, completion: Completion<'_>);

    /// The upstream said it is idle, outside any transaction block (a ReadyForQuery with
    /// status `I`), and nothing forwarded waits for an answer: whatever the session's
    /// statements changed is committed or rolled back.
    /// Called for every such answer, so it must be cheap; must not block.
    fn idle(&mut self) {}

    /// Called about once a second while the session lives, busy or idle, for work that must
    /// not wait for the next statement. Must not block.
    fn tick(&mut self) {}

    /// The session ended; `why` says how (client left, upstream unavailable, shutdown).
    fn ended(&mut self, why: &str);

    /// A message belay refuses by its type alone (the fast-path FunctionCall): the refusal is
    /// recorded like a statement's, durably, and the returned refusal (naming the record) is
    /// what the client reads. May block.
    fn refuse_message(&mut self, refusal: Refusal) -> Refusal {
        refusal
    }
}
