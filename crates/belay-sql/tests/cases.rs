//! Case files under `tests/cases/`: each case names the class it must get, and the whole
//! analysis of every case is kept as a snapshot, so any change in relations, flags or
//! reasons shows up in review.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::fmt::Write as _;
use std::path::Path;

use belay_core::Class;
use belay_sql::{analyze, Analysis, Limits};

struct Case {
    line: usize,
    expected: Class,
    sql: String,
}

fn read_cases(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(expected) = line.strip_prefix("-- expect:") {
            let expected = expected
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
            cases.push(Case {
                line: n + 1,
                expected,
                sql: String::new(),
            });
        } else if let Some(case) = cases.last_mut() {
            case.sql.push_str(line);
            case.sql.push('\n');
        }
    }
    for case in &mut cases {
        case.sql = case.sql.trim().to_owned();
    }
    cases
}

fn render(analysis: &Analysis) -> String {
    let mut out = format!("class: {}\n", analysis.class);
    for s in &analysis.statements {
        let _ = writeln!(out, "- {} ({}): {}", s.kind, s.class, s.reason);
        for r in &s.relations {
            let _ = writeln!(out, "    {} {} {}", r.access, r.object, r.name);
        }
        if !s.flags.is_empty() {
            let flags: Vec<&str> = s.flags.iter().map(|f| f.as_str()).collect();
            let _ = writeln!(out, "    flags: {}", flags.join(", "));
        }
    }
    out
}

#[test]
fn case_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the case files in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("cases")
            .to_owned();
        let cases = read_cases(&text);
        assert!(!cases.is_empty(), "{name}.sql has no case");
        let mut report = String::new();
        for case in &cases {
            let analysis = analyze(&case.sql, &Limits::default());
            if analysis.class != case.expected {
                failures.push(format!(
                    "{name}.sql:{}: `{}` is {} (expected {}): {}",
                    case.line,
                    case.sql,
                    analysis.class,
                    case.expected,
                    analysis.reason()
                ));
            }
            let _ = write!(report, "== {}\n{}\n", case.sql, render(&analysis));
        }
        reports.push((name, report));
    }
    assert!(
        failures.is_empty(),
        "{} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for (name, report) in reports {
        insta::assert_snapshot!(name, report);
    }
}
