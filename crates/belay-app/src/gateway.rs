//! The PostgreSQL gateway's admission: `AppGate` admits an agent's session (SCRAM verifier,
//! agent state, environment, grant, the environment's connection limits and upstream role
//! guard, pinned upstream settings) and hands it an `AppSession` (`session.rs`), which
//! decides each SQL text. Refused connections are recorded, at most ten a minute per source
//! address one by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use belay_audit::Draft;
use belay_core::Class;
use belay_pg::{Credential, Gate, Login, Refusal, Session, UpstreamSpec, SQLSTATE_DENIED};
use belay_store::AuthError;
use serde_json::json;

use crate::boundary::{self, StartupSetting};
use crate::session::AppSession;
use crate::{now_us, App};

/// SQLSTATE when belay's own state cannot be read: nothing can be decided.
pub(crate) const SQLSTATE_STATE: &str = "58000";

/// How long an upstream login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's view of an `App`.
#[derive(Debug, Clone)]
pub struct AppGate {
    app: Arc<App>,
    /// Refused connections recorded per source address, so that a flood of failed logins or
    /// bad startups cannot flood the audit log.
    refusals: Arc<std::sync::Mutex<HashMap<String, RefusalWindow>>>,
    /// Open sessions by environment and by agent in an environment, against the
    /// environment's limits.
    open: Arc<std::sync::Mutex<OpenSessions>>,
}

#[derive(Debug, Default)]
struct OpenSessions {
    by_environment: HashMap<String, usize>,
    by_agent: HashMap<(String, String), usize>,
}

/// One session's place in `OpenSessions`, given back when the session is dropped, however
/// it ends.
#[derive(Debug)]
pub(crate) struct Slot {
    open: Arc<std::sync::Mutex<OpenSessions>>,
    environment: String,
    agent: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.by_environment.get_mut(&self.environment) {
            *n = n.saturating_sub(1);
        }
        let key = (self.agent.clone(), self.environment.clone());
        if let Some(n) = open.by_agent.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_agent.remove(&key);
            }
        }
    }
}

/// Refused connections are recorded one by one up to this many per source address and
/// window; past it they are counted, and the count is recorded with the next one written.
const REFUSALS_PER_WINDOW: u32 = 10;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses tracked at once; past this the oldest windows are forgotten.
const REFUSAL_SOURCES: usize = 10_000;

#[derive(Debug)]
struct RefusalWindow {
    started: std::time::Instant,
    written: u32,
    suppressed: u64,
}

impl AppGate {
    pub fn new(app: Arc<App>) -> AppGate {
        AppGate {
            app,
            refusals: Arc::default(),
            open: Arc::default(),
        }
    }

    /// A place for one more session of `agent` in `env`, or the refusal that says which
    /// limit it would pass.
    fn take_slot(&self, agent: &str, env: &belay_config::Environment) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let in_env = open.by_environment.get(&env.name).copied().unwrap_or(0);
        let key = (agent.to_owned(), env.name.clone());
        let mine = open.by_agent.get(&key).copied().unwrap_or(0);
        let limits = &env.limits;
        if mine >= limits.max_connections_per_agent {
            return Err(Refusal::new(
                "53300",
                format!(
                    "agent `{agent}` already holds {mine} sessions in environment `{}`, its limit (limits.max_connections_per_agent)",
                    env.name
                ),
            )
            .hint("close idle sessions, or use a connection pool in the agent"));
        }
        if in_env >= limits.max_connections {
            return Err(Refusal::new(
                "53300",
                format!(
                    "environment `{}` already has {in_env} agent sessions, its limit (limits.max_connections)",
                    env.name
                ),
            )
            .hint("close idle sessions; an operator can raise the environment's limit if the upstream has room"));
        }
        *open.by_environment.entry(env.name.clone()).or_default() += 1;
        *open.by_agent.entry(key).or_default() += 1;
        Ok(Slot {
            open: self.open.clone(),
            environment: env.name.clone(),
            agent: agent.to_owned(),
        })
    }

    /// Whether a refusal from `peer` is recorded on its own, and how many from there were
    /// counted but not written since the last one that was; `None` when this one is only
    /// counted.
    fn admit_refusal_record(&self, peer: &str) -> Option<u64> {
        let source = peer
            .rsplit_once(':')
            .map_or(peer, |(host, _)| host)
            .to_owned();
        let mut windows = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if windows.len() >= REFUSAL_SOURCES && !windows.contains_key(&source) {
            windows.retain(|_, w| now.duration_since(w.started) < REFUSAL_WINDOW);
            if windows.len() >= REFUSAL_SOURCES {
                windows.clear();
            }
        }
        let w = windows.entry(source).or_insert(RefusalWindow {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(w.started) >= REFUSAL_WINDOW {
            w.started = now;
            w.written = 0;
        }
        if w.written >= REFUSALS_PER_WINDOW {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
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
                    "startup_settings": login.settings.iter().map(|(n, _)| n).collect::<Vec<_>>(),
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
        let Some(suppressed) = self.admit_refusal_record(&login.peer) else {
            return refusal;
        };
        let mut reason = refusal.message.clone();
        if suppressed > 0 {
            reason.push_str(&format!(
                " ({suppressed} more refused connections from this address were counted but not recorded one by one)"
            ));
        }
        match self.audit_connection(login, actor, "refused", &reason) {
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
    fn refused(&self, peer: &str, user: Option<&str>, database: Option<&str>, refusal: &Refusal) {
        let login = Login {
            user: user.unwrap_or_default().to_owned(),
            database: database.unwrap_or_default().to_owned(),
            peer: peer.to_owned(),
            application_name: None,
            settings: Vec::new(),
            tls: false,
        };
        let actor = match user {
            Some(u) if !u.is_empty() => format!("client:{u}"),
            _ => "unauthenticated".to_owned(),
        };
        let _ = self.refuse(
            &login,
            &actor,
            Refusal::new(
                &refusal.code,
                format!("{} (SQLSTATE {})", refusal.message, refusal.code),
            ),
        );
    }

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
        if let Some(guard) = self.app.role_guard() {
            if let Err(why) = guard.admit(config, env, db_name) {
                return Err(self.refuse(
                    login,
                    &actor,
                    Refusal::new("08006", why)
                        .hint("an operator must fix the upstream's roles (`belay config check` shows how)"),
                ));
            }
        }
        let slot = match self.take_slot(&agent.name, env) {
            Ok(slot) => slot,
            Err(refusal) => return Err(self.refuse(login, &actor, refusal)),
        };
        let read_only = env.production && grant < Class::Write;
        // What the client asked for at startup, each decided as belay decides a SET.
        let mut own_name = login.application_name.clone();
        let mut asked = Vec::new();
        let mut notices = Vec::new();
        for (name, value) in &login.settings {
            match boundary::startup_setting(env, read_only, name, value) {
                Ok(StartupSetting::ApplicationName(n)) => own_name = Some(n),
                Ok(StartupSetting::Pass(n, v)) => asked.push((n, v)),
                Ok(StartupSetting::Lowered(n, v, notice)) => {
                    asked.push((n, v));
                    notices.push(notice);
                }
                Err(why) => {
                    return Err(self.refuse(
                        login,
                        &actor,
                        Refusal::new(SQLSTATE_DENIED, why)
                            .hint("leave the setting out of the connection's options, or ask belay's operator"),
                    ))
                }
            }
        }
        let mut params = vec![
            (
                "application_name".to_owned(),
                boundary::application_name(&agent.name, own_name.as_deref()),
            ),
            (
                "statement_timeout".to_owned(),
                env.statement_timeout.as_millis().to_string(),
            ),
            ("standard_conforming_strings".to_owned(), "on".to_owned()),
        ];
        params.extend(
            env.limits
                .pinned()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        // A setting asked for replaces belay's own value of it: decided above, it only
        // tightens what belay pins.
        for (name, value) in asked {
            params.retain(|(n, _)| *n != name);
            params.push((name, value));
        }
        if read_only {
            params.retain(|(n, _)| n != "default_transaction_read_only");
            params.push(("default_transaction_read_only".to_owned(), "on".to_owned()));
        }
        let label = format!("{}.{db_name}", env.name);
        // A read-only session logs in as the environment's read role where there is one,
        // so that the database itself refuses its writes even if belay were fooled; an
        // approved statement then runs on a connection of its own as the writing role.
        let (user, password, elevated) = match (&pg.read, read_only) {
            (Some(read), true) => (
                read.user.clone(),
                read.password.clone(),
                Some((pg.user.clone(), pg.password.clone())),
            ),
            _ => (pg.user.clone(), pg.password.clone(), None),
        };
        let spec = UpstreamSpec {
            host: pg.host.clone(),
            port: pg.port,
            database: pg.database.clone(),
            user,
            password,
            elevated,
            sslmode: pg.sslmode,
            sslrootcert: pg.sslrootcert.clone(),
            params,
            connect_timeout: CONNECT_TIMEOUT,
            label: label.clone(),
            application_prefix: Some(boundary::application_name(&agent.name, None)),
            notices,
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
            Box::new(AppSession::open(
                self.app.clone(),
                env,
                self.app.catalogs.of(env, db_name),
                read_only,
                login.peer.clone(),
                agent,
                generation,
                slot,
            )),
        ))
    }
}
