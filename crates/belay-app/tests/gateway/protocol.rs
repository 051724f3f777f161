//! The wire protocol through the gateway: several statements in one Query, SQL and protocol
//! prepared statements, pipelines, portals, FunctionCall, malformed and startup messages,
//! protocol versions, syntax errors as the server gives them.

use super::*;

#[test]
fn several_statements_in_one_string_are_refused_together() {
    let got = block(async {
        let mut c = Raw::agent("worker", "production").await;
        c.send(&[Frontend::Query(
            "SELECT 1; DELETE FROM items WHERE id = 1; SELECT 2".to_owned(),
        )])
        .await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert!(tags(&got).is_empty(), "nothing ran: {got:?}");
    assert_eq!(
        upstream("production", "SELECT count(*) FROM items WHERE id = 1"),
        "1"
    );
}

#[test]
fn a_repeated_sql_execute_is_resolved_again_after_deallocate() {
    // `EXECUTE q` means what the session's PREPARE q says at the time: the same text
    // repeated must not be counted as the read it was before DEALLOCATE.
    let (first, again, after) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "PREPARE rq AS SELECT count(*) FROM items".to_owned(),
        )])
        .await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        let first = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        let again = c.until_ready().await;
        c.send(&[Frontend::Query("DEALLOCATE rq".to_owned())]).await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE rq".to_owned())]).await;
        (first, again, c.until_ready().await)
    });
    assert_eq!(tags(&first), vec!["SELECT 1".to_owned()]);
    assert_eq!(tags(&again), vec!["SELECT 1".to_owned()]);
    // Refused by belay (unresolved), not forwarded to fail upstream with 26000.
    assert_eq!(errors(&after), vec!["42501".to_owned()]);
}

#[test]
fn sql_prepare_and_execute_are_resolved_across_queries() {
    let (ok, refused_prepare, unresolved, reserved) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "PREPARE q AS SELECT count(*) FROM items".to_owned(),
        )])
        .await;
        assert!(errors(&c.until_ready().await).is_empty());
        c.send(&[Frontend::Query("EXECUTE q".to_owned())]).await;
        let ok = c.until_ready().await;
        c.send(&[Frontend::Query(
            "PREPARE d AS DELETE FROM items WHERE id = 2".to_owned(),
        )])
        .await;
        let refused = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE d".to_owned())]).await;
        let unresolved = c.until_ready().await;
        c.send(&[Frontend::Query("EXECUTE belay_1".to_owned())])
            .await;
        let reserved = c.until_ready().await;
        (ok, refused, unresolved, reserved)
    });
    assert_eq!(tags(&ok), vec!["SELECT 1".to_owned()]);
    assert_eq!(
        errors(&refused_prepare),
        vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]
    );
    assert_eq!(errors(&unresolved), vec!["42501".to_owned()]);
    assert_eq!(errors(&reserved), vec!["42501".to_owned()]);
    // Denied because the name is belay's, whatever a policy makes of the unknown.
    let why = reserved
        .iter()
        .find_map(|m| match m {
            Backend::ErrorResponse(e) => Some(e.message.clone()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(why.contains("reserved by belay"), "{why}");
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 2"),
        "1"
    );
}

#[test]
fn an_execute_sent_before_its_prepare_is_answered_is_decided_by_what_the_server_will_run() {
    let (pipelined, failed, ran) = block(async {
        // libpq's pipeline mode: PREPARE and EXECUTE go out together.
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            Frontend::Query("PREPARE piped AS SELECT count(*) FROM items".to_owned()),
            Frontend::Query("EXECUTE piped".to_owned()),
        ])
        .await;
        let mut pipelined = c.until_ready().await;
        pipelined.extend(c.until_ready().await);
        // A PREPARE of a name that exists fails on the server, which then runs the old
        // statement: the EXECUTE is decided by that one, not by the text that failed.
        let mut w = Raw::agent("worker", "staging").await;
        w.send(&[Frontend::Query(
            "PREPARE kept AS DELETE FROM scratch WHERE id = -7".to_owned(),
        )])
        .await;
        assert!(errors(&w.until_ready().await).is_empty());
        w.send(&[
            Frontend::Query("PREPARE kept AS SELECT 1".to_owned()),
            Frontend::Query("EXECUTE kept".to_owned()),
        ])
        .await;
        let failed = w.until_ready().await;
        let ran = w.until_ready().await;
        (pipelined, failed, ran)
    });
    assert!(errors(&pipelined).is_empty(), "{pipelined:?}");
    assert_eq!(tags(&pipelined), ["PREPARE", "SELECT 1"]);
    assert_eq!(errors(&failed), ["42P05"]);
    assert_eq!(tags(&ran), ["DELETE 0"]);
    let events = harness().app.store().events(1, 1_000_000).unwrap();
    let execute = events
        .iter()
        .rev()
        .find(|e| e.draft.detail["sql"].as_str() == Some("EXECUTE kept"))
        .expect("the EXECUTE's decision, recorded as the write it is");
    assert_eq!(
        execute.draft.class.as_deref(),
        Some("write"),
        "{:?}",
        execute.draft
    );
}

#[test]
fn protocol_parse_of_a_delete_then_execute_runs_nothing() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("del", "DELETE FROM items WHERE id = 3"),
            bind("", "del"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let first = c.until_ready().await;
        // A held statement is prepared (a Parse runs nothing) and held at every Execute,
        // where its parameters are known: the same approval request each time.
        c.send(&[bind("", "del"), execute(""), Frontend::Sync])
            .await;
        let second = c.until_ready().await;
        (first, second)
    });
    assert_eq!(
        errors(&got.0),
        vec![belay_pg::SQLSTATE_APPROVAL.to_owned()],
        "{:?}",
        got.0
    );
    assert_eq!(errors(&got.1), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    let request_id = |m: &[Backend]| {
        m.iter()
            .find_map(|m| match m {
                Backend::ErrorResponse(e) => e
                    .message
                    .split("approval request ")
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(request_id(&got.0), request_id(&got.1));
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 3"),
        "1"
    );
}

#[test]
fn a_statement_name_reused_after_close_is_decided_again() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("s1", "SELECT name FROM items WHERE id = 4"),
            bind("", "s1"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let first = c.until_ready().await;
        c.send(&[
            Frontend::Close(codec::Close {
                target: codec::Target::Statement,
                name: "s1".to_owned(),
            }),
            parse("s1", "DELETE FROM items WHERE id = 4"),
            bind("", "s1"),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        (first, c.until_ready().await)
    });
    assert_eq!(tags(&got.0), vec!["SELECT 1".to_owned()]);
    assert_eq!(errors(&got.1), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 4"),
        "1"
    );
}

#[test]
fn pipelined_messages_without_sync_are_each_decided() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[
            parse("", "SELECT id FROM items WHERE id = 5"),
            bind("", ""),
            execute(""),
            Frontend::Flush,
            parse("", "DELETE FROM items WHERE id = 5"),
            bind("", ""),
            execute(""),
            parse("", "SELECT 42"),
            bind("", ""),
            execute(""),
        ])
        .await;
        // Without Sync, the first result arrives (after Flush), then the refusal.
        let mut seen = Vec::new();
        loop {
            let m = c.next().await;
            let stop = matches!(m, Backend::ErrorResponse(_));
            seen.push(m);
            if stop {
                break;
            }
        }
        c.send(&[Frontend::Sync]).await;
        seen.extend(c.until_ready().await);
        seen
    });
    assert_eq!(
        tags(&got),
        vec!["SELECT 1".to_owned()],
        "the statement after the refusal was skipped: {got:?}"
    );
    assert_eq!(errors(&got), vec![belay_pg::SQLSTATE_APPROVAL.to_owned()]);
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM items WHERE id = 5"),
        "1"
    );
}

#[test]
fn function_call_messages_are_refused() {
    let got = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::FunctionCall(Bytes::from_static(&[
            0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
        ]))])
        .await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["42501".to_owned()]);
    // The refusal is a decision event, named in the error.
    let detail = got
        .iter()
        .find_map(|m| match m {
            Backend::ErrorResponse(e) => e.detail.clone(),
            _ => None,
        })
        .expect("a detail naming the audit event");
    let seq: u64 = detail.trim_start_matches("audit event ").parse().unwrap();
    let event = &harness().app.store().events(seq, 1).unwrap()[0];
    assert_eq!(event.draft.kind, "statement");
    assert_eq!(event.draft.verdict.as_deref(), Some("deny"));
    assert_eq!(event.draft.detail["phase"], "protocol");
    assert!(
        event.draft.reasons[0].contains("fast-path"),
        "{:?}",
        event.draft.reasons
    );
}

#[test]
fn malformed_messages_close_the_connection_with_an_error() {
    let last = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.stream.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
        let mut seen = Vec::new();
        loop {
            if let Ok(Some(f)) = codec::read_frame(&mut c.buf, 1 << 20) {
                seen.push(Backend::decode(&f).unwrap());
                continue;
            }
            if c.stream.read_buf(&mut c.buf).await.unwrap_or(0) == 0 {
                return seen;
            }
        }
    });
    assert!(
        matches!(&last[..], [Backend::ErrorResponse(e)] if e.code == "08P01"),
        "{last:?}"
    );
    // The gateway still serves others.
    block(async {
        client("reader", "staging")
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap()
    });
}

#[test]
fn a_portal_dies_with_its_transaction_and_a_cursor_of_its_name_is_not_mistaken_for_it() {
    let got = block(async {
        let mut c = Raw::agent("worker", "staging").await;
        c.send(&[parse("s1", "SELECT 1"), bind("p1", "s1"), Frontend::Sync])
            .await;
        c.until_ready().await;
        // The portal ended with its implicit transaction; a SQL cursor now has its name.
        c.send(&[Frontend::Query(
            "DECLARE p1 CURSOR WITH HOLD FOR SELECT 'the cursor'".to_owned(),
        )])
        .await;
        c.until_ready().await;
        c.send(&[execute("p1"), Frontend::Sync]).await;
        c.until_ready().await
    });
    assert_eq!(errors(&got), vec!["34000".to_owned()], "{got:?}");
    assert!(
        !got.iter()
            .any(|m| matches!(m, Backend::Other(f) if f.tag == b'D')),
        "nothing ran as the old portal: {got:?}"
    );
}

#[test]
fn a_client_asking_for_protocol_3_2_is_told_3_0_and_goes_on() {
    let (negotiated, rows) = block(async {
        let token = harness().tokens["reader"].expose().to_owned();
        let stream: Box<dyn Stream> = Box::new(TcpStream::connect(harness().addr).await.unwrap());
        let startup = Startup::Newer {
            minor: 2,
            params: vec![
                ("user".to_owned(), "reader".to_owned()),
                ("database".to_owned(), "staging".to_owned()),
                ("_pq_.future_option".to_owned(), "on".to_owned()),
            ],
        };
        // The first answer is NegotiateProtocolVersion: 3.0, and the option it does not know.
        let mut probe = stream;
        let mut out = BytesMut::new();
        startup.encode(&mut out);
        probe.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let first = loop {
            if let Some(f) = codec::read_frame(&mut buf, 1 << 20).unwrap() {
                break f;
            }
            probe.read_buf(&mut buf).await.unwrap();
        };
        drop(probe);
        let stream: Box<dyn Stream> = Box::new(TcpStream::connect(harness().addr).await.unwrap());
        let mut c = Raw::start_with(stream, startup, &token).await.unwrap();
        c.send(&[Frontend::Query("SELECT 1".to_owned())]).await;
        (first, c.until_ready().await)
    });
    assert_eq!(negotiated.tag, b'v');
    assert_eq!(&negotiated.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(negotiated.body.ends_with(b"_pq_.future_option\0"));
    assert!(errors(&rows).is_empty(), "{rows:?}");
}

#[test]
fn a_syntax_error_is_the_parser_s_own_answer_without_a_hint_about_grants() {
    let e = block(async {
        let c = client("worker", "staging").await;
        let e = c.simple_query("SELEC 1").await.unwrap_err();
        // The session goes on as after any server error.
        assert_eq!(value(&c, "SELECT 2").await, "2");
        e
    });
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42601");
    assert!(
        db.message().contains("syntax error at or near"),
        "{}",
        db.message()
    );
    assert!(db.hint().is_none(), "{:?}", db.hint());
}

#[test]
fn a_syntax_error_points_where_the_server_would() {
    let texts = [
        "SELEC 1",
        "SELECT 1 FROM FROM items",
        "SELECT (1",
        "SELECT a FROM items WHERE a = 1 AND AND b",
        "SELECT 'é', 'ü' FROM FROM items",
        "SELECT 1;\nSELECT 2 FROM WHERE",
        "SELECT 'unterminated",
    ];
    let (through, direct) = block(async {
        let c = client("worker", "staging").await;
        let (d, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=belay password=upstream-secret dbname=staging",
                harness().cluster.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let answer = |e: tokio_postgres::Error| {
            let db = e.as_db_error().unwrap().clone();
            let position = match db.position() {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                _ => None,
            };
            (
                db.code().code().to_owned(),
                db.message().to_owned(),
                position,
            )
        };
        let (mut through, mut direct) = (Vec::new(), Vec::new());
        for text in texts {
            through.push(answer(c.simple_query(text).await.unwrap_err()));
            direct.push(answer(d.simple_query(text).await.unwrap_err()));
        }
        (through, direct)
    });
    for ((text, through), direct) in texts.iter().zip(&through).zip(&direct) {
        assert_eq!(through, direct, "{text}");
        assert!(through.2.is_some(), "{text}: {through:?}");
    }
}

#[test]
fn a_session_hears_its_own_notifications_under_the_process_id_belay_gave_it() {
    let (own, notified, backend) = block(async {
        let mut c = Raw::agent("worker", "staging").await;
        c.send(&[Frontend::Query("SELECT pg_backend_pid()".to_owned())])
            .await;
        let mut backend = None;
        loop {
            match c.next().await {
                Backend::Other(f) if f.tag == b'D' => {
                    backend = Some(String::from_utf8_lossy(&f.body[6..]).into_owned());
                }
                Backend::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        c.send(&[Frontend::Query(
            "LISTEN belay_self; NOTIFY belay_self, 'hello'".to_owned(),
        )])
        .await;
        let mut notified = None;
        loop {
            match c.next().await {
                Backend::Other(f) if f.tag == b'A' => {
                    notified = Some(i32::from_be_bytes(f.body[..4].try_into().unwrap()));
                }
                Backend::ErrorResponse(e) => panic!("{}", e.message),
                Backend::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        (c.pid, notified, backend)
    });
    assert_ne!(own, 0, "belay gave a process id");
    // The upstream backend's own id is another number: the notification was renamed.
    assert_ne!(backend, Some(own.to_string()));
    assert_eq!(
        notified,
        Some(own),
        "the notification names the session's own process"
    );
}

#[test]
fn a_copy_whose_rows_and_end_come_before_the_copy_in_response_leaves_the_session_in_step() {
    // asyncpg's `copy_records_to_table`: a Parse and Describe with a Flush, then the COPY
    // Query, its rows and CopyDone at once, then an extended query with Sync, and a Sync
    // pipelined after the COPY's end, which the server answers.
    let (copy, after, last) = block(async {
        let mut c = Raw::agent("worker", "staging").await;
        c.send(&[
            parse("probe", "SELECT * FROM scratch LIMIT 1"),
            Frontend::Describe(codec::Describe {
                target: codec::Target::Statement,
                name: "probe".to_owned(),
            }),
            Frontend::Flush,
            Frontend::Query("COPY scratch (id, note) FROM STDIN".to_owned()),
            Frontend::CopyData(Bytes::from_static(b"950\tearly\n951\tearly\n")),
            Frontend::CopyDone,
            Frontend::Sync,
        ])
        .await;
        let copy = c.until_ready().await;
        let synced = c.until_ready().await;
        c.send(&[
            parse("", "SELECT count(*) FROM scratch WHERE note = 'early'"),
            bind("", ""),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let after = c.until_ready().await;
        c.send(&[Frontend::Query(
            "DELETE FROM scratch WHERE note = 'early'".to_owned(),
        )])
        .await;
        let last = c.until_ready().await;
        assert!(errors(&synced).is_empty(), "{synced:?}");
        (copy, after, last)
    });
    assert!(errors(&copy).is_empty(), "{copy:?}");
    assert_eq!(tags(&copy), vec!["COPY 2"]);
    assert!(errors(&after).is_empty(), "{after:?}");
    assert_eq!(tags(&after), vec!["SELECT 1"]);
    assert_eq!(tags(&last), vec!["DELETE 2"]);
}

#[test]
fn after_an_error_in_a_pipeline_what_the_client_sends_until_its_sync_is_skipped_as_the_server_skips_it(
) {
    // psycopg's pipeline mode: the error comes back (after a Flush) before the client has
    // sent the rest of the pipeline; the server discards it all until the Sync.
    let (first, rest, after) = block(async {
        let mut c = Raw::agent("worker", "staging").await;
        c.send(&[
            parse("", "SELECT 1"),
            bind("", ""),
            execute(""),
            parse("", "SELECT * FROM doesnotexist"),
            bind("", ""),
            execute(""),
            Frontend::Flush,
        ])
        .await;
        let mut first = Vec::new();
        loop {
            let m = c.next().await;
            let done = matches!(m, Backend::ErrorResponse(_));
            first.push(m);
            if done {
                break;
            }
        }
        c.send(&[
            parse("", "SELECT 'aborted'"),
            bind("", ""),
            execute(""),
            Frontend::Flush,
            Frontend::Sync,
        ])
        .await;
        let rest = c.until_ready().await;
        c.send(&[
            parse("", "SELECT 2"),
            bind("", ""),
            execute(""),
            Frontend::Sync,
        ])
        .await;
        let after = c.until_ready().await;
        (first, rest, after)
    });
    assert_eq!(errors(&first), vec!["42P01"]);
    assert_eq!(tags(&first), vec!["SELECT 1"]);
    assert_eq!(rest.len(), 1, "only the Sync is answered: {rest:?}");
    assert!(errors(&after).is_empty(), "{after:?}");
    assert_eq!(tags(&after), vec!["SELECT 1"]);
}
