//! The seam between the protocol and belay's decisions: `Gate` admits sessions, `Session`
//! decides each statement. The gateway knows PostgreSQL; the implementation (in the
//! composition root) knows agents, policy and the audit log.
//!
//! Both traits are synchronous: a decision may wait for the audit log to be durable, and the
//! gateway calls it where blocking is allowed.

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
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
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
        fields
    }
}

/// Runs a `Gate` or `Session` call, which may wait for the audit log's fsync, where blocking
/// is allowed: on a multi-threaded runtime the runtime moves other tasks away meanwhile.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
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
    /// What the client called itself (`application_name`), recorded but never forwarded.
    pub application_name: Option<String>,
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
    pub sslmode: SslMode,
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Startup parameters belay sets (application_name, statement_timeout, ...). They become
    /// the session's defaults, so even `RESET ALL` returns to them.
    pub params: Vec<(String, String)>,
    pub connect_timeout: Duration,
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

/// A decision on one SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Forward it. `record`, when set, asks for each statement's outcome to be reported
    /// through `Session::completed` with this value.
    Allow {
        record: Option<u64>,
    },
    Refuse(Refusal),
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
}

/// One agent's session in one environment.
pub trait Session: Send {
    /// Decides `sql`. Called before anything of it is forwarded; a refusal forwards nothing.
    fn check(&mut self, sql: &str, phase: Phase) -> Check;

    /// The outcome of statement `index` (0-based within the checked text) of a decision that
    /// asked for it.
    fn completed(&mut self, record: u64, index: usize, completion: Completion<'_>);

    /// The session ended; `why` says how (client left, upstream unavailable, shutdown).
    fn ended(&mut self, why: &str);
}
