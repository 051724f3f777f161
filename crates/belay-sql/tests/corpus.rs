//! The shared corpus of expected classes: every line must pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use belay_core::Class;
use belay_sql::{analyze, Limits};

#[test]
fn every_corpus_line_gets_an_expected_class() {
    let corpus = include_str!("data/sql-classes.tsv");
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, line) in corpus.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((expected, sql)) = line.split_once('\t') else {
            panic!("line {}: no tab between expected class and SQL", n + 1);
        };
        let allowed: Vec<Class> = expected
            .split('|')
            .map(|c| c.parse().unwrap_or_else(|e| panic!("line {}: {e}", n + 1)))
            .collect();
        cases += 1;
        let analysis = analyze(sql, &Limits::default());
        if !allowed.contains(&analysis.class) {
            failures.push(format!(
                "line {}: `{sql}` is {} (expected {expected}): {}",
                n + 1,
                analysis.class,
                analysis.reason()
            ));
        }
    }
    assert!(cases > 60, "the corpus has only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
