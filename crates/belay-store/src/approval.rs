//! Held actions waiting for humans, in SQL: the request bound to one exact action, the votes
//! (one per human), and the status transitions. Every transition is one `BEGIN IMMEDIATE`
//! transaction, so two processes (or two replicas' votes) cannot both use one approval.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::Error;

/// Where a held action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    /// Waiting for approvals.
    Pending,
    /// Enough humans approved; the agent may run the action once, within its window.
    Approved,
    /// A human who may approve denied it.
    Denied,
    /// Nobody decided in time, or the approved action was not run in its window.
    Expired,
    /// The approved action was forwarded, once.
    Executed,
    /// It can no longer run: the policy denied it when it was re-sent after approval.
    Abandoned,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 6] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::Expired,
        ApprovalStatus::Executed,
        ApprovalStatus::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Executed => "executed",
            ApprovalStatus::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApprovalStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("`{s}` is not an approval status")))
    }
}

/// A request for approval of one exact action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    pub agent: String,
    pub environment: String,
    /// The exact statement text.
    pub action: String,
    /// For a prepared statement, its parameters as the agent bound them (`$1 = '42'`, ...).
    pub parameters: Option<String>,
    /// Binds the approval to agent, environment and exact action.
    pub fingerprint: String,
    pub class: String,
    pub flags: Vec<String>,
    pub relations: Vec<String>,
    /// The policies that held it, and why.
    pub policies: Vec<String>,
    pub reason: String,
    /// Rows, dependent objects and resources the action reaches, when known.
    pub blast_radius: Option<serde_json::Value>,
    pub required: u32,
    /// Humans whose approvals count; empty means any human.
    pub approvers: Vec<String>,
    pub expires_us: i64,
    /// Once approved, how long the action may wait to run.
    pub run_within_us: i64,
    /// The audit event of the decision that held it.
    pub request_seq: Option<u64>,
}

/// A human's approval or denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub human: String,
    pub approve: bool,
    pub time_us: i64,
    /// `cli`, `http`, ...
    pub channel: String,
    /// A comment with an approval, the reason of a denial.
    pub comment: Option<String>,
}

/// A held action and everything decided about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: u64,
    pub request: NewApproval,
    pub created_us: i64,
    pub status: ApprovalStatus,
    pub approved_us: Option<i64>,
    /// The approved action must run before this time.
    pub run_by_us: Option<i64>,
    pub executed_us: Option<i64>,
    pub votes: Vec<Vote>,
}

impl Approval {
    /// Humans who approved so far.
    pub fn approvals(&self) -> u32 {
        u32::try_from(self.votes.iter().filter(|v| v.approve).count()).unwrap_or(u32::MAX)
    }
}

const COLUMNS: &str = "id, agent, environment, action, parameters, fingerprint, class, flags, \
    relations, policies, reason, blast_radius, required, approvers, expires_us, run_within_us, \
    request_seq, created_us, status, approved_us, run_by_us, executed_us";

fn json_list(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_else(|_| vec![text])
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    let status: String = r.get(18)?;
    Ok(Approval {
        id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        request: NewApproval {
            agent: r.get(1)?,
            environment: r.get(2)?,
            action: r.get(3)?,
            parameters: r.get(4)?,
            fingerprint: r.get(5)?,
            class: r.get(6)?,
            flags: json_list(r.get(7)?),
            relations: json_list(r.get(8)?),
            policies: json_list(r.get(9)?),
            reason: r.get(10)?,
            blast_radius: r
                .get::<_, Option<String>>(11)?
                .and_then(|t| serde_json::from_str(&t).ok()),
            required: u32::try_from(r.get::<_, i64>(12)?).unwrap_or(u32::MAX),
            approvers: json_list(r.get(13)?),
            expires_us: r.get(14)?,
            run_within_us: r.get(15)?,
            request_seq: r
                .get::<_, Option<i64>>(16)?
                .and_then(|s| u64::try_from(s).ok()),
        },
        created_us: r.get(17)?,
        // An unknown status can never be used: it reads as abandoned.
        status: status.parse().unwrap_or(ApprovalStatus::Abandoned),
        approved_us: r.get(19)?,
        run_by_us: r.get(20)?,
        executed_us: r.get(21)?,
        votes: Vec::new(),
    })
}

fn with_votes(c: &Connection, mut a: Approval) -> Result<Approval, Error> {
    let mut stmt = c.prepare_cached(
        "SELECT human, vote, time_us, channel, comment FROM approval_votes \
         WHERE approval = ?1 ORDER BY time_us, human",
    )?;
    let votes = stmt.query_map([i64::try_from(a.id).unwrap_or(i64::MAX)], |r| {
        Ok(Vote {
            human: r.get(0)?,
            approve: r.get::<_, String>(1)? == "approve",
            time_us: r.get(2)?,
            channel: r.get(3)?,
            comment: r.get(4)?,
        })
    })?;
    a.votes = votes.collect::<Result<_, _>>()?;
    Ok(a)
}

fn get(c: &Connection, id: u64) -> Result<Option<Approval>, Error> {
    let found = c
        .query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [i64::try_from(id).unwrap_or(i64::MAX)],
            from_row,
        )
        .optional()?;
    found.map(|a| with_votes(c, a)).transpose()
}

/// Marks every request whose time ran out as expired, and returns them.
pub(crate) fn expire(c: &mut Connection, now: i64) -> Result<Vec<Approval>, Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM approvals WHERE (status = 'pending' AND expires_us <= ?1) \
             OR (status = 'approved' AND run_by_us <= ?1)",
        )?;
        let rows = stmt.query_map([now], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut expired = Vec::new();
    for id in ids {
        tx.execute(
            "UPDATE approvals SET status = 'expired' WHERE id = ?1",
            [id],
        )?;
        if let Some(a) = get(&tx, u64::try_from(id).unwrap_or(0))? {
            expired.push(a);
        }
    }
    tx.commit()?;
    Ok(expired)
}

/// The open request for this exact action (pending; approved and not yet run; or denied,
/// which stands until the request would have expired), or a new one; `true` when it was
/// created.
pub(crate) fn request(
    c: &mut Connection,
    new: &NewApproval,
    now: i64,
) -> Result<(Approval, bool), Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let open: Option<i64> = tx
        .query_row(
            "SELECT id FROM approvals WHERE agent = ?1 AND environment = ?2 AND fingerprint = ?3 \
             AND ((status IN ('pending', 'denied') AND expires_us > ?4) \
                  OR (status = 'approved' AND run_by_us > ?4)) \
             ORDER BY id DESC LIMIT 1",
            params![new.agent, new.environment, new.fingerprint, now],
            |r| r.get(0),
        )
        .optional()?;
    let (id, created) = match open {
        Some(id) => (id, false),
        None => {
            let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned());
            tx.execute(
                "INSERT INTO approvals (agent, environment, action, parameters, fingerprint, \
                 class, flags, relations, policies, reason, blast_radius, required, approvers, \
                 expires_us, run_within_us, request_seq, created_us, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, 'pending')",
                params![
                    new.agent,
                    new.environment,
                    new.action,
                    new.parameters,
                    new.fingerprint,
                    new.class,
                    list(&new.flags),
                    list(&new.relations),
                    list(&new.policies),
                    new.reason,
                    new.blast_radius.as_ref().map(|v| v.to_string()),
                    i64::from(new.required.max(1)),
                    list(&new.approvers),
                    new.expires_us,
                    new.run_within_us,
                    new.request_seq.and_then(|s| i64::try_from(s).ok()),
                    now,
                ],
            )?;
            (tx.last_insert_rowid(), true)
        }
    };
    let approval = get(&tx, u64::try_from(id).unwrap_or(0))?
        .ok_or_else(|| Error::Storage(format!("approval {id} vanished")))?;
    tx.commit()?;
    Ok((approval, created))
}

/// Records `vote` on request `id` and moves it to approved (quorum reached) or denied.
pub(crate) fn vote(c: &mut Connection, id: u64, vote: &Vote) -> Result<Approval, Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let approval =
        get(&tx, id)?.ok_or_else(|| Error::NotFound(format!("no approval request {id}")))?;
    if approval.status == ApprovalStatus::Pending && approval.request.expires_us <= vote.time_us {
        return Err(Error::Conflict(format!(
            "approval request {id} expired; the agent must send the statement again to ask anew"
        )));
    }
    if approval.status != ApprovalStatus::Pending {
        return Err(Error::Conflict(format!(
            "approval request {id} is {} and can no longer be {}",
            approval.status,
            if vote.approve { "approved" } else { "denied" }
        )));
    }
    let approvers = &approval.request.approvers;
    if !approvers.is_empty() && !approvers.contains(&vote.human) {
        return Err(Error::Invalid(format!(
            "`{}` is not among the approvers of request {id} ({})",
            vote.human,
            approvers.join(", ")
        )));
    }
    if let Some(earlier) = approval.votes.iter().find(|v| v.human == vote.human) {
        return Err(Error::Conflict(format!(
            "`{}` already {} request {id}; one human counts once",
            vote.human,
            if earlier.approve {
                "approved"
            } else {
                "denied"
            }
        )));
    }
    tx.execute(
        "INSERT INTO approval_votes (approval, human, vote, time_us, channel, comment) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            i64::try_from(id).unwrap_or(i64::MAX),
            vote.human,
            if vote.approve { "approve" } else { "deny" },
            vote.time_us,
            vote.channel,
            vote.comment,
        ],
    )?;
    let approvals = approval.approvals() + u32::from(vote.approve);
    if !vote.approve {
        tx.execute(
            "UPDATE approvals SET status = 'denied' WHERE id = ?1",
            [i64::try_from(id).unwrap_or(i64::MAX)],
        )?;
    } else if approvals >= approval.request.required {
        tx.execute(
            "UPDATE approvals SET status = 'approved', approved_us = ?2, run_by_us = ?2 + run_within_us \
             WHERE id = ?1",
            params![i64::try_from(id).unwrap_or(i64::MAX), vote.time_us],
        )?;
    }
    let updated = get(&tx, id)?.ok_or_else(|| Error::Storage(format!("approval {id} vanished")))?;
    tx.commit()?;
    Ok(updated)
}

/// Uses the approved, unexpired request for this exact action, if there is one: it becomes
/// executed in the same transaction, so it can be used once.
pub(crate) fn consume(
    c: &mut Connection,
    agent: &str,
    environment: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Option<Approval>, Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<i64> = tx
        .query_row(
            "SELECT id FROM approvals WHERE agent = ?1 AND environment = ?2 AND fingerprint = ?3 \
             AND status = 'approved' AND run_by_us > ?4 ORDER BY id LIMIT 1",
            params![agent, environment, fingerprint, now],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE approvals SET status = 'executed', executed_us = ?2 WHERE id = ?1 AND status = 'approved'",
        params![id, now],
    )?;
    let used = get(&tx, u64::try_from(id).unwrap_or(0))?;
    tx.commit()?;
    Ok(used)
}

/// Marks request `id` abandoned (it can never run).
pub(crate) fn abandon(c: &mut Connection, id: u64) -> Result<(), Error> {
    c.execute(
        "UPDATE approvals SET status = 'abandoned' WHERE id = ?1",
        [i64::try_from(id).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

pub(crate) fn one(c: &mut Connection, id: u64) -> Result<Option<Approval>, Error> {
    get(c, id)
}

/// Requests with one of `statuses` (all when empty), oldest first, at most `limit`.
pub(crate) fn list(
    c: &mut Connection,
    statuses: &[ApprovalStatus],
    limit: usize,
) -> Result<Vec<Approval>, Error> {
    let wanted: Vec<&str> = if statuses.is_empty() {
        ApprovalStatus::ALL.iter().map(|s| s.as_str()).collect()
    } else {
        statuses.iter().map(|s| s.as_str()).collect()
    };
    let found: Vec<Approval> = {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE status IN (SELECT value FROM json_each(?1)) \
             ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![
                serde_json::to_string(&wanted).unwrap_or_else(|_| "[]".to_owned()),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            from_row,
        )?;
        rows.collect::<Result<_, _>>()?
    };
    found.into_iter().map(|a| with_votes(c, a)).collect()
}

pub(crate) const MIGRATION: &str = r"
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    environment TEXT NOT NULL,
    action TEXT NOT NULL,
    parameters TEXT,
    fingerprint TEXT NOT NULL,
    class TEXT NOT NULL,
    flags TEXT NOT NULL,
    relations TEXT NOT NULL,
    policies TEXT NOT NULL,
    reason TEXT NOT NULL,
    blast_radius TEXT,
    required INTEGER NOT NULL CHECK (required >= 1),
    approvers TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    run_within_us INTEGER NOT NULL,
    request_seq INTEGER,
    created_us INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'executed', 'abandoned')),
    approved_us INTEGER,
    run_by_us INTEGER,
    executed_us INTEGER
);
CREATE INDEX approvals_action ON approvals (agent, environment, fingerprint, status);
CREATE INDEX approvals_status ON approvals (status);
CREATE TABLE approval_votes (
    approval INTEGER NOT NULL REFERENCES approvals (id),
    human TEXT NOT NULL,
    vote TEXT NOT NULL CHECK (vote IN ('approve', 'deny')),
    time_us INTEGER NOT NULL,
    channel TEXT NOT NULL,
    comment TEXT,
    PRIMARY KEY (approval, human)
);
";
