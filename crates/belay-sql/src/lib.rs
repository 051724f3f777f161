//! SQL text in, the damage it can do out: every statement of an input with its class, kind,
//! the relations it touches and the flags that explain the class.
//!
//! Parsing uses PostgreSQL's own grammar (libpg_query, through the `pg_query` crate), so belay
//! reads a statement exactly as the server will. The crate is pure: no IO, no async.
//!
//! Fail closed: input that does not parse, is larger than `Limits::max_input_bytes` or nests
//! deeper than the parser and `Limits::max_depth` allow is `unknown`, with the reason. No input
//! panics the caller: the parser runs under `catch_unwind`, and depth is bounded everywhere
//! (libpg_query checks its own stack, protobuf decoding stops at 100 nested messages, and the
//! walk stops at `max_depth`).

mod analysis;
mod cache;
mod catalog;
#[rustfmt::skip] // generated: see codegen/gen_children.py
mod children;
mod functions;
mod inert;
mod procedural;
mod settings;
mod shape;
mod statements;
mod targets;
mod tautology;
mod walk;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use belay_core::Class;
use pg_query::protobuf::RawStmt;
use pg_query::{NodeEnum, ParserOptions};

pub use analysis::{
    Access, Analysis, Changes, Code, Flag, ObjectKind, PreparedEffect, Relation, SessionCommand,
    Statement,
};
pub use belay_core::units::{measure, Unit};

/// The schema of belay's own in every upstream database it writes through (its ledger of
/// decisions): agents' statements may read it and nothing else, nor put it on their path.
pub const LEDGER_SCHEMA: &str = "belay_ledger";
pub use catalog::{
    Catalog, FunctionSource, ObjectSource, Resolution, Source, Stored, StoredCode, Unsettled,
};
pub use functions::classified_builtin;
pub use settings::{capped, lifts_read_only, SettingChange, SettingValue};

/// The list of PostgreSQL's built-in functions belay was built with (`data/pg_proc.tsv`).
pub const BUILTINS: &str = functions::PG_PROC;

/// The class of setting `name` (lower case) given `value`, and why, for a setting that
/// matters to safety beyond the limits a caller checks; `None` for one that does not.
pub fn setting_class(name: &str, value: &SettingValue) -> Option<(Class, String)> {
    settings::classify(name, value)
}

/// Bounds on what the classifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Inputs longer than this many bytes are `unknown`. Default 1 MiB.
    pub max_input_bytes: usize,
    /// Parse trees deeper than this many nodes are `unknown`. Default 100. Protobuf decoding
    /// also stops at 100 nested messages (about 50 levels of most expressions).
    pub max_depth: usize,
    /// Inputs of more statements than this are `unknown`, before they are parsed: an
    /// analysis costs memory per statement, and one simple Query may hold a hundred
    /// thousand. Default 1,000.
    pub max_statements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 1024 * 1024,
            max_depth: 100,
            max_statements: 1000,
        }
    }
}

/// Classifies SQL, remembering the answer for each exact text it has seen, and for each
/// shape (the text with its literals taken out) whose analysis cannot depend on the
/// literals' values.
#[derive(Debug)]
pub struct Classifier {
    limits: Limits,
    cache: cache::Cache,
    shapes: cache::Cache,
}

/// Texts longer than this are classified every time rather than cached, so that a few huge
/// statements cannot fill memory.
const MAX_CACHED_TEXT: usize = 64 * 1024;

impl Classifier {
    /// A classifier with these limits and a cache of about `cache_capacity` statements.
    pub fn new(limits: Limits, cache_capacity: usize) -> Classifier {
        Classifier {
            limits,
            cache: cache::Cache::new(cache_capacity),
            shapes: cache::Cache::new(cache_capacity),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Classifies `sql`, from the cache when this exact text, or a text of the same shape
    /// whose analysis does not depend on its literals, was classified before. (The spans of
    /// an analysis found by shape are those of the first text: such statements are single
    /// and have no prepared-statement effects, which are what spans are used for.)
    pub fn classify(&self, sql: &str) -> Arc<Analysis> {
        if sql.len() > MAX_CACHED_TEXT {
            return Arc::new(analyze(sql, &self.limits));
        }
        if let Some(hit) = self.cache.get(sql) {
            return hit;
        }
        let shape = shape::key(sql);
        if let Some(hit) = shape.as_deref().and_then(|k| self.shapes.get(k)) {
            return hit;
        }
        let (analysis, inert) = analyze_inner(sql, &self.limits);
        let analysis = Arc::new(analysis);
        match shape {
            Some(key) if inert => self.shapes.insert(&key, analysis.clone()),
            _ => self.cache.insert(sql, analysis.clone()),
        }
        analysis
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(Limits::default(), 10_000)
    }
}

/// Classifies `sql` without a cache.
pub fn analyze(sql: &str, limits: &Limits) -> Analysis {
    analyze_inner(sql, limits).0
}

/// The analysis, and whether it holds for every text of `sql`'s shape (`inert.rs`).
fn analyze_inner(sql: &str, limits: &Limits) -> (Analysis, bool) {
    if sql.len() > limits.max_input_bytes {
        return (
            Analysis::unknown(
                sql.len(),
                Flag::TooLarge,
                format!(
                    "the input is {} bytes, more than the limit of {} bytes",
                    sql.len(),
                    limits.max_input_bytes
                ),
            ),
            false,
        );
    }
    if sql.contains('\0') {
        return (
            Analysis::unknown(
                sql.len(),
                Flag::ParseError,
                "the input contains a NUL byte, which PostgreSQL does not accept".to_owned(),
            ),
            false,
        );
    }
    // Every statement but the last ends with a semicolon: fewer semicolons than the limit
    // need no count, and the scanner counts without building trees.
    if sql.bytes().filter(|b| *b == b';').count() >= limits.max_statements {
        let count = catch_unwind(|| pg_query::split_with_scanner(sql).map(|s| s.len()))
            .ok()
            .and_then(Result::ok);
        match count {
            Some(n) if n <= limits.max_statements => {}
            counted => {
                return (
                    Analysis::unknown(
                        sql.len(),
                        Flag::TooLarge,
                        match counted {
                            Some(n) => format!(
                                "the input holds {n} statements, more than the limit of {} in one text; send them in smaller batches",
                                limits.max_statements
                            ),
                            None => "the input's statements cannot be counted".to_owned(),
                        },
                    ),
                    false,
                )
            }
        }
    }
    let parsed = match parse(sql, ParserOptions::DEFAULT) {
        Ok(parsed) => parsed,
        Err(failure) => {
            let mut analysis = Analysis::unknown(sql.len(), failure.flag(), failure.message());
            if let ParseFailure::Syntax(message) = &failure {
                analysis.statements[0].error_position = error_position(sql, message);
            }
            return (analysis, false);
        }
    };

    let raws = &parsed.protobuf.stmts;
    let inert = match raws.as_slice() {
        [only] => only
            .stmt
            .as_ref()
            .and_then(|s| s.node.as_ref())
            .is_some_and(|n| inert::inert(n.to_ref())),
        _ => false,
    };
    let mut prepared: HashMap<String, Statement> = HashMap::new();
    let mut statements = Vec::with_capacity(raws.len());
    for raw in raws {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        let text = statement_text(sql, raw);
        let span = statement_span(sql, raw);
        let mut walk = walk::Walk::new(limits, &prepared, text);
        walk.visit(node.to_ref());
        if raws.len() > 1 {
            walk.flag(Flag::MultipleStatements);
        }
        let mut statement = walk.finish(statements::statement_kind(node.to_ref()), span);
        if let Some(Changes::Named(names)) = &mut statement.code.changes {
            if !walk::identifiers(node.to_ref(), names, limits.max_depth * 2) {
                statement.code.changes = Some(Changes::Anything);
            }
        }
        match node {
            NodeEnum::PrepareStmt(p) => {
                prepared.insert(p.name.clone(), statement.clone());
                statement.prepared_effect = Some(PreparedEffect::Prepare(p.name.clone()));
            }
            NodeEnum::DeallocateStmt(d) if d.isall => {
                prepared.clear();
                statement.prepared_effect = Some(PreparedEffect::DeallocateAll);
            }
            NodeEnum::DeallocateStmt(d) => {
                prepared.remove(&d.name);
                statement.prepared_effect = Some(PreparedEffect::Deallocate(d.name.clone()));
            }
            NodeEnum::DiscardStmt(d)
                if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 =>
            {
                prepared.clear();
                statement.prepared_effect = Some(PreparedEffect::DeallocateAll);
            }
            NodeEnum::VariableSetStmt(s) => {
                statement.session = statements::session_set(s);
            }
            NodeEnum::VariableShowStmt(s) => {
                statement.session = Some(SessionCommand::Show {
                    name: s.name.to_ascii_lowercase(),
                });
            }
            _ => {}
        }
        statements.push(statement);
    }
    let class = statements
        .iter()
        .map(|s| s.class)
        .max()
        .unwrap_or(Class::Read);
    (Analysis { class, statements }, inert)
}

/// What running one piece of stored code does, for a catalog of a database's code: a
/// function's definition (`pg_get_functiondef`, SQL or PL/pgSQL), a rule (`pg_get_ruledef`),
/// a trigger (`pg_get_triggerdef`: its function and its WHEN condition), or a query (a view's
/// definition, an expression as `SELECT expr`). The statement that stores the code is not
/// counted, only what the code does when it runs. Anything else, or anything that does not
/// parse, is `unknown`.
pub fn analyze_code(text: &str, limits: &Limits) -> Statement {
    let unknown = |why: String| {
        Analysis::unknown(text.len(), Flag::ParseError, why)
            .statements
            .remove(0)
    };
    if text.len() > limits.max_input_bytes {
        return unknown(format!(
            "stored code of {} bytes is more than the limit of {} bytes",
            text.len(),
            limits.max_input_bytes
        ));
    }
    let parsed = match parse(text, ParserOptions::DEFAULT) {
        Ok(parsed) => parsed,
        Err(failure) => return unknown(failure.message()),
    };
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return unknown("stored code is not one statement".to_owned());
    };
    let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
        return unknown("stored code is empty".to_owned());
    };
    let prepared = HashMap::new();
    let body = statement_text(text, raw);
    let mut walk = walk::Walk::new(limits, &prepared, body);
    walk.body_only = true;
    let kind = match node {
        NodeEnum::CreateFunctionStmt(_) => {
            walk.visit(node.to_ref());
            "FUNCTION"
        }
        NodeEnum::RuleStmt(rule) => {
            for part in rule.where_clause.iter().map(|w| &**w).chain(&rule.actions) {
                if let Some(n) = part.node.as_ref() {
                    walk.visit(n.to_ref());
                }
            }
            "RULE"
        }
        NodeEnum::CreateTrigStmt(trigger) => {
            let (schema, name) = walk::qualified_name(&trigger.funcname);
            walk.code.calls.insert((schema, name, false));
            if let Some(n) = trigger.when_clause.as_ref().and_then(|w| w.node.as_ref()) {
                walk.visit(n.to_ref());
            }
            "TRIGGER"
        }
        NodeEnum::SelectStmt(_) => {
            walk.visit(node.to_ref());
            "QUERY"
        }
        _ => {
            return unknown(format!(
                "stored code of kind `{}` is not known",
                statements::statement_kind(node.to_ref())
            ))
        }
    };
    let mut statement = walk.finish(kind.to_owned(), 0..text.len());
    statement.code.changes = None;
    statement
}

/// Where in `sql` the parser's error `message` points, as PostgreSQL reports it: the
/// 1-based character position of the token the error is at or near (one past the end for an
/// error at the end of the input). The parser says which token but not where; each place
/// that token occurs is tried, in order, by parsing the text up to its end: the first whose
/// prefix fails with the same message is the one.
fn error_position(sql: &str, message: &str) -> Option<usize> {
    const MAX_TRIES: usize = 32;
    let chars = |bytes: usize| sql.get(..bytes).map(|p| p.chars().count() + 1);
    if message.ends_with("at end of input") {
        return chars(sql.len());
    }
    let near = message.split_once("at or near \"")?.1.strip_suffix('"')?;
    let tokens = catch_unwind(|| pg_query::scan(sql)).ok()?.ok();
    let starts: Vec<(usize, usize)> = match tokens {
        Some(scanned) => scanned
            .tokens
            .iter()
            .filter_map(|t| {
                let (start, end) = (usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?);
                (sql.get(start..end)? == near).then_some((start, end))
            })
            .collect(),
        // The scanner itself failed (an unterminated literal): the text it names starts
        // where it first occurs.
        None => return sql.find(near).and_then(chars),
    };
    if let [(start, _)] = starts.as_slice() {
        return chars(*start);
    }
    for (start, end) in starts.into_iter().take(MAX_TRIES) {
        if let Err(ParseFailure::Syntax(m)) = parse(&sql[..end], ParserOptions::DEFAULT) {
            if m == message {
                return chars(start);
            }
        }
    }
    None
}

/// `sql` with every constant replaced by `$n`, for records that must not hold the values a
/// statement carries (passwords, personal data). Plain texts are redacted by the shape
/// lexer, which takes out every literal it reads, without a second parse (so a plain text
/// that does not parse is redacted too); anything else by libpg_query's normalisation, and
/// `None` when that cannot parse it.
pub fn redact(sql: &str) -> Option<String> {
    if let Some(redacted) = shape::redact(sql) {
        return Some(redacted);
    }
    catch_unwind(|| pg_query::normalize(sql).ok())
        .ok()
        .flatten()
}

/// Why an input could not be parsed.
#[derive(Debug)]
pub(crate) enum ParseFailure {
    Syntax(String),
    TooDeep(String),
}

impl ParseFailure {
    pub(crate) fn flag(&self) -> Flag {
        match self {
            ParseFailure::Syntax(_) => Flag::ParseError,
            ParseFailure::TooDeep(_) => Flag::TooDeep,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            ParseFailure::Syntax(m) => format!("the input does not parse: {m}"),
            ParseFailure::TooDeep(m) => format!("the input nests too deeply to analyse ({m})"),
        }
    }
}

/// Runs libpg_query on `sql`, turning every failure (including a panic inside the binding)
/// into a `ParseFailure`.
pub(crate) fn parse(sql: &str, mode: ParserOptions) -> Result<pg_query::ParseResult, ParseFailure> {
    match catch_unwind(AssertUnwindSafe(|| pg_query::parse(sql, mode))) {
        Ok(Ok(parsed)) => Ok(parsed),
        Ok(Err(pg_query::Error::Decode(e))) => Err(ParseFailure::TooDeep(e.to_string())),
        Ok(Err(pg_query::Error::Parse(m))) => {
            if m.contains("stack depth limit exceeded") || m.contains("memory exhausted") {
                Err(ParseFailure::TooDeep(m))
            } else {
                Err(ParseFailure::Syntax(m))
            }
        }
        Ok(Err(other)) => Err(ParseFailure::Syntax(other.to_string())),
        Err(_) => Err(ParseFailure::Syntax(
            "the parser failed on this input".to_owned(),
        )),
    }
}

fn statement_span(sql: &str, raw: &RawStmt) -> std::ops::Range<usize> {
    let start = usize::try_from(raw.stmt_location)
        .unwrap_or(0)
        .min(sql.len());
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => start.saturating_add(len).min(sql.len()),
    };
    start..end
}

/// The text of one statement of `sql`, trimmed.
pub(crate) fn statement_text<'s>(sql: &'s str, raw: &RawStmt) -> &'s str {
    sql.get(statement_span(sql, raw)).unwrap_or(sql).trim()
}
