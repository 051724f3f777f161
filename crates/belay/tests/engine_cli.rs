//! init, identities, policy and audit through the `belay` binary, as an operator uses them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::process::{Command, Output};

fn belay(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_belay"))
        .args(args)
        .env("BELAY_CONFIG", config)
        .env("USER", "tester")
        .output()
        .expect("run belay")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("belay.toml");
    ok(&belay(&config, &["init", dir.path().to_str().unwrap()]));
    ok(&belay(&config, &["human", "add", "alice"]));
    ok(&belay(
        &config,
        &[
            "agent",
            "add",
            "ci-bot",
            "--owner",
            "alice",
            "--grant",
            "staging=destructive",
            "--grant",
            "production=read",
            "--json",
        ],
    ));
    (dir, config)
}

#[test]
fn init_add_and_explain_in_both_environments() {
    let (_dir, config) = setup();
    let explain = |env: &str, sql: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&belay(
            &config,
            &[
                "policy", "explain", "--agent", "ci-bot", "--env", env, "--sql", sql, "--json",
            ],
        )))
        .unwrap()
    };
    let prod_drop = explain("production", "DROP TABLE payments");
    assert_eq!(prod_drop["class"], "destructive");
    assert_eq!(prod_drop["verdict"], "approve");
    assert_eq!(prod_drop["approvals_required"], 1);
    assert_eq!(prod_drop["reversible"], true);
    assert_eq!(prod_drop["backup_first"], true);
    assert_eq!(prod_drop["policies"][0], "production-destructive");
    assert_eq!(prod_drop["approval"]["expires_after_s"], 3600);
    assert_eq!(prod_drop["approval"]["run_within_s"], 900);
    assert_eq!(prod_drop["approval"]["approvers"], serde_json::json!([]));
    let mut keys: Vec<&String> = prod_drop.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "approval",
            "approvals_required",
            "backup_first",
            "class",
            "policies",
            "reason",
            "reversible",
            "verdict"
        ]
    );

    let staging_drop = explain("staging", "DROP TABLE payments");
    assert_eq!(staging_drop["verdict"], "allow");
    assert_eq!(staging_drop["reversible"], true);
    assert_eq!(
        explain("production", "SELECT * FROM rentals")["verdict"],
        "allow"
    );
    assert_eq!(
        explain("production", "SET ROLE postgres")["verdict"],
        "deny"
    );

    let text = ok(&belay(
        &config,
        &[
            "policy",
            "explain",
            "--agent",
            "ci-bot",
            "--env",
            "production",
            "--sql",
            "TRUNCATE payments",
        ],
    ));
    assert!(
        text.contains("approve(1), reversible, backup first"),
        "{text}"
    );
    assert!(text.contains("production-destructive"), "{text}");
}

#[test]
fn tokens_are_shown_once_and_listed_never() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("belay.toml");
    ok(&belay(&config, &["init", dir.path().to_str().unwrap()]));
    let added: serde_json::Value =
        serde_json::from_str(&ok(&belay(&config, &["human", "add", "bob", "--json"]))).unwrap();
    let token = added["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("belay_human_"));
    let list = ok(&belay(&config, &["human", "list", "--json"]));
    assert!(!list.contains(&token[12..]));
    let export = ok(&belay(&config, &["audit", "export", "--format", "jsonl"]));
    assert!(
        !export.contains(&token[12..]),
        "a token leaked into the audit log"
    );
    assert!(export
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn audit_verify_exits_nonzero_on_tampering() {
    let (dir, config) = setup();
    let verify = ok(&belay(&config, &["audit", "verify", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&verify).unwrap();
    assert_eq!(v["intact"], true, "{v}");

    let conn = rusqlite::Connection::open(dir.path().join("state/belay.db")).unwrap();
    conn.execute(
        "UPDATE audit_events SET actor = 'operator:someone-else' WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let out = belay(&config, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("event 2"),
        "{text}"
    );
}

#[test]
fn a_bad_configuration_names_file_and_line() {
    let (dir, config) = setup();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "checkpoint_every = 1000",
        "checkpoint_every = 1000\nsurprise = true",
    );
    std::fs::write(&config, text).unwrap();
    let out = belay(&config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belay.toml:") && err.contains("surprise"),
        "{err}"
    );

    let missing = belay(&dir.path().join("nope.toml"), &["agent", "list"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[test]
fn an_invalid_policy_is_reported_with_its_line() {
    let (dir, config) = setup();
    let policy = dir.path().join("policy.cedar");
    let text = std::fs::read_to_string(&policy).unwrap()
        + "\n@id(\"typo\")\npermit (principal, action, resource) when { context.grant_lvl > 1 };\n";
    std::fs::write(&policy, &text).unwrap();
    let out = belay(&config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("grant_lvl")).unwrap() + 1;
    assert!(
        err.contains("typo") && err.contains(&format!("line {line}")),
        "line {line}: {err}"
    );
}

#[test]
fn policy_test_and_diff() {
    let (dir, config) = setup();
    let out = ok(&belay(
        &config,
        &[
            "policy",
            "test",
            dir.path().join("policy-tests").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" passed, 0 failed"), "{out}");

    let old = dir.path().join("policy.cedar");
    let new = dir.path().join("wider.cedar");
    let ddl_rule = "action == Belay::Action::\"ddl\", resource is Belay::Environment)\nwhen { resource.production };";
    let original = std::fs::read_to_string(&old).unwrap();
    assert!(original.contains(ddl_rule));
    let widened = original.replace(
        ddl_rule,
        &ddl_rule.replace(
            "resource.production",
            "resource.production && context.grant_level < 3",
        ),
    );
    std::fs::write(&new, widened).unwrap();
    let diff: serde_json::Value = serde_json::from_str(&ok(&belay(
        &config,
        &[
            "policy",
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--json",
        ],
    )))
    .unwrap();
    let changes = diff.as_array().unwrap();
    assert!(!changes.is_empty());
    assert!(
        changes.iter().all(|c| c["class"] == "ddl"
            && c["tier"] == "production"
            && (c["grant"] == "ddl" || c["grant"] == "destructive")
            && c["new"] == "allow"
            && c["widens"] == true),
        "{diff}"
    );

    let same = ok(&belay(
        &config,
        &[
            "policy",
            "diff",
            old.to_str().unwrap(),
            old.to_str().unwrap(),
        ],
    ));
    assert!(same.contains("no verdict changes"));

    std::fs::write(dir.path().join("policy-tests/extra.toml"), "[[case]]\nname = \"wrong\"\ntier = \"production\"\ngrant = \"read\"\nclass = \"destructive\"\nverdict = \"allow\"\n").unwrap();
    let failing = belay(
        &config,
        &[
            "policy",
            "test",
            dir.path().join("policy-tests").to_str().unwrap(),
        ],
    );
    assert_eq!(failing.status.code(), Some(1));
}

#[test]
fn grants_are_checked_against_the_configuration() {
    let (_dir, config) = setup();
    let out = belay(
        &config,
        &[
            "agent", "add", "x", "--owner", "alice", "--grant", "qa=read",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such environment"));
    let out = belay(
        &config,
        &[
            "agent",
            "add",
            "x",
            "--owner",
            "alice",
            "--grant",
            "staging=admin",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = belay(
        &config,
        &[
            "agent", "add", "x", "--owner", "alice", "--grant", "staging",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENV=CLASS"));
}
