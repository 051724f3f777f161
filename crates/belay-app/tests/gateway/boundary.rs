//! The boundary between environments and grants: production pinned read-only, another
//! environment's database and roles out of reach, catalog writes and capped settings, grants
//! revoked mid-session.

use super::*;

#[test]
fn read_only_agent_cannot_drop_or_write_in_production_and_the_refusal_is_audited() {
    let before = harness().app.store().head_seq().unwrap();
    let (drop_err, update_err) = block(async {
        let c = client("worker", "production").await;
        let d = c.simple_query("DROP TABLE items").await.unwrap_err();
        let u = c
            .execute("UPDATE items SET name = 'x' WHERE id = $1", &[&1i32])
            .await
            .unwrap_err();
        (d, u)
    });
    let db = drop_err.as_db_error().unwrap();
    assert_eq!(db.code().code(), belay_pg::SQLSTATE_APPROVAL, "{db:?}");
    assert!(
        db.message().contains("DROP TABLE") && db.message().contains("destructive"),
        "{}",
        db.message()
    );
    assert!(db.detail().unwrap().contains("production-destructive"));
    assert_eq!(code(&update_err), belay_pg::SQLSTATE_APPROVAL);
    assert_eq!(
        upstream("production", "SELECT count(*) FROM items WHERE name = 'x'"),
        "0"
    );
    assert_eq!(
        upstream("production", "SELECT to_regclass('items') IS NOT NULL"),
        "t"
    );
    let events = harness().app.store().events(before + 1, 1000).unwrap();
    assert!(events.iter().any(|e| e.draft.kind == "statement"
        && e.draft.class.as_deref() == Some("destructive")
        && e.draft.verdict.as_deref() == Some("approve(1)")
        && e.draft.detail["sql"].as_str() == Some("DROP TABLE items")));
}

#[test]
fn production_session_is_pinned_read_only_and_settings_cannot_be_changed() {
    let (app_name, ro, set_err, rw_err, after_reset) = block(async {
        let c = client("worker", "production").await;
        let get = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap().to_owned())
                    }
                    _ => None,
                })
                .expect("a row")
        };
        let app_name = get(c
            .simple_query("SELECT current_setting('application_name')")
            .await
            .unwrap());
        let ro = get(c
            .simple_query("SHOW default_transaction_read_only")
            .await
            .unwrap());
        let set_err = c
            .simple_query("SELECT set_config('statement_timeout', '0', false)")
            .await
            .unwrap_err();
        let rw_err = c.simple_query("BEGIN READ WRITE").await.unwrap_err();
        c.simple_query("RESET ALL").await.unwrap();
        let after = get(c
            .simple_query("SELECT current_setting('application_name')")
            .await
            .unwrap());
        (app_name, ro, set_err, rw_err, after)
    });
    assert_eq!(app_name, "belay:worker");
    assert_eq!(ro, "on");
    assert_eq!(code(&set_err), belay_pg::SQLSTATE_DENIED);
    assert_eq!(code(&rw_err), belay_pg::SQLSTATE_DENIED);
    let detail = rw_err
        .as_db_error()
        .and_then(|d| d.detail())
        .unwrap_or_default();
    assert!(
        detail.contains("grant"),
        "the refusal says what governs it: {detail}"
    );
    assert_eq!(after_reset, "belay:worker");
}

#[test]
fn read_write_modes_are_refused_only_where_the_session_is_pinned_read_only() {
    // What pgJDBC and HikariCP send for `setReadOnly(false)`, and the forms around it.
    let texts = [
        "BEGIN READ WRITE",
        "COMMIT",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "ROLLBACK",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET default_transaction_read_only = off",
        "BEGIN",
        "SET TRANSACTION READ WRITE",
        "INSERT INTO scratch VALUES (7, 'read write')",
        "COMMIT",
    ];
    let production = block(async {
        let staging = client("worker", "staging").await;
        for sql in texts {
            staging
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("staging refused `{sql}`: {e}"));
        }
        let production = client("worker", "production").await;
        let mut refused = Vec::new();
        for sql in [
            "BEGIN READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SET default_transaction_read_only = off",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
        ] {
            refused.push(code(&production.simple_query(sql).await.unwrap_err()));
        }
        refused
    });
    assert_eq!(production, vec![belay_pg::SQLSTATE_DENIED; 4]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM scratch WHERE id = 7"),
        "1"
    );
}

#[test]
fn a_staging_agent_cannot_name_production_s_database_or_role() {
    let results = block(async {
        let c = client("worker", "staging").await;
        let mut out = Vec::new();
        for sql in [
            "DROP DATABASE IF EXISTS production WITH (FORCE)",
            "DROP DATABASE production",
            "COMMENT ON DATABASE production IS 'owned from staging'",
            "ALTER DATABASE production CONNECTION LIMIT 0",
            "ALTER DATABASE production RENAME TO gone",
            "CREATE DATABASE copy_of_production TEMPLATE production",
            "GRANT CONNECT ON DATABASE production TO PUBLIC",
            "REINDEX DATABASE production",
            "CREATE TABLESPACE elsewhere LOCATION '/tmp'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            let db = e.as_db_error().unwrap();
            out.push((sql, db.code().code().to_owned(), db.message().to_owned()));
        }
        // Its own database is its own.
        c.simple_query("COMMENT ON DATABASE staging IS 'staging data'")
            .await
            .unwrap();
        out
    });
    for (sql, code, message) in &results[..8] {
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("database `production` belongs to environment `production`"),
            "{sql}: {message}"
        );
    }
    assert_eq!(results[8].1, "42501", "{:?}", results[8]);
    assert_eq!(
        upstream(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'production' AND datconnlimit = -1"
        ),
        "1"
    );
    assert_eq!(
        upstream(
            "postgres",
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = 'production'"
        ),
        ""
    );
    assert_eq!(
        upstream(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy_of_production'"
        ),
        "0"
    );
}

#[test]
fn writes_to_the_catalog_are_the_settings_they_stand_for() {
    let (errs, timeout) = block(async {
        let c = client("worker", "staging").await;
        let mut errs = Vec::new();
        for sql in [
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
            "WITH s AS (UPDATE pg_settings SET setting = '0' WHERE name = 'lock_timeout' RETURNING 1) SELECT * FROM s",
        ] {
            errs.push(code(&c.simple_query(sql).await.unwrap_err()));
        }
        (errs, value(&c, "SHOW statement_timeout").await)
    });
    assert_eq!(errs, vec!["42501"; 3]);
    assert_eq!(timeout, "30s");
}

#[test]
fn resource_settings_and_timeouts_may_be_lowered_but_not_raised_past_the_environment_s_limits() {
    let (pinned, lowered, refused) = block(async {
        let c = client("worker", "staging").await;
        let pinned = (
            value(&c, "SHOW lock_timeout").await,
            value(&c, "SHOW idle_in_transaction_session_timeout").await,
        );
        c.simple_query("SET statement_timeout = '10s'")
            .await
            .unwrap();
        c.simple_query("SET LOCAL lock_timeout = '5s'")
            .await
            .unwrap();
        c.simple_query("SET work_mem = '64MB'").await.unwrap();
        let lowered = (
            value(&c, "SHOW statement_timeout").await,
            value(&c, "SHOW work_mem").await,
        );
        // A whole SET past a cap is lowered to it (with a notice); a setting changed inside
        // an expression cannot be lowered alone, and is refused.
        for sql in [
            "SET maintenance_work_mem = '64GB'",
            "SET statement_timeout = '1h'",
            "SET idle_in_transaction_session_timeout = 0",
            "SET max_parallel_workers_per_gather = 64",
            "SET hash_mem_multiplier = 1000",
        ] {
            c.simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        assert_eq!(value(&c, "SHOW maintenance_work_mem").await, "1GB");
        assert_eq!(value(&c, "SHOW statement_timeout").await, "30s");
        assert_eq!(
            value(&c, "SHOW idle_in_transaction_session_timeout").await,
            "2min"
        );
        assert_eq!(value(&c, "SHOW max_parallel_workers_per_gather").await, "4");
        assert_eq!(value(&c, "SHOW hash_mem_multiplier").await, "4");
        c.simple_query("SET work_mem = '64MB'").await.unwrap();
        let mut refused = Vec::new();
        for sql in [
            "SELECT set_config('work_mem', '4GB', false)",
            "SELECT set_config('work_mem', repeat('9', 3) || 'GB', false)",
            "SELECT set_config('lock_timeout', '0', false)",
            "SELECT set_config('statement_timeout', '1h', true)",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            let db = e.as_db_error().unwrap();
            refused.push((
                sql,
                db.code().code().to_owned(),
                db.message().to_owned(),
                db.detail().unwrap_or_default().to_owned(),
            ));
        }
        assert_eq!(value(&c, "SHOW work_mem").await, "64MB");
        (pinned, lowered, refused)
    });
    assert_eq!(pinned, ("30s".to_owned(), "2min".to_owned()));
    assert_eq!(lowered, ("10s".to_owned(), "64MB".to_owned()));
    for (sql, code, message, _) in &refused {
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    assert!(
        refused[0]
            .3
            .contains("over the limit environment `staging` sets"),
        "{}",
        refused[0].3
    );
}

#[test]
fn idle_timeouts_are_pinned_from_the_environment_s_limits() {
    let (idle_session, idle_in_transaction) = block(async {
        let c = client("worker", "staging").await;
        (
            value(&c, "SHOW idle_session_timeout").await,
            value(&c, "SHOW idle_in_transaction_session_timeout").await,
        )
    });
    assert_eq!(idle_session, "1h");
    assert_eq!(idle_in_transaction, "2min");
}

#[test]
fn a_grant_revoked_between_parse_and_execute_takes_effect() {
    let got = block(async {
        let mut c = Raw::agent("revokable", "staging").await;
        c.send(&[parse("s", "SELECT count(*) FROM items"), Frontend::Sync])
            .await;
        let parsed = c.until_ready().await;
        assert!(errors(&parsed).is_empty());
        harness().app.revoke_agent("test", "revokable").unwrap();
        c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
}

#[test]
fn a_revocation_takes_effect_on_a_read_the_session_repeats() {
    // The session counts a read it has just allowed without deciding it again; the agent's
    // revocation must still reach the next execution of that same statement.
    let got = block(async {
        let mut c = Raw::agent("repeating", "staging").await;
        c.send(&[parse("s", "SELECT count(*) FROM items"), Frontend::Sync])
            .await;
        assert!(errors(&c.until_ready().await).is_empty());
        for _ in 0..3 {
            c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
            assert!(errors(&c.until_ready().await).is_empty());
        }
        harness().app.revoke_agent("test", "repeating").unwrap();
        c.send(&[bind("", "s"), execute(""), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
}
