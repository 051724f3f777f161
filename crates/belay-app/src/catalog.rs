//! Each upstream database's code as belay knows it: read from the catalog (functions, views,
//! triggers, rules, policies, constraints, defaults, index expressions, operators, types,
//! casts), classified by `belay_sql::Catalog`, and kept current.
//!
//! A copy is read at a session's first statement, again `sql.catalog_refresh` after the last
//! read (for changes made without belay), and before the next statement that depends on it
//! whenever a statement through belay may have changed it. From the moment such a statement
//! is decided until its transaction has ended and the catalog has been read again, the names
//! it may change are *unsettled*: any statement of any session that reaches one of them is
//! `unknown`, since neither the old definition nor the new one can be trusted (the new one
//! is invisible to other connections until it commits). So there is no moment at which belay
//! decides by a definition that is not the one the server will run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use belay_config::{Environment, Postgres};
use belay_core::Class;
use belay_sql::{Analysis, Catalog, Changes, Flag, Limits, Source, Unsettled};

mod read;
use read::{block_on, carry_over, read_source};

/// How soon a failed read is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The catalogs of every upstream database, by `host:port/database`.
#[derive(Debug, Default)]
pub(crate) struct Catalogs {
    upstreams: Mutex<HashMap<String, Arc<UpstreamCatalog>>>,
}

impl Catalogs {
    /// The catalog of upstream `db` of `env`: one per database, whichever environments
    /// reach it, so that a change through one is unsettled for all.
    pub(crate) fn of(&self, env: &Environment, db: &str) -> Arc<UpstreamCatalog> {
        let pg = env.postgres.get(db).cloned();
        let label = match &pg {
            Some(pg) => format!("{}:{}/{}", pg.host, pg.port, pg.database),
            None => format!("{}.{db}", env.name),
        };
        self.upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label.clone())
            .or_insert_with(|| {
                Arc::new(UpstreamCatalog {
                    label,
                    pg,
                    view: RwLock::new(Arc::new(View::default())),
                    changes: Mutex::new(Pending::default()),
                    loading: Mutex::new(()),
                    source: Mutex::new(None),
                    ledger: Arc::default(),
                })
            })
            .clone()
    }
}

/// One upstream database's catalog.
#[derive(Debug)]
pub(crate) struct UpstreamCatalog {
    label: String,
    pg: Option<Postgres>,
    /// Shared by every session as it is; replaced (copy on write) when it changes, so a
    /// statement's look at it is one reference count.
    view: RwLock<Arc<View>>,
    changes: Mutex<Pending>,
    /// Held while the catalog is read, so that one session reads it and the others wait.
    loading: Mutex<()>,
    /// What the last read gave, for what the next cannot read (`carry_over`).
    source: Mutex<Option<Source>>,
    /// Its ledger of decisions (`ledger.rs`).
    ledger: Arc<crate::ledger::Ledger>,
}

impl UpstreamCatalog {
    /// Whether a COMMIT here may carry its writes' decisions into the database's ledger
    /// (`ledger.rs`) instead of waiting for the audit log; the first ask starts its
    /// reconciler.
    pub(crate) fn ledger_ready(&self, app: &crate::App) -> bool {
        if !app.config.audit.upstream_ledger {
            return false;
        }
        self.ledger.ready(|| {
            Some(crate::ledger::Reconciler {
                pg: self.pg.clone()?,
                label: self.label.clone(),
                store: app.sqlite(),
                keys: app.ledger_keys.clone(),
            })
        })
    }
}

/// What sessions decide by.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) catalog: Option<Arc<Catalog>>,
    /// When the copy was read (when the read began).
    read_at: Option<Instant>,
    /// Why the last read failed, if it did, and when it was tried.
    pub(crate) failure: Option<String>,
    tried_at: Option<Instant>,
    /// What is being changed, by anyone; shared until it changes.
    pub(crate) unsettled: Arc<Unsettled>,
    /// The same by session, and what has ended but not been read back.
    held: Arc<HashMap<u64, Unsettled>>,
    ended: Arc<Unsettled>,
    /// Changes ended but not yet read back: a statement that reaches one of them has the
    /// catalog read first.
    pub(crate) dirty: bool,
}

/// Changes through belay that the copy does not show yet.
#[derive(Debug, Default)]
struct Pending {
    /// By session: what its open transaction may change.
    held: HashMap<u64, Unsettled>,
    /// Ended (committed or rolled back), with the sequence number of their end.
    ended: Vec<(u64, Unsettled)>,
    seq: u64,
}

impl Pending {
    /// Publishes what is being changed in `view`.
    fn publish(&self, view: &mut View) {
        let mut all = Unsettled::default();
        let mut ended = Unsettled::default();
        for (_, u) in &self.ended {
            ended.anything |= u.anything;
            ended.names.extend(u.names.iter().cloned());
        }
        for u in self.held.values().chain([&ended]) {
            all.anything |= u.anything;
            all.names.extend(u.names.iter().cloned());
        }
        view.unsettled = Arc::new(all);
        view.held = Arc::new(self.held.clone());
        view.ended = Arc::new(ended);
    }
}

impl View {
    /// What is being changed as session `session` sees it: what others change (and what
    /// has ended unread) is unknown; what its own open transaction changes has the class
    /// of the code it gave it, in `own`.
    fn unsettled_for(&self, session: u64, own: &Own) -> std::borrow::Cow<'_, Unsettled> {
        use std::borrow::Cow;
        let mine = self.held.get(&session);
        if own.is_empty() && (mine.is_none() || self.unsettled.is_empty()) {
            return Cow::Borrowed(&self.unsettled);
        }
        let mut others = (*self.ended).clone();
        for (id, u) in self.held.iter() {
            others.anything |= u.anything;
            if *id != session {
                others.names.extend(u.names.iter().cloned());
            } else {
                // Its own changes whose code it did not classify are unknown to it too.
                others
                    .names
                    .extend(u.names.iter().filter(|n| !own.contains_key(*n)).cloned());
            }
        }
        others.own = own.clone();
        Cow::Owned(others)
    }
}

impl View {
    /// Whether `analysis` changes a name whose change through belay has ended but not been
    /// read back: the catalog is read first, while nothing of the statement holds a lock,
    /// so that what it locks has been read (`carry_over`).
    pub(crate) fn changes_unread(&self, analysis: &Analysis) -> bool {
        if !self.dirty || (self.ended.names.is_empty() && !self.ended.anything) {
            return false;
        }
        match changes(analysis) {
            None => false,
            Some(Changes::Anything) => true,
            Some(Changes::Named(names)) => {
                self.ended.anything || names.iter().any(|n| self.ended.names.contains(n))
            }
        }
    }
}

/// What a session's open transaction gave the names it changes: the class of their code.
pub(crate) type Own = std::collections::BTreeMap<String, (Class, String)>;

impl UpstreamCatalog {
    /// The copy to decide by, if it is current: read, and not older than `refresh`. (What
    /// changed through belay since is unsettled in it.)
    pub(crate) fn current(&self, refresh: Duration) -> Option<Arc<View>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let fresh = view.catalog.is_some() && view.read_at.is_some_and(|at| at.elapsed() < refresh);
        fresh.then(|| Arc::clone(&view))
    }

    /// Reads the catalog again unless another session just did (and, with `settle`, no
    /// change through belay has ended since); blocks. A failure keeps the old copy (changes
    /// through belay stay unsettled, so nothing is decided by a stale definition) and says
    /// why.
    pub(crate) fn load(&self, refresh: Duration, limits: &Limits, settle: bool) -> Arc<View> {
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = self.current(refresh).filter(|v| !settle || !v.dirty) {
            return view;
        }
        {
            // A read that just failed is not tried again at once, statement after statement.
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            if view.failure.is_some() && view.tried_at.is_some_and(|t| t.elapsed() < RETRY) {
                return Arc::clone(&view);
            }
        }
        let begun = Instant::now();
        let seq = self.changes.lock().unwrap_or_else(|e| e.into_inner()).seq;
        let read = match &self.pg {
            Some(pg) => block_on(read_source(pg, &self.label)),
            None => Err(format!("`{}` names no database", self.label)),
        };
        let mut pending = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut shared = self.view.write().unwrap_or_else(|e| e.into_inner());
        let view = Arc::make_mut(&mut shared);
        match read {
            Ok(read) => {
                let mut last = self.source.lock().unwrap_or_else(|e| e.into_inner());
                let source = carry_over(read, last.as_ref());
                let catalog = Catalog::rebuild(&source, limits, view.catalog.as_deref());
                *last = Some(source);
                tracing::debug!(upstream = %self.label, objects = catalog.len(), "read the catalog");
                pending.ended.retain(|(s, _)| *s > seq);
                view.catalog = Some(Arc::new(catalog));
                view.read_at = Some(begun);
                view.failure = None;
                view.dirty = !pending.ended.is_empty();
            }
            Err(why) => {
                tracing::warn!(upstream = %self.label, error = %why, "cannot read the catalog");
                view.failure = Some(why);
            }
        }
        view.tried_at = Some(begun);
        pending.publish(view);
        Arc::clone(&shared)
    }

    /// Session `session` is about to run a statement that may change `changes`.
    pub(crate) fn hold(&self, session: u64, changes: &Changes) {
        let mut pending = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let held = pending.held.entry(session).or_default();
        match changes {
            Changes::Anything => held.anything = true,
            Changes::Named(names) => held.names.extend(names.iter().cloned()),
        }
        let mut shared = self.view.write().unwrap_or_else(|e| e.into_inner());
        pending.publish(Arc::make_mut(&mut shared));
    }

    /// Session `session`'s transaction ended (or the session did): what it held waits for
    /// the next read of the catalog. Cheap when it held nothing.
    pub(crate) fn release(&self, session: u64) {
        let mut pending = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(held) = pending.held.remove(&session) else {
            return;
        };
        pending.seq += 1;
        let seq = pending.seq;
        pending.ended.push((seq, held));
        let mut shared = self.view.write().unwrap_or_else(|e| e.into_inner());
        let view = Arc::make_mut(&mut shared);
        pending.publish(view);
        view.dirty = true;
    }
}

/// `analysis` with what `view`'s catalog says about the code its statements reach (the same
/// `Arc` when that changes nothing), as session `session` with `own` sees it, and whether a
/// statement reached something being changed.
pub(crate) fn resolve(
    view: &View,
    analysis: Arc<Analysis>,
    session: u64,
    own: &Own,
) -> (Arc<Analysis>, bool) {
    let mut changed: Option<Analysis> = None;
    let mut unsettled = false;
    let pending = view.unsettled_for(session, own);
    for (i, statement) in analysis.statements.iter().enumerate() {
        let resolution = match &view.catalog {
            Some(catalog) => catalog.resolve(statement, &pending),
            None if needs_catalog(statement) => {
                statement.code.base.as_ref().map(|_| belay_sql::Resolution {
                    class: Class::Unknown,
                    reason: format!(
                        "belay cannot read this database's catalog ({}), so it cannot tell what the functions, views, triggers and other code this statement reaches do",
                        view.failure.as_deref().unwrap_or("not read yet")
                    ),
                    catalog_code: false,
                    unresolved: true,
                    unsettled: false,
                    settings: Vec::new(),
                })
            }
            None => None,
        };
        let Some(resolution) = resolution else {
            continue;
        };
        unsettled |= resolution.unsettled;
        let same = resolution.settings.is_empty()
            && resolution.class == statement.class
            && resolution.reason == statement.reason
            && (!resolution.catalog_code || statement.flags.contains(&Flag::CatalogCode))
            && (!resolution.unresolved || statement.flags.contains(&Flag::UnknownFunction));
        if !same {
            changed
                .get_or_insert_with(|| (*analysis).clone())
                .statements[i]
                .apply(&resolution);
        }
    }
    let resolved = match changed {
        Some(mut resolved) => {
            resolved.reclassify();
            Arc::new(resolved)
        }
        None => analysis,
    };
    (resolved, unsettled)
}

/// What `statement` (of text `text`), about to run in session `session`, gives the names it
/// changes: the class of the code it defines or attaches, resolved as the session sees the
/// catalog. A function's, trigger's or rule's code is analysed as stored code; anything
/// else is the class of what its expressions call (a view's query, a default, a policy).
pub(crate) fn code_class(
    view: &View,
    statement: &belay_sql::Statement,
    text: &str,
    limits: &Limits,
    session: u64,
    own: &Own,
) -> (Class, String) {
    let stored = matches!(
        statement.kind.as_str(),
        "CREATE FUNCTION" | "CREATE PROCEDURE" | "CREATE TRIGGER" | "CREATE RULE"
    );
    let mut code = if stored {
        belay_sql::analyze_code(text, limits)
    } else {
        statement.clone()
    };
    if !stored {
        code.code.base = Some((Class::Read, format!("{} only reads", statement.kind)));
    }
    // What it defines may take on the code of every relation it names (`LIKE ...
    // INCLUDING ALL`, `PARTITION OF`, a view over a table with triggers): counted as a write
    // to each, the stricter reading.
    for relation in &mut code.relations {
        if relation.access == belay_sql::Access::Read {
            relation.access = belay_sql::Access::Write;
        }
    }
    let Some(catalog) = &view.catalog else {
        return (Class::Unknown, "the catalog could not be read".to_owned());
    };
    let pending = view.unsettled_for(session, own);
    match catalog.resolve(&code, &pending) {
        Some(r) => (r.class, r.reason),
        None => (code.class, code.reason),
    }
}

/// Whether what `statement` does may depend on code in the catalog.
fn needs_catalog(statement: &belay_sql::Statement) -> bool {
    let code = &statement.code;
    !code.calls.is_empty()
        || !code.operators.is_empty()
        || !code.types.is_empty()
        || statement
            .relations
            .iter()
            .any(|r| r.object == belay_sql::ObjectKind::Relation)
}

/// What running `analysis` may change in the catalog.
pub(crate) fn changes(analysis: &Analysis) -> Option<Changes> {
    let mut all: Option<Changes> = None;
    for statement in &analysis.statements {
        // Code that runs DDL inside (a function, a statement belay cannot analyse) changes
        // what it cannot name.
        let inside = statement.class == Class::Unknown
            || (statement.class >= Class::Ddl
                && statement.code.changes.is_none()
                && statement.flags.contains(&Flag::CatalogCode));
        let this = if inside {
            Some(Changes::Anything)
        } else {
            statement.code.changes.clone()
        };
        all = match (all, this) {
            (None, x) | (x, None) => x,
            (Some(Changes::Anything), _) | (_, Some(Changes::Anything)) => Some(Changes::Anything),
            (Some(Changes::Named(mut a)), Some(Changes::Named(b))) => {
                a.extend(b);
                Some(Changes::Named(a))
            }
        };
    }
    all
}
