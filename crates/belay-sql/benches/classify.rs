//! Classification cost: a cache hit, a miss on a short OLTP statement and a miss on a ~4 KB
//! ORM-style statement. Budgets (docs/BENCHMARKS.md): hit < 5 us, short miss < 50 us.

use belay_sql::{analyze, Classifier, Limits};
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
    // What the parser alone costs, to show how much of a miss is belay's own walk.
    c.bench_function("parse_only/short_oltp", |b| {
        b.iter(|| pg_query::parse(black_box(SHORT), 0).map(|p| p.protobuf.stmts.len()))
    });
    c.bench_function("parse_only/orm_4kb", |b| {
        b.iter(|| pg_query::parse(black_box(&orm), 0).map(|p| p.protobuf.stmts.len()))
    });
}

criterion_group!(classify, benches);
criterion_main!(classify);
