//! The shape cache never changes an analysis: a text classified through a cached shape gets
//! exactly the analysis parsing it would give. Checked over the corpus and the hand-written
//! cases, each with its literals changed in several ways after the original was classified.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;

use belay_sql::{analyze, Analysis, Classifier, Limits};

/// Texts whose literals matter, or that look alike but are not: the cache must never let
/// one stand for another.
const TRICKY: &[&str] = &[
    "DELETE FROM t WHERE id = 1",
    "DELETE FROM t WHERE 1 = 1",
    "DELETE FROM t WHERE id = 1 OR 1 = 1",
    "DELETE FROM t WHERE id = 1 OR 'a' = 'a'",
    "DELETE FROM t WHERE id = 1 OR 1 = 2",
    "DELETE FROM t WHERE id = id + 0",
    "UPDATE t SET a = a + 1 WHERE id = 2",
    "UPDATE t SET a = 1 WHERE true",
    "UPDATE t SET a = 1 WHERE 2 > 1",
    "UPDATE t SET a = 1 WHERE id IN (1, 2, 3)",
    "UPDATE t SET a = 1 WHERE id BETWEEN 1 AND 5",
    "INSERT INTO t VALUES (1, 'a', NULL, true)",
    "INSERT INTO t (a) SELECT 1",
    "SELECT * FROM t WHERE a = 1 LIMIT 10 OFFSET 5",
    "SELECT * FROM t ORDER BY 1",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT set_config('transaction_read_only', 'off', false)",
    "SELECT set_config('default_transaction_read_only', 'off', false) FROM t WHERE a = 1",
    "SELECT nextval('s')",
    "SELECT 't'::regclass",
    "SELECT * FROM t WHERE c = 'pg_catalog.pg_authid'::regclass",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT * FROM dblink('host=x', 'DELETE FROM t')",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_sleep(1)",
    "SELECT * FROM t WHERE a = 1 FOR UPDATE",
    "SELECT 1 INTO new_table",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)",
    "SET statement_timeout = 0",
    "SET transaction_read_only = 'off'",
    "COPY t TO '/tmp/x'",
    "PREPARE p AS DELETE FROM t WHERE id = 1",
    "EXECUTE p(1)",
    "DO 'BEGIN DELETE FROM t; END'",
    "SELECT 1; DELETE FROM t WHERE 1 = 1",
    "SELECT * FROM t WHERE a = 1; SELECT 2",
];

/// Numbers and strings to put in place of the originals.
const NUMBERS: &[&str] = &["0", "1", "2", "123456789", "7"];
const STRINGS: &[&str] = &[
    "''",
    "'x'",
    "'off'",
    "'a''b'",
    "'1 = 1'",
    "'t'",
    "'pg_authid'",
];

/// `sql` with its integers and plain strings replaced in turn (the n-th variant uses the n-th
/// replacement for each), read with a lexer independent of the one under test.
fn variants(sql: &str) -> Vec<String> {
    (0..NUMBERS.len().max(STRINGS.len()))
        .map(|v| {
            let bytes = sql.as_bytes();
            let mut out = String::new();
            let mut i = 0;
            let mut prev_word = false;
            while i < bytes.len() {
                let c = bytes[i];
                if c.is_ascii_digit() && !prev_word {
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push_str(NUMBERS[v % NUMBERS.len()]);
                    prev_word = false;
                } else if c == b'\'' {
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == b'\'' {
                            if bytes.get(i + 1) == Some(&b'\'') {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push_str(STRINGS[v % STRINGS.len()]);
                    prev_word = false;
                } else {
                    let ch = sql[i..].chars().next().unwrap();
                    out.push(ch);
                    prev_word = ch.is_alphanumeric() || ch == '_';
                    i += ch.len_utf8();
                }
            }
            out
        })
        .collect()
}

/// The analysis without spans, which locate statements in the text and are not part of what
/// the classifier says about them.
fn essence(a: &Analysis) -> Analysis {
    let mut a = a.clone();
    for s in &mut a.statements {
        s.span = 0..0;
    }
    a
}

fn corpus() -> Vec<String> {
    let mut all: Vec<String> = TRICKY.iter().map(|s| (*s).to_owned()).collect();
    for line in include_str!("data/sql-classes.tsv").lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((_, sql)) = line.split_once('\t') {
            all.push(sql.to_owned());
        }
    }
    all
}

#[test]
fn shape_cache_never_changes_an_analysis() {
    let limits = Limits::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for original in corpus() {
        let classifier = Classifier::new(limits.clone(), 100);
        classifier.classify(&original);
        for variant in variants(&original) {
            let got = classifier.classify(&variant);
            let want = analyze(&variant, &limits);
            checked += 1;
            if essence(&got) != essence(&want) {
                failures.push(format!(
                    "`{variant}` (after `{original}`): cached {} / parsed {}",
                    got.class, want.class
                ));
            }
        }
    }
    assert!(checked > 300, "only {checked} variants checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn texts_of_an_inert_shape_are_parsed_once() {
    let classifier = Classifier::default();
    for (first, second) in [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 90210;",
        ),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 4;",
            "UPDATE pgbench_accounts SET abalance = abalance + -4000 WHERE aid = 33;",
        ),
        (
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (9, 8, 7, -6, CURRENT_TIMESTAMP);",
        ),
        (
            "SELECT * FROM users WHERE email = 'a@example.com' AND active = true LIMIT 1",
            "SELECT * FROM users WHERE email = 'someone.else@example.org' AND active = true LIMIT 1",
        ),
    ] {
        let a = classifier.classify(first);
        let b = classifier.classify(second);
        assert!(Arc::ptr_eq(&a, &b), "`{second}` was parsed again");
    }
}

#[test]
fn texts_whose_literals_matter_are_parsed_each_time() {
    let classifier = Classifier::default();
    for (first, second) in [
        (
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT set_config('transaction_read_only', 'off', false)",
        ),
        ("SELECT * FROM t ORDER BY 1", "SELECT * FROM t ORDER BY 2"),
        ("DELETE FROM t WHERE 1 = 2", "DELETE FROM t WHERE 1 = 1"),
    ] {
        let a = classifier.classify(first);
        let b = classifier.classify(second);
        assert!(!Arc::ptr_eq(&a, &b), "`{second}` came from the cache");
    }
    // And the difference shows: the second deletes every row.
    assert_ne!(
        classifier.classify("DELETE FROM t WHERE 1 = 2").class,
        classifier.classify("DELETE FROM t WHERE 1 = 1").class
    );
}
