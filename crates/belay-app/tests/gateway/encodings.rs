//! Client encodings: those whose multi-byte characters can hide a quote or backslash are
//! refused by every name and path, an encoding change belay did not see coming ends the
//! session, and the ASCII-safe ones are read by what their bytes mean in them.

use super::*;

#[test]
fn client_encodings_that_hide_backslashes_are_refused_at_startup_by_every_name() {
    for name in [
        "windows932",
        "Windows-936",
        "WINDOWS949",
        "windows_950",
        "SJIS",
        "Shift_JIS",
        "ms kanji",
        "GBK",
        "win936",
        "BIG5",
        "UHC",
        "GB18030",
        "JOHAB",
        "SHIFT_JIS_2004",
        "no-such-encoding",
    ] {
        let err = block(async {
            let token = harness().tokens["worker"].expose().to_owned();
            Raw::connect(
                harness().addr,
                &[
                    ("user", "worker"),
                    ("database", "production"),
                    ("client_encoding", name),
                ],
                &token,
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("`{name}` was accepted"))
        });
        assert_eq!(err.code, "22023", "{name}: {}", err.message);
    }
    // ASCII-safe encodings work as before.
    let got = block(async {
        let token = harness().tokens["worker"].expose().to_owned();
        let mut c = Raw::connect(
            harness().addr,
            &[
                ("user", "worker"),
                ("database", "staging"),
                ("client_encoding", "LATIN9"),
            ],
            &token,
        )
        .await
        .unwrap();
        c.send(&[Frontend::Query("SHOW client_encoding".to_owned())])
            .await;
        c.until_ready().await
    });
    assert!(errors(&got).is_empty(), "{got:?}");
}

#[test]
fn the_encoding_smuggling_line_changes_nothing_and_no_spelling_of_the_encoding_change_passes() {
    let smuggled = "SET x.y = E'\u{c1}\\'; SET transaction_read_only = off; \
                    UPDATE public.items SET name = $$pwned$$ WHERE id = 1; --'";
    let refused: Vec<String> = block(async {
        let c = client("worker", "production").await;
        // Read as UTF-8 (the only way belay lets the session read it) it is one SET.
        c.simple_query(smuggled).await.unwrap();
        let mut codes = Vec::new();
        for sql in [
            "SET client_encoding = 'windows932'",
            "SET NAMES 'windows936'",
            "SET client_encoding TO 'Windows-949'",
            "SELECT set_config('client_encoding', 'windows950', false)",
            "SELECT set_config('client_encoding', 'WIN' || '932', false)",
            "SELECT set_config(new_value => 'SJIS', setting_name => 'client_encoding', is_local => false)",
            "SELECT pg_catalog.set_config('client_encoding', current_setting('x.enc', true), false)",
            "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            codes.push(format!("{sql} -> {}", code(&e)));
        }
        let stmt = c
            .prepare("SELECT set_config('client_encoding', $1, false)")
            .await;
        match stmt {
            Ok(s) => codes.push(format!(
                "bound -> {}",
                code(&c.query(&s, &[&"SJIS"]).await.unwrap_err())
            )),
            Err(e) => codes.push(format!("bound -> {}", code(&e))),
        }
        assert_eq!(value(&c, "SHOW client_encoding").await, "UTF8");
        codes
    });
    for r in &refused {
        assert!(r.ends_with("-> 42501"), "{r}");
    }
    assert_eq!(
        upstream("production", "SELECT name FROM items WHERE id = 1"),
        "item 1"
    );
}

#[test]
fn an_upstream_encoding_change_belay_did_not_see_coming_ends_the_session() {
    // A function changed behind belay's back, after belay read the catalog, changes the
    // encoding when called: belay still takes it for the read it was, and the server's
    // report of the new encoding must end the session before anything else is read under
    // it. (Its own environment, so that no other test's statement reads the catalog again
    // in between, nor into its database.)
    upstream(
        "watched",
        "SET ROLE belay; CREATE OR REPLACE FUNCTION switch_encoding() RETURNS text \
         LANGUAGE sql AS $$ SELECT 'none'::text $$",
    );
    block(async {
        let c = client("worker", "watched").await;
        c.simple_query("SELECT switch_encoding()").await.unwrap();
    });
    upstream(
        "watched",
        "SET ROLE belay; CREATE OR REPLACE FUNCTION switch_encoding() RETURNS text \
         LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'SJIS', false) $$",
    );
    let before = harness().app.store().head_seq().unwrap();
    let got = block(async {
        let mut c = Raw::agent("worker", "watched").await;
        c.send(&[Frontend::Query("SELECT switch_encoding()".to_owned())])
            .await;
        let mut seen = Vec::new();
        loop {
            let m = c.next().await;
            if let Backend::ErrorResponse(e) = &m {
                seen.push(e.clone());
                break;
            }
        }
        seen
    });
    assert_eq!(got[0].code, "08P01");
    assert!(
        got[0].message.contains("client_encoding"),
        "{}",
        got[0].message
    );
    // The session's end is recorded as it closes, just after the client hears of it.
    let audited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let events = harness().app.store().events(before + 1, 1000).unwrap();
        events.iter().any(|e| {
            e.draft.kind == "connection"
                && e.draft.outcome.as_deref() == Some("closed")
                && e.draft
                    .reasons
                    .iter()
                    .any(|r| r.contains("client_encoding"))
        })
    });
    assert!(audited, "the end of the session is audited");
}

#[test]
fn a_latin9_session_s_texts_are_read_as_latin9_and_reach_the_server_unchanged() {
    let (rows, failed, after, set) = block(async {
        let token = harness().tokens["worker"].expose().to_owned();
        let mut c = Raw::connect(
            harness().addr,
            &[
                ("user", "worker"),
                ("database", "staging"),
                ("client_encoding", "LATIN9"),
            ],
            &token,
        )
        .await
        .unwrap();
        // 0xA4 is the euro sign in LATIN9, and not UTF-8 at all.
        c.send_query_bytes(b"SELECT 'foo\xa4bar' AS v, length('\xa4') AS n")
            .await;
        let rows = c.until_ready().await;
        // The server's error quotes the text back in LATIN9.
        c.send_query_bytes(b"SELECT 'x\xa4'::int").await;
        let failed = c.until_ready().await;
        c.send_query_bytes(
            b"CREATE TABLE latin9_\xa4 (v text); INSERT INTO latin9_\xa4 VALUES ('\xa4')",
        )
        .await;
        let after = c.until_ready().await;
        // A text belay rewrites goes upstream in LATIN9 too.
        c.send_query_bytes(b"SET application_name = 'caf\xe9'")
            .await;
        let set = c.until_ready().await;
        (rows, failed, after, set)
    });
    let data: Vec<Vec<u8>> = rows
        .iter()
        .filter_map(|m| match m {
            Backend::Other(f) if f.tag == b'D' => Some(f.body.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(data.len(), 1, "{rows:?}");
    assert!(
        data[0].windows(7).any(|w| w == b"foo\xa4bar"),
        "{:?}",
        data[0]
    );
    assert!(data[0].ends_with(b"1"), "{:?}", data[0]);
    assert_eq!(errors(&failed), ["22P02"], "{failed:?}");
    assert!(errors(&after).is_empty(), "{after:?}");
    assert!(errors(&set).is_empty(), "{set:?}");
    assert_eq!(
        harness()
            .cluster
            .psql("staging", "SELECT v FROM \"latin9_€\"")
            .unwrap(),
        "€"
    );
    // The audit log has the name as the characters it is.
    let events = harness().app.store().events(1, 1_000_000).unwrap();
    assert!(
        events.iter().any(|e| e.draft.detail["sql"]
            .as_str()
            .is_some_and(|s| s.contains("latin9_€"))),
        "no event names the table"
    );
}
