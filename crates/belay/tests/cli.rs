//! The `belay` binary as users and scripts run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn belay(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run belay");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for belay")
}

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "exactly one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

#[test]
fn classify_json_is_one_object_with_every_statement() {
    let out = belay(
        &[
            "sql",
            "classify",
            "--json",
            "--sql",
            "SELECT 1; DROP TABLE public.payments CASCADE",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["class"], "destructive");
    let statements = v["statements"].as_array().expect("statements");
    assert_eq!(statements.len(), 2);
    let drop = &statements[1];
    assert_eq!(drop["class"], "destructive");
    assert_eq!(drop["kind"], "DROP TABLE");
    assert_eq!(drop["relations"][0]["name"], "public.payments");
    assert_eq!(drop["relations"][0]["access"], "drop");
    let flags: Vec<&str> = drop["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        flags.contains(&"cascade") && flags.contains(&"multiple_statements"),
        "{flags:?}"
    );
    assert!(drop["reason"].as_str().unwrap().contains("payments"));
    let mut keys: Vec<&String> = drop.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["class", "flags", "kind", "reason", "relations"]);
}

#[test]
fn classify_reads_standard_input() {
    let out = belay(
        &["sql", "classify", "--json"],
        Some("DELETE FROM rentals WHERE 1 = 1\n"),
    );
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["class"], "destructive");
    assert_eq!(v["statements"][0]["flags"][0], "tautological_where");
}

#[test]
fn unparseable_input_is_classified_unknown_with_exit_zero() {
    let out = belay(
        &["sql", "classify", "--json", "--sql", "DELET FROM payments"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["class"], "unknown");
    assert!(v["statements"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not parse"));
}

#[test]
fn oversized_standard_input_is_unknown_without_reading_it_all() {
    let big = format!("SELECT '{}'", "x".repeat(4096));
    let out = belay(
        &["sql", "classify", "--json", "--max-input-bytes", "1024"],
        Some(&big),
    );
    assert!(out.status.success());
    assert_eq!(json(&out)["class"], "unknown");
}

#[test]
fn readable_summary_names_class_and_reason() {
    let out = belay(&["sql", "classify", "--sql", "TRUNCATE payments"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("class: destructive"), "{text}");
    assert!(
        text.contains("TRUNCATE removes every row of `payments`"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_two() {
    for args in [
        &["sql", "classify", "--no-such-flag"][..],
        &["sql"][..],
        &["no-such-command"][..],
    ] {
        let out = belay(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn invalid_utf8_on_standard_input_is_a_usage_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(["sql", "classify"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[0xff, 0xfe, b'S'])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
}
