//! Classification cost: a cache hit, a miss on a short OLTP statement and a miss on a ~4 KB
//! ORM-style statement; resolving them against a database's catalog, and building one.
//! Budgets (docs/BENCHMARKS.md): hit < 5 us, short miss < 50 us, resolution < 5 us.

use belay_sql::{
    analyze, Catalog, Classifier, FunctionSource, Limits, ObjectSource, Source, Stored, StoredCode,
    Unsettled,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const SHORT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

/// An ORM-style statement: long select list, joins, a subquery, many parameters.
fn orm_statement() -> String {
    let columns: Vec<String> = (0..48)
        .map(|i| format!("\"rentals\".\"column_{i:02}\" AS \"rentals_column_{i:02}\""))
        .collect();
    let filters: Vec<String> = (1..=36)
        .map(|i| format!("\"rentals\".\"attr_{i:02}\" = ${i}"))
        .collect();
    format!(
        "SELECT {cols}, \"customers\".\"email\" AS \"customer_email\", \"vehicles\".\"plate\" \
         FROM \"public\".\"rentals\" \
         INNER JOIN \"public\".\"customers\" ON \"customers\".\"id\" = \"rentals\".\"customer_id\" \
         LEFT OUTER JOIN \"public\".\"vehicles\" ON \"vehicles\".\"id\" = \"rentals\".\"vehicle_id\" \
         WHERE ({filters}) AND \"rentals\".\"id\" IN (SELECT \"payments\".\"rental_id\" FROM \
         \"public\".\"payments\" WHERE \"payments\".\"amount\" > $37 AND \"payments\".\"status\" \
         IN ('settled', 'pending', 'refunded')) \
         ORDER BY \"rentals\".\"started_at\" DESC, \"rentals\".\"id\" ASC LIMIT $38 OFFSET $39",
        cols = columns.join(", "),
        filters = filters.join(" AND "),
    )
}

fn benches(c: &mut Criterion) {
    let orm = orm_statement();
    assert!(
        (3500..=5000).contains(&orm.len()),
        "ORM statement is {} bytes",
        orm.len()
    );
    let limits = Limits::default();

    let classifier = Classifier::default();
    classifier.classify(SHORT);
    c.bench_function("classify/cache_hit", |b| {
        b.iter(|| classifier.classify(black_box(SHORT)))
    });
    // The simple protocol: every text carries a new value, of a shape seen before.
    classifier.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;");
    let texts: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7919 + 3
            )
        })
        .collect();
    let mut next = texts.iter().cycle();
    c.bench_function("classify/shape_hit_new_literal", |b| {
        b.iter(|| classifier.classify(black_box(next.next().map_or("", String::as_str))))
    });
    c.bench_function("classify/miss_short_oltp", |b| {
        b.iter(|| analyze(black_box(SHORT), &limits))
    });
    c.bench_function("classify/miss_orm_4kb", |b| {
        b.iter(|| analyze(black_box(&orm), &limits))
    });
    // A database of 1,000 PL/pgSQL functions and 500 tables with a trigger each.
    let source = catalog_source(1000, 500);
    c.bench_function("catalog/build_1000_functions_500_triggers", |b| {
        b.iter(|| Catalog::build(black_box(&source), &limits).len())
    });
    let catalog = Catalog::build(&source, &limits);
    let previous = Catalog::build(&source, &limits);
    c.bench_function("catalog/rebuild_unchanged", |b| {
        b.iter(|| Catalog::rebuild(black_box(&source), &limits, Some(&previous)).len())
    });
    let none = Unsettled::default();
    let short = analyze(SHORT, &limits);
    c.bench_function("catalog/resolve_short_oltp", |b| {
        b.iter(|| catalog.resolve(black_box(&short.statements[0]), &none))
    });
    let long = analyze(&orm, &limits);
    c.bench_function("catalog/resolve_orm_4kb", |b| {
        b.iter(|| catalog.resolve(black_box(&long.statements[0]), &none))
    });
    let call = analyze("SELECT f_0500(1) FROM t_0250 WHERE id = $1", &limits);
    c.bench_function("catalog/resolve_call_and_trigger_table", |b| {
        b.iter(|| catalog.resolve(black_box(&call.statements[0]), &none))
    });
    // What the parser alone costs, to show how much of a miss is belay's own walk.
    c.bench_function("parse_only/short_oltp", |b| {
        b.iter(|| pg_query::parse(black_box(SHORT), 0).map(|p| p.protobuf.stmts.len()))
    });
    c.bench_function("parse_only/orm_4kb", |b| {
        b.iter(|| pg_query::parse(black_box(&orm), 0).map(|p| p.protobuf.stmts.len()))
    });
}

/// `functions` PL/pgSQL functions, each calling the one before, and `tables` tables whose
/// trigger calls one of them.
fn catalog_source(functions: usize, tables: usize) -> Source {
    let function = |i: usize| {
        FunctionSource {
        schema: "public".to_owned(),
        name: format!("f_{i:04}"),
        language: "plpgsql".to_owned(),
        volatility: 'v',
        extension: None,
        definition: Some(format!(
            "CREATE OR REPLACE FUNCTION public.f_{i:04}(x integer) RETURNS integer LANGUAGE plpgsql AS $body$\n\
             BEGIN\n  UPDATE counters SET n = n + 1 WHERE id = x;\n  RETURN {};\nEND\n$body$",
            if i == 0 { "x".to_owned() } else { format!("f_{:04}(x)", i - 1) }
        )),
        runs: Vec::new(),
    }
    };
    let table = |i: usize| {
        ObjectSource {
        schema: "public".to_owned(),
        name: format!("t_{i:04}"),
        on_read: Vec::new(),
        on_write: vec![Stored {
            label: format!("trigger `t` of `public.t_{i:04}`"),
            what: StoredCode::Text(format!(
                "CREATE TRIGGER t AFTER INSERT ON public.t_{i:04} FOR EACH ROW EXECUTE FUNCTION public.f_{:04}()",
                i % functions.max(1)
            )),
        }],
    }
    };
    Source {
        functions: (0..functions).map(function).collect(),
        builtins: vec!["now".to_owned(), "count".to_owned()],
        relations: (0..tables).map(table).collect(),
        ..Source::default()
    }
}

criterion_group!(classify, benches);
criterion_main!(classify);
