//! One agent's session in one environment: `AppSession` decides each SQL text by
//! classification and policy, writes the decision to the audit log (durably before
//! forwarding anything that writes), and records outcomes.
//!
//! Decisions are cached per session by what policy can see (class, flags, relations), and
//! the cache is dropped whenever the identity generation moves (a grant revoked in another
//! process takes effect at the next statement) or the agent expires.
//!
//! A statement that policy holds for approval becomes an approval request bound to the exact
//! action (agent, environment, text and, at Execute, the bound parameters). It is refused
//! with the request's id, or held up to the environment's `approval_wait` for a decision.
//! Once enough humans approved, the identical action runs once: the request is used in the
//! same transaction that finds it, and policy is asked again with the approvals counted, so
//! a hold is lifted but no other rule is.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use belay_audit::Draft;
use belay_core::{Class, Decision, Verdict};
use belay_pg::{Check, Completion, Phase, Refusal, Session, Statement, RESERVED_PREFIX};
use belay_sql::{Analysis, Flag, PreparedEffect};
use belay_store::Agent;
use serde_json::json;

use crate::boundary;
use crate::catalog::{self, UpstreamCatalog};
use crate::gateway::{Slot, SQLSTATE_STATE};
use crate::{now_us, App};

mod deferred;
mod held;
mod policy;
mod reads;
mod record;
mod written;

use deferred::{deferrable, Outcome};

use reads::{ReadTally, READS_EVERY};
use record::{record_sql, statements_json};

/// What a decision asked to hear about after forwarding.
#[derive(Debug)]
struct Record {
    /// The decision event, when outcomes go to the audit log (write or worse).
    audit_seq: Option<u64>,
    statements: usize,
    /// Prepared-statement effects to apply when statement `i` completes.
    effects: Vec<(usize, PreparedEffect, String)>,
    /// Forwarded before its decision's record was durable (`AppSession::defer`): outcomes
    /// wait in `outcomes` for its sequence number, and `done` says the last has come.
    pending: bool,
    outcomes: Vec<(usize, Outcome)>,
    done: bool,
}

/// What policy sees of a statement beyond the session's agent and environment: class, flags,
/// relations, and whether it names a cluster object of another environment.
type DecisionKey = (Class, BTreeSet<Flag>, BTreeSet<String>, bool);

/// Decisions for one agent's session in one environment.
#[derive(Debug)]
pub struct AppSession {
    app: Arc<App>,
    environment: String,
    production: bool,
    /// How long a held statement waits for its humans before the refusal is sent.
    approval_wait: Duration,
    /// The upstream session is pinned `default_transaction_read_only`.
    read_only: bool,
    peer: String,
    agent: Agent,
    generation: u64,
    /// Policy decisions by what policy sees, valid for `generation`.
    decisions: HashMap<DecisionKey, Decision>,
    /// SQL-level prepared statements that ran upstream: name -> the PREPARE statement's text.
    prepared: HashMap<String, String>,
    /// PREPARE and DEALLOCATE statements forwarded and not answered yet (a pipeline sends
    /// the EXECUTE before the PREPARE's answer), in order: record, statement, effect, text.
    effects_in_flight: Vec<(u64, usize, PreparedEffect, String)>,
    records: HashMap<u64, Record>,
    next_record: u64,
    /// Writes forwarded inside an open transaction block before their records were durable
    /// (`defer`). Whatever may end the block waits for them, or a COMMIT carries them into
    /// the upstream's ledger.
    unconfirmed: Vec<deferred::Unconfirmed>,
    /// What the events of the writes deferred last share, by analysis and decision
    /// (`written.rs`): a prepared write run again is recorded with a few copies.
    heads: Vec<written::Head>,
    /// Allowed reads not yet written, by kind of read.
    reads: HashMap<u64, ReadTally>,
    /// When the oldest of them was counted.
    reads_since: Option<std::time::Instant>,
    /// The last statement decided as an allowed read, to count it again without deciding
    /// again when the same analysis comes back (valid for `generation`).
    repeat: Option<RepeatRead>,
    /// The tally the last `tally_read` counted into.
    tallied: Option<u64>,
    /// The session's place under the environment's connection limits.
    _slot: Slot,
    /// The upstream database's code, and this session's number there.
    catalog: Arc<UpstreamCatalog>,
    id: u64,
    /// A statement that may change the catalog was forwarded in the open transaction.
    changing: bool,
    /// What the open transaction's statements gave the names they change.
    own: catalog::Own,
}

/// Numbers sessions for the catalog's record of who is changing what.
static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An allowed read that may come again: the analysis it was decided on (the classifier's
/// cached one, compared by address, so that another text of the same inert shape repeats
/// it too), the phase, and the tally that counts it.
#[derive(Debug)]
struct RepeatRead {
    analysis: Arc<Analysis>,
    /// The last text counted, when `analysis` is the classifier's own for it (not resolved
    /// against the session's `PREPARE`s).
    text: Option<String>,
    phase: Phase,
    tally: u64,
}

impl RepeatRead {
    fn remember(&mut self, sql: &str, classified: bool) {
        if !classified {
            self.text = None;
            return;
        }
        match &mut self.text {
            Some(t) => {
                t.clear();
                t.push_str(sql);
            }
            None => self.text = Some(sql.to_owned()),
        }
    }
}

const MAX_CACHED: usize = 4096;

/// The denial of an action whose decision could not be written to the audit log.
fn unrecorded(e: &str) -> Decision {
    Decision::deny(format!(
        "the decision could not be written to the audit log ({e}); belay forwards nothing it has not recorded"
    ))
}

/// Statement kinds that open, end or divide a transaction.
const TRANSACTION_CONTROL: &[&str] = &[
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "ROLLBACK TO",
    "PREPARE TRANSACTION",
    "COMMIT PREPARED",
    "ROLLBACK PREPARED",
    "TRANSACTION",
];

impl AppSession {
    /// The session of `agent` in `env`, holding its place under the environment's limits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        app: Arc<App>,
        env: &belay_config::Environment,
        catalog: Arc<UpstreamCatalog>,
        read_only: bool,
        peer: String,
        agent: Agent,
        generation: u64,
        slot: Slot,
    ) -> AppSession {
        AppSession {
            app,
            environment: env.name.clone(),
            production: env.production,
            approval_wait: env.approval_wait,
            read_only,
            peer,
            agent,
            generation,
            decisions: HashMap::new(),
            prepared: HashMap::new(),
            effects_in_flight: Vec::new(),
            records: HashMap::new(),
            next_record: 0,
            unconfirmed: Vec::new(),
            heads: Vec::new(),
            reads: HashMap::new(),
            reads_since: None,
            repeat: None,
            tallied: None,
            _slot: slot,
            catalog,
            id: SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            changing: false,
            own: catalog::Own::new(),
        }
    }

    /// Whether the session's view of its agent is current and valid, known without IO.
    fn current(&self) -> bool {
        self.app.store().fresh_identity_generation() == Some(self.generation)
            && self.agent.revoked_us.is_none()
            && self.agent.expires_us.is_none_or(|e| e > now_us())
    }

    /// Re-reads the agent when identities changed anywhere; `Err` refuses (fail closed).
    fn refresh(&mut self) -> Result<(), String> {
        let generation = self
            .app
            .store()
            .identity_generation()
            .map_err(|e| format!("belay cannot read its state ({e})"))?;
        if generation != self.generation {
            self.decisions.clear();
            self.repeat = None;
            match self.app.store().agent(&self.agent.name) {
                Ok(Some(agent)) => self.agent = agent,
                Ok(None) => return Err(format!("agent `{}` no longer exists", self.agent.name)),
                Err(e) => return Err(format!("belay cannot read its state ({e})")),
            }
            self.generation = generation;
        }
        if self.agent.revoked_us.is_some() {
            return Err(format!("agent `{}` was revoked", self.agent.name));
        }
        if self.agent.expires_us.is_some_and(|e| e <= now_us()) {
            return Err(format!(
                "the credential of agent `{}` expired",
                self.agent.name
            ));
        }
        Ok(())
    }

    /// Resolves `EXECUTE name` of statements prepared by earlier inputs of this session.
    fn resolve(&self, sql: &str, analysis: Arc<Analysis>) -> Arc<Analysis> {
        if !analysis
            .statements
            .iter()
            .any(|s| s.unresolved_prepared.is_some())
        {
            return analysis;
        }
        let mut resolved = (*analysis).clone();
        for statement in &mut resolved.statements {
            let Some(name) = statement.unresolved_prepared.clone() else {
                continue;
            };
            let Some(prepare) = self.will_be_prepared(&name) else {
                continue;
            };
            let text = sql.get(statement.span.clone()).unwrap_or_default();
            let combined = self.app.classifier.classify(&format!("{prepare};\n{text}"));
            if let Some(last) = combined.statements.last() {
                let span = statement.span.clone();
                *statement = last.clone();
                statement.span = span;
            }
        }
        resolved.reclassify();
        Arc::new(resolved)
    }

    /// The text `name` will be prepared as when a statement sent now runs: what ran, with
    /// what is in flight applied as the server will apply it. A PREPARE of a name that
    /// exists by then fails there, leaving the old one; one that fails otherwise leaves the
    /// name unprepared, so an EXECUTE of it fails too.
    fn will_be_prepared(&self, name: &str) -> Option<String> {
        let mut text = self.prepared.get(name).cloned();
        for (_, _, effect, prepared) in &self.effects_in_flight {
            match effect {
                PreparedEffect::Prepare(n) if n == name && text.is_none() => {
                    text = Some(prepared.clone());
                }
                PreparedEffect::Deallocate(n) if n == name => text = None,
                PreparedEffect::DeallocateAll => text = None,
                _ => {}
            }
        }
        text
    }

    /// `analysis` raised where it sets a capped setting past this environment's limit.
    /// `analysis` with the session commands belay rewrites (`boundary::session_commands`)
    /// decided as rewritten, and the rewrite.
    fn session_commands(
        &self,
        sql: &str,
        analysis: Arc<Analysis>,
    ) -> (Arc<Analysis>, Option<belay_pg::Rewrite>) {
        if analysis.statements.iter().all(|s| s.session.is_none()) {
            return (analysis, None);
        }
        match self.app.config.environment(&self.environment) {
            Some(env) => boundary::session_commands(env, &self.agent.name, sql, analysis),
            None => (analysis, None),
        }
    }

    fn capped(&self, analysis: Arc<Analysis>) -> Arc<Analysis> {
        if analysis.statements.iter().all(|s| s.settings.is_empty()) {
            return analysis;
        }
        match self.app.config.environment(&self.environment) {
            Some(env) => boundary::apply_caps(env, self.read_only, analysis),
            None => analysis,
        }
    }

    /// Remembers what `analysis` (about to run) gives the names it changes, so that the
    /// rest of the transaction, which alone sees those changes, is decided by them.
    fn remember_code(&mut self, view: &catalog::View, sql: &str, analysis: &Analysis) {
        let limits = self.app.classifier.limits();
        for statement in &analysis.statements {
            let Some(belay_sql::Changes::Named(names)) = &statement.code.changes else {
                continue;
            };
            let text = sql.get(statement.span.clone()).unwrap_or(sql);
            let (class, reason) =
                catalog::code_class(view, statement, text, limits, self.id, &self.own);
            for name in names {
                let entry = self
                    .own
                    .entry(name.clone())
                    .or_insert((class, reason.clone()));
                if class > entry.0 {
                    *entry = (class, reason.clone());
                }
            }
        }
    }
}

impl AppSession {
    /// The decision on one statement. Without `may_block`, `None` as soon as deciding would
    /// need IO or a durable record (the caller then asks again, allowed to block).
    fn decide_statement(&mut self, statement: Statement<'_>, may_block: bool) -> Option<Check> {
        let Statement {
            sql, phase, params, ..
        } = statement;
        // Known current without IO, nothing to refresh; else re-read, which may block.
        if !self.current() {
            if !may_block {
                return None;
            }
            if let Err(why) = self.refresh() {
                let decision = Decision::deny(why);
                let nothing = Analysis {
                    class: Class::Unknown,
                    statements: Vec::new(),
                };
                let seq = self
                    .audit_decision(sql, &nothing, &decision, phase, None, None)
                    .ok()
                    .flatten();
                return Some(Check::Refuse(self.refusal(None, &decision, seq)));
            }
        }
        // The text just repeated needs no classifier lookup (texts naming SQL-level prepared
        // statements are never remembered: their meaning depends on the session).
        let repeated = self
            .repeat
            .as_ref()
            .filter(|r| r.phase == phase && r.text.as_deref() == Some(sql))
            .map(|r| r.analysis.clone());
        let by_text = repeated.is_some();
        let classified = repeated.unwrap_or_else(|| self.app.classifier.classify(sql));
        let refresh = self.app.config.sql.catalog_refresh;
        let limits = self.app.classifier.limits();
        let mut view = match self.catalog.current(refresh) {
            Some(view) => view,
            None if !may_block => return None,
            None => self.catalog.load(refresh, limits, false),
        };
        let prepared = self.resolve(sql, classified.clone());
        let (mut resolved, unsettled) =
            catalog::resolve(&view, prepared.clone(), self.id, &self.own);
        // It reaches, or changes, what a change through belay that has ended since touched:
        // the catalog is read again first, and only what is still being changed stays
        // unknown.
        if (unsettled && view.dirty) || view.changes_unread(&prepared) {
            if !may_block {
                return None;
            }
            // What it gives the names it changes is decided by the same copy (below).
            view = self.catalog.load(refresh, limits, true);
            resolved = catalog::resolve(&view, prepared, self.id, &self.own).0;
        }
        let (resolved, rewrite) = self.session_commands(sql, resolved);
        let analysis = self.capped(resolved);
        let rewrite = rewrite.map(Box::new);
        // A rewritten text is never repeated as it came: it is rewritten each time.
        if let Some(check) = self
            .repeat_read(sql, &analysis, phase)
            .filter(|_| rewrite.is_none())
        {
            // Found by its text, the text is remembered already.
            if let Some(r) = self.repeat.as_mut().filter(|_| !by_text) {
                r.remember(sql, Arc::ptr_eq(&classified, &analysis));
            }
            return Some(check);
        }
        self.tallied = None;
        let reserved = analysis.statements.iter().find_map(|s| {
            match (&s.prepared_effect, &s.unresolved_prepared) {
                (Some(PreparedEffect::Prepare(n) | PreparedEffect::Deallocate(n)), _)
                | (_, Some(n))
                    if n.starts_with(RESERVED_PREFIX) =>
                {
                    Some(n.clone())
                }
                _ => None,
            }
        });
        let mut decision = match reserved {
            Some(name) => Decision::deny(format!("prepared statement names beginning with `{RESERVED_PREFIX}` are reserved by belay (`{name}`)")),
            None => match crate::ledger::touches(sql, &analysis) {
                Some(name) => Decision::deny(format!("`{name}` is belay's own: the ledger of decisions that commit with their transactions; agents may read it, never change it, build on it or move anything into it")),
                None => self.decide(&analysis),
            },
        };
        // A Parse runs nothing: an allowed one is recorded when it is executed, and a held
        // one is held at Execute, where its parameters are known and become part of the
        // action the humans approve.
        if phase == Phase::Parse && matches!(decision.verdict, Verdict::Allow | Verdict::Approve(_))
        {
            // The planner runs IMMUTABLE and STABLE functions while it plans at Bind: a held
            // statement that calls code belay cannot show to be a read-only built-in is
            // decided at its Bind, before any of that runs.
            if matches!(decision.verdict, Verdict::Approve(_))
                && analysis.flags().contains(&Flag::UnknownFunction)
            {
                return Some(Check::DecideAtBind);
            }
            return Some(Check::Allow {
                record: None,
                read_write: false,
                rewrite,
            });
        }
        // A write inside an open transaction block runs while its record becomes durable:
        // the block commits only with a statement that waits for the record first.
        if decision.verdict == Verdict::Allow
            && rewrite.is_none()
            && statement.in_block
            && deferrable(&analysis)
        {
            if let Some(check) = self.defer(sql, &analysis, &decision, phase) {
                return Some(check);
            }
        }
        // One outside any block runs in an implicit transaction with its ledger row.
        if decision.verdict == Verdict::Allow && rewrite.is_none() && !statement.in_transaction {
            if let Some(check) = self.autocommit(sql, &analysis, &decision, phase) {
                return Some(check);
            }
        }
        // Anything but an allowed read needs a durable record, and perhaps the approvals;
        // what may end a block waits for the records of the writes it would commit.
        let mut settle = decision.verdict != Verdict::Deny && self.must_settle(&analysis);
        // A COMMIT alone in an open block carries the decisions into the upstream's ledger,
        // to commit with the effects, instead of waiting for the audit log.
        let mut ledger = None;
        if settle
            && decision.verdict == Verdict::Allow
            && rewrite.is_none()
            && statement.in_block
            && deferred::commits_alone(&analysis)
            && self.catalog.ledger_ready(&self.app)
        {
            ledger = self.ledger_insert();
            settle = ledger.is_none();
        }
        let not_durable = |e: String| {
            Decision::deny(format!(
                "belay could not make the record of an earlier statement of this transaction durable ({e}), so nothing of it may commit; roll it back"
            ))
        };
        if settle && !may_block {
            // Records already durable (another session's commit shared their fsync) need no
            // wait, so no hop to the blocking pool; for the rest, the writer starts now.
            match self.settle(false) {
                Err(e) => {
                    return Some(Check::Refuse(self.refusal(
                        Some(&analysis),
                        &not_durable(e),
                        None,
                    )))
                }
                Ok(()) if self.unconfirmed.is_empty() => settle = false,
                Ok(()) => self.app.store().wake(),
            }
        }
        if !may_block
            && (decision.verdict != Verdict::Allow
                || analysis.class >= Class::Write
                || rewrite.is_some()
                || settle)
        {
            return None;
        }
        if settle {
            if let Err(e) = self.settle(true) {
                return Some(Check::Refuse(self.refusal(
                    Some(&analysis),
                    &not_durable(e),
                    None,
                )));
            }
        }
        // In a session pinned read-only, belay can lift the pin for an approved statement
        // only when it arrives as a simple Query outside a transaction block; anywhere else
        // the approval is left unused rather than spent on a statement that would fail.
        let controls_transaction = self.read_only
            && analysis
                .statements
                .iter()
                .any(|s| TRANSACTION_CONTROL.contains(&s.kind.as_str()));
        let blocked = match (self.read_only, phase, statement.in_transaction) {
            (false, _, _) => None,
            (true, Phase::Execute, _) => Some("this session is read-only, and belay can lift that for an approved statement only when it is sent as a simple query (psql -c, simple_query), not through the extended protocol"),
            (true, _, true) => Some("this session is read-only, and belay can lift that for an approved statement only outside a transaction block: send it on its own, without BEGIN"),
            // A BEGIN inside the text would carry the lifted pin into a transaction block
            // that outlives the approved statement.
            (true, _, false) if controls_transaction => Some("this session is read-only, and belay lifts that only for a text that runs as one implicit transaction: send the approved statement without BEGIN, COMMIT, ROLLBACK or SAVEPOINT"),
            (true, _, false) => None,
        };
        // An approval binds the exact action, and the rows a COPY FROM STDIN streams after
        // it are no part of its text: nobody could see what they approve.
        if matches!(decision.verdict, Verdict::Approve(_))
            && analysis.flags().contains(&Flag::StreamedData)
        {
            let mut denied = Decision::deny(
                "an approval cannot be bound to the rows a COPY FROM STDIN streams after it, so belay does not ask for one; send the rows as INSERT statements, which can be approved, or ask a human to load them",
            );
            denied.policies = decision.policies.clone();
            decision = denied;
        }
        let mut action = None;
        if let Verdict::Approve(_) = decision.verdict {
            let mut held = match self.action(sql, params) {
                Ok(a) => a,
                Err(why) => {
                    let d = Decision::deny(format!(
                        "belay cannot read the statement's parameters ({why})"
                    ));
                    return Some(Check::Refuse(self.refusal(Some(&analysis), &d, None)));
                }
            };
            held.blocked = blocked;
            // Inside a transaction block belay does not wait: the transaction's locks would
            // be held, stalling other sessions, for as long as the humans take.
            if !statement.in_transaction {
                held.wait = self.approval_wait;
            }
            match self.use_approval(&analysis, &mut held) {
                Ok(Some(approved)) => decision = approved,
                Ok(None) => {}
                Err(d) => {
                    let seq = self
                        .audit_decision(sql, &analysis, &d, phase, Some(&held), None)
                        .ok()
                        .flatten();
                    return Some(Check::Refuse(self.refusal(Some(&analysis), &d, seq)));
                }
            }
            action = Some(held);
        }
        let forwarded = rewrite.as_ref().map(|r| r.sql.clone());
        let mut seq = match self.audit_decision(
            sql,
            &analysis,
            &decision,
            phase,
            action.as_ref(),
            forwarded.as_deref(),
        ) {
            Ok(seq) => seq,
            Err(e) => {
                return Some(Check::Refuse(self.refusal(
                    Some(&analysis),
                    &unrecorded(&e),
                    None,
                )));
            }
        };
        if let (Verdict::Approve(_), Some(held)) = (decision.verdict, action.as_mut()) {
            match self.hold(sql, &analysis, &decision, held, seq) {
                Ok(approved) => {
                    decision = approved;
                    match self.audit_decision(
                        sql,
                        &analysis,
                        &decision,
                        phase,
                        Some(held),
                        forwarded.as_deref(),
                    ) {
                        Ok(s) => seq = s,
                        Err(e) => {
                            return Some(Check::Refuse(self.refusal(
                                Some(&analysis),
                                &unrecorded(&e),
                                None,
                            )))
                        }
                    }
                }
                Err(refusal) => return Some(Check::Refuse(refusal)),
            }
        }
        if decision.verdict != Verdict::Allow {
            return Some(Check::Refuse(self.refusal(Some(&analysis), &decision, seq)));
        }
        // From here it runs: what it may change in the catalog is unsettled for every
        // session until its transaction ends and the catalog is read again.
        if let Some(changes) = catalog::changes(&analysis) {
            self.remember_code(&view, sql, &analysis);
            self.catalog.hold(self.id, &changes);
            self.changing = true;
        }
        let effects: Vec<(usize, PreparedEffect, String)> = analysis
            .statements
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let effect = s.prepared_effect.clone()?;
                Some((
                    i,
                    effect,
                    sql.get(s.span.clone()).unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        // An approved statement in a read-only session runs with the pin lifted (only ever
        // for a simple Query outside a transaction block: see `blocked` above).
        let read_write = self.read_only && action.as_ref().is_some_and(|a| a.approval.is_some());
        let audit_seq = seq.filter(|_| analysis.class >= Class::Write);
        if audit_seq.is_none() && effects.is_empty() {
            // A plain allowed read (counted, not written): the next identical one repeats it.
            let tallied = self.tallied.take();
            self.repeat = match tallied {
                Some(tally)
                    if !read_write && action.is_none() && seq.is_none() && rewrite.is_none() =>
                {
                    let mut repeat = RepeatRead {
                        analysis: analysis.clone(),
                        text: None,
                        phase,
                        tally,
                    };
                    repeat.remember(sql, Arc::ptr_eq(&classified, &analysis));
                    Some(repeat)
                }
                _ => None,
            };
            if let Some(own) = ledger {
                // From here the COMMIT goes upstream behind the ledger's row.
                self.covered();
                return Some(Check::AllowAfter { own, record: None });
            }
            return Some(Check::Allow {
                record: None,
                read_write,
                rewrite,
            });
        }
        if ledger.is_some() {
            // Not the plain COMMIT `commits_alone` promised: wait as any would.
            if !may_block {
                return None;
            }
            if let Err(e) = self.settle(true) {
                return Some(Check::Refuse(self.refusal(
                    Some(&analysis),
                    &not_durable(e),
                    None,
                )));
            }
        }
        if self.records.len() >= MAX_CACHED {
            self.records.clear();
            self.effects_in_flight.clear();
        }
        self.next_record += 1;
        self.effects_in_flight.extend(
            effects
                .iter()
                .map(|(i, e, t)| (self.next_record, *i, e.clone(), t.clone())),
        );
        self.records.insert(
            self.next_record,
            Record {
                audit_seq,
                statements: analysis.statements.len(),
                effects,
                pending: false,
                outcomes: Vec::new(),
                done: false,
            },
        );
        Some(Check::Allow {
            record: Some(self.next_record),
            read_write,
            rewrite,
        })
    }
}

impl Session for AppSession {
    fn check(&mut self, statement: Statement<'_>) -> Check {
        self.decide_statement(statement, true).unwrap_or_else(|| {
            Check::Refuse(Refusal::new(
                SQLSTATE_STATE,
                "belay could not decide this statement".to_owned(),
            ))
        })
    }

    fn check_now(&mut self, statement: Statement<'_>) -> Option<Check> {
        self.decide_statement(statement, false)
    }

    fn completed(&mut self, record: u64, index: usize, completion: Completion<'_>) {
        let Some(r) = self.records.get_mut(&record) else {
            return;
        };
        let done = !matches!(completion, Completion::Tag(_)) || index + 1 >= r.statements;
        // Answered: in effect or not, no longer in flight (nor, when it ended the record's
        // run, are its later statements).
        self.effects_in_flight
            .retain(|(rec, i, _, _)| *rec != record || (*i > index && !done));
        if let Completion::Tag(_) = completion {
            for (_, effect, text) in r.effects.iter().filter(|(i, _, _)| *i == index) {
                match effect {
                    PreparedEffect::Prepare(name) => {
                        self.prepared.insert(name.clone(), text.clone());
                    }
                    PreparedEffect::Deallocate(name) => {
                        self.prepared.remove(name);
                    }
                    PreparedEffect::DeallocateAll => self.prepared.clear(),
                }
            }
        }
        let outcome = match completion {
            Completion::Tag(tag) => Outcome::Completed(tag.to_owned()),
            Completion::Error(code) => Outcome::Failed(code.to_owned()),
            Completion::Skipped => Outcome::Skipped,
        };
        if r.pending {
            r.done = done;
            // Part of its event while that is not submitted; else written once its
            // sequence number is known.
            if !self.deferred_outcome(record, index, &outcome, done) {
                if let Some(r) = self.records.get_mut(&record) {
                    r.outcomes.push((index, outcome));
                }
            }
            return;
        }
        if let Some(seq) = r.audit_seq {
            self.write_outcome(seq, index, &outcome);
        }
        if done {
            self.records.remove(&record);
        }
    }

    fn idle(&mut self) {
        if std::mem::take(&mut self.changing) {
            self.own.clear();
            self.catalog.release(self.id);
        }
    }

    fn tick(&mut self) {
        if !self.unconfirmed.is_empty() {
            let _ = self.settle(false);
        }
        if self
            .reads_since
            .is_some_and(|since| since.elapsed() >= READS_EVERY)
        {
            let _ = self.flush_reads();
        }
    }

    fn refuse_message(&mut self, refusal: Refusal) -> Refusal {
        let _ = self.flush_reads();
        let draft = Draft {
            time_us: now_us(),
            actor: format!("agent:{}", self.agent.name),
            kind: "statement".to_owned(),
            environment: Some(self.environment.clone()),
            class: Some(Class::Unknown.as_str().to_owned()),
            verdict: Some(Verdict::Deny.to_string()),
            reasons: vec![refusal.message.clone()],
            detail: json!({ "peer": self.peer, "phase": "protocol", "code": refusal.code }),
            ..Draft::default()
        };
        match self.app.store().submit(draft).wait() {
            Ok(seq) => Refusal {
                detail: Some(format!("audit event {seq}")),
                ..refusal
            },
            Err(e) => Refusal::new(
                SQLSTATE_STATE,
                format!("belay cannot write to its audit log ({e}), so it refuses this message without a record"),
            ),
        }
    }

    fn ended(&mut self, why: &str) {
        self.idle();
        // Outcomes of writes whose records are durable by now; the writes of a block that
        // never committed were rolled back by the server with the session.
        let _ = self.settle(false);
        let _ = self.flush_reads();
        let _ = self.app.store().record(Draft {
            time_us: now_us(),
            actor: format!("agent:{}", self.agent.name),
            kind: "connection".to_owned(),
            environment: Some(self.environment.clone()),
            outcome: Some("closed".to_owned()),
            reasons: vec![why.to_owned()],
            detail: json!({ "peer": self.peer }),
            ..Draft::default()
        });
    }
}
