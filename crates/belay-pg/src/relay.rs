//! The relay between one client and its upstream after startup: every SQL text is decided
//! before it is forwarded, and every answer is matched to the message that asked for it.
//! No IO: the caller feeds frames in and writes the bytes this produces.
//!
//! Three rules keep what runs upstream equal to what was decided:
//!
//! - **Refusals travel in order.** A refused message is replaced by one that fails upstream
//!   without side effects (a Parse or Query of text that is a syntax error), and its error is
//!   rewritten into belay's. The client sees the refusal exactly where the answer to its
//!   message belongs, the upstream discards the rest of the pipeline until Sync as it does for
//!   any error, and a refusal inside a transaction leaves it failed, upstream and client alike.
//! - **Statement names are belay's.** A named prepared statement gets a fresh upstream name at
//!   each Parse, so a name can never refer upstream to a statement other than the one belay
//!   decided (a failed or skipped Parse or Close cannot leave a stale statement behind it).
//!   A statement's text is re-decided at every Execute, so a revoked grant takes effect.
//! - **Answers are matched.** A queue holds what each forwarded message will produce; an
//!   error empties it up to the next Sync, as the server does; a reply that does not fit the
//!   queue closes the connection (fail closed).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::codec::{self, Backend, ErrorFields, Frame, Severity, TransactionStatus};
use crate::gate::{Check, Completion, Parameters, Phase, Refusal, Session, Statement};
use rewrite::own_failed;

mod own;
mod rewrite;
mod text;
mod watch;
pub(crate) use watch::WATCH_ENDED;

/// Text sent upstream in place of a refused message: a syntax error, which fails in every
/// transaction state without touching anything.
const REFUSED_SQL: &str = "belay refused this statement";

/// Put before an approved simple Query in a session pinned read-only: it lifts read-only for
/// that implicit transaction alone. Its CommandComplete is not passed on.
const READ_WRITE_PREFIX: &str = "SET transaction_read_only = off; ";

/// Upstream names of prepared statements; SQL-level `PREPARE` of such names is refused.
pub const RESERVED_PREFIX: &str = "belay_";

#[derive(Debug)]
enum Expect {
    /// A simple Query: row data and one CommandComplete per statement, then ReadyForQuery.
    Simple {
        record: Option<u64>,
        next: usize,
        refusal: Option<Box<ErrorFields>>,
        /// Leading statements belay added, whose CommandComplete the client must not see.
        hidden: usize,
        /// Statements whose CommandComplete the client sees with another tag
        /// (`Rewrite::tags`).
        tags: Vec<(usize, String)>,
    },
    Parse {
        client: String,
        upstream: String,
    },
    Bind,
    Describe,
    Execute {
        record: Option<u64>,
        /// The tag the client sees instead of the upstream's (`Rewrite::tags`).
        tag: Option<Arc<str>>,
    },
    Close,
    Sync,
    /// A message injected for a refusal: its error is answered with these fields.
    Refused(Box<ErrorFields>),
    /// Told to the client before the answer to the message behind it (a rewrite's notice).
    Notice(Box<ErrorFields>),
    /// Answers to messages of belay's own (`Check::AllowAfter` at an Execute): swallowed, the
    /// count of those still to come.
    Own(u8),
    /// The client ended a COPY (CopyDone or CopyFail) before its CopyInResponse came, as
    /// drivers that stream the rows at once do (asyncpg): the server will not be in COPY
    /// mode for the messages after it. Dropped when it reaches the front.
    CopyEnded,
}

impl Expect {
    fn name(&self) -> &'static str {
        match self {
            Expect::Simple { .. } => "Query",
            Expect::Parse { .. } => "Parse",
            Expect::Bind => "Bind",
            Expect::Describe => "Describe",
            Expect::Execute { .. } => "Execute",
            Expect::Close => "Close",
            Expect::Sync => "Sync",
            Expect::Refused(_) => "refusal",
            Expect::Notice(_) => "notice",
            Expect::Own(_) => "belay's own statement",
            Expect::CopyEnded => "CopyDone",
        }
    }
}

#[derive(Debug, Clone)]
struct Prepared {
    upstream: String,
    sql: Arc<str>,
    /// Decided at each Bind, not only at Execute (`Check::DecideAtBind`).
    decide_at_bind: bool,
    /// The tag its Executes show the client (`Rewrite::tags`).
    tag: Option<Arc<str>>,
}

/// A portal as bound: the statement's text, the parameters, the number of ReadyForQuery
/// answers that will have come when it was bound (its transaction cannot end before the
/// next one), and, for a statement decided at Bind, that decision's record for its Executes.
#[derive(Debug, Clone)]
struct Portal {
    sql: Arc<str>,
    params: Parameters,
    epoch: u64,
    decided: Option<Option<u64>>,
    tag: Option<Arc<str>>,
}

/// What the caller does after a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    Continue,
    /// The client sent Terminate: flush and close.
    Terminate,
    /// Deciding on this message needs IO (a durable audit record, an identity re-read):
    /// nothing was done; hand it to `client_message_blocking` where blocking is allowed.
    Blocked(Frame),
    /// An approved simple Query (this body) that must run as the session's writing role, on
    /// a connection of its own: its answer is expected; feed it to `upstream_message` once
    /// the answers before it have come.
    Detour(Bytes),
}

/// A protocol violation; the connection is closed with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation(pub String);

impl From<codec::Error> for Violation {
    fn from(e: codec::Error) -> Self {
        Violation(format!("invalid message: {e}"))
    }
}

pub(crate) struct Relay {
    session: Box<dyn Session>,
    expect: VecDeque<Expect>,
    statements: HashMap<String, Prepared>,
    /// The portals bound and not yet gone.
    portals: HashMap<String, Portal>,
    /// ReadyForQuery answers received so far.
    ready_seen: u64,
    /// ReadyForQuery answers expected (`Simple` and `Sync` in `expect`).
    ready_pending: u64,
    /// The ReadyForQuery that answers the last forwarded Query or Execute, either of which
    /// may open a transaction block: until it has come, one may be open.
    opening_until: u64,
    next_name: u64,
    /// Whether the upstream has belay's own statement prepared (`own.rs`).
    own: own::Prepared,
    /// The command tag of belay's own statement last sent (`Own::tag`).
    own_tag: &'static str,
    /// Between CopyInResponse and the client's CopyDone or CopyFail, when the server ignores
    /// Sync and Flush.
    copy_in: bool,
    pub status: TransactionStatus,
    /// Settings the upstream reports (ParameterStatus) that belay's reading of SQL or the
    /// session's identity depends on, with the value each must keep; `client_encoding` and
    /// `standard_conforming_strings` are checked by rule instead.
    watched: Vec<(String, String)>,
    /// The session's role may not write: an approved statement runs elsewhere (`Detour`)
    /// instead of with the read-only pin lifted.
    pub(crate) detour: bool,
    /// The upstream backend's process id and the one the client was given in its
    /// BackendKeyData: a notification from the session's own backend names the latter, so
    /// that the client recognises its own notifications.
    pub(crate) pids: Option<(i32, i32)>,
    /// The upstream's `application_name` begins with this and `/`: the client sees what
    /// follows (`UpstreamSpec::application_prefix`).
    pub(crate) application_prefix: Option<String>,
    /// An error in the extended protocol, with no Sync forwarded after the message that
    /// failed: the server discards every message until the next Sync, so what the client
    /// sends until then is dropped here, unanswered, as the server would drop it.
    skipping: bool,
    /// The client encoding the upstream reports, by which the client's texts are read.
    encoding: text::ClientEncoding,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("expect", &self.expect)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn put_frame(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    out.reserve(len + 1);
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&(len as i32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

impl Relay {
    pub(crate) fn new(session: Box<dyn Session>) -> Relay {
        Relay {
            session,
            expect: VecDeque::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            ready_seen: 0,
            ready_pending: 0,
            opening_until: 0,
            detour: false,
            pids: None,
            application_prefix: None,
            skipping: false,
            encoding: text::ClientEncoding::Utf8,
            next_name: 0,
            own: own::Prepared::Absent,
            own_tag: "",
            copy_in: false,
            status: TransactionStatus::Idle,
            watched: Vec::new(),
        }
    }

    /// A transaction block is open, or may be: as of the upstream's last ReadyForQuery, and
    /// while a forwarded Query or Execute has not been answered by its ReadyForQuery (a
    /// pipelined BEGIN may open one before this message runs).
    fn in_transaction(&self) -> bool {
        self.status != TransactionStatus::Idle || self.opening_until > self.ready_seen
    }

    /// An explicit transaction block is open for sure (`Statement::in_block`).
    fn in_block(&self) -> bool {
        self.status == TransactionStatus::InTransaction
            && !self
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Simple { .. } | Expect::Execute { .. }))
    }

    /// The session's decision: without blocking when it can; `None` when it would have to
    /// block and may not.
    fn decide(&mut self, asked: Statement<'_>, may_block: bool) -> Option<Check> {
        match self.session.check_now(asked) {
            Some(check) => Some(check),
            None if may_block => Some(self.session.check(asked)),
            None => None,
        }
    }

    /// Answers still expected.
    pub(crate) fn expected(&self) -> usize {
        self.expect.len()
    }

    /// Nothing is in flight and no transaction is open: the session can end cleanly.
    pub(crate) fn idle(&self) -> bool {
        self.expect.is_empty() && self.status == TransactionStatus::Idle
    }

    pub(crate) fn tick(&mut self) {
        self.session.tick();
    }

    pub(crate) fn ended(&mut self, why: &str) {
        self.session.ended(why);
    }

    /// Replaces the message in flight with one that fails upstream, answered with `refusal`.
    fn refuse_extended(&mut self, refusal: Refusal, up: &mut BytesMut) {
        // The injected Parse replaces the upstream's unnamed statement, if it runs.
        self.statements.remove("");
        put_frame(up, b'P', &[b"\0", REFUSED_SQL.as_bytes(), b"\0", &[0, 0]]);
        self.expect
            .push_back(Expect::Refused(Box::new(refusal.fields(Severity::Error))));
    }

    fn refuse_simple(&mut self, refusal: Refusal, up: &mut BytesMut) {
        put_frame(up, b'Q', &[REFUSED_SQL.as_bytes(), b"\0"]);
        self.ready_pending += 1;
        self.expect.push_back(Expect::Simple {
            record: None,
            next: 0,
            refusal: Some(Box::new(refusal.fields(Severity::Error))),
            hidden: 0,
            tags: Vec::new(),
        });
    }

    /// A Query or Parse (`tag`) of `len` bytes, over `limit`, that the gateway read past
    /// without buffering: refused in its place, recorded like any refusal. May block.
    pub(crate) fn refuse_oversized(
        &mut self,
        tag: u8,
        len: usize,
        limit: usize,
        up: &mut BytesMut,
    ) {
        let refusal = self.session.refuse_message(
            Refusal::new(
                "54000",
                format!("the statement is {len} bytes, more than belay reads ({limit} bytes)"),
            )
            .hint("send it in smaller statements"),
        );
        if tag == b'Q' {
            self.statements.remove("");
            self.refuse_simple(refusal, up);
        } else {
            self.refuse_extended(refusal, up);
        }
    }

    /// A forwarded simple Query's answer is expected (with `hidden` leading statements of
    /// belay's own); until its ReadyForQuery a transaction block may be open.
    fn expect_query(&mut self, record: Option<u64>, hidden: usize) {
        self.ready_pending += 1;
        self.opening_until = self.ready_seen + self.ready_pending;
        self.expect.push_back(Expect::Simple {
            record,
            next: 0,
            refusal: None,
            hidden,
            tags: Vec::new(),
        });
    }

    /// Handles one client message, appending what goes upstream to `up`. Never blocks: a
    /// message whose decision would is returned untouched as `Next::Blocked`.
    pub(crate) fn client_message(
        &mut self,
        frame: Frame,
        up: &mut BytesMut,
    ) -> Result<Next, Violation> {
        self.handle(frame, up, false)
    }

    /// Handles a message `client_message` returned as blocked; may wait for IO.
    pub(crate) fn client_message_blocking(
        &mut self,
        frame: Frame,
        up: &mut BytesMut,
    ) -> Result<Next, Violation> {
        self.handle(frame, up, true)
    }

    /// Until its decision, handling a message changes nothing that handling it again would
    /// not change the same way, so a blocked message can be handled again from the start.
    fn handle(
        &mut self,
        frame: Frame,
        up: &mut BytesMut,
        may_block: bool,
    ) -> Result<Next, Violation> {
        if self.skipping {
            match frame.tag {
                // The Sync ends the skipping, upstream as here, and is answered.
                b'S' => self.skipping = false,
                b'X' => {}
                _ => return Ok(Next::Continue),
            }
        }
        match frame.tag {
            b'Q' => {
                let body = frame.body.clone();
                let encoding = self.encoding;
                let (sql, _) = encoding.split(&body)?;
                let sql = &*sql;
                // A simple Query drops the unnamed statement, upstream as here.
                self.statements.remove("");
                let in_transaction = self.in_transaction();
                let asked = Statement {
                    sql,
                    phase: Phase::Query,
                    params: &Parameters::default(),
                    in_transaction,
                    in_block: self.in_block(),
                };
                let Some(check) = self.decide(asked, may_block) else {
                    return Ok(Next::Blocked(frame));
                };
                match check {
                    Check::Allow {
                        record,
                        read_write,
                        rewrite,
                    } => {
                        let mut tags = Vec::new();
                        let body = match rewrite {
                            Some(mut rewrite) => {
                                tags = std::mem::take(&mut rewrite.tags);
                                self.rewritten(*rewrite, None)
                            }
                            None => frame.body,
                        };
                        if read_write && self.detour {
                            // The answer comes from the detour's connection, matched like any.
                            self.expect_query(record, 0);
                            return Ok(Next::Detour(body));
                        }
                        let hidden = if read_write && !in_transaction {
                            put_frame(up, b'Q', &[READ_WRITE_PREFIX.as_bytes(), &body]);
                            1
                        } else {
                            put_frame(up, b'Q', &[&body]);
                            0
                        };
                        self.expect_query(record, hidden);
                        // By the client's statements (`next` skips belay's hidden ones).
                        if let Some(Expect::Simple { tags: shown, .. }) = self.expect.back_mut() {
                            *shown = tags;
                        }
                    }
                    Check::AllowAfter { own, record } => {
                        let (text, hidden) = self.own_text(&own);
                        put_frame(up, b'Q', &[text.as_bytes(), &frame.body]);
                        self.expect_query(record, hidden);
                    }
                    // Only a Parse is answered so; a Query runs as decided.
                    Check::DecideAtBind => {
                        frame.encode(up);
                        self.expect_query(None, 0);
                    }
                    Check::Refuse(r) => self.refuse_simple(r, up),
                }
            }
            b'P' => {
                let body = frame.body.clone();
                let encoding = self.encoding;
                let (name, rest) = encoding.split(&body)?;
                let (sql, types) = encoding.split(&rest)?;
                let (name, sql) = (&*name, &*sql);
                if !name.is_empty() && self.statements.contains_key(name) {
                    let r = Refusal::new(
                        "42P05",
                        format!("prepared statement \"{name}\" already exists"),
                    );
                    self.refuse_extended(r, up);
                    return Ok(Next::Continue);
                }
                let asked = Statement {
                    sql,
                    phase: Phase::Parse,
                    params: &Parameters::default(),
                    in_transaction: self.in_transaction(),
                    in_block: self.in_block(),
                };
                let Some(check) = self.decide(asked, may_block) else {
                    return Ok(Next::Blocked(frame));
                };
                let decide_at_bind = matches!(check, Check::DecideAtBind);
                let tag = match &check {
                    Check::Allow {
                        rewrite: Some(r), ..
                    } => r
                        .tags
                        .iter()
                        .find(|(i, _)| *i == 0)
                        .map(|(_, t)| Arc::from(t.as_str())),
                    _ => None,
                };
                let rewrite = match check {
                    Check::Allow {
                        rewrite: Some(ref r),
                        ..
                    } => Some(r.clone()),
                    _ => None,
                };
                match check {
                    // Nothing runs at a Parse: belay's own statement goes with the Execute.
                    Check::Allow { .. } | Check::DecideAtBind | Check::AllowAfter { .. } => {
                        let upstream = if name.is_empty() {
                            String::new()
                        } else {
                            self.next_name += 1;
                            format!("{RESERVED_PREFIX}{}", self.next_name)
                        };
                        let rest = match rewrite {
                            // The parameter types after the text stay as they were.
                            Some(r) => self.rewritten(*r, Some(types)),
                            None => rest.clone(),
                        };
                        put_frame(up, b'P', &[upstream.as_bytes(), b"\0", &rest]);
                        self.statements.insert(
                            name.to_owned(),
                            Prepared {
                                upstream: upstream.clone(),
                                sql: Arc::from(sql),
                                decide_at_bind,
                                tag,
                            },
                        );
                        self.expect.push_back(Expect::Parse {
                            client: name.to_owned(),
                            upstream,
                        });
                    }
                    Check::Refuse(r) => {
                        // The client's name now names nothing, upstream as here.
                        self.statements.remove(name);
                        self.refuse_extended(r, up);
                    }
                }
            }
            b'B' => {
                let encoding = self.encoding;
                let (portal, rest) = encoding.split(&frame.body)?;
                let (statement, rest) = encoding.split(&rest)?;
                let (portal, statement) = (&*portal, &*statement);
                let Some(p) = self.statements.get(statement).cloned() else {
                    self.portals.remove(portal);
                    self.refuse_extended(Refusal::missing_statement(statement), up);
                    return Ok(Next::Continue);
                };
                let params = Parameters::from_bind(rest.clone());
                // A statement decided at Bind: nothing of it reaches the planner before its
                // decision, with these parameters, as at Execute.
                let decided = if p.decide_at_bind {
                    let asked = Statement {
                        sql: &p.sql,
                        phase: Phase::Execute,
                        params: &params,
                        in_transaction: self.in_transaction(),
                        in_block: self.in_block(),
                    };
                    match self.decide(asked, may_block) {
                        None => return Ok(Next::Blocked(frame)),
                        Some(Check::Refuse(r)) => {
                            self.portals.remove(portal);
                            self.refuse_extended(r, up);
                            return Ok(Next::Continue);
                        }
                        Some(Check::Allow { record, .. }) => Some(record),
                        Some(Check::DecideAtBind) => Some(None),
                        // Ahead of the Bind is ahead of its Execute, in the same transaction.
                        Some(Check::AllowAfter { own, record }) => {
                            self.own_before(&own, up);
                            Some(record)
                        }
                    }
                } else {
                    None
                };
                put_frame(
                    up,
                    b'B',
                    &[
                        portal.as_bytes(),
                        b"\0",
                        p.upstream.as_bytes(),
                        b"\0",
                        &rest,
                    ],
                );
                let bound = Portal {
                    sql: p.sql.clone(),
                    params,
                    epoch: self.ready_seen + self.ready_pending,
                    decided,
                    tag: p.tag.clone(),
                };
                // The unnamed portal is bound again and again: its slot is reused.
                match self.portals.get_mut(portal) {
                    Some(slot) => *slot = bound,
                    None => {
                        self.portals.insert(portal.to_owned(), bound);
                    }
                }
                self.expect.push_back(Expect::Bind);
            }
            b'E' => {
                let encoding = self.encoding;
                let (portal, _) = encoding.split(&frame.body)?;
                let portal = &*portal;
                let Some(bound) = self.portals.get(portal).cloned() else {
                    let r = Refusal::new("34000", format!("portal \"{portal}\" does not exist"));
                    self.refuse_extended(r, up);
                    return Ok(Next::Continue);
                };
                // Decided at its Bind (which may have used an approval): not again.
                let check = match bound.decided {
                    Some(record) => Check::Allow {
                        record,
                        read_write: false,
                        rewrite: None,
                    },
                    None => {
                        let asked = Statement {
                            sql: &bound.sql,
                            phase: Phase::Execute,
                            params: &bound.params,
                            in_transaction: self.in_transaction(),
                            in_block: self.in_block(),
                        };
                        let Some(check) = self.decide(asked, may_block) else {
                            return Ok(Next::Blocked(frame));
                        };
                        check
                    }
                };
                let record = match check {
                    Check::Refuse(r) => {
                        self.refuse_extended(r, up);
                        return Ok(Next::Continue);
                    }
                    Check::Allow { record, .. } => record,
                    Check::AllowAfter { own, record } => {
                        self.own_before(&own, up);
                        record
                    }
                    // Only a Parse is answered so.
                    Check::DecideAtBind => None,
                };
                frame.encode(up);
                self.opening_until = self.ready_seen + self.ready_pending + 1;
                self.expect.push_back(Expect::Execute {
                    record,
                    tag: bound.tag.clone(),
                });
            }
            b'D' | b'C' => {
                let target = *frame
                    .body
                    .first()
                    .ok_or_else(|| Violation("invalid message: empty Describe/Close".to_owned()))?;
                let named = frame.body.slice(1..);
                let encoding = self.encoding;
                let (name, _) = encoding.split(&named)?;
                let name = &*name;
                let describe = frame.tag == b'D';
                match target {
                    b'S' => match self.statements.get(name).cloned() {
                        Some(p) => {
                            if !describe {
                                self.statements.remove(name);
                            }
                            put_frame(up, frame.tag, &[b"S", p.upstream.as_bytes(), b"\0"]);
                        }
                        // Closing what does not exist is not an error; describing it is.
                        None if describe => {
                            self.refuse_extended(Refusal::missing_statement(name), up);
                            return Ok(Next::Continue);
                        }
                        None => put_frame(up, b'C', &[b"S", RESERVED_PREFIX.as_bytes(), b"none\0"]),
                    },
                    b'P' => {
                        if !describe {
                            self.portals.remove(name);
                        }
                        frame.encode(up);
                    }
                    _ => {
                        return Err(Violation(
                            "invalid message: Describe/Close target must be `S` or `P`".to_owned(),
                        ))
                    }
                }
                self.expect.push_back(if describe {
                    Expect::Describe
                } else {
                    Expect::Close
                });
            }
            b'S' => {
                frame.encode(up);
                if !self.copy_in {
                    self.ready_pending += 1;
                    self.expect.push_back(Expect::Sync);
                }
            }
            b'c' | b'f' => {
                if self.copy_in {
                    self.copy_in = false;
                } else if self
                    .expect
                    .iter()
                    .any(|e| matches!(e, Expect::Simple { .. } | Expect::Execute { .. }))
                {
                    self.expect.push_back(Expect::CopyEnded);
                }
                frame.encode(up);
            }
            b'H' | b'd' => frame.encode(up),
            b'X' => {
                frame.encode(up);
                return Ok(Next::Terminate);
            }
            b'F' => {
                // Recorded durably before it is answered, like any refusal.
                if !may_block {
                    return Ok(Next::Blocked(frame));
                }
                let refusal = self.session.refuse_message(
                    Refusal::new(
                        crate::gate::SQLSTATE_DENIED,
                        "belay refuses the fast-path function call protocol",
                    )
                    .hint("call the function in a SQL statement (SELECT f(...)) so that belay can check it"),
                );
                self.refuse_simple(refusal, up)
            }
            other => {
                return Err(Violation(format!(
                    "unexpected message type `{}` after startup",
                    other as char
                )))
            }
        }
        Ok(Next::Continue)
    }

    fn pop(&mut self, answer: &str, fits: impl Fn(&Expect) -> bool) -> Result<Expect, Violation> {
        match self.expect.pop_front() {
            Some(e) if fits(&e) => Ok(e),
            other => Err(Violation(format!(
                "the upstream sent {answer} while belay expected the answer to {}",
                other.as_ref().map_or("nothing", Expect::name)
            ))),
        }
    }

    /// After an error the server discards messages until Sync; so does the queue. Statements
    /// whose Parse never ran are forgotten.
    fn skip_to_sync(&mut self) {
        while let Some(front) = self.expect.front() {
            if matches!(front, Expect::Sync) {
                return;
            }
            match self.expect.pop_front() {
                Some(Expect::Parse { client, upstream }) => self.forget(&client, &upstream),
                Some(Expect::Execute {
                    record: Some(r), ..
                }) => self.session.completed(r, 0, Completion::Skipped),
                _ => {}
            }
        }
        // No Sync is on its way: the server skips what the client sends next, up to one.
        self.skipping = true;
    }

    fn forget(&mut self, client: &str, upstream: &str) {
        if self
            .statements
            .get(client)
            .is_some_and(|p| p.upstream == upstream)
        {
            self.statements.remove(client);
        }
    }

    /// Handles one upstream message, appending what goes to the client to `client`.
    pub(crate) fn upstream_message(
        &mut self,
        frame: Frame,
        client: &mut BytesMut,
    ) -> Result<(), Violation> {
        if frame.tag != b'D'
            && matches!(
                self.expect.front(),
                Some(Expect::Notice(_) | Expect::CopyEnded)
            )
        {
            self.notices(client);
        }
        if self.own_answer(&frame)? {
            return Ok(());
        }
        match frame.tag {
            // The hot path: rows and copy data go through untouched.
            b'D' | b'd' | b'N' | b't' | b'H' | b'W' | b'c' => {}
            b'A' => {
                if let Some((upstream, own)) = self.pids {
                    if frame.body.get(..4) == Some(&upstream.to_be_bytes()[..]) {
                        let mut body = BytesMut::from(&frame.body[..]);
                        body[..4].copy_from_slice(&own.to_be_bytes());
                        Frame {
                            tag: b'A',
                            body: body.freeze(),
                        }
                        .encode(client);
                        return Ok(());
                    }
                }
            }
            b'S' => {
                self.setting_changed(&frame)?;
                if let Some(shown) = self.shown_setting(&frame) {
                    shown.encode(client);
                    return Ok(());
                }
            }
            b'G' => {
                // The server ignores Sync and Flush while it reads COPY data: a Sync the
                // client pipelined behind the COPY (as libraries do) and before the COPY's
                // end gets no answer. A client that ended the COPY already is not in it.
                let front = self.expect.pop_front();
                let end = self
                    .expect
                    .iter()
                    .position(|e| matches!(e, Expect::CopyEnded));
                let before = self.expect.len();
                let mut kept = VecDeque::with_capacity(before);
                for (i, e) in std::mem::take(&mut self.expect).into_iter().enumerate() {
                    let ignored = match end {
                        Some(end) => i < end && matches!(e, Expect::Sync),
                        None => matches!(e, Expect::Sync),
                    };
                    if !ignored && Some(i) != end {
                        kept.push_back(e);
                    }
                }
                let syncs = before - kept.len() - usize::from(end.is_some());
                self.ready_pending -= syncs as u64;
                self.expect = kept;
                self.copy_in = end.is_none();
                if let Some(front) = front {
                    self.expect.push_front(front);
                }
            }
            b'T' => {
                if matches!(self.expect.front(), Some(Expect::Describe)) {
                    self.expect.pop_front();
                }
            }
            b'n' => {
                self.pop("NoData", |e| matches!(e, Expect::Describe))?;
            }
            b'1' => {
                self.pop("ParseComplete", |e| matches!(e, Expect::Parse { .. }))?;
            }
            b'2' => {
                self.pop("BindComplete", |e| matches!(e, Expect::Bind))?;
            }
            b'3' => {
                self.pop("CloseComplete", |e| matches!(e, Expect::Close))?;
            }
            b's' => {
                self.pop("PortalSuspended", |e| matches!(e, Expect::Execute { .. }))?;
            }
            b'C' => {
                // Borrowed from the frame: most statements have no record to complete.
                let encoding = self.encoding;
                let tag = encoding.cstr(&frame.body)?;
                let tag = &*tag;
                self.own_after_tag(tag);
                match self.expect.front_mut() {
                    Some(Expect::Simple { hidden, .. }) if *hidden > 0 => {
                        *hidden -= 1;
                        self.hidden_tag(tag)?;
                        return Ok(());
                    }
                    Some(Expect::Simple {
                        record, next, tags, ..
                    }) => {
                        if let Some(r) = *record {
                            self.session.completed(r, *next, Completion::Tag(tag));
                        }
                        let shown = tags.iter().find(|(i, _)| i == next).map(|(_, t)| t.clone());
                        *next += 1;
                        if let Some(shown) = shown {
                            codec::Backend::CommandComplete(shown).encode(client);
                            return Ok(());
                        }
                    }
                    _ => {
                        if let Expect::Execute { record, tag: shown } =
                            self.pop("CommandComplete", |e| matches!(e, Expect::Execute { .. }))?
                        {
                            if let Some(r) = record {
                                self.session.completed(r, 0, Completion::Tag(tag));
                            }
                            if let Some(shown) = shown {
                                codec::Backend::CommandComplete(shown.to_string()).encode(client);
                                return Ok(());
                            }
                        }
                    }
                }
            }
            b'I' => match self.expect.front_mut() {
                Some(Expect::Simple { next, .. }) => *next += 1,
                _ => {
                    self.pop("EmptyQueryResponse", |e| {
                        matches!(e, Expect::Execute { .. })
                    })?;
                }
            },
            b'Z' => {
                if let Backend::ReadyForQuery(status) = Backend::decode(&frame)? {
                    self.status = status;
                }
                self.pop("ReadyForQuery", |e| {
                    matches!(e, Expect::Simple { .. } | Expect::Sync)
                })?;
                // The end of a COPY that never started.
                while matches!(self.expect.front(), Some(Expect::CopyEnded)) {
                    self.expect.pop_front();
                }
                self.ready_seen += 1;
                self.ready_pending = self.ready_pending.saturating_sub(1);
                self.own_ready();
                // Portals end with their transaction, upstream as here: a name bound again
                // later is another portal. Portals bound after this answer's Sync are not
                // of the transaction that ended.
                if self.status == TransactionStatus::Idle && !self.portals.is_empty() {
                    let seen = self.ready_seen;
                    self.portals.retain(|_, p| p.epoch >= seen);
                }
                // Only when nothing else is in flight: a statement forwarded behind this
                // answer may be changing the catalog still.
                if self.idle() {
                    self.session.idle();
                }
            }
            b'E' => {
                self.copy_in = false;
                let fields = match Backend::decode(&frame)? {
                    Backend::ErrorResponse(f) => f,
                    _ => return Err(Violation("undecodable ErrorResponse".to_owned())),
                };
                match self.expect.front_mut() {
                    Some(Expect::Simple { hidden, .. }) if *hidden > 0 => {
                        // belay's own statement failed, so the client's did not run.
                        *hidden = 0;
                        self.own_error(&fields.code);
                        codec::Backend::ErrorResponse(own_failed(fields)).encode(client);
                        return Ok(());
                    }
                    Some(Expect::Own(_)) => {
                        self.expect.pop_front();
                        self.own_error(&fields.code);
                        codec::Backend::ErrorResponse(own_failed(fields)).encode(client);
                        self.skip_to_sync();
                        return Ok(());
                    }
                    Some(Expect::Simple {
                        record,
                        next,
                        refusal,
                        ..
                    }) => {
                        if let Some(r) = *record {
                            self.session
                                .completed(r, *next, Completion::Error(&fields.code));
                        }
                        if let Some(ours) = refusal.take() {
                            codec::Backend::ErrorResponse(*ours).encode(client);
                            return Ok(());
                        }
                    }
                    // An error at Sync (a deferred constraint at commit) precedes its
                    // ReadyForQuery.
                    Some(Expect::Sync) | None => {}
                    Some(_) => {
                        match self.expect.pop_front() {
                            Some(Expect::Refused(ours)) => {
                                codec::Backend::ErrorResponse(*ours).encode(client);
                                self.skip_to_sync();
                                return Ok(());
                            }
                            Some(Expect::Parse {
                                client: c,
                                upstream,
                            }) => self.forget(&c, &upstream),
                            Some(Expect::Execute {
                                record: Some(r), ..
                            }) => self
                                .session
                                .completed(r, 0, Completion::Error(&fields.code)),
                            _ => {}
                        }
                        self.skip_to_sync();
                    }
                }
            }
            other => {
                return Err(Violation(format!(
                    "the upstream sent an unexpected message `{}`",
                    other as char
                )))
            }
        }
        frame.encode(client);
        Ok(())
    }
}
