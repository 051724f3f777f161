//! The engine end to end on a real state directory: init, identities, explain, the decision
//! path with its audit events, policy cases, and audit verification catching tampering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::path::Path;

use belay_app::{init, run_cases, verify_audit, App};
use belay_config::{Config, ProcessEnv};
use belay_core::{Class, Verdict};

fn fresh() -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "test").unwrap();
    let app =
        App::open(Config::load(&dir.path().join("belay.toml"), &ProcessEnv).unwrap()).unwrap();
    (dir, app)
}

fn with_agent(app: &App) -> belay_core::Secret {
    app.add_human("test", "alice").unwrap();
    let grants = BTreeMap::from([
        ("staging".to_owned(), Class::Destructive),
        ("production".to_owned(), Class::Read),
    ]);
    app.add_agent("test", "ci-bot", "alice", &grants, None)
        .unwrap()
        .1
}

#[test]
fn init_writes_everything_and_refuses_to_overwrite() {
    let (dir, _app) = fresh();
    for f in [
        "belay.toml",
        "policy.cedar",
        "policy-tests/default.toml",
        "state/belay.db",
        "state/audit-signing.key",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state/audit-signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the signing key must be private");
    }
    let err = init(dir.path(), "test").unwrap_err().to_string();
    assert!(err.contains("never overwrites"), "{err}");
}

#[test]
fn explain_gives_the_design_answers_in_both_environments() {
    let (_dir, app) = fresh();
    with_agent(&app);
    let cases = [
        (
            "staging",
            "DROP TABLE payments",
            Verdict::Allow,
            true,
            false,
        ),
        (
            "staging",
            "SELECT * FROM rentals",
            Verdict::Allow,
            false,
            false,
        ),
        ("staging", "SET ROLE postgres", Verdict::Deny, false, false),
        (
            "production",
            "SELECT * FROM rentals",
            Verdict::Allow,
            false,
            false,
        ),
        (
            "production",
            "UPDATE vehicles SET status = 'x' WHERE id = 1",
            Verdict::Approve(1),
            false,
            false,
        ),
        (
            "production",
            "DROP TABLE payments",
            Verdict::Approve(1),
            true,
            true,
        ),
        (
            "production",
            "DELET FROM payments",
            Verdict::Deny,
            false,
            false,
        ),
    ];
    for (env, sql, verdict, reversible, backup_first) in cases {
        let e = app.explain("ci-bot", env, sql).unwrap();
        assert_eq!(
            e.decision.verdict, verdict,
            "{env}: {sql}: {}",
            e.decision.reason
        );
        assert_eq!(e.decision.reversible, reversible, "{env}: {sql}");
        assert_eq!(e.decision.backup_first, backup_first, "{env}: {sql}");
        assert!(!e.decision.reason.is_empty() && !e.decision.policies.is_empty());
    }
    assert!(app.explain("nobody", "staging", "SELECT 1").is_err());
    assert!(app
        .explain("ci-bot", "qa", "SELECT 1")
        .unwrap_err()
        .to_string()
        .contains("no environment named `qa`"));
}

#[test]
fn decisions_are_durable_in_the_audit_log_and_hold_no_token() {
    let (_dir, app) = fresh();
    let token = with_agent(&app);
    let outcome = app.decide(
        &token,
        "production",
        "DROP TABLE payments",
        "127.0.0.1:5555",
    );
    assert_eq!(outcome.decision.verdict, Verdict::Approve(1));
    let seq = outcome.audit_seq.expect("the decision was recorded");
    let event = app.store().events(seq, 1).unwrap().remove(0);
    assert_eq!(event.draft.kind, "decision");
    assert_eq!(event.draft.actor, "agent:ci-bot");
    assert_eq!(event.draft.class.as_deref(), Some("destructive"));
    assert_eq!(event.draft.verdict.as_deref(), Some("approve(1)"));

    let wrong = belay_core::Secret::new("belay_agent_0000");
    let refused = app.decide(&wrong, "production", "SELECT 1", "127.0.0.1:5556");
    assert_eq!(refused.decision.verdict, Verdict::Deny);
    assert!(
        refused.audit_seq.is_some(),
        "failed authentication is recorded too"
    );

    let all = app.store().events(1, 1000).unwrap();
    let secret_part = &token.expose()["belay_agent_".len()..];
    for e in &all {
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.contains(secret_part),
            "a token leaked into event {}",
            e.seq
        );
    }
    let kinds: Vec<&str> = all.iter().map(|e| e.draft.kind.as_str()).collect();
    assert!(
        kinds.contains(&"human.add")
            && kinds.contains(&"agent.add")
            && kinds.contains(&"config.init"),
        "{kinds:?}"
    );
}

#[test]
fn the_decision_path_denies_when_the_audit_log_cannot_be_written() {
    let (dir, app) = fresh();
    let token = with_agent(&app);
    assert_eq!(
        app.decide(&token, "staging", "SELECT 1", "peer")
            .decision
            .verdict,
        Verdict::Allow
    );
    // Break the store underneath the running app, as a failed or full disk would.
    let conn = rusqlite::Connection::open(dir.path().join("state/belay.db")).unwrap();
    conn.execute_batch("DROP TABLE audit_events").unwrap();
    drop(conn);
    let outcome = app.decide(&token, "staging", "SELECT 1", "peer");
    assert_eq!(outcome.decision.verdict, Verdict::Deny);
    assert!(outcome.audit_seq.is_none());
    assert!(
        outcome.decision.reason.contains("audit log"),
        "{}",
        outcome.decision.reason
    );
}

#[test]
fn audit_verify_catches_an_edited_event_and_truncation() {
    let (dir, app) = fresh();
    let token = with_agent(&app);
    for i in 0..20 {
        app.decide(&token, "staging", &format!("SELECT {i}"), "peer");
    }
    app.store().checkpoint(belay_app::now_us()).unwrap();
    let report = verify_audit(&app).unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    assert!(report.events >= 20 && report.checkpoints >= 1);

    let db = dir.path().join("state/belay.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE audit_events SET verdict = 'deny' WHERE seq = 7", [])
        .unwrap();
    let report = verify_audit(&app).unwrap();
    assert!(
        report.broken.as_deref().unwrap().starts_with("event 7:"),
        "{report:?}"
    );

    // Cutting events off the end leaves a valid chain; the signed checkpoint notices.
    let (dir2, app2) = fresh();
    let token2 = with_agent(&app2);
    for i in 0..5 {
        app2.decide(&token2, "staging", &format!("SELECT {i}"), "peer");
    }
    let cp = app2.store().checkpoint(belay_app::now_us()).unwrap();
    assert!(cp.is_some());
    let conn2 = rusqlite::Connection::open(dir2.path().join("state/belay.db")).unwrap();
    conn2
        .execute(
            "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
            [],
        )
        .unwrap();
    let report = verify_audit(&app2).unwrap();
    assert!(
        report.broken.as_deref().unwrap().contains("removed"),
        "{report:?}"
    );
    let _ = dir;
}

#[test]
fn the_shipped_policy_cases_pass_and_a_wrong_expectation_fails() {
    let (dir, app) = fresh();
    let results = run_cases(
        &app.policy,
        &app.classifier,
        &dir.path().join("policy-tests"),
    )
    .unwrap();
    assert!(results.len() >= 20);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");

    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(
        wrong.join("w.toml"),
        "[[case]]\nname = \"drop is allowed in production\"\ntier = \"production\"\ngrant = \"read\"\nsql = \"DROP TABLE t\"\nverdict = \"allow\"\n",
    )
    .unwrap();
    let results = run_cases(&app.policy, &app.classifier, &wrong).unwrap();
    assert!(!results[0].passed());
    assert!(
        results[0].failures[0].contains("expected allow, got approve(1)"),
        "{:?}",
        results[0].failures
    );
}

#[test]
fn a_missing_configuration_is_an_error_not_a_default() {
    let err = Config::load(Path::new("/nonexistent/belay.toml"), &ProcessEnv).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/belay.toml"));
}

#[test]
fn a_policy_change_is_an_audited_event() {
    let (dir, app) = fresh();
    app.close().unwrap();
    drop(app);
    let policy = dir.path().join("policy.cedar");
    let text = std::fs::read_to_string(&policy).unwrap() + "\n// reviewed\n";
    std::fs::write(&policy, text).unwrap();
    let app =
        App::open(Config::load(&dir.path().join("belay.toml"), &ProcessEnv).unwrap()).unwrap();
    let events = app.store().events(1, 100).unwrap();
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.draft.kind == "config.change")
        .collect();
    assert_eq!(
        changes.last().unwrap().draft.outcome.as_deref(),
        Some("changed"),
        "{changes:#?}"
    );
    assert!(changes.last().unwrap().draft.reasons[0].contains("policy"));
    // Opening again with nothing changed records nothing new.
    let before = app.store().head_seq().unwrap();
    app.close().unwrap();
    drop(app);
    let app =
        App::open(Config::load(&dir.path().join("belay.toml"), &ProcessEnv).unwrap()).unwrap();
    assert_eq!(app.store().head_seq().unwrap(), before);
}
