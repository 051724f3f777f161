//! Procedural code: DO blocks and CREATE FUNCTION/PROCEDURE bodies.
//!
//! SQL and PL/pgSQL bodies are parsed and every statement and expression in them is walked as
//! part of the enclosing statement, so a function that would DROP a table is as dangerous to
//! create as the DROP itself (it could be created under a `ddl` grant and then called). SQL
//! built at run time (`EXECUTE` of a computed string) and code in other languages cannot be
//! analysed: such code is never `read`.

use belay_core::Class;
use pg_query::protobuf as pb;
use pg_query::{NodeEnum, ParserOptions};
use serde_json::Value;

use crate::analysis::Flag;
use crate::statements::security_definer;
use crate::walk::{const_text, Walk};

/// A DO block: its body runs now.
pub(crate) fn do_block(w: &mut Walk<'_>, s: &pb::DoStmt) {
    w.flag(Flag::Procedural);
    let mut body = None;
    let mut language = "plpgsql".to_owned();
    for arg in &s.args {
        if let Some(NodeEnum::DefElem(d)) = &arg.node {
            let value = const_text(d.arg.as_ref().and_then(|a| a.node.as_ref()));
            match d.defname.as_str() {
                "as" => body = value,
                // The server looks the name up exactly as parsed (`"PLPGSQL"` is no language).
                "language" => language = value.unwrap_or_default(),
                _ => {}
            }
        }
    }
    let Some(body) = body else {
        w.raise(
            Class::Unknown,
            "a DO block without a body cannot be analysed",
        );
        return;
    };
    match language.as_str() {
        "plpgsql" => {
            let text = w.text.clone();
            plpgsql(w, &text, "the DO block");
        }
        "sql" => w.nested_sql(&body, ParserOptions::DEFAULT, "the DO block"),
        other => other_language(w, other, "DO block"),
    }
    w.raise(Class::Read, "the DO block only reads");
}

/// CREATE FUNCTION or PROCEDURE: the body runs later, whenever anyone calls it. Children
/// (parameter defaults, a BEGIN ATOMIC body) are walked by the caller.
pub(crate) fn create_function(w: &mut Walk<'_>, s: &pb::CreateFunctionStmt) {
    let what = if s.is_procedure {
        "procedure"
    } else {
        "function"
    };
    w.flag(Flag::Procedural);
    if !w.body_only {
        w.raise(
            Class::Ddl,
            format!("CREATE {} defines code", what.to_uppercase()),
        );
    }
    let mut body: Vec<String> = Vec::new();
    let mut language = "sql".to_owned();
    for option in &s.options {
        if let Some(NodeEnum::DefElem(d)) = &option.node {
            match d.defname.as_str() {
                "as" => {
                    body = match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                        Some(NodeEnum::List(l)) => l
                            .items
                            .iter()
                            .filter_map(|i| const_text(i.node.as_ref()))
                            .collect(),
                        other => const_text(other).into_iter().collect(),
                    }
                }
                "language" => {
                    language = const_text(d.arg.as_ref().and_then(|a| a.node.as_ref()))
                        .unwrap_or_default();
                }
                _ => {}
            }
        }
    }
    if !w.body_only && s.options.iter().any(|o| security_definer(o.node.as_ref())) {
        w.raise(
            Class::Privilege,
            format!("a SECURITY DEFINER {what} runs with its owner's rights for every caller"),
        );
    }
    if s.sql_body.is_some() {
        // BEGIN ATOMIC ... END or RETURN expr: already parsed, walked as a child.
        return;
    }
    let place = format!("the {what} body");
    match (language.as_str(), body.as_slice()) {
        ("sql", [code]) => w.nested_sql(code, ParserOptions::DEFAULT, &place),
        ("plpgsql", [code]) => match trigger_kind(s) {
            Some(kind) => plpgsql(w, &trigger_wrapper(code, kind), &place),
            None => {
                let text = w.text.clone();
                plpgsql(w, &text, &place);
            }
        },
        ("c" | "internal", _) => w.raise(
            Class::Admin,
            format!("a {what} in language `{language}` runs native code in the server"),
        ),
        (other, _) => other_language(w, other, what),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TriggerKind {
    Table,
    Event,
}

fn trigger_kind(s: &pb::CreateFunctionStmt) -> Option<TriggerKind> {
    let names = &s.return_type.as_ref()?.names;
    match names.last()?.node.as_ref()? {
        NodeEnum::String(t) if t.sval == "trigger" => Some(TriggerKind::Table),
        NodeEnum::String(t) if t.sval == "event_trigger" => Some(TriggerKind::Event),
        _ => None,
    }
}

/// libpg_query cannot print the parse of a trigger function (its special variables have no
/// JSON form), so the body is analysed inside an ordinary function that declares the same
/// variables. The body is a block; it becomes a nested block of the wrapper.
fn trigger_wrapper(body: &str, kind: TriggerKind) -> String {
    let variables = match kind {
        TriggerKind::Table => {
            "new record; old record; tg_name name; tg_when text; tg_level text; tg_op text; \
             tg_relid oid; tg_relname name; tg_table_name name; tg_table_schema name; \
             tg_nargs integer; tg_argv text[];"
        }
        TriggerKind::Event => "tg_event text; tg_tag text;",
    };
    let mut tag = "$belay$".to_owned();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$belay{n}$");
    }
    let body = body.trim_end().trim_end_matches(';');
    format!(
        "CREATE FUNCTION belay_trigger_body() RETURNS record LANGUAGE plpgsql AS {tag}\n\
         DECLARE {variables}\nBEGIN\n{body}\n;\nEND\n{tag}"
    )
}

fn other_language(w: &mut Walk<'_>, language: &str, what: &str) {
    if language.ends_with('u') || language == "c" || language == "internal" {
        w.raise(
            Class::Admin,
            format!("a {what} in the untrusted language `{language}` can reach the server's files and network"),
        );
    } else {
        w.raise(
            Class::Unknown,
            format!("a {what} in language `{language}` cannot be analysed"),
        );
    }
}

/// Parses PL/pgSQL (a whole CREATE FUNCTION or DO statement) and walks every SQL statement
/// and expression in it.
fn plpgsql(w: &mut Walk<'_>, statement: &str, place: &str) {
    match pg_query::parse_plpgsql(statement) {
        Ok(tree) => walk_json(w, &tree, "", "", place, 0),
        Err(e) => {
            w.flag(Flag::ParseError);
            w.raise(
                Class::Unknown,
                format!("the PL/pgSQL in {place} cannot be analysed: {e}"),
            );
        }
    }
}

const MAX_JSON_DEPTH: usize = 200;

/// Walks libpg_query's JSON form of PL/pgSQL. `stmt` is the nearest PL/pgSQL statement type,
/// `field` the key under which `value` sits.
fn walk_json(w: &mut Walk<'_>, value: &Value, stmt: &str, field: &str, place: &str, depth: usize) {
    if depth > MAX_JSON_DEPTH {
        w.flag(Flag::TooDeep);
        w.raise(
            Class::Unknown,
            format!("the code in {place} nests too deeply to analyse"),
        );
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "PLpgSQL_expr" {
                    expression(w, child, stmt, field, place);
                } else if key.starts_with("PLpgSQL_stmt_") {
                    walk_json(w, child, key, "", place, depth + 1);
                } else {
                    walk_json(w, child, stmt, key, place, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_json(w, item, stmt, field, place, depth + 1);
            }
        }
        _ => {}
    }
}

/// One SQL statement or expression inside PL/pgSQL.
fn expression(w: &mut Walk<'_>, expr: &Value, stmt: &str, field: &str, place: &str) {
    let Some(query) = expr.get("query").and_then(Value::as_str) else {
        return;
    };
    let mode = expr.get("parseMode").and_then(Value::as_i64).unwrap_or(0);
    let Ok(mode) = i32::try_from(mode) else {
        w.raise(
            Class::Unknown,
            format!("the code in {place} cannot be analysed"),
        );
        return;
    };
    let dynamic = field == "dynquery"
        || (field == "query" && matches!(stmt, "PLpgSQL_stmt_dynexecute" | "PLpgSQL_stmt_dynfors"));
    w.nested_sql(query, ParserOptions::from(mode), place);
    if dynamic {
        match constant_string(query) {
            Some(sql) => w.nested_sql(&sql, ParserOptions::DEFAULT, place),
            None => {
                w.flag(Flag::DynamicSql);
                w.raise(
                    Class::Unknown,
                    format!("{place} runs SQL built at run time (`EXECUTE {query}`), which cannot be analysed"),
                );
            }
        }
    }
}

/// The value of a PL/pgSQL expression that is a single string literal.
fn constant_string(expr: &str) -> Option<String> {
    let parsed = pg_query::parse(expr, ParserOptions::PLPGSQL_EXPR).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let Some(NodeEnum::SelectStmt(select)) = raw.stmt.as_ref()?.node.as_ref() else {
        return None;
    };
    if select.from_clause.len() + select.where_clause.iter().count() > 0 {
        return None;
    }
    let [target] = select.target_list.as_slice() else {
        return None;
    };
    let Some(NodeEnum::ResTarget(rt)) = &target.node else {
        return None;
    };
    match rt.val.as_ref()?.node.as_ref()? {
        NodeEnum::AConst(c) => match &c.val {
            Some(pb::a_const::Val::Sval(s)) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}
