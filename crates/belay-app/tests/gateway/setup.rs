//! Session setup as drivers and tools send it: `application_name` at startup and by `SET`
//! (kept behind the agent's name upstream, shown to the client as it set it), harmless
//! settings, limits lowered to the environment's cap with a notice, and startup `options`
//! decided like the same `SET`.

use super::*;

async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect with `{conn}`: {e}"));
    tokio::spawn(connection);
    client
}

fn setting<'a>(messages: &'a [Backend], name: &str) -> Vec<&'a str> {
    messages
        .iter()
        .filter_map(|m| match m {
            Backend::ParameterStatus { name: n, value } if n == name => Some(value.as_str()),
            _ => None,
        })
        .collect()
}

fn notices(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Backend::NoticeResponse(n) => Some(n.message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_driver_s_application_name_is_kept_behind_the_agent_s_name() {
    let token = harness().tokens["setter"].expose().to_owned();
    let (at_login, jdbc, by_set, seen) = block(async {
        let mut raw = Raw::connect(
            harness().addr,
            &[
                ("user", "setter"),
                ("database", "staging"),
                ("application_name", "PostgreSQL JDBC Driver"),
                ("extra_float_digits", "2"),
            ],
            &token,
        )
        .await
        .unwrap();
        let at_login: Vec<String> = raw
            .params
            .iter()
            .filter(|(n, _)| n == "application_name")
            .map(|(_, v)| v.clone())
            .collect();
        // pgJDBC's setup after login, through the extended protocol as it sends it.
        raw.send(&[
            parse("", "SET extra_float_digits = 3"),
            bind("", ""),
            execute(""),
            parse("", "SET application_name = 'PostgreSQL JDBC Driver'"),
            bind("", ""),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let jdbc = raw.until_ready().await;
        raw.send(&[Frontend::Query(
            "SET application_name = 'reporting'".to_owned(),
        )])
        .await;
        let by_set = raw.until_ready().await;
        let seen = upstream(
            "staging",
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'belay:setter%'",
        );
        (at_login, jdbc, by_set, seen)
    });
    assert_eq!(at_login, vec!["PostgreSQL JDBC Driver"]);
    assert!(errors(&jdbc).is_empty(), "{jdbc:?}");
    assert_eq!(tags(&jdbc), vec!["SET", "SET"]);
    // The same name again: the server reports nothing, as it would directly.
    assert!(setting(&jdbc, "application_name").is_empty(), "{jdbc:?}");
    assert!(errors(&by_set).is_empty(), "{by_set:?}");
    assert_eq!(setting(&by_set, "application_name"), vec!["reporting"]);
    assert_eq!(
        seen, "belay:setter/reporting",
        "the database names the agent"
    );
}

#[test]
fn show_reset_and_set_local_give_the_client_its_own_name_and_set_config_cannot_drop_the_agent_s() {
    let conn = conn_string(harness().addr, "setter", "staging")
        + " application_name='my tool' options='-c statement_timeout=5s -c DateStyle=ISO,DMY --lock-timeout=2s -c search_path=public'";
    let (shown, full, startup, after, refused, still) = block(async {
        let c = connect(&conn).await;
        let shown = value(&c, "SHOW application_name").await;
        let full = value(&c, "SELECT current_setting('application_name')").await;
        let startup = (
            value(&c, "SHOW statement_timeout").await,
            value(&c, "SHOW lock_timeout").await,
            value(&c, "SHOW DateStyle").await,
        );
        for sql in [
            "SET extra_float_digits = 3",
            "SET DateStyle = 'ISO, MDY'",
            "SET IntervalStyle = 'iso_8601'",
            "SET TimeZone = 'UTC'",
            "SET client_min_messages = warning",
            "SET bytea_output = 'hex'",
            "SET search_path = public",
        ] {
            c.simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        c.batch_execute("BEGIN; SET LOCAL application_name = 'local'")
            .await
            .unwrap();
        let local = value(&c, "SHOW application_name").await;
        c.batch_execute("COMMIT").await.unwrap();
        c.batch_execute("SET application_name TO other")
            .await
            .unwrap();
        let other = value(&c, "SHOW application_name").await;
        c.batch_execute("RESET application_name").await.unwrap();
        let reset = value(&c, "SHOW application_name").await;
        let refused = code(
            &c.simple_query("SELECT set_config('application_name', 'anonymous', false)")
                .await
                .unwrap_err(),
        );
        let still = value(&c, "SELECT current_setting('application_name')").await;
        (shown, full, startup, (local, other, reset), refused, still)
    });
    assert_eq!(shown, "my tool");
    assert_eq!(full, "belay:setter/my tool");
    assert_eq!(
        startup,
        ("5s".to_owned(), "2s".to_owned(), "ISO, DMY".to_owned()),
        "startup options that only tighten are kept"
    );
    assert_eq!(
        after,
        ("local".to_owned(), "other".to_owned(), "my tool".to_owned())
    );
    assert_eq!(refused, "42501");
    assert_eq!(still, "belay:setter/my tool");
}

#[test]
fn show_application_name_answers_with_the_show_tag_in_both_protocols() {
    let (simple, extended) = block(async {
        let mut c = Raw::agent("setter", "staging").await;
        c.send(&[Frontend::Query(
            "SET application_name = 'tagged'; SHOW application_name; SELECT 1".to_owned(),
        )])
        .await;
        let simple = c.until_ready().await;
        c.send(&[
            parse("shown", "SHOW application_name"),
            bind("", "shown"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        (simple, c.until_ready().await)
    });
    assert!(errors(&simple).is_empty(), "{simple:?}");
    assert_eq!(tags(&simple), ["SET", "SHOW", "SELECT 1"]);
    assert!(errors(&extended).is_empty(), "{extended:?}");
    assert_eq!(tags(&extended), ["SHOW"]);
}

#[test]
fn a_limit_set_past_the_environment_s_cap_is_lowered_to_it_with_a_notice() {
    let token = harness().tokens["setter"].expose().to_owned();
    let (login_notices, answer, refused) = block(async {
        let mut raw = Raw::connect(
            harness().addr,
            &[
                ("user", "setter"),
                ("database", "staging"),
                ("options", "-c statement_timeout=0"),
            ],
            &token,
        )
        .await
        .unwrap();
        let login_notices = raw.notices.clone();
        // pg_dump's setup, in one text.
        raw.send(&[Frontend::Query(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET work_mem = '4GB'; SET LOCAL lock_timeout = '5s'"
                .to_owned(),
        )])
        .await;
        let answer = raw.until_ready().await;
        raw.send(&[Frontend::Query(
            "SELECT set_config('statement_timeout', '0', false)".to_owned(),
        )])
        .await;
        let refused = raw.until_ready().await;
        (login_notices, answer, refused)
    });
    assert_eq!(login_notices.len(), 1, "{login_notices:?}");
    assert!(
        login_notices[0].contains("`statement_timeout` to `30s`, not `0`")
            && login_notices[0].contains("environments.staging.limits.statement_timeout_max"),
        "{}",
        login_notices[0]
    );
    assert!(errors(&answer).is_empty(), "{answer:?}");
    assert_eq!(tags(&answer), vec!["SET"; 5]);
    let told = notices(&answer);
    assert_eq!(told.len(), 4, "{told:?}");
    assert!(
        told[3].contains("`work_mem` to `262144kB`, not `4GB`"),
        "{}",
        told[3]
    );
    // A setting inside an expression cannot be lowered alone: refused as before.
    assert_eq!(errors(&refused), vec!["42501"]);

    let values = block(async {
        let c = connect(
            &(conn_string(harness().addr, "setter", "staging")
                + " options='-c statement_timeout=0'"),
        )
        .await;
        c.batch_execute("SET lock_timeout = 0; SET work_mem = '4GB'")
            .await
            .unwrap();
        (
            value(&c, "SHOW statement_timeout").await,
            value(&c, "SHOW lock_timeout").await,
            value(&c, "SHOW work_mem").await,
        )
    });
    assert_eq!(
        values,
        ("30s".to_owned(), "30s".to_owned(), "256MB".to_owned())
    );
}

#[test]
fn startup_settings_that_would_loosen_a_pin_are_refused_naming_what_governs_them() {
    let token = harness().tokens["setter"].expose().to_owned();
    let attempt = |db: &'static str, key: &'static str, value: &'static str| {
        let token = token.clone();
        block(async move {
            Raw::connect(
                harness().addr,
                &[("user", "setter"), ("database", db), (key, value)],
                &token,
            )
            .await
            .map(|_| ())
            .map_err(Box::new)
        })
    };
    let lifted = attempt(
        "production",
        "options",
        "-c default_transaction_read_only=off",
    )
    .unwrap_err();
    assert_eq!(lifted.code, "42501");
    assert!(
        lifted.message.contains("default_transaction_read_only")
            && lifted.message.contains("grant"),
        "{}",
        lifted.message
    );
    for (key, value) in [
        ("options", "-c session_replication_role=replica"),
        ("options", "-c search_path=evil,pg_catalog"),
        ("search_path", "evil,pg_catalog"),
        ("options", "-c role=postgres"),
        ("options", "-c client_encoding=SJIS"),
    ] {
        let err = attempt("staging", key, value).unwrap_err();
        assert_eq!(err.code, "42501", "{key}={value}: {}", err.message);
    }
    for (key, value) in [
        ("options", "-B 100"),
        ("options", "-c"),
        ("options", "-c statement_timeout"),
        ("replication", "database"),
    ] {
        let err = attempt("staging", key, value).unwrap_err();
        assert_eq!(err.code, "08P01", "{key}={value}: {}", err.message);
    }
    // Where nothing pins read-only mode, asking for it off is no loosening.
    attempt("staging", "options", "-c default_transaction_read_only=off").unwrap();
    attempt("staging", "statement_timeout", "10s").unwrap();
}
