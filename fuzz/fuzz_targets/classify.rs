//! Fuzz target: any input string must classify without panicking, every statement must have
//! a reason, and the input's class must be the most dangerous of its statements'.

#![no_main]

use belay_core::Class;
use belay_sql::{analyze, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        max_input_bytes: 64 * 1024,
        ..Limits::default()
    };
    let analysis = analyze(sql, &limits);
    let max = analysis.statements.iter().map(|s| s.class).max().unwrap_or(Class::Read);
    assert_eq!(analysis.class, max);
    for s in &analysis.statements {
        assert!(!s.reason.is_empty());
        assert!(s.span.end <= sql.len());
    }
});
