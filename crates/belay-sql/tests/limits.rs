//! Fail closed on hostile input: too large, too deep, garbage. None of it may crash the
//! process or come out as anything milder than `unknown`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use belay_core::Class;
use belay_sql::{analyze, Classifier, Flag, Limits};

#[test]
fn input_over_the_size_limit_is_unknown() {
    let limits = Limits {
        max_input_bytes: 64,
        ..Limits::default()
    };
    let sql = format!("SELECT '{}'", "x".repeat(100));
    let analysis = analyze(&sql, &limits);
    assert_eq!(analysis.class, Class::Unknown);
    assert!(analysis.flags().contains(&Flag::TooLarge));
    assert!(
        analysis.reason().contains("limit of 64 bytes"),
        "{}",
        analysis.reason()
    );

    let fits = analyze("SELECT 1", &limits);
    assert_eq!(fits.class, Class::Read);
}

#[test]
fn default_size_limit_is_one_mebibyte() {
    let sql = format!("SELECT 1 -- {}", "x".repeat(1024 * 1024));
    let analysis = analyze(&sql, &Limits::default());
    assert_eq!(analysis.class, Class::Unknown);
    assert!(analysis.flags().contains(&Flag::TooLarge));
}

/// Deep nesting of every shape, run on a thread with the stack size tokio gives its workers,
/// must end as `unknown` (too deep) rather than overflow the stack.
#[test]
fn deep_nesting_is_unknown_and_never_overflows_the_stack() {
    let shapes: Vec<(&str, String)> = vec![
        ("operators", format!("SELECT {}1", "1+".repeat(200_000))),
        (
            "parentheses",
            format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        ),
        (
            "subqueries",
            format!(
                "SELECT {}1{}",
                "(SELECT ".repeat(20_000),
                ")".repeat(20_000)
            ),
        ),
        ("not", format!("SELECT {}true", "NOT ".repeat(100_000))),
        (
            "arrays",
            format!("SELECT {}1{}", "ARRAY[".repeat(50_000), "]".repeat(50_000)),
        ),
        (
            "cte",
            format!(
                "DELETE FROM t WHERE id IN ({}1{})",
                "(SELECT ".repeat(60),
                ")".repeat(60)
            ),
        ),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            shapes
                .into_iter()
                .map(|(name, sql)| (name, analyze(&sql, &Limits::default())))
                .collect::<Vec<_>>()
        })
        .expect("spawn");
    let results = handle
        .join()
        .expect("the classifier must not crash on deep input");
    for (name, analysis) in results {
        assert_eq!(
            analysis.class,
            Class::Unknown,
            "{name}: {}",
            analysis.reason()
        );
        assert!(
            analysis.flags().contains(&Flag::TooDeep)
                || analysis.flags().contains(&Flag::ParseError),
            "{name}: {:?}",
            analysis.flags()
        );
    }
}

#[test]
fn walk_depth_limit_is_configurable() {
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(5), ")".repeat(5));
    let shallow = Limits {
        max_depth: 8,
        ..Limits::default()
    };
    let analysis = analyze(&sql, &shallow);
    assert_eq!(analysis.class, Class::Unknown);
    assert!(analysis.flags().contains(&Flag::TooDeep));
    assert_eq!(analyze(&sql, &Limits::default()).class, Class::Read);
}

#[test]
fn garbage_is_unknown() {
    for sql in [
        "\u{0}DROP TABLE x",
        "SELECT 1\u{0}; DROP TABLE x",
        ")))(((",
        "$$",
        "'",
        "E'\\'",
    ] {
        let analysis = analyze(sql, &Limits::default());
        assert_eq!(analysis.class, Class::Unknown, "`{}`", sql.escape_debug());
    }
}

#[test]
fn empty_input_has_no_statement() {
    for sql in ["", "  ", ";", "-- nothing\n", "/* nothing */ ;;"] {
        let analysis = analyze(sql, &Limits::default());
        assert!(analysis.statements.is_empty(), "`{sql}`");
        assert_eq!(analysis.class, Class::Read);
    }
}

#[test]
fn cache_returns_the_same_analysis_for_the_same_text() {
    let classifier = Classifier::new(Limits::default(), 100);
    let first = classifier.classify("DELETE FROM payments");
    let second = classifier.classify("DELETE FROM payments");
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "second call must be a cache hit"
    );
    let other = classifier.classify("DELETE FROM payments WHERE id = 1");
    assert_eq!(first.class, Class::Destructive);
    assert_eq!(other.class, Class::Write);
}

#[test]
fn statements_carry_their_span() {
    let sql = "SELECT 1;  DELETE FROM rentals ;";
    let analysis = analyze(sql, &Limits::default());
    let texts: Vec<&str> = analysis
        .statements
        .iter()
        .map(|s| sql[s.span.clone()].trim())
        .collect();
    assert_eq!(texts, ["SELECT 1", "DELETE FROM rentals"]);
}

#[test]
fn a_text_of_more_statements_than_the_limit_is_unknown_before_it_is_parsed() {
    let limits = Limits {
        max_statements: 50,
        ..Limits::default()
    };
    let many = "SELECT 1;".repeat(51);
    let analysis = analyze(&many, &limits);
    assert_eq!(analysis.class, Class::Unknown);
    assert!(analysis.flags().contains(&Flag::TooLarge));
    assert!(
        analysis.reason().contains("51 statements"),
        "{}",
        analysis.reason()
    );
    // Semicolons inside strings are not statements.
    let quoted = format!("SELECT '{}'", ";".repeat(500));
    assert_eq!(analyze(&quoted, &limits).class, Class::Read);
    assert_eq!(analyze(&"SELECT 1;".repeat(50), &limits).class, Class::Read);
}
