//! The ledger of decisions in the upstream database (`belay_ledger.decisions`): a COMMIT carries the
//! decisions of its block's writes into it, in both protocols; when writing it fails, the
//! block does not commit and the client is told why; rows an earlier run left are added to
//! the audit log; and agents may read it, never change it.

use super::*;

/// Runs one block of one write in `env` through belay, committing with the simple protocol
/// or the extended one; the COMMIT's error, if any.
async fn one_block(
    c: &tokio_postgres::Client,
    id: i32,
    extended: bool,
) -> Option<tokio_postgres::Error> {
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(&format!("INSERT INTO scratch VALUES ({id}, 'ledger')"))
        .await
        .unwrap();
    let commit = if extended {
        c.execute("COMMIT", &[]).await.map(|_| ())
    } else {
        c.simple_query("COMMIT").await.map(|_| ())
    };
    commit.err()
}

/// Until the ledger of `db` is made and read once, COMMITs wait for the audit log;
/// blocks are run until the table is there, and a little after.
async fn ledger_ready(c: &tokio_postgres::Client, db: &str) {
    for i in 0..200 {
        assert!(one_block(c, 9000 + i, false).await.is_none());
        if upstream(
            db,
            "SELECT to_regclass('belay_ledger.decisions') IS NOT NULL",
        ) == "t"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the ledger of `{db}` was never made");
}

#[test]
fn a_commit_that_cannot_write_the_ledger_does_not_commit_and_says_why() {
    block(async {
        let c = client("worker", "ledgered").await;
        ledger_ready(&c, "ledgered").await;
        // What belay writes there now fails, as a full disk or a lost privilege would.
        upstream(
            "ledgered",
            "ALTER TABLE belay_ledger.decisions ADD CONSTRAINT refuse_all CHECK (false) NOT VALID",
        );
        for (id, extended) in [(701, false), (702, true)] {
            // The reconciler may still be finishing its first read: then the COMMIT waited
            // for the audit log, and committed.
            let mut error = None;
            for attempt in 0..50 {
                let this = id * 100 + attempt;
                match one_block(&c, this, extended).await {
                    Some(e) => {
                        error = Some((this, e));
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let (this, e) = error.expect("a COMMIT never went through the ledger");
            let db = e.as_db_error().expect("a database error");
            assert!(
                db.message().contains("belay could not write the decisions of this transaction into the database's ledger")
                    && db.message().contains("refuse_all"),
                "{}",
                db.message()
            );
            assert_eq!(
                upstream(
                    "ledgered",
                    &format!("SELECT count(*) FROM scratch WHERE id = {this}")
                ),
                "0",
                "extended: {extended}"
            );
            // The block failed as a server error fails it: ROLLBACK ends it, and the
            // session goes on.
            c.simple_query("ROLLBACK").await.unwrap();
            assert_eq!(value(&c, "SELECT 1").await, "1");
        }
        // A write outside a block runs in an implicit transaction with its ledger row: it
        // fails with it, and the session stays idle, as after any failed statement.
        let simple = c
            .simple_query("INSERT INTO scratch VALUES (706, 'autocommit')")
            .await
            .unwrap_err();
        let extended = c
            .execute("INSERT INTO scratch VALUES ($1, 'autocommit')", &[&707i32])
            .await
            .unwrap_err();
        for e in [&simple, &extended] {
            let message = e.as_db_error().expect("a database error").message();
            assert!(message.contains("database's ledger"), "{message}");
        }
        assert_eq!(
            upstream(
                "ledgered",
                "SELECT count(*) FROM scratch WHERE id IN (706, 707)"
            ),
            "0"
        );
        assert_eq!(value(&c, "SELECT 2").await, "2");
        upstream(
            "ledgered",
            "ALTER TABLE belay_ledger.decisions DROP CONSTRAINT refuse_all",
        );
        c.simple_query("INSERT INTO scratch VALUES (706, 'autocommit')")
            .await
            .unwrap();
        c.execute("INSERT INTO scratch VALUES ($1, 'autocommit')", &[&707i32])
            .await
            .unwrap();
        assert_eq!(
            upstream(
                "ledgered",
                "SELECT count(*) FROM scratch WHERE id IN (706, 707)"
            ),
            "2"
        );
        // The statement's own failure is the server's, as it would be directly.
        upstream(
            "ledgered",
            "CREATE UNIQUE INDEX IF NOT EXISTS scratch_706 ON scratch (id) WHERE id = 706",
        );
        let duplicate = c
            .simple_query("INSERT INTO scratch VALUES (706, 'again')")
            .await
            .unwrap_err();
        assert_eq!(code(&duplicate), "23505", "{duplicate:?}");
        assert_eq!(value(&c, "SELECT 3").await, "3");
        for (id, extended) in [(703, false), (704, true), (705, true)] {
            let e = one_block(&c, id, extended).await;
            assert!(e.is_none(), "{e:?}");
            assert_eq!(
                upstream(
                    "ledgered",
                    &format!("SELECT count(*) FROM scratch WHERE id = {id}")
                ),
                "1"
            );
        }
    });
}

#[test]
fn a_decision_an_earlier_run_left_in_the_ledger_is_added_to_the_audit_log() {
    let store = harness().app.store().meta("ledger_store").unwrap().unwrap();
    block(async {
        let c = client("worker", "reconciled").await;
        ledger_ready(&c, "reconciled").await;
    });
    // A run that died before its audit writer made this event durable; and a row of another
    // belay's audit log, which this one leaves alone.
    let key = "00000000000000aa-7";
    let event = serde_json::json!({
        "time_us": 1, "actor": "agent:worker", "kind": "statement",
        "environment": "reconciled", "fingerprint": null, "class": "write", "verdict": "allow",
        "reasons": ["the agent holds a grant for this environment"], "policies": [],
        "outcome": "completed",
        "detail": { "sql": "INSERT INTO scratch VALUES ($1, $2)", "ledger": key },
    });
    // A transaction's row holds all its events (rows of one event, as above, are what
    // earlier versions wrote).
    let (first, second) = ("00000000000000cc-1", "00000000000000cc-4");
    let with_key = |k: &str, sql: &str| {
        let mut e = event.clone();
        e["detail"] = serde_json::json!({ "sql": sql, "ledger": k });
        e
    };
    let block = serde_json::json!([
        with_key(first, "UPDATE scratch SET b = $1"),
        with_key(second, "DELETE FROM scratch WHERE a = $1"),
    ]);
    // A row whose events are not the keys it is filed under was not written by belay: it
    // stays, and nothing of it enters the log.
    let (filed, named) = ("00000000000000dd-1", "00000000000000ee-1");
    let stray = serde_json::json!([with_key(named, "DELETE FROM scratch")]);
    upstream(
        "reconciled",
        &format!(
            "INSERT INTO belay_ledger.decisions (key, store, event) VALUES \
             ('{key}', '{store}', '{event}'), ('00000000000000bb-1', 'another', '{{}}'), \
             ('{first} {second}', '{store}', '{block}'), ('{filed}', '{store}', '{stray}')"
        ),
    );
    let mut found = None;
    for _ in 0..200 {
        let events = harness().app.store().events(1, 1_000_000).unwrap();
        let of_block = events
            .iter()
            .filter(|e| e.draft.detail["ledger"] == first || e.draft.detail["ledger"] == second)
            .count();
        found = events.into_iter().find(|e| e.draft.detail["ledger"] == key);
        if found.is_some()
            && of_block == 2
            && upstream(
                "reconciled",
                &format!("SELECT count(*) FROM belay_ledger.decisions WHERE key = '{key}'"),
            ) == "0"
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let found = found.expect("the ledger's row was added to the audit log");
    assert_eq!(
        found.draft.detail["recovered_from"],
        "127.0.0.1:".to_owned() + &harness().cluster.port.to_string() + "/reconciled"
    );
    assert_eq!(found.draft.actor, "agent:worker");
    let events = harness().app.store().events(1, 1_000_000).unwrap();
    for (k, sql) in [
        (first, "UPDATE scratch SET b = $1"),
        (second, "DELETE FROM scratch WHERE a = $1"),
    ] {
        let e = events
            .iter()
            .find(|e| e.draft.detail["ledger"] == k)
            .unwrap_or_else(|| panic!("the event {k} of a transaction's row was recovered"));
        assert_eq!(e.draft.detail["sql"], sql);
        assert!(e.draft.detail["recovered_from"].is_string());
    }
    assert_eq!(
        upstream(
            "reconciled",
            &format!("SELECT count(*) FROM belay_ledger.decisions WHERE key = '{first} {second}'")
        ),
        "0",
        "a transaction's recovered row is removed"
    );
    assert_eq!(
        upstream(
            "reconciled",
            &format!("SELECT count(*) FROM belay_ledger.decisions WHERE key = '{filed}'")
        ),
        "1",
        "a row whose events do not match its keys is left in place"
    );
    assert!(!events
        .iter()
        .any(|e| e.draft.detail["ledger"] == named || e.draft.detail["ledger"] == filed));
    assert_eq!(
        upstream(
            "reconciled",
            &format!("SELECT count(*) FROM belay_ledger.decisions WHERE key = '{key}'")
        ),
        "0",
        "a recovered row is removed"
    );
    assert_eq!(
        upstream(
            "reconciled",
            "SELECT count(*) FROM belay_ledger.decisions WHERE store = 'another'"
        ),
        "1",
        "another audit log's row stays"
    );
    upstream(
        "reconciled",
        "DELETE FROM belay_ledger.decisions WHERE store = 'another'",
    );
}

#[test]
fn agents_may_read_belay_s_ledger_but_never_change_it() {
    block(async {
        let c = client("worker", "reconciled").await;
        ledger_ready(&c, "reconciled").await;
        let count: i64 = value(&c, "SELECT count(*) FROM belay_ledger.decisions")
            .await
            .parse()
            .unwrap();
        assert!(count >= 0);
        for sql in [
            "INSERT INTO belay_ledger.decisions (key, store, event) VALUES ('x', 'y', '{}')",
            "DELETE FROM belay_ledger.decisions",
            "DELETE FROM belay_ledger.decisions WHERE key = 'x'",
            "UPDATE belay_ledger.decisions SET event = '{}'",
            "TRUNCATE belay_ledger.decisions",
            "DROP TABLE belay_ledger.decisions",
            "DROP SCHEMA belay_ledger CASCADE",
            "ALTER TABLE belay_ledger.decisions ADD COLUMN x int",
            "ALTER TABLE \"belay_ledger\".decisions RENAME TO gone",
            "CREATE TABLE belay_ledger.other (a int)",
            "CREATE INDEX ON belay_ledger.decisions (written)",
            "COPY belay_ledger.decisions FROM STDIN",
            "WITH d AS (DELETE FROM belay_ledger.decisions RETURNING *) SELECT count(*) FROM d",
            "ALTER SCHEMA belay_ledger RENAME TO gone",
            "ALTER SCHEMA BELAY_LEDGER OWNER TO CURRENT_USER",
            "ALTER SCHEMA U&\"belay\\005fledger\" RENAME TO gone",
            "ALTER TABLE scratch SET SCHEMA belay_ledger",
            "CREATE VIEW ledger_view AS SELECT * FROM belay_ledger.decisions",
            "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM belay_ledger.decisions'",
            "DO $$BEGIN DELETE FROM belay_ledger.decisions; END$$",
            "CREATE RULE r AS ON INSERT TO belay_ledger.decisions DO INSTEAD NOTHING",
            "GRANT ALL ON belay_ledger.decisions TO PUBLIC",
            "COMMENT ON TABLE belay_ledger.decisions IS 'mine'",
            "SET search_path = belay_ledger, public",
            "SELECT set_config('search_path', 'belay_ledger', false)",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            assert!(
                matches!(code(&e).as_str(), "42501" | "YB001"),
                "{sql}: {e:?}"
            );
        }
        // Reading it, as pg_dump does, is not refused.
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("LOCK TABLE belay_ledger.decisions IN ACCESS SHARE MODE")
            .await
            .unwrap();
        c.simple_query("COMMIT").await.unwrap();
        assert_eq!(
            upstream("reconciled", "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'belay_ledger' AND table_name = 'decisions'"),
            "4",
            "the ledger is as belay made it"
        );
    });
}

/// What a session's blocks committed in `scratch` among `ids`.
fn committed(db: &str, ids: std::ops::RangeInclusive<i32>) -> String {
    upstream(
        db,
        &format!(
            "SELECT count(*) FROM scratch WHERE id BETWEEN {} AND {}",
            ids.start(),
            ids.end()
        ),
    )
}

#[test]
fn the_ledger_s_prepared_statement_is_made_again_when_a_client_drops_every_prepared_statement() {
    block(async {
        let c = client("worker", "staging").await;
        ledger_ready(&c, "staging").await;
        // belay prepares its INSERT once per connection and then binds it; what drops every
        // prepared statement, the client's pool reset, drops belay's too.
        let mut id = 8800;
        for (reset, by_execute) in [
            ("SELECT 1", false),
            ("DISCARD ALL", false),
            ("DEALLOCATE ALL", false),
            ("DISCARD ALL", true),
            ("DEALLOCATE ALL", true),
        ] {
            if by_execute {
                c.execute(reset, &[]).await.unwrap();
            } else {
                c.simple_query(reset).await.unwrap();
            }
            for extended in [false, true, true, false, false, true] {
                id += 1;
                let e = one_block(&c, id, extended).await;
                assert!(
                    e.is_none(),
                    "after {reset} ({by_execute}), extended {extended}: {e:?}"
                );
            }
            // The blocks went through the ledger: its statement is prepared again.
            assert_eq!(
                value(
                    &c,
                    "SELECT count(*) FROM pg_prepared_statements WHERE name = 'belay_ledger'"
                )
                .await,
                "1",
                "after {reset} ({by_execute})"
            );
        }
        assert_eq!(committed("staging", 8801..=id), (id - 8800).to_string());
    });
}
