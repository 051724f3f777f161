//! Whether a WHERE clause selects every row: `true`, `1 = 1`, `'a' = 'a'`, `x = x`,
//! `anything OR true`. A clause that names no column and no outer value is the same for every
//! row; unless it is provably false it is treated as selecting every row.

use pg_query::protobuf::{a_const, AExprKind, BoolExprType, NullTestType};
use pg_query::{NodeEnum, NodeRef};

/// True when `expr` holds for every row (or cannot be told apart from such a clause).
pub(crate) fn selects_every_row(expr: NodeRef<'_>) -> bool {
    matches!(eval(expr, 0), Value::Bool(true) | Value::Constant)
}

/// What is known of an expression's value, independently of the row.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bool(bool),
    Int(i64),
    Num(f64),
    Text(String),
    Null,
    /// The same for every row, but not computed here.
    Constant,
    /// Depends on the row.
    Varies,
}

const MAX_DEPTH: usize = 64;

fn eval(expr: NodeRef<'_>, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Varies;
    }
    let d = depth + 1;
    match expr {
        NodeRef::AConst(c) => {
            if c.isnull {
                return Value::Null;
            }
            match &c.val {
                Some(a_const::Val::Boolval(b)) => Value::Bool(b.boolval),
                Some(a_const::Val::Ival(i)) => Value::Int(i64::from(i.ival)),
                Some(a_const::Val::Fval(f)) => f
                    .fval
                    .parse::<f64>()
                    .map(Value::Num)
                    .unwrap_or(Value::Constant),
                Some(a_const::Val::Sval(s)) => Value::Text(s.sval.clone()),
                Some(a_const::Val::Bsval(_)) | None => Value::Constant,
            }
        }
        NodeRef::TypeCast(t) => {
            let inner = t
                .arg
                .as_ref()
                .and_then(|a| a.node.as_ref())
                .map_or(Value::Varies, |a| eval(a.to_ref(), d));
            let to_bool = t.type_name.as_ref().is_some_and(|tn| {
                tn.names.iter().any(|n| {
                    matches!(&n.node, Some(NodeEnum::String(s)) if s.sval == "bool" || s.sval == "boolean")
                })
            });
            match inner {
                Value::Text(s) if to_bool => text_to_bool(&s),
                Value::Int(i) if to_bool => Value::Bool(i != 0),
                Value::Varies => Value::Varies,
                Value::Null => Value::Null,
                Value::Bool(b) => Value::Bool(b),
                Value::Int(i) => Value::Int(i),
                Value::Text(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(Value::Int)
                    .unwrap_or(Value::Constant),
                _ => Value::Constant,
            }
        }
        NodeRef::BoolExpr(b) => {
            let args: Vec<Value> = b
                .args
                .iter()
                .filter_map(|a| a.node.as_ref())
                .map(|a| eval(a.to_ref(), d))
                .collect();
            match BoolExprType::try_from(b.boolop) {
                Ok(BoolExprType::AndExpr) => and(&args),
                Ok(BoolExprType::OrExpr) => or(&args),
                Ok(BoolExprType::NotExpr) => match args.first() {
                    Some(Value::Bool(v)) => Value::Bool(!v),
                    Some(Value::Null) => Value::Null,
                    Some(Value::Varies) | None => Value::Varies,
                    Some(_) => Value::Constant,
                },
                _ => Value::Varies,
            }
        }
        NodeRef::NullTest(n) => {
            let v = n
                .arg
                .as_ref()
                .and_then(|a| a.node.as_ref())
                .map_or(Value::Varies, |a| eval(a.to_ref(), d));
            let is_null = match v {
                Value::Null => true,
                Value::Varies => return Value::Varies,
                Value::Constant => return Value::Constant,
                _ => false,
            };
            match NullTestType::try_from(n.nulltesttype) {
                Ok(NullTestType::IsNull) => Value::Bool(is_null),
                Ok(NullTestType::IsNotNull) => Value::Bool(!is_null),
                _ => Value::Varies,
            }
        }
        NodeRef::AExpr(e) => {
            let op = e.name.iter().find_map(|n| match &n.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            });
            let side = |s: &Option<Box<pg_query::protobuf::Node>>| {
                s.as_ref()
                    .and_then(|a| a.node.as_ref())
                    .map_or(Value::Varies, |a| eval(a.to_ref(), d))
            };
            if AExprKind::try_from(e.kind) != Ok(AExprKind::AexprOp) {
                return if column_free(expr, 0) {
                    Value::Constant
                } else {
                    Value::Varies
                };
            }
            // `x = x` holds for every row where x is not null.
            if op == Some("=") && same_column(e.lexpr.as_deref(), e.rexpr.as_deref()) {
                return Value::Bool(true);
            }
            let (l, r) = (side(&e.lexpr), side(&e.rexpr));
            binary(op.unwrap_or(""), l, r)
        }
        _ if column_free(expr, 0) => Value::Constant,
        _ => Value::Varies,
    }
}

fn text_to_bool(s: &str) -> Value {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Value::Bool(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Value::Bool(false),
        _ => Value::Constant,
    }
}

fn and(args: &[Value]) -> Value {
    if args.contains(&Value::Bool(false)) {
        return Value::Bool(false);
    }
    if args.contains(&Value::Varies) {
        return Value::Varies;
    }
    if args.iter().all(|a| *a == Value::Bool(true)) {
        return Value::Bool(true);
    }
    Value::Constant
}

fn or(args: &[Value]) -> Value {
    if args.contains(&Value::Bool(true)) {
        return Value::Bool(true);
    }
    if args.contains(&Value::Constant) {
        // Same for every row and possibly true.
        return Value::Constant;
    }
    if args.contains(&Value::Varies) {
        return Value::Varies;
    }
    Value::Bool(false)
}

fn binary(op: &str, l: Value, r: Value) -> Value {
    use std::cmp::Ordering;
    if l == Value::Varies || r == Value::Varies {
        return Value::Varies;
    }
    if l == Value::Null || r == Value::Null {
        return Value::Null;
    }
    let ord: Option<Ordering> = match (&l, &r) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
        (Value::Int(a), Value::Num(b)) => (*a as f64).partial_cmp(b),
        (Value::Num(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Text(a), Value::Int(b)) => a.trim().parse::<i64>().ok().map(|a| a.cmp(b)),
        (Value::Int(a), Value::Text(b)) => b.trim().parse::<i64>().ok().map(|b| a.cmp(&b)),
        _ => None,
    };
    let arith = |f: fn(i64, i64) -> Option<i64>| match (&l, &r) {
        (Value::Int(a), Value::Int(b)) => f(*a, *b).map_or(Value::Constant, Value::Int),
        _ => Value::Constant,
    };
    match (op, ord) {
        ("=", Some(o)) => Value::Bool(o == Ordering::Equal),
        ("<>" | "!=", Some(o)) => Value::Bool(o != Ordering::Equal),
        ("<", Some(o)) => Value::Bool(o == Ordering::Less),
        ("<=", Some(o)) => Value::Bool(o != Ordering::Greater),
        (">", Some(o)) => Value::Bool(o == Ordering::Greater),
        (">=", Some(o)) => Value::Bool(o != Ordering::Less),
        ("+", _) => arith(i64::checked_add),
        ("-", _) => arith(i64::checked_sub),
        ("*", _) => arith(i64::checked_mul),
        _ => Value::Constant,
    }
}

fn same_column(l: Option<&pg_query::protobuf::Node>, r: Option<&pg_query::protobuf::Node>) -> bool {
    match (
        l.and_then(|n| n.node.as_ref()),
        r.and_then(|n| n.node.as_ref()),
    ) {
        (Some(NodeEnum::ColumnRef(a)), Some(NodeEnum::ColumnRef(b))) => a.fields == b.fields,
        _ => false,
    }
}

/// True when nothing under `node` depends on the row: no column, no parameter.
fn column_free(node: NodeRef<'_>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    if matches!(node, NodeRef::ColumnRef(_) | NodeRef::CurrentOfExpr(_)) {
        return false;
    }
    let mut free = true;
    crate::children::for_each_child(node, &mut |child| {
        if free && !column_free(child, depth + 1) {
            free = false;
        }
    });
    free
}
