//! The audit trail: outcomes, read summaries, refused startups and failed logins.

use super::*;

#[test]
fn the_audit_log_records_outcomes_and_verifies() {
    let before = harness().app.store().head_seq().unwrap();
    block(async {
        let c = client("worker", "staging").await;
        c.simple_query("INSERT INTO scratch VALUES (800, 'secret-value-123')")
            .await
            .unwrap();
        c.simple_query("DELETE FROM scratch WHERE id = 800")
            .await
            .unwrap();
        // A failure records its SQLSTATE, not a row count.
        let e = c
            .simple_query("INSERT INTO items VALUES (1, 'duplicate')")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "23505");
    });
    // Outcomes are written without waiting; give the group commit a moment. A write's
    // outcome is in its own event when it ran in a transaction with its ledger row, else in
    // an outcome event naming its decision.
    let outcomes = |events: &[belay_audit::Event]| -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for e in events {
            match e.draft.kind.as_str() {
                "statement.outcome" => all.push(e.draft.detail.clone()),
                "statement" => all.extend(
                    e.draft.detail["outcomes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                ),
                _ => {}
            }
        }
        all
    };
    let tags = |events: &[belay_audit::Event]| -> Vec<String> {
        outcomes(events)
            .iter()
            .filter_map(|o| o["tag"].as_str().map(str::to_owned))
            .collect()
    };
    let failed = |events: &[belay_audit::Event]| {
        outcomes(events)
            .into_iter()
            .find(|o| o["sqlstate"].is_string())
    };
    let mut events = Vec::new();
    for _ in 0..100 {
        events = harness().app.store().events(before + 1, 10_000).unwrap();
        let tags = tags(&events);
        if tags.iter().any(|t| t == "DELETE 1")
            && tags.iter().any(|t| t == "INSERT 0 1")
            && failed(&events).is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed = failed(&events).expect("the failed INSERT's outcome");
    assert_eq!(failed["sqlstate"], "23505");
    assert!(failed["rows"].is_null(), "{failed:?}");
    let tags = tags(&events);
    assert!(
        tags.contains(&"INSERT 0 1".to_owned()) && tags.contains(&"DELETE 1".to_owned()),
        "{tags:?}"
    );
    let text =
        serde_json::to_string(&events.iter().map(|e| &e.draft.detail).collect::<Vec<_>>()).unwrap();
    assert!(
        !text.contains("secret-value-123"),
        "constants are redacted: {text}"
    );
    assert!(!text.contains(harness().tokens["worker"].expose()));
    let report = belay_app::verify_audit(&harness().app).unwrap();
    assert_eq!(report.broken, None);
}

#[test]
fn allowed_reads_are_summarised_with_their_count_even_while_the_session_idles() {
    let before = harness().app.store().head_seq().unwrap();
    let sql = "SELECT name FROM items WHERE id = 42";
    let counted = block(async {
        // Its own agent: other tests read the same table as `reader` at the same time.
        let c = client("counted", "staging").await;
        for _ in 0..5 {
            c.query(sql, &[]).await.unwrap();
        }
        c.simple_query("SELECT count(*) FROM items").await.unwrap();
        // The session stays open and idle: the summary must not wait for it to end.
        let mut counted = 0;
        for _ in 0..200 {
            let events = harness().app.store().events(before + 1, 10_000).unwrap();
            counted = events
                .iter()
                .filter(|e| {
                    e.draft.kind == "statement.reads"
                        && e.draft.actor == "agent:counted"
                        && e.draft.detail["phase"] == "execute"
                        && e.draft.detail["statements"][0]["relations"][0]["name"] == "items"
                })
                .map(|e| e.draft.detail["count"].as_u64().unwrap())
                .sum::<u64>();
            if counted >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(c);
        counted
    });
    assert_eq!(counted, 5, "five executions of one read, counted");
}

#[test]
fn refused_startups_are_recorded_and_failed_logins_cannot_flood_the_log() {
    // A gateway of its own: its count of refusals per source starts at zero.
    let h = harness();
    let (addr, _stop) = start_gateway(&h.runtime, h.app.clone(), belay_pg::Options::default());
    let before = harness().app.store().head_seq().unwrap();
    let err = block(async {
        let token = harness().tokens["worker"].expose().to_owned();
        Raw::connect(
            addr,
            &[
                ("user", "worker"),
                ("database", "staging"),
                ("options", "-B 100"),
            ],
            &token,
        )
        .await
        .err()
        .unwrap()
    });
    assert_eq!(err.code, "08P01");
    let events = harness().app.store().events(before + 1, 10_000).unwrap();
    assert!(
        events.iter().any(|e| e.draft.kind == "connection"
            && e.draft.outcome.as_deref() == Some("refused")
            && e.draft.reasons.iter().any(|r| r.contains("options"))),
        "the refused startup is recorded"
    );
    let before = harness().app.store().head_seq().unwrap();
    for _ in 0..40 {
        let err = block(async {
            Raw::connect(
                addr,
                &[("user", "worker"), ("database", "staging")],
                "belay_agent_wrong",
            )
            .await
            .err()
            .unwrap()
        });
        assert_eq!(err.code, "28P01");
    }
    let written = harness()
        .app
        .store()
        .events(before + 1, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.draft.kind == "connection" && e.draft.outcome.as_deref() == Some("refused"))
        .count();
    // At most ten per source and minute (twice that if a minute turns during the test).
    assert!(written <= 20, "{written} refusals recorded one by one");
}

#[test]
fn read_summaries_keep_each_distinct_statement_redacted_with_its_count() {
    let before = harness().app.store().head_seq().unwrap();
    let texts = block(async {
        let c = client("summarised", "staging").await;
        for id in [7, 8, 9] {
            c.simple_query(&format!(
                "SELECT name FROM items WHERE id = {id} AND name <> 'secret-{id}'"
            ))
            .await
            .unwrap();
        }
        c.simple_query("SELECT id FROM items WHERE id = 1")
            .await
            .unwrap();
        let mut texts = Vec::new();
        for _ in 0..200 {
            let events = harness().app.store().events(before + 1, 10_000).unwrap();
            texts = events
                .iter()
                .filter(|e| {
                    e.draft.kind == "statement.reads" && e.draft.actor == "agent:summarised"
                })
                .flat_map(|e| {
                    e.draft.detail["texts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|t| {
                    (
                        t["sql"].as_str().unwrap().to_owned(),
                        t["count"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>();
            if texts.iter().map(|(_, n)| n).sum::<u64>() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        texts
    });
    let all = format!("{texts:?}");
    assert!(!all.contains("secret-"), "constants are redacted: {all}");
    assert!(
        texts
            .iter()
            .any(|(sql, n)| sql.starts_with("SELECT name FROM items WHERE id = $1") && *n == 3),
        "{all}"
    );
    assert!(
        texts
            .iter()
            .any(|(sql, n)| sql == "SELECT id FROM items WHERE id = $1" && *n == 1),
        "{all}"
    );
}

#[test]
fn writes_in_a_block_run_while_their_records_become_durable_and_commit_after_them() {
    let before = harness().app.store().head_seq().unwrap();
    let (committed, rolled_back) = block(async {
        let c = client("setter", "staging").await;
        // Simple and extended protocol, inside blocks: forwarded before their records are
        // durable; the COMMIT carries them into the ledger or waits for them.
        c.batch_execute("BEGIN").await.unwrap();
        c.simple_query("INSERT INTO scratch VALUES (810, 'in a block')")
            .await
            .unwrap();
        c.execute("UPDATE scratch SET note = $1 WHERE id = 810", &[&"updated"])
            .await
            .unwrap();
        c.batch_execute("COMMIT").await.unwrap();
        let committed = value(&c, "SELECT note FROM scratch WHERE id = 810").await;
        c.batch_execute("BEGIN; INSERT INTO scratch VALUES (811, 'rolled back')")
            .await
            .unwrap();
        c.simple_query("INSERT INTO scratch VALUES (812, 'rolled back')")
            .await
            .unwrap();
        c.batch_execute("ROLLBACK").await.unwrap();
        let rolled_back = value(&c, "SELECT count(*) FROM scratch WHERE id IN (811, 812)").await;
        c.batch_execute("DELETE FROM scratch WHERE id = 810")
            .await
            .unwrap();
        c.batch_execute("CREATE TABLE IF NOT EXISTS audit_outcome_probe (a int)")
            .await
            .unwrap();
        (committed, rolled_back)
    });
    assert_eq!(committed, "updated");
    assert_eq!(rolled_back, "0");
    let decision_of = |events: &[belay_audit::Event], text: &str| {
        events
            .iter()
            .find(|e| {
                e.draft.kind == "statement"
                    && e.draft.detail["sql"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(text))
            })
            .cloned()
    };
    let mut events = Vec::new();
    for _ in 0..100 {
        events = harness().app.store().events(before + 1, 10_000).unwrap();
        let delete = decision_of(&events, "CREATE TABLE IF NOT EXISTS audit_outcome_probe");
        if delete.is_some_and(|d| {
            events
                .iter()
                .any(|e| e.draft.kind == "statement.outcome" && e.draft.detail["decision"] == d.seq)
        }) && decision_of(&events, "UPDATE scratch SET note").is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A write inside a block is one event, its outcome in it: the event is written when
    // its statement has answered.
    for (text, tag) in [
        ("INSERT INTO scratch VALUES", "INSERT 0 1"),
        ("UPDATE scratch SET note", "UPDATE 1"),
    ] {
        let e = decision_of(&events, text).unwrap_or_else(|| panic!("no decision for `{text}`"));
        assert_eq!(e.draft.outcome.as_deref(), Some("completed"), "{text}");
        assert_eq!(e.draft.detail["outcomes"][0]["tag"], tag, "{text}");
        assert_eq!(e.draft.detail["outcomes"][0]["rows"], 1, "{text}");
        assert!(
            !events.iter().any(|o| o.draft.kind == "statement.outcome"
                && o.draft.detail["decision"] == e.seq),
            "`{text}` has no second event"
        );
    }
    // A write that cannot run before its record is durable (DDL) is recorded before it
    // runs; its outcome, an event of its own, names it.
    let ddl = decision_of(&events, "CREATE TABLE IF NOT EXISTS audit_outcome_probe").unwrap();
    assert!(
        events.iter().any(|e| e.draft.kind == "statement.outcome"
            && e.draft.detail["decision"] == ddl.seq
            && e.draft.outcome.as_deref() == Some("completed")),
        "the outcome of the DDL names its decision {}",
        ddl.seq
    );
    assert!(belay_audit::verify(&events_all()).is_ok());
}

fn events_all() -> Vec<belay_audit::Event> {
    harness().app.store().events(1, 10_000_000).unwrap()
}
