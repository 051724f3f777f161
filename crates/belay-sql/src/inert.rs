//! Whether a statement's analysis is the same whatever values its constants hold, so that
//! its shape (`shape.rs`) can stand for every text of that shape.
//!
//! Proved by position, not by value: a plain `SELECT`, `INSERT`, `UPDATE` or `DELETE` is
//! inert when every constant in it sits where the classifier never looks at it:
//!
//! - one side of a comparison or arithmetic operator (`=`, `<>`, `!=`, `<`, `>`, `<=`, `>=`,
//!   `+`, `-`, `*`, `/`) whose other side is a column (`aid = 42`, `balance + 5`);
//! - the list of `column IN (…)` or the bounds of `column BETWEEN … AND …`;
//! - `LIMIT` and `OFFSET`;
//! - an item of a `VALUES` row;
//! - the whole value of an `UPDATE … SET column = …`;
//! - anywhere, `NULL`, `TRUE` and `FALSE`: keywords, the same in every text of a shape.
//!
//! A constant anywhere else (a function's argument, a cast such as `'t'::regclass`, both
//! sides of `1 = 1`, `ORDER BY 1`) makes the statement not inert, and each of its texts is
//! parsed. The test `shape_cache_never_changes_an_analysis` checks the claim against the
//! corpus with the literals changed.

use pg_query::protobuf::{a_const, AExprKind, Node};
use pg_query::{NodeEnum, NodeRef};

use crate::children::for_each_child;

/// Deeper trees are not proved inert (they are parsed every time).
const MAX_DEPTH: usize = 100;

/// Operators whose constant operand, against a column, cannot change the analysis.
const OPERATORS: &[&str] = &["=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/"];

/// True when `statement` (one parsed statement) is inert, as above.
pub(crate) fn inert(statement: NodeRef<'_>) -> bool {
    if !matches!(
        statement,
        NodeRef::SelectStmt(_)
            | NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
    ) {
        return false;
    }
    let mut accepted = Vec::new();
    visit(statement, &mut accepted, 0)
}

/// Walks `node`: every constant met must have been accepted by an ancestor.
fn visit<'a>(
    node: NodeRef<'a>,
    accepted: &mut Vec<*const pg_query::protobuf::AConst>,
    depth: usize,
) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    accept(node, accepted);
    let mut ok = true;
    for_each_child(node, &mut |child| {
        if ok {
            ok = match child {
                NodeRef::AConst(c) => keyword(c) || accepted.iter().any(|a| std::ptr::eq(*a, c)),
                other => visit(other, accepted, depth + 1),
            };
        }
    });
    ok
}

/// `NULL`, `TRUE` or `FALSE`: written as keywords, which are part of the shape, so every text
/// of the shape holds the same value there.
fn keyword(c: &pg_query::protobuf::AConst) -> bool {
    c.isnull || matches!(c.val, Some(a_const::Val::Boolval(_)))
}

/// The constant `node` holds, if it is one.
fn constant(node: Option<&Node>) -> Option<&pg_query::protobuf::AConst> {
    match node?.node.as_ref()? {
        NodeEnum::AConst(c) => Some(c),
        _ => None,
    }
}

fn is_column(node: Option<&Node>) -> bool {
    matches!(
        node.and_then(|n| n.node.as_ref()),
        Some(NodeEnum::ColumnRef(_))
    )
}

/// The items of a list node.
fn items(node: Option<&Node>) -> &[Node] {
    match node.and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::List(l)) => &l.items,
        _ => &[],
    }
}

/// Records the constants among `node`'s children and grandchildren that sit where the
/// analysis does not look at them.
fn accept(node: NodeRef<'_>, accepted: &mut Vec<*const pg_query::protobuf::AConst>) {
    let mut take = |n: Option<&Node>| {
        if let Some(c) = constant(n) {
            accepted.push(c);
        }
    };
    match node {
        NodeRef::AExpr(e) => {
            let (l, r) = (e.lexpr.as_deref(), e.rexpr.as_deref());
            match AExprKind::try_from(e.kind) {
                Ok(AExprKind::AexprOp) if plain_operator(&e.name) => {
                    if is_column(l) {
                        take(r);
                    }
                    if is_column(r) {
                        take(l);
                    }
                }
                Ok(AExprKind::AexprIn | AExprKind::AexprBetween | AExprKind::AexprNotBetween)
                    if is_column(l) =>
                {
                    for item in items(r) {
                        take(Some(item));
                    }
                }
                _ => {}
            }
        }
        NodeRef::SelectStmt(s) => {
            take(s.limit_count.as_deref());
            take(s.limit_offset.as_deref());
            for row in &s.values_lists {
                for item in items(Some(row)) {
                    take(Some(item));
                }
            }
        }
        NodeRef::UpdateStmt(u) => {
            for target in &u.target_list {
                if let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() {
                    take(t.val.as_deref());
                }
            }
        }
        _ => {}
    }
}

/// One unqualified operator name from `OPERATORS`.
fn plain_operator(name: &[Node]) -> bool {
    match name {
        [only] => {
            matches!(&only.node, Some(NodeEnum::String(s)) if OPERATORS.contains(&s.sval.as_str()))
        }
        _ => false,
    }
}
