//! Policy evaluation latency: one Cedar evaluation of the default policy, for a read that is
//! allowed and a production DROP that is held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks fail loudly

use belay_core::Class;
use belay_policy::{ActionRequest, PolicyEngine, DEFAULT_POLICY};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    let engine = PolicyEngine::new(DEFAULT_POLICY).expect("default policy");
    let read = ActionRequest::new(
        "ci-bot",
        "alice",
        "production",
        true,
        Class::Read,
        Some(Class::Read),
    );
    let drop = ActionRequest::new(
        "ci-bot",
        "alice",
        "production",
        true,
        Class::Destructive,
        Some(Class::Read),
    );
    c.bench_function("policy/evaluate_read_allowed", |b| {
        b.iter(|| engine.evaluate(black_box(&read)))
    });
    c.bench_function("policy/evaluate_destructive_held", |b| {
        b.iter(|| engine.evaluate(black_box(&drop)))
    });
}

criterion_group!(policy, benches);
criterion_main!(policy);
