//! The PostgreSQL gateway's decisions: `AppGate` admits an agent's session (SCRAM verifier,
//! agent state, environment, grant, pinned upstream settings) and `AppSession` decides each
//! SQL text by classification and policy, writes the decision to the audit log (durably
//! before forwarding anything that writes), and records outcomes.
//!
//! Decisions are cached per session by what policy can see (class, flags, relations), and
//! the cache is dropped whenever the identity generation moves (a grant revoked in another
//! process takes effect at the next statement) or the agent expires.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use belay_audit::{fingerprint, Draft};
use belay_core::{Class, Decision, Verdict};
use belay_pg::{
    Check, Completion, Credential, Gate, Login, Phase, Refusal, Session, UpstreamSpec,
    RESERVED_PREFIX, SQLSTATE_APPROVAL, SQLSTATE_DENIED,
};
use belay_policy::ActionRequest;
use belay_sql::{Analysis, Flag, PreparedEffect};
use belay_store::{Agent, AuthError};
use serde_json::json;

use crate::decide::with_analysis;
use crate::{now_us, App};

/// SQLSTATE when belay's own state cannot be read: nothing can be decided.
const SQLSTATE_STATE: &str = "58000";

/// How long an upstream login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's view of an `App`.
#[derive(Debug, Clone)]
pub struct AppGate {
    app: Arc<App>,
}

impl AppGate {
    pub fn new(app: Arc<App>) -> AppGate {
        AppGate { app }
    }

    fn audit_connection(
        &self,
        login: &Login,
        actor: &str,
        outcome: &str,
        reason: &str,
    ) -> Result<u64, Refusal> {
        self.app
            .store()
            .append(Draft {
                time_us: now_us(),
                actor: actor.to_owned(),
                kind: "connection".to_owned(),
                environment: Some(login.database.clone()),
                verdict: Some(if outcome == "opened" { "allow" } else { "deny" }.to_owned()),
                reasons: vec![reason.to_owned()],
                outcome: Some(outcome.to_owned()),
                detail: json!({
                    "user": login.user,
                    "peer": login.peer,
                    "tls": login.tls,
                    "application_name": login.application_name,
                }),
                ..Draft::default()
            })
            .map_err(|e| {
                Refusal::new(
                    SQLSTATE_STATE,
                    format!("belay cannot write to its audit log ({e}), so it admits no one"),
                )
                .hint("an operator must check belay's state directory")
            })
    }

    fn refuse(&self, login: &Login, actor: &str, refusal: Refusal) -> Refusal {
        match self.audit_connection(login, actor, "refused", &refusal.message) {
            Ok(_) => refusal,
            Err(audit) => audit,
        }
    }
}

fn auth_failed(user: &str) -> Refusal {
    Refusal::new("28P01", format!("password authentication failed for user \"{user}\""))
        .hint("connect with user = the agent's name and password = its token (`belay agent rotate` issues a new one)")
}

impl Gate for AppGate {
    fn credential(&self, user: &str) -> Result<Credential, Refusal> {
        match self.app.store().agent_verifier(user) {
            Ok(Some(text)) => Ok(belay_scram::Verifier::parse(&text)
                .map(Credential::Scram)
                .unwrap_or(Credential::None)),
            Ok(None) => Ok(Credential::None),
            Err(e) => Err(Refusal::new(
                SQLSTATE_STATE,
                format!("belay cannot read its state ({e}), so it admits no one"),
            )),
        }
    }

    fn open(
        &self,
        login: &Login,
        authenticated: bool,
    ) -> Result<(UpstreamSpec, Box<dyn Session>), Refusal> {
        let actor = format!("agent:{}", login.user);
        if !authenticated {
            return Err(self.refuse(login, "unauthenticated", auth_failed(&login.user)));
        }
        let agent = match self.app.store().agent_login(&login.user, now_us()) {
            Ok(Ok(agent)) => agent,
            Ok(Err(AuthError::Expired(_))) => {
                return Err(self.refuse(
                    login,
                    &actor,
                    Refusal::new(
                        "28000",
                        format!("the credential of agent `{}` expired", login.user),
                    )
                    .hint("its owner can issue a new one with `belay agent rotate`"),
                ))
            }
            Ok(Err(_)) => return Err(self.refuse(login, &actor, auth_failed(&login.user))),
            Err(e) => {
                return Err(Refusal::new(
                    SQLSTATE_STATE,
                    format!("belay cannot read its state ({e}), so it admits no one"),
                ))
            }
        };
        let config = &self.app.config;
        let (env, db_name, pg) = match config.upstream(&login.database) {
            Ok(found) => found,
            Err(message) => return Err(self.refuse(login, &actor, Refusal::new("3D000", message))),
        };
        let Some(grant) = agent.grants.get(&env.name).copied() else {
            let granted: Vec<&str> = agent.grants.keys().map(String::as_str).collect();
            return Err(self.refuse(
                login,
                &actor,
                Refusal::new(
                    SQLSTATE_DENIED,
                    format!(
                        "agent `{}` has no grant in environment `{}`",
                        agent.name, env.name
                    ),
                )
                .hint(if granted.is_empty() {
                    "the agent has no grants at all; its owner must add one".to_owned()
                } else {
                    format!("it may connect to: {}", granted.join(", "))
                }),
            ));
        };
        let read_only = env.production && grant < Class::Write;
        let mut params = vec![
            (
                "application_name".to_owned(),
                format!("belay:{}", agent.name),
            ),
            (
                "statement_timeout".to_owned(),
                env.statement_timeout.as_millis().to_string(),
            ),
            ("standard_conforming_strings".to_owned(), "on".to_owned()),
        ];
        if read_only {
            params.push(("default_transaction_read_only".to_owned(), "on".to_owned()));
        }
        let label = format!("{}.{db_name}", env.name);
        let spec = UpstreamSpec {
            host: pg.host.clone(),
            port: pg.port,
            database: pg.database.clone(),
            user: pg.user.clone(),
            password: pg.password.clone(),
            sslmode: pg.sslmode,
            sslrootcert: pg.sslrootcert.clone(),
            params,
            connect_timeout: CONNECT_TIMEOUT,
            label: label.clone(),
        };
        let reason = format!(
            "agent `{}` connected to `{label}` with grant `{grant}`{}",
            agent.name,
            if read_only {
                " (read-only session)"
            } else {
                ""
            }
        );
        self.audit_connection(login, &actor, "opened", &reason)?;
        let generation = self.app.store().identity_generation().unwrap_or(u64::MAX);
        Ok((
            spec,
            Box::new(AppSession {
                app: self.app.clone(),
                environment: env.name.clone(),
                production: env.production,
                peer: login.peer.clone(),
                agent,
                generation,
                decisions: HashMap::new(),
                prepared: HashMap::new(),
                records: HashMap::new(),
                next_record: 0,
            }),
        ))
    }
}

/// What a decision asked to hear about after forwarding.
#[derive(Debug)]
struct Record {
    /// The decision event, when outcomes go to the audit log (write or worse).
    audit_seq: Option<u64>,
    statements: usize,
    /// Prepared-statement effects to apply when statement `i` completes.
    effects: Vec<(usize, PreparedEffect, String)>,
}

/// What policy sees of a statement beyond the session's agent and environment: class, flags
/// and relations.
type DecisionKey = (Class, BTreeSet<Flag>, BTreeSet<String>);

/// Decisions for one agent's session in one environment.
#[derive(Debug)]
pub struct AppSession {
    app: Arc<App>,
    environment: String,
    production: bool,
    peer: String,
    agent: Agent,
    generation: u64,
    /// Policy decisions by what policy sees, valid for `generation`.
    decisions: HashMap<DecisionKey, Decision>,
    /// SQL-level prepared statements that ran upstream: name -> the PREPARE statement's text.
    prepared: HashMap<String, String>,
    records: HashMap<u64, Record>,
    next_record: u64,
}

const MAX_CACHED: usize = 4096;

impl AppSession {
    /// Re-reads the agent when identities changed anywhere; `Err` refuses (fail closed).
    fn refresh(&mut self) -> Result<(), String> {
        let generation = self
            .app
            .store()
            .identity_generation()
            .map_err(|e| format!("belay cannot read its state ({e})"))?;
        if generation != self.generation {
            self.decisions.clear();
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
            let Some(prepare) = self.prepared.get(&name) else {
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
        resolved.class = resolved
            .statements
            .iter()
            .map(|s| s.class)
            .max()
            .unwrap_or(Class::Read);
        Arc::new(resolved)
    }

    fn decide(&mut self, analysis: &Analysis) -> Decision {
        let key: DecisionKey = (
            analysis.class,
            analysis.flags(),
            analysis
                .statements
                .iter()
                .flat_map(|s| s.relations.iter().map(|r| r.name.clone()))
                .collect(),
        );
        if let Some(d) = self.decisions.get(&key) {
            return d.clone();
        }
        let request = with_analysis(
            ActionRequest::new(
                &self.agent.name,
                &self.agent.owner,
                &self.environment,
                self.production,
                analysis.class,
                self.agent.grants.get(&self.environment).copied(),
            ),
            analysis,
        );
        let decision = self.app.policy.evaluate(&request);
        if self.decisions.len() >= MAX_CACHED {
            self.decisions.clear();
        }
        self.decisions.insert(key, decision.clone());
        decision
    }

    fn refusal(
        &self,
        analysis: Option<&Analysis>,
        decision: &Decision,
        seq: Option<u64>,
    ) -> Refusal {
        let (class, what) = match analysis {
            Some(a) => (
                a.class.as_str(),
                a.statements
                    .iter()
                    .map(|s| s.kind.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            None => ("unknown", String::new()),
        };
        let flags: Vec<&str> = analysis
            .map(|a| a.flags().iter().map(|f| f.as_str()).collect())
            .unwrap_or_default();
        let mut detail = format!("class: {class}");
        if !flags.is_empty() {
            detail.push_str(&format!("; flags: {}", flags.join(", ")));
        }
        if !decision.policies.is_empty() {
            detail.push_str(&format!("; policy: {}", decision.policies.join(", ")));
        }
        if let Some(seq) = seq {
            detail.push_str(&format!("; audit event {seq}"));
        }
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" ({what})")
        };
        let (code, message, hint) = match decision.verdict {
            Verdict::Approve(n) => (
                SQLSTATE_APPROVAL,
                format!(
                    "belay holds this {class} statement{what} for approval by {n} human{}: {}",
                    if n == 1 { "" } else { "s" },
                    decision.reason
                ),
                "human approval is not available through the gateway yet; ask an operator to run it".to_owned(),
            ),
            _ => (
                SQLSTATE_DENIED,
                format!("belay denied this {class} statement{what}: {}", decision.reason),
                format!(
                    "run `belay policy explain --agent {} --env {} --sql '...'` to see why; a wider grant must come from the agent's owner",
                    self.agent.name, self.environment
                ),
            ),
        };
        Refusal {
            code: code.to_owned(),
            message,
            detail: Some(detail),
            hint: Some(hint),
        }
    }

    /// Records the decision: durably (returning its sequence number) for anything that writes
    /// and for every refusal; reads go to the group commit without waiting.
    fn audit_decision(
        &self,
        sql: &str,
        analysis: &Analysis,
        decision: &Decision,
        phase: Phase,
    ) -> Result<Option<u64>, String> {
        let durable = analysis.class >= Class::Write || decision.verdict != Verdict::Allow;
        let mut detail = json!({
            "peer": self.peer,
            "phase": match phase { Phase::Query => "query", Phase::Parse => "parse", Phase::Execute => "execute" },
            "statements": analysis.statements.iter().map(|s| json!({
                "kind": s.kind, "class": s.class, "flags": s.flags, "relations": s.relations,
            })).collect::<Vec<_>>(),
        });
        if durable {
            // Constants are replaced by $n: values (passwords, personal data) stay out.
            detail["sql"] =
                json!(belay_sql::redact(sql).unwrap_or_else(|| "(does not parse)".to_owned()));
        }
        let draft = Draft {
            time_us: now_us(),
            actor: format!("agent:{}", self.agent.name),
            kind: "statement".to_owned(),
            environment: Some(self.environment.clone()),
            fingerprint: Some(fingerprint(&[&self.agent.name, &self.environment, sql])),
            class: Some(analysis.class.as_str().to_owned()),
            verdict: Some(decision.verdict.to_string()),
            reasons: vec![decision.reason.clone()],
            policies: decision.policies.clone(),
            outcome: None,
            detail,
        };
        let ticket = self.app.store().submit(draft);
        if durable {
            ticket.wait().map(Some).map_err(|e| e.to_string())
        } else {
            // Reads are recorded by the group commit without waiting; a writer that is gone
            // fails the submission at once.
            ticket.submitted().map(|()| None).map_err(|e| e.to_string())
        }
    }
}

impl Session for AppSession {
    fn check(&mut self, sql: &str, phase: Phase) -> Check {
        if let Err(why) = self.refresh() {
            let decision = Decision::deny(why);
            let nothing = Analysis {
                class: Class::Unknown,
                statements: Vec::new(),
            };
            let seq = self
                .audit_decision(sql, &nothing, &decision, phase)
                .ok()
                .flatten();
            return Check::Refuse(self.refusal(None, &decision, seq));
        }
        let analysis = self.resolve(sql, self.app.classifier.classify(sql));
        let reserved = analysis
            .statements
            .iter()
            .find_map(|s| match &s.prepared_effect {
                Some(PreparedEffect::Prepare(n) | PreparedEffect::Deallocate(n))
                    if n.starts_with(RESERVED_PREFIX) =>
                {
                    Some(n.clone())
                }
                _ => None,
            });
        let decision = match reserved {
            Some(name) => Decision::deny(format!("prepared statement names beginning with `{RESERVED_PREFIX}` are reserved by belay (`{name}`)")),
            None => self.decide(&analysis),
        };
        // An allowed Parse runs nothing; it is recorded when it is executed.
        if phase == Phase::Parse && decision.verdict == Verdict::Allow {
            return Check::Allow { record: None };
        }
        let seq = match self.audit_decision(sql, &analysis, &decision, phase) {
            Ok(seq) => seq,
            Err(e) => {
                let d = Decision::deny(format!(
                    "the decision could not be written to the audit log ({e}); belay forwards nothing it has not recorded"
                ));
                return Check::Refuse(self.refusal(Some(&analysis), &d, None));
            }
        };
        if decision.verdict != Verdict::Allow {
            return Check::Refuse(self.refusal(Some(&analysis), &decision, seq));
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
        let audit_seq = seq.filter(|_| analysis.class >= Class::Write);
        if audit_seq.is_none() && effects.is_empty() {
            return Check::Allow { record: None };
        }
        if self.records.len() >= MAX_CACHED {
            self.records.clear();
        }
        self.next_record += 1;
        self.records.insert(
            self.next_record,
            Record {
                audit_seq,
                statements: analysis.statements.len(),
                effects,
            },
        );
        Check::Allow {
            record: Some(self.next_record),
        }
    }

    fn completed(&mut self, record: u64, index: usize, completion: Completion<'_>) {
        let Some(r) = self.records.get_mut(&record) else {
            return;
        };
        let done = !matches!(completion, Completion::Tag(_)) || index + 1 >= r.statements;
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
        if let Some(seq) = r.audit_seq {
            let (outcome, tag) = match completion {
                Completion::Tag(tag) => ("completed", tag.to_owned()),
                Completion::Error(code) => ("failed", format!("SQLSTATE {code}")),
                Completion::Skipped => ("skipped", String::new()),
            };
            let rows = tag.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
            let _ = self.app.store().submit(Draft {
                time_us: now_us(),
                actor: format!("agent:{}", self.agent.name),
                kind: "statement.outcome".to_owned(),
                environment: Some(self.environment.clone()),
                outcome: Some(outcome.to_owned()),
                detail: json!({ "decision": seq, "statement": index, "tag": tag, "rows": rows }),
                ..Draft::default()
            });
        }
        if done {
            self.records.remove(&record);
        }
    }

    fn ended(&mut self, why: &str) {
        let _ = self.app.store().submit(Draft {
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
