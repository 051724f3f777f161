//! The composition root: a validated configuration becomes an `App` that classifies actions,
//! decides them by policy, writes every decision and every identity change to the audit log,
//! and manages humans and agents.
//!
//! Invariant: on the decision path every error is a denial, and a decision that cannot be
//! written to the audit log is a denial.

mod approvals;
pub mod boundary;
pub(crate) mod catalog;
mod decide;
mod gateway;
pub mod http;
mod identity;
mod init;
mod ledger;
mod notify;
mod policy_cases;
pub mod roles;
mod session;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use belay_audit::{CheckpointKey, Draft};
use belay_config::Config;
use belay_policy::PolicyEngine;
use belay_sql::{Classifier, Limits};
use belay_store::{AuditOptions, SqliteStore, StateStore};

pub use approvals::{
    approval_json, approve_command, approvers_text, who_approves, ApprovalError, CHANNEL_CLI,
    CHANNEL_HTTP,
};
pub use decide::{Explanation, Outcome};
pub use gateway::AppGate;
pub use init::{init, InitReport};
pub use notify::Retry;
pub use policy_cases::{run_cases, CaseResult};
pub use session::AppSession;
pub use verify::{verify_audit, VerifyReport};

/// Errors outside the decision path (which never fails: it denies).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] belay_config::Error),
    #[error("{path}: {source}")]
    Policy {
        path: PathBuf,
        source: belay_policy::Error,
    },
    #[error(transparent)]
    Store(#[from] belay_store::Error),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Invalid(String),
}

/// The state database inside the state directory.
pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join("belay.db")
}

/// The checkpoint signing key inside the state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit-signing.key")
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A Unix-microsecond time as RFC 3339 (seconds).
pub fn rfc3339(us: i64) -> String {
    let us = u64::try_from(us).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_micros(us)).to_string()
}

/// A running belay: configuration, policy, classifier and state.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub policy: PolicyEngine,
    pub classifier: Classifier,
    store: Arc<SqliteStore>,
    public_key: String,
    /// Delivers approval notifications; started only when a webhook is configured.
    notifier: std::sync::OnceLock<notify::Notifier>,
    retry: notify::Retry,
    /// Set when belay stops: statements held for approval stop waiting and are answered.
    stopping: std::sync::atomic::AtomicBool,
    /// Set by `serve` once it inspected the upstream roles: sessions go only to production
    /// upstreams found clear.
    role_guard: std::sync::OnceLock<roles::RoleGuard>,
    /// Each upstream database's code, read from its catalog.
    pub(crate) catalogs: catalog::Catalogs,
    /// Keys of the decisions written to upstream ledgers (`ledger.rs`).
    pub(crate) ledger_keys: Arc<ledger::Keys>,
}

impl App {
    /// Opens everything `config` names: the policy (parsed and validated), the state store
    /// (created and migrated if needed) and the checkpoint key.
    pub fn open(config: Config) -> Result<App, Error> {
        let policy_text = std::fs::read_to_string(&config.policy).map_err(|e| {
            Error::Io(format!(
                "cannot read the policy `{}`: {e}",
                config.policy.display()
            ))
        })?;
        let config_text = std::fs::read_to_string(&config.path).unwrap_or_default();
        let policy = PolicyEngine::new(&policy_text).map_err(|source| Error::Policy {
            path: config.policy.clone(),
            source,
        })?;
        create_private_dir(&config.state_dir)?;
        let key = load_or_create_key(&key_path(&config.state_dir))?;
        let public_key = key.public_hex();
        if let Some(parent) = config.audit.checkpoint_file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Io(format!("cannot create `{}`: {e}", parent.display())))?;
        }
        let store = SqliteStore::open(
            &database_path(&config.state_dir),
            AuditOptions {
                key: Some(key),
                checkpoint_file: Some(config.audit.checkpoint_file.clone()),
                checkpoint_every: config.audit.checkpoint_every,
            },
        )?;
        let classifier = Classifier::new(
            Limits {
                max_input_bytes: config.sql.max_input_bytes,
                max_statements: config.sql.max_statements,
                ..Limits::default()
            },
            10_000,
        );
        let store_id = match store.meta("ledger_store")? {
            Some(id) => id,
            None => {
                let mut id = [0u8; 8];
                getrandom::fill(&mut id)
                    .map_err(|e| Error::Io(format!("cannot draw the store's identity: {e}")))?;
                let id = format!("{:016x}", u64::from_le_bytes(id));
                store.set_meta("ledger_store", &id)?;
                id
            }
        };
        let app = App {
            ledger_keys: Arc::new(ledger::Keys::new(store_id).map_err(Error::Io)?),
            config,
            policy,
            classifier,
            store: Arc::new(store),
            public_key,
            notifier: std::sync::OnceLock::new(),
            retry: notify::Retry::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            role_guard: std::sync::OnceLock::new(),
            catalogs: catalog::Catalogs::default(),
        };
        app.record_configuration(&config_text, &policy_text)?;
        Ok(app)
    }

    /// From now on, sessions go only to production upstreams whose roles `report` (or a
    /// later inspection) found to need no more than their grants.
    pub fn guard_roles(&self, report: &roles::Report) {
        let _ = self
            .role_guard
            .set(roles::RoleGuard::from_report(&self.config, report));
    }

    /// Starts the ledger's reconciler for every upstream database the configuration names
    /// (`ledger.rs`), so that what a run killed before its audit log caught up left in a
    /// ledger is added to the log now, not at the next session.
    pub fn start_ledgers(&self) {
        if !self.config.audit.upstream_ledger {
            return;
        }
        for env in self.config.environments.values() {
            for db in env.postgres.keys() {
                self.catalogs.of(env, db).ledger_ready(self);
            }
        }
    }

    pub(crate) fn role_guard(&self) -> Option<&roles::RoleGuard> {
        self.role_guard.get()
    }

    /// Records a `config.change` event when the configuration or the policy differs from what
    /// this state directory last ran with, so that every change to them is in the audit log.
    fn record_configuration(&self, config_text: &str, policy_text: &str) -> Result<(), Error> {
        for (key, what, path, text) in [
            (
                "config_sha256",
                "configuration",
                &self.config.path,
                config_text,
            ),
            ("policy_sha256", "policy", &self.config.policy, policy_text),
        ] {
            let hash = belay_audit::fingerprint(&[text]);
            let previous = self.store.meta(key)?;
            if previous.as_deref() == Some(hash.as_str()) {
                continue;
            }
            self.audit(Draft {
                time_us: now_us(),
                actor: "belay".to_owned(),
                kind: "config.change".to_owned(),
                outcome: Some(if previous.is_some() { "changed" } else { "first seen" }.to_owned()),
                reasons: vec![format!("the {what} `{}` differs from the one last used", path.display())],
                detail: serde_json::json!({ "file": path.display().to_string(), "what": what, "previous_sha256": previous, "sha256": hash }),
                ..Draft::default()
            })?;
            self.store.set_meta(key, &hash)?;
        }
        Ok(())
    }

    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    pub(crate) fn sqlite(&self) -> Arc<SqliteStore> {
        self.store.clone()
    }

    /// belay is stopping: statements waiting for approval are answered now (refused, with
    /// their request id), so that shutdown is not held up by humans.
    pub fn stop_waiting(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How webhook deliveries are retried (before the first notification is sent).
    pub fn set_notify_retry(&mut self, retry: Retry) {
        self.retry = retry;
    }

    /// Tells the environment's and the owner's webhooks that `approval` waits for a human.
    pub(crate) fn notify_requested(&self, approval: &belay_store::Approval, owner: &str) {
        let env_hook = self
            .config
            .environment(&approval.request.environment)
            .and_then(|e| e.notify_webhook.as_ref())
            .map(|url| (url, format!("environment {}", approval.request.environment)));
        let owner_hook = self
            .config
            .notify
            .owners
            .get(owner)
            .map(|url| (url, format!("owner {owner}")));
        let targets: Vec<_> = env_hook.into_iter().chain(owner_hook).collect();
        if targets.is_empty() {
            return;
        }
        let notifier = self
            .notifier
            .get_or_init(|| notify::Notifier::start(self.store.clone(), self.retry));
        let body = notify::requested_message(approval, owner);
        for (url, target) in targets {
            notifier.send(url, &target, approval.id, body.clone());
        }
    }

    /// Hex public key that signs this state directory's checkpoints.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Appends an event; the caller proceeds only once it is durable.
    pub fn audit(&self, draft: Draft) -> Result<u64, Error> {
        Ok(self.store.append(draft)?)
    }

    /// Writes a final checkpoint and stops the audit writer.
    pub fn close(&self) -> Result<(), Error> {
        let result = self.store.checkpoint(now_us());
        self.store.close();
        result.map(|_| ()).map_err(Error::from)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Io(format!(
            "cannot create the state directory `{}`: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Io(format!("cannot restrict `{}`: {e}", dir.display())))?;
    }
    Ok(())
}

fn load_or_create_key(path: &Path) -> Result<CheckpointKey, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => CheckpointKey::from_hex(&text)
            .map_err(|e| Error::Invalid(format!("`{}`: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| Error::Io(format!("the system's random source failed: {e}")))?;
            let key = CheckpointKey::from_bytes(bytes);
            write_private(path, &key.to_hex())?;
            Ok(key)
        }
        Err(e) => Err(Error::Io(format!("cannot read `{}`: {e}", path.display()))),
    }
}

/// Writes a new file only its owner can read, and syncs it; an existing file is an error.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::Io(format!("cannot create `{}`: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::Io(format!("cannot write `{}`: {e}", path.display())))
}
