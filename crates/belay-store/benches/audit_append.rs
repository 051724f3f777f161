//! Audit append throughput with group commit: many events submitted at once share commits.
//! Budget (docs/BENCHMARKS.md): at least 50,000 events/s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks fail loudly

use belay_audit::Draft;
use belay_store::{AuditOptions, SqliteStore, StateStore};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn draft(i: u64) -> Draft {
    Draft {
        time_us: 1_700_000_000_000_000 + i as i64,
        actor: "agent:ci-bot".into(),
        kind: "decision".into(),
        environment: Some("production".into()),
        fingerprint: Some(format!("{i:064x}")),
        class: Some("read".into()),
        verdict: Some("allow".into()),
        reasons: vec!["the agent holds a grant for this environment".into()],
        policies: vec!["granted-work".into()],
        outcome: None,
        detail: serde_json::json!({"relations": ["rentals"]}),
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(&dir.path().join("state.db"), AuditOptions::default()).expect("open");
    const BATCH: u64 = 1000;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("append_1000_concurrent", |b| {
        b.iter(|| {
            let tickets: Vec<_> = (0..BATCH).map(|i| store.submit(draft(i))).collect();
            for t in tickets {
                t.wait().expect("durable");
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_one_alone", |b| {
        b.iter(|| store.append(draft(0)).expect("durable"))
    });
    group.finish();
}

criterion_group!(audit, benches);
criterion_main!(audit);
