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
use belay_sql::{
    Analysis, Catalog, Changes, Flag, FunctionSource, Limits, ObjectSource, Source, Stored,
    StoredCode, Unsettled,
};

const LOAD_TIMEOUT: Duration = Duration::from_secs(15);
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

fn block_on<T, F: std::future::Future<Output = Result<T, String>>>(future: F) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        // Called where blocking is allowed (a blocking thread of the runtime).
        Ok(handle) => handle.block_on(future),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to read the catalog: {e}"))?
            .block_on(future),
    }
}

/// Schemas whose objects are the server's own.
const SYSTEM: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

/// One text, so one connection and one round trip: every row begins with its kind.
fn catalog_sql() -> String {
    // Temporary objects of every session are included: another connection sees their
    // definitions, and an unqualified name may resolve to one.
    let user = |alias: &str| {
        format!("{alias}.nspname NOT IN {SYSTEM} AND {alias}.nspname NOT LIKE 'pg_toast%'")
    };
    let rows = [
        // Relations whose code cannot be deparsed now without waiting (below).
        format!(
            "SELECT 'unreadable', n.nspname::text, c.relname::text, NULL, NULL, NULL, NULL \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid IN (SELECT oid FROM unreadable) AND {}",
            user("n")
        ),
        // Functions: language, volatility, extension, definition (for `internal`, the
        // server's symbol it runs).
        format!(
            "SELECT 'f', n.nspname::text, p.proname::text, \
               CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE l.lanname::text END, \
               p.provolatile::text, \
               (SELECT e.extname::text FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid \
                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' \
                   AND d.refclassid = 'pg_extension'::regclass LIMIT 1), \
               CASE WHEN l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p') \
                 THEN pg_get_functiondef(p.oid) WHEN l.lanname = 'internal' THEN p.prosrc END \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
               JOIN pg_language l ON l.oid = p.prolang WHERE {}",
            user("n")
        ),
        // An aggregate's support functions.
        format!(
            "SELECT 'a', n.nspname::text, p.proname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid \
               JOIN pg_namespace n ON n.oid = p.pronamespace \
               JOIN pg_proc f ON f.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, \
                 a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("n")
        ),
        // Built-ins, and whether every overload of the name is declared IMMUTABLE or STABLE.
        "SELECT 'b', NULL, proname::text, bool_and(provolatile <> 'v')::text, NULL, NULL, NULL \
         FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace GROUP BY proname"
            .to_owned(),
        // Views and materialized views: their queries, run when they are read.
        format!(
            "SELECT 'view', n.nspname::text, c.relname::text, pg_get_viewdef(c.oid), NULL, NULL, NULL \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('v', 'm') AND {READABLE} AND {}",
            user("n")
        ),
        // Rules other than a view's own: ON SELECT runs on reads, the others on writes.
        format!(
            "SELECT 'rule', n.nspname::text, c.relname::text, pg_get_ruledef(r.oid), \
               CASE WHEN r.ev_type = '1' THEN 'r' ELSE 'w' END, r.rulename::text, NULL \
             FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE r.rulename <> '_RETURN' AND {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'trigger', n.nspname::text, c.relname::text, pg_get_triggerdef(t.oid), 'w', t.tgname::text, NULL \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT t.tgisinternal AND {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'check', n.nspname::text, c.relname::text, pg_get_expr(k.conbin, k.conrelid), 'w', k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE k.contype = 'c' AND {READABLE} AND {}",
            user("n")
        ),
        // A write to the referenced table may cascade to the referencing one.
        format!(
            "SELECT 'cascade', rn.nspname::text, r.relname::text, n.nspname::text, c.relname::text, k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE k.contype = 'f' AND {}",
            user("rn")
        ),
        // A write to a parent table or a partitioned one reaches its children's rows, and
        // their own triggers fire.
        format!(
            "SELECT 'cascade', pn.nspname::text, p.relname::text, n.nspname::text, c.relname::text, 'inheritance', NULL \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE {}",
            user("pn")
        ),
        format!(
            "SELECT 'default', n.nspname::text, c.relname::text, pg_get_expr(d.adbin, d.adrelid), 'w', a.attname::text, NULL \
             FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
             WHERE {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'policy', n.nspname::text, c.relname::text, pg_get_expr(p.polqual, p.polrelid), \
               p.polcmd::text, p.polname::text, pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'index', n.nspname::text, c.relname::text, pg_get_expr(i.indexprs, i.indrelid), 'w', \
               ic.relname::text, pg_get_expr(i.indpred, i.indrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
               JOIN pg_class ic ON ic.oid = i.indexrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) AND {READABLE} AND {}",
            user("n")
        ),
        // Columns of user-defined types: their casts, checks and I/O run with the column.
        format!(
            "SELECT 'column', n.nspname::text, c.relname::text, tn.nspname::text, t.typname::text, a.attname::text, NULL \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND {} AND {}",
            user("n"),
            user("tn")
        ),
        // Types: their functions (r: output, w: input), domain checks, bases and elements.
        format!(
            "SELECT 'typefn', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, \
               CASE WHEN f.oid IN (t.typoutput, t.typsend, t.typmodout) THEN 'r' ELSE 'w' END, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend, \
                 t.typmodin, t.typmodout, t.typanalyze, t.typsubscript) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace \
             WHERE {} AND {}",
            user("tn"),
            user("fn")
        ),
        format!(
            "SELECT 'typefn', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, 'w', NULL \
             FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid IN (r.rngcanonical, r.rngsubdiff) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("tn")
        ),
        format!(
            "SELECT 'domain', tn.nspname::text, t.typname::text, pg_get_expr(k.conbin, 0), 'w', k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE k.contype = 'c' AND {}",
            user("tn")
        ),
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, bn.nspname::text, b.typname::text, NULL, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_type b ON b.oid IN (t.typbasetype, t.typelem) \
               JOIN pg_namespace bn ON bn.oid = b.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("bn")
        ),
        // A composite type is what its attributes' types are; a range, what its subtype is.
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, an.nspname::text, at.typname::text, NULL, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
               JOIN pg_type at ON at.oid = a.atttypid JOIN pg_namespace an ON an.oid = at.typnamespace \
             WHERE t.typtype = 'c' AND {} AND {}",
            user("tn"),
            user("an")
        ),
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, sn.nspname::text, st.typname::text, NULL, NULL \
             FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_type st ON st.oid = r.rngsubtype JOIN pg_namespace sn ON sn.oid = st.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("sn")
        ),
        // Casts with a user-defined function, on each user-defined type they involve.
        format!(
            "SELECT 'cast', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_cast k JOIN pg_proc f ON f.oid = k.castfunc \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace \
               JOIN pg_type t ON t.oid IN (k.castsource, k.casttarget) \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("fn")
        ),
        // Operators on user-defined types run wherever values of the type are compared,
        // sorted, grouped or hashed, named or not.
        format!(
            "SELECT 'typeop', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_operator o JOIN pg_type t ON t.oid IN (o.oprleft, o.oprright) \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid = o.oprcode JOIN pg_namespace fn ON fn.oid = f.pronamespace \
             WHERE {}",
            user("tn")
        ),
            "SELECT 'event', NULL, e.evtname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_event_trigger e JOIN pg_proc f ON f.oid = e.evtfoid \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE e.evtenabled <> 'D'"
            .to_owned(),
        // Operators: their function, and estimators that are not built-in.
        format!(
            "SELECT 'operator', n.nspname::text, o.oprname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace \
               JOIN pg_proc f ON f.oid = o.oprcode OR (f.oid IN (o.oprrest, o.oprjoin) \
                 AND f.pronamespace <> 'pg_catalog'::regnamespace) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("n")
        ),
    ];
    // PostgreSQL 15's deparsers (`pg_get_expr` with a relation, `pg_get_viewdef`,
    // `pg_get_ruledef`, `pg_get_triggerdef`) lock the relation and every relation a query
    // inside names, so one open transaction holding ACCESS EXCLUSIVE (a DROP or ALTER not
    // yet committed, `LOCK TABLE`, `VACUUM FULL`) would stall the whole read. What they
    // would wait for, held or awaited by another session, is left out and named instead;
    // `lock_timeout` covers a lock taken between this look and the deparse.
    format!(
        "WITH locked AS (SELECT l.relation AS oid FROM pg_locks l \
           WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
             AND l.pid <> pg_backend_pid() \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         unreadable AS (SELECT oid FROM locked \
           UNION SELECT r.ev_class FROM pg_rewrite r JOIN pg_depend d \
             ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
             AND d.refclassid = 'pg_class'::regclass WHERE d.refobjid IN (SELECT oid FROM locked) \
           UNION SELECT p.polrelid FROM pg_policy p JOIN pg_depend d \
             ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid \
             AND d.refclassid = 'pg_class'::regclass WHERE d.refobjid IN (SELECT oid FROM locked)) \
         {}",
        rows.join(" UNION ALL ")
    )
}

/// The condition, on a relation `c`, that its code can be deparsed without waiting.
const READABLE: &str = "c.oid NOT IN (SELECT oid FROM unreadable)";

async fn read_source(pg: &Postgres, label: &str) -> Result<Read, String> {
    let spec = crate::roles::own_connection(
        pg,
        &pg.user,
        pg.password.clone(),
        "belay:catalog",
        LOAD_TIMEOUT,
        label,
    );
    let mut spec = spec;
    spec.params
        .push(("lock_timeout".to_owned(), LOCK_TIMEOUT.to_owned()));
    let rows = belay_pg::simple_query(&spec, &catalog_sql()).await?;
    Ok(source_from_rows(rows))
}

/// How long the read waits for a lock taken after it looked at which are held.
const LOCK_TIMEOUT: &str = "2s";

/// What a read gave: the catalog, and the relations whose code it could not read then.
struct Read {
    source: Source,
    unreadable: Vec<(String, String)>,
}

/// `read` with the code of each relation it could not read taken from `previous`, the last
/// read: what a relation locked by an open transaction is until that transaction ends (a
/// change through belay is unsettled meanwhile; one without it is seen at a later read, as
/// any). A relation `previous` does not know is `unknown`.
fn carry_over(read: Read, previous: Option<&Source>) -> Source {
    let Read {
        mut source,
        unreadable,
    } = read;
    for (schema, name) in unreadable {
        let same = |o: &&ObjectSource| o.schema == schema && o.name == name;
        let old = previous
            .and_then(|p| p.relations.iter().find(same))
            .cloned();
        let at = source.relations.iter().position(|o| same(&o));
        match (old, at) {
            (Some(old), Some(at)) => source.relations[at] = old,
            (Some(old), None) => source.relations.push(old),
            (None, at) => {
                let piece = Stored {
                    label: format!("`{schema}.{name}`"),
                    what: StoredCode::Unreadable(
                        "another transaction holds it locked (ACCESS EXCLUSIVE: a schema change not yet committed, LOCK TABLE, VACUUM FULL), so belay cannot read its code until that transaction ends; send this again then"
                            .to_owned(),
                    ),
                };
                let at = at.unwrap_or_else(|| {
                    source.relations.push(ObjectSource {
                        schema: schema.clone(),
                        name: name.clone(),
                        on_read: Vec::new(),
                        on_write: Vec::new(),
                    });
                    source.relations.len() - 1
                });
                let o = &mut source.relations[at];
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
        }
    }
    source
}

/// Builds the `Source` from the tagged rows of `catalog_sql`.
fn source_from_rows(rows: Vec<Vec<Option<String>>>) -> Read {
    let mut unreadable = Vec::new();
    let mut source = Source::default();
    let mut functions: HashMap<(String, String), usize> = HashMap::new();
    let mut relations: HashMap<(String, String), usize> = HashMap::new();
    let mut types: HashMap<(String, String), usize> = HashMap::new();
    let mut operators: HashMap<(String, String), usize> = HashMap::new();
    fn object<'a>(
        list: &'a mut Vec<ObjectSource>,
        index: &mut HashMap<(String, String), usize>,
        schema: &str,
        name: &str,
    ) -> &'a mut ObjectSource {
        let at = *index
            .entry((schema.to_owned(), name.to_owned()))
            .or_insert_with(|| {
                list.push(ObjectSource {
                    schema: schema.to_owned(),
                    name: name.to_owned(),
                    on_read: Vec::new(),
                    on_write: Vec::new(),
                });
                list.len() - 1
            });
        &mut list[at]
    }
    let text = |sql: String| StoredCode::Text(sql);
    for row in rows {
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (kind, schema, name) = (col(0), col(1), col(2));
        let qualified = format!("`{schema}.{name}`");
        match kind.as_str() {
            "f" => {
                functions.insert((schema.clone(), name.clone()), source.functions.len());
                source.functions.push(FunctionSource {
                    schema,
                    name,
                    language: col(3),
                    volatility: col(4).chars().next().unwrap_or('v'),
                    extension: row.get(5).cloned().flatten(),
                    definition: row.get(6).cloned().flatten(),
                    runs: Vec::new(),
                });
            }
            "a" => {
                if let Some(&at) = functions.get(&(schema, name)) {
                    source.functions[at].runs.push((col(3), col(4)));
                }
            }
            "b" => {
                if col(3) == "true" {
                    source.stable_builtins.push(name.clone());
                }
                source.builtins.push(name);
            }
            "view" => {
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                let label = format!("view {qualified}");
                o.on_read.push(Stored {
                    label: label.clone(),
                    what: text(col(3)),
                });
                o.on_write.push(Stored {
                    label,
                    what: StoredCode::WritesThrough(col(3)),
                });
            }
            "rule" | "trigger" => {
                let piece = Stored {
                    label: format!("{kind} `{}` of {qualified}", col(5)),
                    what: text(col(3)),
                };
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                if col(4) == "r" {
                    o.on_read.push(piece);
                } else {
                    o.on_write.push(piece);
                }
            }
            "check" | "default" => {
                let what = if kind == "check" {
                    "check constraint"
                } else {
                    "default of column"
                };
                object(&mut source.relations, &mut relations, &schema, &name)
                    .on_write
                    .push(Stored {
                        label: format!("{what} `{}` of {qualified}", col(5)),
                        what: text(format!("SELECT {}", col(3))),
                    });
            }
            "cascade" => object(&mut source.relations, &mut relations, &schema, &name)
                .on_write
                .push(Stored {
                    label: if col(5) == "inheritance" {
                        format!("`{}.{}`, a child of {qualified}", col(3), col(4))
                    } else {
                        format!("foreign key `{}` to {qualified}", col(5))
                    },
                    what: StoredCode::Writes(col(3), col(4)),
                }),
            "policy" => {
                let label = format!("policy `{}` of {qualified}", col(5));
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                for expr in [row.get(3), row.get(6)].into_iter().flatten().flatten() {
                    let piece = Stored {
                        label: label.clone(),
                        what: text(format!("SELECT {expr}")),
                    };
                    if matches!(col(4).as_str(), "r" | "*") {
                        o.on_read.push(piece.clone());
                    }
                    o.on_write.push(piece);
                }
            }
            "index" => {
                let label = format!("index `{}` of {qualified}", col(5));
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                for expr in [row.get(3), row.get(6)].into_iter().flatten().flatten() {
                    o.on_write.push(Stored {
                        label: label.clone(),
                        what: text(format!("SELECT {expr}")),
                    });
                }
            }
            "column" => {
                let piece = Stored {
                    label: format!("column `{}` of {qualified}", col(5)),
                    what: StoredCode::Type(col(3), col(4)),
                };
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
            "event" => source.event_triggers.push(Stored {
                label: format!("event trigger `{name}`"),
                what: StoredCode::Call(col(3), col(4)),
            }),
            "typeop" => object(&mut source.types, &mut types, &schema, &name)
                .on_read
                .push(Stored {
                    label: format!("an operator on type {qualified}"),
                    what: StoredCode::Call(col(3), col(4)),
                }),
            "typefn" | "cast" => {
                let piece = Stored {
                    label: format!(
                        "{} of type {qualified}",
                        if kind == "cast" {
                            "a cast"
                        } else {
                            "an I/O function"
                        }
                    ),
                    what: StoredCode::Call(col(3), col(4)),
                };
                let o = object(&mut source.types, &mut types, &schema, &name);
                if kind == "cast" || col(5) == "r" {
                    o.on_read.push(piece.clone());
                }
                o.on_write.push(piece);
            }
            "domain" => object(&mut source.types, &mut types, &schema, &name)
                .on_write
                .push(Stored {
                    label: format!("check `{}` of domain {qualified}", col(5)),
                    what: text(format!("SELECT {}", col(3))),
                }),
            "base" => {
                let piece = Stored {
                    label: format!("type {qualified}"),
                    what: StoredCode::Type(col(3), col(4)),
                };
                let o = object(&mut source.types, &mut types, &schema, &name);
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
            "operator" => object(&mut source.operators, &mut operators, &schema, &name)
                .on_read
                .push(Stored {
                    label: format!("operator {qualified}"),
                    what: StoredCode::Call(col(3), col(4)),
                }),
            "unreadable" => unreadable.push((schema, name)),
            _ => {}
        }
    }
    Read { source, unreadable }
}
