//! The walk over one statement's parse tree: it visits every node (see `children.rs`), raises
//! the statement's class as it finds reads, writes, calls and nested statements, and collects
//! relations and flags. Statement-specific rules live in `statements.rs`, procedural code in
//! `procedural.rs`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use belay_core::Class;
use pg_query::protobuf::{self as pb, a_const, AExprKind, CmdType, DropBehavior};
use pg_query::{NodeEnum, NodeRef, ParserOptions};

use crate::analysis::{Access, Changes, Code, Flag, ObjectKind, Relation, Statement};
use crate::children::for_each_child;
use crate::functions::{self, Effect};
use crate::settings::{SettingChange, SettingValue};
use crate::{parse, settings, tautology, Limits};

/// How many times code inside code (a function body, a DO block, an `EXECUTE` of a constant
/// string) is parsed again before the walk gives up and calls it `unknown`.
const MAX_CODE_NESTING: usize = 4;

/// The state of the walk over one top-level statement.
pub(crate) struct Walk<'a> {
    limits: &'a Limits,
    /// Statements prepared earlier in the same input, by name, for `EXECUTE`.
    prepared: &'a HashMap<String, Statement>,
    class: Class,
    /// Why `class` is what it is; `None` until something raised it (a plain read).
    reason: Option<String>,
    /// The class and reason without the rule for functions and operators that are not known
    /// built-ins (`Code::base`).
    base_class: Class,
    base_reason: Option<String>,
    /// The names only the catalog can resolve.
    pub(crate) code: Code,
    /// The statement may change the catalog; `nested_changes` when code inside a string does.
    pub(crate) changes: bool,
    nested_changes: bool,
    /// Walking stored code for what it does when it runs (`analyze_code`): creating it is
    /// not counted.
    pub(crate) body_only: bool,
    /// Depth of function bodies being walked as they are defined (not run).
    pub(crate) defining: usize,
    pub(crate) flags: BTreeSet<Flag>,
    relations: BTreeMap<(String, ObjectKind), Access>,
    /// Names of the common table expressions in scope: a reference to one is not a relation.
    ctes: Vec<String>,
    /// Depth of `WITH` bodies being walked: a data-modifying statement there is a writable CTE.
    in_cte: usize,
    depth: usize,
    /// Nesting of code parsed out of strings (function bodies, DO blocks).
    code_nesting: usize,
    /// Text of the statement being walked; PL/pgSQL analysis needs the whole CREATE FUNCTION.
    /// Borrowed from the input for top-level statements, so the common case copies nothing.
    pub(crate) text: Cow<'a, str>,
    pub(crate) unresolved_prepared: Option<String>,
    /// Changes to capped settings, for the caller to check against its limits.
    pub(crate) settings: Vec<SettingChange>,
    /// A `set_config` call decided with its `SELECT ... FROM pg_settings WHERE name = ...`.
    named_set_config: Option<*const pb::FuncCall>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        limits: &'a Limits,
        prepared: &'a HashMap<String, Statement>,
        text: &'a str,
    ) -> Self {
        Walk {
            limits,
            prepared,
            class: Class::Read,
            reason: None,
            base_class: Class::Read,
            base_reason: None,
            code: Code::default(),
            changes: false,
            nested_changes: false,
            body_only: false,
            defining: 0,
            flags: BTreeSet::new(),
            relations: BTreeMap::new(),
            ctes: Vec::new(),
            in_cte: 0,
            depth: 0,
            code_nesting: 0,
            text: Cow::Borrowed(text),
            unresolved_prepared: None,
            settings: Vec::new(),
            named_set_config: None,
        }
    }

    /// Finishes the walk: the statement's class, flags, relations and reason.
    pub(crate) fn finish(self, kind: String, span: std::ops::Range<usize>) -> Statement {
        let reason = self.reason.unwrap_or_else(|| format!("{kind} only reads"));
        let mut code = self.code;
        code.base = Some((
            self.base_class,
            self.base_reason
                .unwrap_or_else(|| format!("{kind} only reads")),
        ));
        if self.nested_changes || kind.contains("EXTENSION") {
            code.changes = Some(Changes::Anything);
        } else if self.changes {
            code.changes = Some(Changes::Named(BTreeSet::new()));
        }
        Statement {
            class: self.class,
            kind,
            relations: self
                .relations
                .into_iter()
                .map(|((name, object), access)| Relation {
                    name,
                    object,
                    access,
                })
                .collect(),
            flags: self.flags,
            reason,
            span,
            unresolved_prepared: self.unresolved_prepared,
            prepared_effect: None,
            settings: self.settings,
            code,
            error_position: None,
            session: None,
        }
    }

    /// Raises the class to `class` if that is more dangerous, with the reason why.
    pub(crate) fn raise(&mut self, class: Class, reason: impl Into<String>) {
        let reason = reason.into();
        if class > self.base_class || (self.base_reason.is_none() && class == self.base_class) {
            self.base_class = class;
            self.base_reason = Some(reason.clone());
        }
        self.raise_code(class, reason);
    }

    /// Raises the class for code only the catalog can tell about (a function or operator
    /// that is not a known built-in), leaving `Code::base` as it is.
    pub(crate) fn raise_code(&mut self, class: Class, reason: impl Into<String>) {
        if class > self.class || (self.reason.is_none() && class == self.class) {
            self.class = class;
            self.reason = Some(reason.into());
        }
    }

    /// The statement may change the catalog (see `Code::changes`). DDL inside a function
    /// body being defined changes nothing until the function is called (and a call that
    /// does is classified by its body then).
    pub(crate) fn changes_catalog(&mut self) {
        if self.defining > 0 {
            return;
        }
        self.changes = true;
        if self.code_nesting > 0 {
            self.nested_changes = true;
        }
    }

    pub(crate) fn flag(&mut self, flag: Flag) {
        self.flags.insert(flag);
    }

    /// Records that the statement touches `name`, keeping the strongest access.
    pub(crate) fn relation(&mut self, name: String, object: ObjectKind, access: Access) {
        let entry = self.relations.entry((name, object)).or_insert(access);
        if access > *entry {
            *entry = access;
        }
    }

    pub(crate) fn range_var(&mut self, rv: &pb::RangeVar, access: Access) {
        let name = range_var_name(rv);
        if access >= Access::Write && is_catalog(rv) {
            self.raise(
                Class::Admin,
                format!(
                    "`{name}` is (or may resolve to) a system catalog; writing to it changes the \
                     server itself (catalog views have rules that call server functions: \
                     UPDATE pg_settings is set_config)"
                ),
            );
        }
        self.relation(name, ObjectKind::Relation, access);
    }

    /// Records a cluster-level object (database, role, tablespace, subscription) the
    /// statement names; an empty name (a clause left out) is nothing.
    pub(crate) fn cluster_object(&mut self, name: &str, object: ObjectKind, access: Access) {
        if !name.is_empty() {
            self.relation(name.to_owned(), object, access);
        }
    }

    /// Visits `node` and everything under it.
    pub(crate) fn visit(&mut self, node: NodeRef<'_>) {
        if self.depth >= self.limits.max_depth {
            self.flag(Flag::TooDeep);
            self.raise(
                Class::Unknown,
                format!(
                    "the statement nests deeper than the limit of {} levels",
                    self.limits.max_depth
                ),
            );
            return;
        }
        self.depth += 1;
        let ctes_before = self.ctes.len();
        if let Some(with) = with_clause(node) {
            self.ctes
                .extend(with.ctes.iter().filter_map(|c| match &c.node {
                    Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.clone()),
                    _ => None,
                }));
        }
        let descend = self.node(node);
        if descend {
            let in_cte = matches!(node, NodeRef::CommonTableExpr(_));
            self.in_cte += usize::from(in_cte);
            for_each_child(node, &mut |child| self.visit(child));
            self.in_cte -= usize::from(in_cte);
        }
        self.ctes.truncate(ctes_before);
        self.depth -= 1;
    }

    /// Applies the rules for one node; returns whether to walk its children.
    fn node(&mut self, node: NodeRef<'_>) -> bool {
        match node {
            NodeRef::RangeVar(rv) => {
                let is_cte = rv.schemaname.is_empty()
                    && rv.catalogname.is_empty()
                    && self.ctes.contains(&rv.relname);
                if !is_cte {
                    self.range_var(rv, Access::Read);
                }
                true
            }
            NodeRef::FuncCall(call) => {
                self.call(call);
                true
            }
            NodeRef::TypeName(t) => {
                let (schema, name) = qualified_name(&t.names);
                if !name.is_empty() {
                    self.code.types.insert((schema, name));
                }
                true
            }
            NodeRef::RoleSpec(r) => {
                // CURRENT_USER, SESSION_USER and CURRENT_ROLE are the session's own role;
                // PUBLIC is every role, granted on objects the statement names itself.
                if pb::RoleSpecType::try_from(r.roletype) == Ok(pb::RoleSpecType::RolespecCstring) {
                    self.cluster_object(&r.rolename, ObjectKind::Role, Access::Read);
                }
                true
            }
            NodeRef::AExpr(e) => {
                self.operator(e);
                true
            }
            // `ORDER BY x USING op` and `x op ANY (SELECT ...)` name operators too.
            NodeRef::SortBy(sort) => {
                if !sort.use_op.is_empty() {
                    self.operator_name(&sort.use_op);
                }
                true
            }
            NodeRef::SubLink(link) => {
                if !link.oper_name.is_empty() {
                    self.operator_name(&link.oper_name);
                }
                true
            }
            NodeRef::SelectStmt(s) => {
                self.select(s);
                true
            }
            NodeRef::InsertStmt(s) => {
                let target = s.relation.as_ref().map(range_var_name).unwrap_or_default();
                self.data_change();
                if let Some(rv) = &s.relation {
                    self.range_var(rv, Access::Write);
                }
                self.raise(Class::Write, format!("INSERT adds rows to `{target}`"));
                true
            }
            NodeRef::UpdateStmt(s) => {
                self.data_change();
                self.row_change(
                    "UPDATE",
                    "changes",
                    s.relation.as_ref(),
                    s.where_clause.as_deref(),
                );
                true
            }
            NodeRef::DeleteStmt(s) => {
                self.data_change();
                self.row_change(
                    "DELETE",
                    "removes",
                    s.relation.as_ref(),
                    s.where_clause.as_deref(),
                );
                true
            }
            NodeRef::MergeStmt(s) => {
                self.data_change();
                self.merge(s);
                true
            }
            NodeRef::ExecuteStmt(s) => {
                self.execute(s);
                true
            }
            NodeRef::ExplainStmt(s) => self.explain(s),
            NodeRef::DoStmt(s) => {
                crate::procedural::do_block(self, s);
                false
            }
            NodeRef::CreateFunctionStmt(s) => {
                self.changes_catalog();
                // Its body (a string, or BEGIN ATOMIC among its children) runs only when
                // it is called.
                self.defining += 1;
                crate::procedural::create_function(self, s);
                for_each_child(node, &mut |child| self.visit(child));
                self.defining -= 1;
                false
            }
            other => {
                if crate::statements::changes_catalog(other) {
                    self.changes_catalog();
                }
                self.cluster_targets(other);
                self.utility(other)
            }
        }
    }

    fn data_change(&mut self) {
        if self.in_cte > 0 {
            self.flag(Flag::WritableCte);
        }
    }

    fn select(&mut self, s: &pb::SelectStmt) {
        if let Some(into) = &s.into_clause {
            let name = into.rel.as_ref().map(range_var_name).unwrap_or_default();
            // Made in the user's schema, whatever its name (see `created`).
            if let Some(rv) = &into.rel {
                self.relation(range_var_name(rv), ObjectKind::Relation, Access::Alter);
            }
            self.flag(Flag::SelectInto);
            self.raise(
                Class::Ddl,
                format!("SELECT INTO creates the table `{name}`"),
            );
        }
        if !s.locking_clause.is_empty() {
            self.flag(Flag::RowLock);
            self.raise(
                Class::Write,
                "SELECT ... FOR UPDATE/SHARE locks the rows it reads, which other sessions wait on",
            );
        }
        if let Some((call, names)) = settings_by_name(s) {
            // The settings are those the WHERE names: each is decided as if named alone.
            let value = call.args.get(1).and_then(|a| const_text(a.node.as_ref()));
            for name in names {
                let value = match &value {
                    Some(v) => SettingValue::Const(v.clone()),
                    None => SettingValue::Computed,
                };
                self.setting(&name, value, "set_config: ");
            }
            self.named_set_config = Some(call as *const pb::FuncCall);
        }
    }

    /// UPDATE and DELETE: every row without a WHERE, or with one that is always true.
    fn row_change(
        &mut self,
        verb: &str,
        does: &str,
        relation: Option<&pb::RangeVar>,
        where_clause: Option<&pb::Node>,
    ) {
        let target = relation.map(range_var_name).unwrap_or_default();
        if let Some(rv) = relation {
            self.range_var(rv, Access::Write);
        }
        match where_clause.and_then(|w| w.node.as_ref()) {
            None => {
                self.flag(Flag::NoWhere);
                self.raise(
                    Class::Destructive,
                    format!("{verb} without WHERE {does} every row of `{target}`"),
                );
            }
            Some(w) if tautology::selects_every_row(w.to_ref()) => {
                self.flag(Flag::TautologicalWhere);
                self.raise(
                    Class::Destructive,
                    format!(
                        "{verb} with a WHERE that is always true {does} every row of `{target}`"
                    ),
                );
            }
            Some(_) => self.raise(
                Class::Write,
                format!("{verb} {does} the rows of `{target}` that match its WHERE"),
            ),
        }
    }

    fn merge(&mut self, s: &pb::MergeStmt) {
        let target = s.relation.as_ref().map(range_var_name).unwrap_or_default();
        if let Some(rv) = &s.relation {
            self.range_var(rv, Access::Write);
        }
        let mut changes_rows = false;
        for clause in &s.merge_when_clauses {
            let Some(NodeEnum::MergeWhenClause(w)) = &clause.node else {
                continue;
            };
            match CmdType::try_from(w.command_type) {
                Ok(CmdType::CmdDelete) => {
                    changes_rows = true;
                    self.raise(
                        Class::Destructive,
                        format!("MERGE ... THEN DELETE removes the rows of `{target}` it matches"),
                    );
                }
                Ok(CmdType::CmdUpdate) => changes_rows = true,
                _ => {}
            }
        }
        let always = s
            .join_condition
            .as_ref()
            .and_then(|j| j.node.as_ref())
            .is_some_and(|j| tautology::selects_every_row(j.to_ref()));
        if always && changes_rows {
            self.flag(Flag::TautologicalWhere);
            self.raise(
                Class::Destructive,
                format!("MERGE with an ON condition that is always true changes every row of `{target}`"),
            );
        }
        self.raise(Class::Write, format!("MERGE changes rows of `{target}`"));
    }

    fn call(&mut self, call: &pb::FuncCall) {
        let (schema, name) = qualified_name(&call.funcname);
        let effect = functions::effect(schema.as_deref(), &name);
        self.code
            .calls
            .insert((schema.clone(), name.clone(), effect != Effect::Unknown));
        match effect {
            Effect::ReadOnly => {}
            Effect::Known(class, flag, why) => {
                self.flag(flag);
                self.raise(class, format!("`{name}` {why}"));
            }
            Effect::SetConfig => self.set_config(call),
            // The three-argument `ts_rewrite` rewrites with tsqueries only.
            Effect::RunsSql(_) if name == "ts_rewrite" && call.args.len() == 3 => {}
            Effect::RunsSql(at) => {
                match call.args.get(at).and_then(|a| const_text(a.node.as_ref())) {
                    Some(sql) => self.nested_sql(&sql, ParserOptions::DEFAULT, &name),
                    None => {
                        self.flag(Flag::DynamicSql);
                        self.raise(
                        Class::Unknown,
                        format!("`{name}` runs SQL text computed at run time, which cannot be analysed"),
                    );
                    }
                }
            }
            Effect::Unknown => {
                self.flag(Flag::UnknownFunction);
                let shown = match &schema {
                    Some(s) => format!("{s}.{name}"),
                    None => name.clone(),
                };
                self.raise_code(
                    Class::Write,
                    format!(
                        "`{shown}` is not a known read-only built-in function; a user-defined \
                         function can change anything"
                    ),
                );
            }
        }
    }

    /// `set_config(name, value, is_local)`, by position or by name: the class of the setting
    /// it names, with the value if it is a constant.
    fn set_config(&mut self, call: &pb::FuncCall) {
        if self.named_set_config == Some(call as *const pb::FuncCall) {
            // Decided with its SELECT (`settings_by_name`).
            return;
        }
        let mut by_position = Vec::new();
        let (mut name, mut value) = (None, None);
        for arg in &call.args {
            match &arg.node {
                Some(NodeEnum::NamedArgExpr(named)) => {
                    let v = named.arg.as_ref().and_then(|a| a.node.as_ref());
                    match named.name.as_str() {
                        "setting_name" => name = Some(v),
                        "new_value" => value = Some(v),
                        _ => {}
                    }
                }
                other => by_position.push(other.as_ref()),
            }
        }
        let name = name.or_else(|| by_position.first().copied());
        let value = value.or_else(|| by_position.get(1).copied());
        match name.and_then(const_text) {
            Some(setting) => {
                let value = match value.and_then(const_text) {
                    Some(v) => SettingValue::Const(v),
                    None => SettingValue::Computed,
                };
                self.setting(&setting, value, "set_config: ");
            }
            None => {
                self.flag(Flag::SafetySetting);
                self.raise(
                    Class::Admin,
                    "set_config with a computed setting name may change any setting",
                );
            }
        }
    }

    /// A statement sets `name` to `value`: raised to the setting's class, and a capped
    /// setting's change recorded for the caller.
    pub(crate) fn setting(&mut self, name: &str, value: SettingValue, prefix: &str) {
        let lower = name.to_ascii_lowercase();
        if let Some((class, why)) = settings::classify(&lower, &value) {
            self.flag(Flag::SafetySetting);
            self.raise(class, format!("{prefix}{why}"));
        }
        if settings::recorded(&lower) {
            self.read_only_lift(SettingChange { name: lower, value });
        }
    }

    /// Records a change of a setting the gateway checks; one that may lift read-only mode is
    /// `privilege` here, and only where the session is pinned read-only to the gateway (which
    /// decides by `Code::base`, where it does not count, and raises it again where it pins).
    pub(crate) fn read_only_lift(&mut self, change: SettingChange) {
        if settings::lifts_read_only(&change) {
            self.flag(Flag::SafetySetting);
            self.raise_code(
                Class::Privilege,
                format!("`{}` off lifts the read-only mode belay sets", change.name),
            );
        }
        self.settings.push(change);
    }

    fn operator(&mut self, e: &pb::AExpr) {
        // Every kind that names an operator: plain, ANY/ALL, and those spelled with keywords
        // (IN, LIKE, DISTINCT, NULLIF, BETWEEN, ...), whose name a user may qualify too.
        if AExprKind::try_from(e.kind).is_err() || e.name.is_empty() {
            return;
        }
        self.operator_name(&e.name);
    }

    /// An operator named by `name` (`=`, `pg_catalog.~~`, `myschema.===`): anything but a
    /// built-in operator is at least `write`, since its function can do anything.
    fn operator_name(&mut self, name: &[pb::Node]) {
        let (schema, symbol) = qualified_name(name);
        let builtin = schema.as_deref().is_none_or(|s| s == "pg_catalog")
            && functions::is_builtin_operator(&symbol);
        self.code.operators.insert((schema, symbol.clone()));
        if !builtin {
            self.flag(Flag::UnknownFunction);
            self.raise_code(
                Class::Write,
                format!("operator `{symbol}` is not a built-in operator; its function can change anything"),
            );
        }
    }

    fn execute(&mut self, s: &pb::ExecuteStmt) {
        match self.prepared.get(&s.name) {
            Some(prepared) => {
                self.flag(Flag::PreparedStatement);
                self.flags.extend(prepared.flags.iter().copied());
                for r in &prepared.relations {
                    self.relation(r.name.clone(), r.object, r.access);
                }
                let reason = format!(
                    "EXECUTE `{}` runs a prepared statement: {}",
                    s.name, prepared.reason
                );
                self.raise(prepared.class, reason);
            }
            None => {
                self.flag(Flag::UnresolvedPrepared);
                self.unresolved_prepared = Some(s.name.clone());
                self.raise(
                    Class::Unknown,
                    format!(
                        "EXECUTE `{}` runs a statement prepared outside this input, which is not known here",
                        s.name
                    ),
                );
            }
        }
    }

    fn explain(&mut self, s: &pb::ExplainStmt) -> bool {
        let analyze = s.options.iter().any(|o| match &o.node {
            Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => def_elem_true(d),
            _ => false,
        });
        if analyze {
            // EXPLAIN ANALYZE runs the statement: it is exactly as dangerous.
            if let Some(q) = s.query.as_ref().and_then(|q| q.node.as_ref()) {
                self.visit(q.to_ref());
            }
            if self.class > Class::Read {
                self.flag(Flag::ExplainAnalyzeWrite);
                let inner = self.reason.clone().unwrap_or_default();
                self.reason = Some(format!("EXPLAIN ANALYZE runs the statement: {inner}"));
            }
        } else if let Some(q) = s.query.as_ref().and_then(|q| q.node.as_ref()) {
            // Plain EXPLAIN only plans; keep what it names, as read.
            let mut inner = Walk::new(self.limits, self.prepared, "");
            inner.text = self.text.clone();
            inner.depth = self.depth;
            inner.visit(q.to_ref());
            if inner.flags.contains(&Flag::TooDeep) {
                self.flag(Flag::TooDeep);
                self.raise(inner.class, inner.reason.unwrap_or_default());
            } else if inner.flags.contains(&Flag::UnknownFunction) {
                // Planning folds calls with constant arguments: a function declared
                // IMMUTABLE or STABLE runs during a plain EXPLAIN, so it is what it calls.
                self.flag(Flag::UnknownFunction);
                self.raise_code(
                    Class::Write,
                    "EXPLAIN plans the statement, and planning runs the functions it calls \
                     with constant arguments; one that is not a known read-only built-in can \
                     change anything",
                );
            }
            for ((name, object), _) in inner.relations {
                self.relation(name, object, Access::Read);
            }
            // What planning may run: the calls, operators and types, and the views it
            // expands (its relations, as read).
            self.code.calls.extend(inner.code.calls);
            self.code.operators.extend(inner.code.operators);
            self.code.types.extend(inner.code.types);
        }
        false
    }

    /// Parses `sql` (code found inside a string) and walks it as part of this statement.
    pub(crate) fn nested_sql(&mut self, sql: &str, mode: ParserOptions, what: &str) {
        if self.code_nesting >= MAX_CODE_NESTING {
            self.flag(Flag::TooDeep);
            self.raise(
                Class::Unknown,
                format!("code nested more than {MAX_CODE_NESTING} levels deep inside strings cannot be analysed"),
            );
            return;
        }
        let parsed = match parse(sql, mode) {
            Ok(parsed) => parsed,
            Err(failure) => {
                self.flag(failure.flag());
                self.raise(
                    Class::Unknown,
                    format!(
                        "the SQL inside {what} cannot be analysed: {}",
                        failure.message()
                    ),
                );
                return;
            }
        };
        self.code_nesting += 1;
        let saved_text = std::mem::take(&mut self.text);
        for raw in &parsed.protobuf.stmts {
            if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                self.text = Cow::Owned(crate::statement_text(sql, raw).to_owned());
                self.visit(node.to_ref());
            }
        }
        self.text = saved_text;
        self.code_nesting -= 1;
    }
}

/// The names of what a catalog-changing statement may change: every identifier under `node`
/// (relations, functions, types, operators; column names and strings too, which is
/// harmless) outside what it only computes or reads. `false` when the tree is deeper than
/// `depth` allows.
pub(crate) fn identifiers(node: NodeRef<'_>, out: &mut BTreeSet<String>, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match node {
        NodeRef::String(s) => {
            out.insert(s.sval.clone());
        }
        NodeRef::RangeVar(rv) => {
            out.insert(rv.relname.clone());
        }
        NodeRef::RenameStmt(r) => {
            out.insert(r.newname.clone());
            out.insert(r.subname.clone());
        }
        // A cast's types are what it changes.
        NodeRef::CreateCastStmt(c) => {
            for t in [&c.sourcetype, &c.targettype].into_iter().flatten() {
                out.insert(qualified_name(&t.names).1);
            }
        }
        // What the statement computes or reads, not what it changes: the functions an
        // expression calls, the types it names, the operators it uses, the relations a view's
        // query or a rule's action reads. (A rule or view is named by its own relation.)
        NodeRef::AExpr(_)
        | NodeRef::FuncCall(_)
        | NodeRef::TypeCast(_)
        | NodeRef::TypeName(_)
        | NodeRef::ColumnRef(_)
        | NodeRef::AConst(_)
        | NodeRef::SelectStmt(_)
        | NodeRef::InsertStmt(_)
        | NodeRef::UpdateStmt(_)
        | NodeRef::DeleteStmt(_)
        | NodeRef::MergeStmt(_) => return true,
        _ => {}
    }
    let mut complete = true;
    for_each_child(node, &mut |child| {
        complete &= identifiers(child, out, depth - 1);
    });
    complete
}

fn with_clause<'n>(node: NodeRef<'n>) -> Option<&'n pb::WithClause> {
    match node {
        NodeRef::SelectStmt(s) => s.with_clause.as_ref(),
        NodeRef::InsertStmt(s) => s.with_clause.as_ref(),
        NodeRef::UpdateStmt(s) => s.with_clause.as_ref(),
        NodeRef::DeleteStmt(s) => s.with_clause.as_ref(),
        NodeRef::MergeStmt(s) => s.with_clause.as_ref(),
        _ => None,
    }
}

/// Whether a relation named as `rv` is or may be a system catalog: in `pg_catalog`,
/// `information_schema` or `pg_toast`, or unqualified with a `pg_` name (`pg_catalog` is
/// searched before the schemas of `search_path`, so `pg_settings` is the catalog's).
fn is_catalog(rv: &pb::RangeVar) -> bool {
    match rv.schemaname.as_str() {
        "" => rv.relname.starts_with("pg_"),
        "pg_catalog" | "information_schema" => true,
        schema => schema.starts_with("pg_toast"),
    }
}

/// `schema.name` as written, without the catalog.
pub(crate) fn range_var_name(rv: &pb::RangeVar) -> String {
    [
        rv.catalogname.as_str(),
        rv.schemaname.as_str(),
        rv.relname.as_str(),
    ]
    .iter()
    .filter(|p| !p.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(".")
}

/// A name written as a list of strings (`schema.function`): the schema if any, and the last
/// part.
pub(crate) fn qualified_name(parts: &[pb::Node]) -> (Option<String>, String) {
    let strings: Vec<&str> = parts
        .iter()
        .filter_map(|p| match &p.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    match strings.as_slice() {
        [] => (None, String::new()),
        [name] => (None, (*name).to_owned()),
        [.., schema, name] => (Some((*schema).to_owned()), (*name).to_owned()),
    }
}

/// The dotted name of a list of strings, such as a DROP object.
pub(crate) fn dotted(parts: &[pb::Node]) -> String {
    parts
        .iter()
        .filter_map(|p| match &p.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The text of a constant: a string, number or boolean literal, possibly cast.
pub(crate) fn const_text(node: Option<&NodeEnum>) -> Option<String> {
    match node? {
        NodeEnum::AConst(c) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            Some(a_const::Val::Ival(i)) => Some(i.ival.to_string()),
            Some(a_const::Val::Fval(f)) => Some(f.fval.clone()),
            Some(a_const::Val::Boolval(b)) => Some(if b.boolval { "on" } else { "off" }.to_owned()),
            _ => None,
        },
        NodeEnum::TypeCast(t) => const_text(t.arg.as_ref().and_then(|a| a.node.as_ref())),
        NodeEnum::String(s) => Some(s.sval.clone()),
        NodeEnum::Integer(i) => Some(i.ival.to_string()),
        NodeEnum::Boolean(b) => Some(if b.boolval { "on" } else { "off" }.to_owned()),
        _ => None,
    }
}

/// `SELECT set_config(name, VALUE, IS_LOCAL) FROM pg_settings WHERE name = 'x'` (or
/// `name IN ('x', ...)`), as pg_dump sends it for a setting the server may not have: the
/// call, and the settings it can change, which are those the WHERE names.
fn settings_by_name(s: &pb::SelectStmt) -> Option<(&pb::FuncCall, Vec<String>)> {
    let is_name = |n: Option<&NodeEnum>| match n {
        Some(NodeEnum::ColumnRef(c)) => {
            let parts: Vec<&str> = c
                .fields
                .iter()
                .filter_map(|f| match &f.node {
                    Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                    _ => None,
                })
                .collect();
            parts.len() == c.fields.len()
                && matches!(parts.as_slice(), ["name"] | ["pg_settings", "name"])
        }
        _ => false,
    };
    let [from] = s.from_clause.as_slice() else {
        return None;
    };
    match &from.node {
        Some(NodeEnum::RangeVar(rv))
            if rv.relname == "pg_settings"
                && matches!(rv.schemaname.as_str(), "" | "pg_catalog")
                && rv.alias.is_none() => {}
        _ => return None,
    }
    if s.with_clause.is_some() || !s.group_clause.is_empty() || s.having_clause.is_some() {
        return None;
    }
    let [target] = s.target_list.as_slice() else {
        return None;
    };
    let Some(NodeEnum::ResTarget(t)) = &target.node else {
        return None;
    };
    let Some(NodeEnum::FuncCall(call)) = t.val.as_ref().and_then(|v| v.node.as_ref()) else {
        return None;
    };
    let function: Vec<&str> = call
        .funcname
        .iter()
        .filter_map(|f| match &f.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    if !matches!(
        function.as_slice(),
        ["set_config"] | ["pg_catalog", "set_config"]
    ) || call.args.len() != 3
        || !is_name(call.args[0].node.as_ref())
        || call
            .args
            .iter()
            .any(|a| matches!(a.node, Some(NodeEnum::NamedArgExpr(_))))
    {
        return None;
    }
    let Some(NodeEnum::AExpr(e)) = s.where_clause.as_ref().and_then(|w| w.node.as_ref()) else {
        return None;
    };
    let operator: Vec<&str> = e
        .name
        .iter()
        .filter_map(|f| match &f.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    if operator != ["="] || !is_name(e.lexpr.as_ref().and_then(|l| l.node.as_ref())) {
        return None;
    }
    let kind = AExprKind::try_from(e.kind).ok()?;
    let right = e.rexpr.as_ref().and_then(|r| r.node.as_ref());
    let names: Option<Vec<String>> = match (kind, right) {
        (AExprKind::AexprOp, r) => const_text(r).map(|n| vec![n]),
        (AExprKind::AexprIn, Some(NodeEnum::List(list))) => list
            .items
            .iter()
            .map(|i| const_text(i.node.as_ref()))
            .collect(),
        _ => None,
    };
    Some((call, names?))
}

/// A DefElem option that is on: no argument, or a true value.
pub(crate) fn def_elem_true(d: &pb::DefElem) -> bool {
    match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(other) => const_text(Some(other)).is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "1" | "yes")
        }),
    }
}

pub(crate) fn is_cascade(behavior: i32) -> bool {
    DropBehavior::try_from(behavior) == Ok(DropBehavior::DropCascade)
}
