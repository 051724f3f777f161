//! What a database's own code does: its user-defined functions, views, triggers, rules,
//! policies, constraints, defaults, operators and types, each classified by the same
//! classifier, and the resolution of a statement's names against them.
//!
//! The classifier alone cannot know what `SELECT f()` does, or that an INSERT fires a trigger
//! that drops a table: only the catalog says. A `Catalog` is built from what the caller read
//! from the catalog (`Source`, no IO here) and answers, for one classified statement, the
//! class of everything it may run. A function is the class of its body; a view, of its
//! query; a write to a table, of its triggers, rules, constraints, defaults, index
//! expressions and policies; a use of a type, of its casts, domain checks and I/O
//! functions; an operator, of its functions. Code that calls other code is at least as
//! dangerous as what it calls, through any chain (a fixpoint over the whole catalog).
//!
//! Fail closed: a call to a name that is neither a built-in nor a function of the catalog
//! is `unknown`, as is code in a language belay cannot read (except the declared-IMMUTABLE or
//! STABLE native functions of an installed extension), and anything that the caller says is
//! being changed (`Unsettled`) is `unknown` until the catalog is read again.

use std::collections::{BTreeSet, HashMap};

use belay_core::Class;

use crate::analysis::{Access, Flag, ObjectKind, Statement};
use crate::functions::{self, Effect};
use crate::settings::SettingChange;
use crate::{analyze_code, Limits};

/// What the caller read from one database's catalog.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Functions, procedures and aggregates outside `pg_catalog` and `information_schema`
    /// (and those of extensions wherever they are).
    pub functions: Vec<FunctionSource>,
    /// The names of the functions in `pg_catalog`.
    pub builtins: Vec<String>,
    /// Those of them whose every overload is declared IMMUTABLE or STABLE: built-ins so
    /// declared change nothing in the database.
    pub stable_builtins: Vec<String>,
    /// Relations with stored code: views, and tables with triggers, rules, constraints or
    /// defaults that call functions, policies, indexes on expressions, columns of user types.
    pub relations: Vec<ObjectSource>,
    /// User-defined operators.
    pub operators: Vec<ObjectSource>,
    /// User-defined types (domains, composite, enum, range, base types and their arrays).
    pub types: Vec<ObjectSource>,
    /// Event triggers: code that runs on every schema change.
    pub event_triggers: Vec<Stored>,
}

/// One function.
#[derive(Debug, Clone)]
pub struct FunctionSource {
    pub schema: String,
    pub name: String,
    pub language: String,
    /// `provolatile`: `i`, `s` or `v`.
    pub volatility: char,
    /// The extension it belongs to, if any.
    pub extension: Option<String>,
    /// `pg_get_functiondef` for SQL and PL/pgSQL functions; for `internal` ones, the symbol
    /// of the server's they run (`prosrc`).
    pub definition: Option<String>,
    /// Other functions it runs (an aggregate's support functions): `(schema, name)`.
    pub runs: Vec<(String, String)>,
}

/// A relation, operator or type, with the code that runs when it is read and when it is
/// written (for an operator or a type, when it is used at all: both).
#[derive(Debug, Clone)]
pub struct ObjectSource {
    pub schema: String,
    pub name: String,
    pub on_read: Vec<Stored>,
    pub on_write: Vec<Stored>,
}

/// One piece of stored code, with what a person would call it (`trigger audit of
/// public.orders`).
#[derive(Debug, Clone)]
pub struct Stored {
    pub label: String,
    pub what: StoredCode,
}

/// What a piece of stored code is.
#[derive(Debug, Clone)]
pub enum StoredCode {
    /// SQL text for `analyze_code`: a rule, a trigger, a view's query, `SELECT expr`.
    Text(String),
    /// A call of the function `(schema, name)`.
    Call(String, String),
    /// A use of the type `(schema, name)` (a column's type, a domain's base).
    Type(String, String),
    /// A write to the relation `(schema, name)` (a foreign key's cascade).
    Writes(String, String),
    /// A view's query, written through: a write to the view writes what it reads.
    WritesThrough(String),
    /// Code that could not be read, and why: `unknown`.
    Unreadable(String),
}

/// Names the caller knows are being changed, by unqualified name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsettled {
    /// Changed by others (or by changes not yet read back): `unknown`.
    pub names: BTreeSet<String>,
    /// Anything may be changing (an extension, code whose changes cannot be named).
    pub anything: bool,
    /// Changed by the caller's own open transaction, with the class of the code it gave
    /// them (which only it can see yet).
    pub own: std::collections::BTreeMap<String, (Class, String)>,
}

impl Unsettled {
    pub fn is_empty(&self) -> bool {
        !self.anything && self.names.is_empty() && self.own.is_empty()
    }

    fn contains(&self, name: &str) -> bool {
        self.anything || self.names.contains(name)
    }
}

type NodeId = usize;

#[derive(Debug)]
struct Node {
    /// Unqualified name of the object, for `Unsettled`.
    name: String,
    class: Class,
    reason: String,
    /// What it runs, each with what the code that runs it is called (empty: the same).
    deps: Vec<(NodeId, String)>,
    /// Capped or pinned settings its own code changes (`SET work_mem`, `set_config`).
    settings: Vec<SettingChange>,
    /// It, or code it runs, changes such a setting.
    reaches_settings: bool,
}

/// One database's code, classified.
#[derive(Debug, Default)]
pub struct Catalog {
    nodes: Vec<Node>,
    /// Function nodes by name: `(schema, node)`.
    functions: HashMap<String, Vec<(String, NodeId)>>,
    builtins: std::collections::HashSet<String>,
    stable_builtins: std::collections::HashSet<String>,
    /// Relation nodes by name: `(schema, on read, on write)`.
    relations: HashMap<String, Vec<(String, NodeId, NodeId)>>,
    operators: HashMap<String, Vec<(String, NodeId)>>,
    types: HashMap<String, Vec<(String, NodeId, NodeId)>>,
    /// The event triggers, as one node.
    event_triggers: Option<NodeId>,
    /// The analysis of each piece of code by its text, for the next build.
    analyses: HashMap<String, Statement>,
}

/// What resolving a statement against a catalog found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub class: Class,
    pub reason: String,
    /// Catalog code contributed (`Flag::CatalogCode`).
    pub catalog_code: bool,
    /// A name that is neither a built-in nor in the catalog (`Flag::UnknownFunction`).
    pub unresolved: bool,
    /// The statement reaches something `Unsettled` names (and is `unknown` for it).
    pub unsettled: bool,
    /// Capped or pinned settings the code it runs changes, for the caller to check as it
    /// checks the statement's own (`Statement::settings`).
    pub settings: Vec<SettingChange>,
}

const MAX_REASON: usize = 600;

/// The server's functions that `CREATE TYPE ... AS RANGE` gives each range type and its
/// multirange, as `internal` functions of the type's schema: they only build a value.
const SERVER_CONSTRUCTORS: &[&str] = &[
    "range_constructor2",
    "range_constructor3",
    "multirange_constructor0",
    "multirange_constructor1",
    "multirange_constructor2",
];

impl Catalog {
    /// Classifies everything in `source`.
    pub fn build(source: &Source, limits: &Limits) -> Catalog {
        Catalog::rebuild(source, limits, None)
    }

    /// Classifies everything in `source`, reusing the analyses of `previous` for code whose
    /// text has not changed (reading a catalog again after one change parses only that).
    pub fn rebuild(source: &Source, limits: &Limits, previous: Option<&Catalog>) -> Catalog {
        let mut catalog = Catalog {
            builtins: source.builtins.iter().cloned().collect(),
            stable_builtins: source.stable_builtins.iter().cloned().collect(),
            ..Catalog::default()
        };
        // Nodes first, so that code can refer to any of them by name.
        for f in &source.functions {
            let id = catalog.node(&f.name);
            catalog
                .functions
                .entry(f.name.clone())
                .or_default()
                .push((f.schema.clone(), id));
        }
        for r in &source.relations {
            let (read, write) = (catalog.node(&r.name), catalog.node(&r.name));
            catalog.relations.entry(r.name.clone()).or_default().push((
                r.schema.clone(),
                read,
                write,
            ));
        }
        for o in &source.operators {
            let id = catalog.node(&o.name);
            catalog
                .operators
                .entry(o.name.clone())
                .or_default()
                .push((o.schema.clone(), id));
        }
        for t in &source.types {
            let (read, write) = (catalog.node(&t.name), catalog.node(&t.name));
            catalog
                .types
                .entry(t.name.clone())
                .or_default()
                .push((t.schema.clone(), read, write));
        }
        if !source.event_triggers.is_empty() {
            catalog.event_triggers = Some(catalog.node(""));
        }
        // Then what each one does directly, and what it depends on.
        if let Some(previous) = previous {
            catalog.analyses = previous.analyses.clone();
        }
        let mut id = 0;
        for f in &source.functions {
            let label = format!("function `{}.{}`", f.schema, f.name);
            catalog.define_function(id, &label, f, limits);
            id += 1;
        }
        for r in &source.relations {
            catalog.define(id, &r.on_read, limits);
            // A write reads too (WHERE, RETURNING, policies' USING).
            catalog.define(id + 1, &r.on_write, limits);
            catalog.nodes[id + 1].deps.push((id, String::new()));
            id += 2;
        }
        for o in &source.operators {
            let pieces: Vec<Stored> = o.on_read.iter().chain(&o.on_write).cloned().collect();
            catalog.define(id, &pieces, limits);
            id += 1;
        }
        for t in &source.types {
            catalog.define(id, &t.on_read, limits);
            catalog.define(id + 1, &t.on_write, limits);
            id += 2;
        }
        if let Some(events) = catalog.event_triggers {
            catalog.define(events, &source.event_triggers, limits);
        }
        catalog.settle();
        // Keep only what this catalog still holds.
        let mut texts = std::collections::HashSet::new();
        for piece in source
            .relations
            .iter()
            .chain(&source.operators)
            .chain(&source.types)
            .flat_map(|o| o.on_read.iter().chain(&o.on_write))
            .chain(&source.event_triggers)
        {
            if let StoredCode::Text(t) | StoredCode::WritesThrough(t) = &piece.what {
                texts.insert(t.as_str());
            }
        }
        texts.extend(
            source
                .functions
                .iter()
                .filter_map(|f| f.definition.as_deref()),
        );
        catalog.analyses.retain(|t, _| texts.contains(t.as_str()));
        catalog
    }

    /// The analysis of stored code `text`, from the memo when the text was seen before.
    fn analysis(&mut self, text: &str, limits: &Limits) -> Statement {
        if let Some(known) = self.analyses.get(text) {
            return known.clone();
        }
        let statement = analyze_code(text, limits);
        self.analyses.insert(text.to_owned(), statement.clone());
        statement
    }

    /// How many objects with code the catalog holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&mut self, name: &str) -> NodeId {
        self.nodes.push(Node {
            name: name.to_owned(),
            class: Class::Read,
            reason: String::new(),
            deps: Vec::new(),
            settings: Vec::new(),
            reaches_settings: false,
        });
        self.nodes.len() - 1
    }

    fn raise(&mut self, id: NodeId, class: Class, reason: String) {
        let node = &mut self.nodes[id];
        if class > node.class || node.reason.is_empty() {
            node.class = class.max(node.class);
            node.reason = clip(reason);
        }
    }

    fn define_function(&mut self, id: NodeId, label: &str, f: &FunctionSource, limits: &Limits) {
        match (&f.definition, f.language.as_str()) {
            (Some(text), "sql" | "plpgsql") => {
                let piece = Stored {
                    label: label.to_owned(),
                    what: StoredCode::Text(text.clone()),
                };
                self.define(id, std::slice::from_ref(&piece), limits);
            }
            (Some(symbol), "internal")
                if SERVER_CONSTRUCTORS.contains(&symbol.as_str()) && f.volatility != 'v' =>
            {
                // What `CREATE TYPE ... AS RANGE` makes: the server's own constructors.
                self.raise(
                    id,
                    Class::Read,
                    format!("{label} is the server's own constructor `{symbol}` of a range or multirange type"),
                );
            }
            (_, "c" | "internal") if f.extension.is_some() && f.volatility != 'v' => {
                // Native code of an installed extension, declared free of side effects; the
                // extension was installed by someone trusted with the server.
                self.raise(
                    id,
                    Class::Read,
                    format!(
                        "{label} is native code of extension `{}` declared {}",
                        f.extension.as_deref().unwrap_or_default(),
                        if f.volatility == 'i' { "IMMUTABLE" } else { "STABLE" }
                    ),
                );
            }
            (_, language) => self.raise(
                id,
                Class::Unknown,
                format!("{label} is written in `{language}`, which belay cannot read, so it may do anything"),
            ),
        }
        let runs: Vec<Stored> = f
            .runs
            .iter()
            .map(|(schema, name)| Stored {
                label: label.to_owned(),
                what: StoredCode::Call(schema.clone(), name.clone()),
            })
            .collect();
        self.define(id, &runs, limits);
    }

    /// Adds what `pieces` do to node `id`: their own class, and edges to what they name.
    fn define(&mut self, id: NodeId, pieces: &[Stored], limits: &Limits) {
        for piece in pieces {
            match &piece.what {
                StoredCode::Text(text) => {
                    let statement = self.analysis(text, limits);
                    self.nodes[id]
                        .settings
                        .extend(statement.settings.iter().cloned());
                    let (class, reason) = statement
                        .code
                        .base
                        .clone()
                        .unwrap_or((statement.class, statement.reason.clone()));
                    self.raise(id, class, format!("{}: {reason}", piece.label));
                    let mut found = Found::default();
                    self.names(&statement, &mut found);
                    for (class, reason) in found.missing {
                        self.raise(id, class, format!("{}: {reason}", piece.label));
                    }
                    let label = &piece.label;
                    self.nodes[id]
                        .deps
                        .extend(found.nodes.into_iter().map(|(n, _)| (n, label.clone())));
                }
                StoredCode::Call(schema, name) => {
                    match functions::effect(Some(schema), name) {
                        Effect::ReadOnly => continue,
                        Effect::Known(class, _, why) => {
                            self.raise(id, class, format!("{}: `{name}` {why}", piece.label));
                            continue;
                        }
                        Effect::SetConfig | Effect::RunsSql(_) => {
                            self.raise(
                                id,
                                Class::Unknown,
                                format!("{}: `{name}` runs SQL or changes settings it is given at run time", piece.label),
                            );
                            continue;
                        }
                        Effect::Unknown => {}
                    }
                    let mut found = Found::default();
                    self.call(Some(schema), name, false, &mut found);
                    for (class, reason) in found.missing {
                        self.raise(id, class, format!("{}: {reason}", piece.label));
                    }
                    let label = &piece.label;
                    self.nodes[id]
                        .deps
                        .extend(found.nodes.into_iter().map(|(n, _)| (n, label.clone())));
                }
                StoredCode::WritesThrough(text) => {
                    let statement = self.analysis(text, limits);
                    let mut written = Vec::new();
                    for relation in &statement.relations {
                        let (schema, name) = split(&relation.name);
                        for (s, _, write) in self.relations.get(name).into_iter().flatten() {
                            if schema.is_none_or(|want| same_schema(want, s)) {
                                written.push((*write, piece.label.clone()));
                            }
                        }
                    }
                    self.nodes[id].deps.extend(written);
                }
                StoredCode::Type(schema, name) => {
                    for (s, read, write) in self.types.get(name).into_iter().flatten() {
                        if s == schema {
                            let label = piece.label.clone();
                            self.nodes[id]
                                .deps
                                .extend([(*read, label.clone()), (*write, label)]);
                        }
                    }
                }
                StoredCode::Writes(schema, name) => {
                    for (s, _, write) in self.relations.get(name).into_iter().flatten() {
                        if s == schema {
                            self.nodes[id].deps.push((*write, piece.label.clone()));
                        }
                    }
                }
                StoredCode::Unreadable(why) => {
                    self.raise(id, Class::Unknown, format!("{}: {why}", piece.label));
                }
            }
            if self.nodes[id].reason.is_empty() {
                self.nodes[id].reason = format!("{} only reads", piece.label);
            }
        }
    }

    /// Raises every node to the class of what it depends on, until nothing changes.
    fn settle(&mut self) {
        // A worklist over the reversed edges: each node is raised at most once per class, so
        // the work is bounded by the edges times the classes, whatever the order.
        let mut dependents: Vec<Vec<(NodeId, usize)>> = vec![Vec::new(); self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for (edge, (dep, _)) in node.deps.iter().enumerate() {
                dependents[*dep].push((id, edge));
            }
        }
        let mut work: Vec<NodeId> = (0..self.nodes.len()).collect();
        while let Some(dep) = work.pop() {
            let (class, reason) = (self.nodes[dep].class, self.nodes[dep].reason.clone());
            for &(id, edge) in &dependents[dep] {
                if class <= self.nodes[id].class {
                    continue;
                }
                let label = &self.nodes[id].deps[edge].1;
                let reason = if label.is_empty() || reason.starts_with(label.as_str()) {
                    reason.clone()
                } else {
                    format!("{label}: {reason}")
                };
                let node = &mut self.nodes[id];
                node.class = class;
                node.reason = clip(reason);
                work.push(id);
            }
        }
        // Which nodes reach a setting change, the same way.
        let mut work: Vec<NodeId> = (0..self.nodes.len())
            .filter(|id| !self.nodes[*id].settings.is_empty())
            .collect();
        for id in &work {
            self.nodes[*id].reaches_settings = true;
        }
        while let Some(dep) = work.pop() {
            for &(id, _) in &dependents[dep] {
                if !self.nodes[id].reaches_settings {
                    self.nodes[id].reaches_settings = true;
                    work.push(id);
                }
            }
        }
    }

    /// The nodes `statement` reaches by name, and the names it cannot resolve.
    fn names(&self, statement: &Statement, found: &mut Found) {
        if let Some(events) = self.event_triggers {
            let ddl = statement
                .code
                .base
                .as_ref()
                .is_some_and(|(class, _)| *class >= Class::Ddl);
            if ddl || statement.code.changes.is_some() {
                found
                    .nodes
                    .push((events, "the database's event triggers".to_owned()));
            }
        }
        for (schema, name, known) in &statement.code.calls {
            self.call(schema.as_deref(), name, *known, found);
        }
        for (schema, symbol) in &statement.code.operators {
            for (s, id) in self.operators.get(symbol).into_iter().flatten() {
                if schema.as_deref().is_none_or(|want| same_schema(want, s)) {
                    found.nodes.push((*id, format!("operator `{s}.{symbol}`")));
                }
            }
        }
        for (schema, name) in &statement.code.types {
            for (s, read, write) in self.types.get(name).into_iter().flatten() {
                if schema.as_deref().is_none_or(|want| same_schema(want, s)) {
                    found.nodes.push((*read, format!("type `{s}.{name}`")));
                    found.nodes.push((*write, format!("type `{s}.{name}`")));
                }
            }
        }
        for relation in &statement.relations {
            if !runs_code_of(statement, relation) {
                continue;
            }
            let (schema, name) = split(&relation.name);
            for (s, read, write) in self.relations.get(name).into_iter().flatten() {
                if schema.is_none_or(|want| same_schema(want, s)) {
                    // A dropped relation runs nothing (`runs_code_of`).
                    let id = match relation.access {
                        Access::Read => *read,
                        Access::Write | Access::Alter | Access::Drop => *write,
                    };
                    found.nodes.push((id, format!("`{s}.{name}`")));
                }
            }
        }
    }

    fn call(&self, schema: Option<&str>, name: &str, known: bool, found: &mut Found) {
        let mut any = false;
        if schema != Some("pg_catalog") {
            for (s, id) in self.functions.get(name).into_iter().flatten() {
                if schema.is_none_or(|want| same_schema(want, s)) {
                    found.nodes.push((*id, format!("function `{s}.{name}`")));
                    any = true;
                }
            }
        }
        if known {
            return;
        }
        let builtin = schema.is_none_or(|s| s == "pg_catalog") && self.builtins.contains(name);
        let shown = match schema {
            Some(s) => format!("{s}.{name}"),
            None => name.to_owned(),
        };
        if builtin && self.stable_builtins.contains(name) {
            // Declared IMMUTABLE or STABLE in every overload: a built-in so declared reads.
        } else if builtin {
            found.missing.push((
                Class::Write,
                format!("`{shown}` is a built-in function belay does not know to be read-only, so it may change anything"),
            ));
        } else if !any {
            found.unresolved = true;
            found.unresolved_names.push(name.to_owned());
            found.missing.push((
                Class::Unknown,
                format!("`{shown}` is neither a built-in function nor one of this database's (as of belay's last look at its catalog), so belay cannot tell what it does"),
            ));
        }
    }

    /// The class of everything `statement` may run, given what is being changed. `None` for
    /// a statement the classifier could not analyse (it is `unknown` already).
    pub fn resolve(&self, statement: &Statement, unsettled: &Unsettled) -> Option<Resolution> {
        let (class, reason) = statement.code.base.clone()?;
        let mut out = Resolution {
            class,
            reason,
            catalog_code: false,
            unresolved: false,
            unsettled: false,
            settings: Vec::new(),
        };
        let raise = |out: &mut Resolution, class: Class, reason: String| {
            if class > out.class {
                out.class = class;
                out.reason = reason;
            }
        };
        let mut found = Found::default();
        self.names(statement, &mut found);
        // A function the caller's own open transaction defines is not in the catalog yet;
        // what that transaction gave it counts instead (below).
        let own_only = !found.unresolved_names.is_empty()
            && found
                .unresolved_names
                .iter()
                .all(|n| unsettled.own.contains_key(n));
        out.unresolved = found.unresolved && !own_only;
        for (class, reason) in found.missing {
            if own_only && class == Class::Unknown {
                continue;
            }
            raise(&mut out, class, reason);
        }
        for (id, what) in &found.nodes {
            let node = &self.nodes[*id];
            out.catalog_code = true;
            raise(&mut out, node.class, format!("{what}: {}", node.reason));
        }
        if found
            .nodes
            .iter()
            .any(|(id, _)| self.nodes[*id].reaches_settings)
        {
            out.settings = self.settings_reached(found.nodes.iter().map(|(id, _)| *id));
        }
        if !unsettled.is_empty() {
            let mut reached: Vec<String> = statement
                .code
                .calls
                .iter()
                .map(|(_, name, _)| name)
                .chain(statement.code.operators.iter().map(|(_, s)| s))
                .chain(statement.code.types.iter().map(|(_, t)| t))
                .map(String::as_str)
                .chain(
                    statement
                        .relations
                        .iter()
                        .filter(|r| runs_code_of(statement, r))
                        .map(|r| split(&r.name).1),
                )
                .map(str::to_owned)
                .collect();
            reached.extend(self.reachable(found.nodes.iter().map(|(id, _)| *id)));
            if let Some(name) = reached.iter().find(|n| unsettled.contains(n)) {
                out.unresolved = true;
                out.unsettled = true;
                raise(
                    &mut out,
                    Class::Unknown,
                    format!("`{name}` is being changed by another statement whose change belay has not yet read from the catalog, so belay cannot tell what it does now; send this again once that change is committed"),
                );
            }
            for name in &reached {
                if let Some((class, reason)) = unsettled.own.get(name) {
                    raise(
                        &mut out,
                        *class,
                        format!("`{name}`, as this transaction defines it: {reason}"),
                    );
                }
            }
        }
        Some(out)
    }

    /// The setting changes of the nodes reachable from `start` (at most 64).
    fn settings_reached(&self, start: impl Iterator<Item = NodeId>) -> Vec<SettingChange> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = start.collect();
        let mut settings: Vec<SettingChange> = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) || !self.nodes[id].reaches_settings {
                continue;
            }
            let node = &self.nodes[id];
            for change in &node.settings {
                if settings.len() < 64 && !settings.contains(change) {
                    settings.push(change.clone());
                }
            }
            stack.extend(node.deps.iter().map(|(d, _)| *d).filter(|d| !seen[*d]));
        }
        settings
    }

    /// The names of the nodes reachable from `start`.
    fn reachable(&self, start: impl Iterator<Item = NodeId>) -> Vec<String> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = start.collect();
        let mut names = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            let node = &self.nodes[id];
            names.push(node.name.clone());
            stack.extend(node.deps.iter().map(|(d, _)| *d).filter(|d| !seen[*d]));
        }
        names
    }
}

#[derive(Default)]
struct Found {
    nodes: Vec<(NodeId, String)>,
    missing: Vec<(Class, String)>,
    /// The names behind `missing`'s `unknown` entries, in order.
    unresolved_names: Vec<String>,
    unresolved: bool,
}

/// Whether a name qualified with `want` may be an object of schema `have`: `pg_temp` is the
/// session's own temporary schema, `pg_temp_N` in the catalog.
/// Whether running `statement` may run code attached to `relation` (its triggers, rules,
/// defaults, policies, a view's query, index expressions). Dropping a relation runs none of
/// it (event triggers are the database's, counted apart), and neither does creating one:
/// the new relation has no code but what the statement gives it, in its own expressions,
/// and an old one of the same name (in another schema, or another session's uncommitted
/// change) is not run. So a name being changed elsewhere does not make either unknown.
fn runs_code_of(statement: &Statement, relation: &crate::Relation) -> bool {
    if relation.object != ObjectKind::Relation || relation.access == Access::Drop {
        return false;
    }
    let creates = matches!(
        statement.kind.as_str(),
        "CREATE TABLE"
            | "CREATE TABLE AS"
            | "SELECT INTO"
            | "CREATE VIEW"
            | "CREATE MATERIALIZED VIEW"
            | "CREATE SEQUENCE"
            | "CREATE FOREIGN TABLE"
    );
    !(creates && relation.access == Access::Alter)
}

fn same_schema(want: &str, have: &str) -> bool {
    want == have || (want == "pg_temp" && have.starts_with("pg_temp_"))
}

/// `schema.name` (or `db.schema.name`) into the schema, if any, and the name.
fn split(name: &str) -> (Option<&str>, &str) {
    let mut parts = name.rsplitn(3, '.');
    let last = parts.next().unwrap_or(name);
    (parts.next(), last)
}

fn clip(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

impl Flag {
    /// The flags a resolution adds.
    pub(crate) fn from_resolution(r: &Resolution) -> Vec<Flag> {
        let mut flags = Vec::new();
        if r.catalog_code {
            flags.push(Flag::CatalogCode);
        }
        if r.unresolved {
            flags.push(Flag::UnknownFunction);
        }
        flags
    }
}

impl Statement {
    /// This statement with `resolution` applied: its class and reason become those of
    /// everything it runs, and its flags say so.
    pub fn apply(&mut self, resolution: &Resolution) {
        self.class = resolution.class;
        self.reason = resolution.reason.clone();
        self.flags.extend(Flag::from_resolution(resolution));
        self.settings.extend(resolution.settings.iter().cloned());
    }
}
