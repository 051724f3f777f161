//! Bounded resources: back-pressure, connection caps, handshake and half-sent message
//! deadlines, shutdown, huge texts, large rows and the memory budget.

use super::*;

#[test]
fn more_than_the_buffers_hold_flows_both_ways_with_back_pressure() {
    // Each direction holds at most about a megabyte before belay stops reading: a 20 MB
    // answer to a client that does not read yet, and 2.6 MB of queries pipelined behind a
    // query that keeps the server busy, must both resume and arrive whole.
    let (big, pipelined) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        c.send(&[Frontend::Query(
            "SELECT repeat('x', 10000) FROM generate_series(1, 2000)".to_owned(),
        )])
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let big = c.until_ready().await;
        let query = format!("SELECT '{}'", "y".repeat(1000));
        let mut batch = vec![Frontend::Query("SELECT pg_sleep(0.5)".to_owned())];
        batch.extend((0..12_000).map(|_| Frontend::Query(query.clone())));
        c.send(&batch).await;
        let mut pipelined = Vec::new();
        for _ in 0..batch.len() {
            pipelined.extend(tags(&c.until_ready().await));
        }
        (big, pipelined)
    });
    assert_eq!(tags(&big), vec!["SELECT 2000".to_owned()]);
    assert_eq!(
        big.len(),
        2000 + 3,
        "RowDescription, 2,000 rows, CommandComplete, ReadyForQuery"
    );
    assert_eq!(pipelined.len(), 12_001);
    assert!(
        pipelined.iter().all(|t| t == "SELECT 1"),
        "{:?}",
        &pipelined[..3]
    );
}

#[test]
fn connection_limit_and_handshake_timeout() {
    let h = harness();
    let options = belay_pg::Options {
        max_connections: 1,
        // Long enough for a real client's SCRAM exchange and upstream login on a loaded
        // machine (a debug build), short against the 20 s the silent client below waits.
        handshake_timeout: Duration::from_secs(3),
        ..belay_pg::Options::default()
    };
    let (addr, (stop, handle)) = start_gateway(&h.runtime, h.app.clone(), options);
    block(async {
        let (first, conn) = tokio_postgres::connect(
            &conn_string(addr, "worker", "staging"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let second = refused(&conn_string(addr, "worker", "staging")).await;
        assert_eq!(code(&second), "53300");
        first.simple_query("SELECT 1").await.unwrap();
        // A client that says nothing is disconnected.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), silent.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        let _ = n;
    });
    stop.send(true).unwrap();
    h.runtime.block_on(handle).unwrap().unwrap();
}

#[test]
fn shutdown_lets_open_transactions_finish_and_ends_idle_sessions() {
    let h = harness();
    let (addr, (stop, handle)) =
        start_gateway(&h.runtime, h.app.clone(), belay_pg::Options::default());
    block(async {
        let url = conn_string(addr, "worker", "staging");
        let connect = || tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let (busy, c1) = connect().await.unwrap();
        let busy_conn = tokio::spawn(c1);
        let (idle, c2) = connect().await.unwrap();
        let idle_conn = tokio::spawn(c2);
        busy.simple_query("BEGIN").await.unwrap();
        busy.simple_query("INSERT INTO scratch VALUES (700, 'during shutdown')")
            .await
            .unwrap();
        stop.send(true).unwrap();
        // The idle session is ended by belay.
        let _ = tokio::time::timeout(Duration::from_secs(20), idle_conn)
            .await
            .unwrap();
        assert!(idle.simple_query("SELECT 1").await.is_err());
        // The busy one may still commit, then it is ended too.
        busy.simple_query("COMMIT").await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(20), busy_conn)
            .await
            .unwrap();
    });
    h.runtime.block_on(handle).unwrap().unwrap();
    assert_eq!(
        upstream("staging", "SELECT count(*) FROM scratch WHERE id = 700"),
        "1"
    );
    assert!(
        block(async { TcpStream::connect(addr).await.is_err() }),
        "the listener is closed"
    );
}

#[test]
fn a_huge_text_is_bounded_in_memory_and_in_the_audit_log() {
    let before = harness().app.store().head_seq().unwrap();
    let (too_many, ran) = block(async {
        let c = client("worker", "staging").await;
        // Past the statement limit: refused before it is analysed.
        let e = c.simple_query(&"SELECT 1;".repeat(5000)).await.unwrap_err();
        // Within it, but long: runs, and its event is a prefix, a length and a hash.
        let batch = "INSERT INTO scratch VALUES (9000, 'bulk');".repeat(600);
        c.simple_query(&batch).await.unwrap();
        c.simple_query("DELETE FROM scratch WHERE id = 9000")
            .await
            .unwrap();
        (e, 600)
    });
    let db = too_many.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.detail().unwrap_or_default().contains("5000 statements"),
        "{db:?}"
    );
    // Its event is written once its statements have answered, with their outcomes.
    let mut bulk = None;
    for _ in 0..100 {
        let events = harness().app.store().events(before + 1, 10_000).unwrap();
        bulk = events.into_iter().find(|e| {
            e.draft.kind == "statement"
                && e.draft.detail["statements"]["total"].as_u64() == Some(ran)
        });
        if bulk.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let bulk = bulk.expect("the bulk insert's decision");
    let size = serde_json::to_string(&bulk.draft.detail).unwrap().len();
    assert!(size < 16 * 1024, "the event is {size} bytes");
    assert!(bulk.draft.detail["sql_sha256"].is_string());
    assert_eq!(
        bulk.draft.detail["statements"]["more_by_kind"]["INSERT (write)"],
        600 - 32
    );
}

#[test]
fn sessions_are_capped_per_agent_and_per_environment_and_a_closed_one_frees_its_place() {
    let (per_agent, per_env, after_close) = block(async {
        let a = client("worker", "capped").await;
        let _b = client("worker", "capped").await;
        let per_agent = refused(&conn_string(harness().addr, "worker", "capped")).await;
        let _c = client("capper", "capped").await;
        let per_env = refused(&conn_string(harness().addr, "reader", "capped")).await;
        drop(a);
        // The session ends when belay sees the client go.
        let mut after = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok((c, conn)) = tokio_postgres::connect(
                &conn_string(harness().addr, "reader", "capped"),
                tokio_postgres::NoTls,
            )
            .await
            {
                tokio::spawn(conn);
                after = Some(c);
                break;
            }
        }
        (per_agent, per_env, after.is_some())
    });
    let db = per_agent.as_db_error().unwrap();
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("max_connections_per_agent"),
        "{}",
        db.message()
    );
    let db = per_env.as_db_error().unwrap();
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("environment `capped`"),
        "{}",
        db.message()
    );
    assert!(after_close, "a closed session gives its place back");
}

#[test]
fn rows_larger_than_any_buffer_stream_through_and_an_oversized_text_is_refused_unread() {
    // A 70 MB value is more than belay frames whole (64 MB): it streams through.
    let (len, copied) = block(async {
        let c = client("reader", "staging").await;
        let len = value(&c, "SELECT length(repeat('x', 70 * 1024 * 1024))").await;
        let rows = c
            .simple_query("SELECT repeat('x', 70 * 1024 * 1024) AS big")
            .await
            .unwrap();
        let got = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().len()),
                _ => None,
            })
            .unwrap();
        assert_eq!(len, got.to_string());
        let stream = c
            .copy_out("COPY (SELECT repeat('y', 300000) FROM generate_series(1, 3)) TO STDOUT")
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        let mut copied = 0;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            copied += chunk.unwrap().len();
        }
        (got, copied)
    });
    assert_eq!(len, 70 * 1024 * 1024);
    assert_eq!(copied, 3 * 300_001);

    // A text longer than belay reads is read past and refused; the session goes on.
    let before = harness().app.store().head_seq().unwrap();
    let (code_seen, after) = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        let huge = format!("SELECT '{}'", "z".repeat(3 * 1024 * 1024));
        c.send(&[Frontend::Query(huge)]).await;
        let answer = c.until_ready().await;
        c.send(&[Frontend::Query("SELECT 1".to_owned())]).await;
        (errors(&answer), c.until_ready().await)
    });
    assert_eq!(code_seen, vec!["54000".to_owned()]);
    assert!(errors(&after).is_empty(), "{after:?}");
    let events = harness().app.store().events(before + 1, 10_000).unwrap();
    assert!(events.iter().any(|e| e.draft.kind == "statement"
        && e.draft.verdict.as_deref() == Some("deny")
        && e.draft
            .reasons
            .iter()
            .any(|r| r.contains("bytes, more than belay reads"))));
}

#[test]
fn past_the_memory_budget_sessions_still_move_everything_a_little_at_a_time() {
    let h = harness();
    let options = belay_pg::Options {
        memory_budget: 0,
        ..belay_pg::Options::default()
    };
    let (addr, _stop) = start_gateway(&h.runtime, h.app.clone(), options);
    let total = block(async {
        let (c, conn) = tokio_postgres::connect(
            &conn_string(addr, "reader", "staging"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let rows = c
            .simple_query("SELECT repeat('x', 10000) FROM generate_series(1, 500)")
            .await
            .unwrap();
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().len()),
                _ => None,
            })
            .sum::<usize>()
    });
    assert_eq!(total, 500 * 10_000);
}

#[test]
fn a_message_left_half_sent_ends_the_session_instead_of_holding_it_forever() {
    let last = block(async {
        let mut c = Raw::agent("reader", "staging").await;
        // A Query that says it is 100 bytes long, and 5 of them.
        c.stream
            .write_all(&[b'Q', 0, 0, 0, 104, b'S', b'E', b'L', b'E', b'C'])
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = codec::read_frame(&mut buf, 1 << 20).unwrap() {
                break Backend::decode(&frame).unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(60), c.stream.read_buf(&mut buf))
                .await
                .expect("the gateway ends the session within a minute")
                .unwrap();
            assert!(n > 0, "closed without a word");
        }
    });
    match last {
        Backend::ErrorResponse(e) => {
            assert_eq!(e.code, "08P01");
            assert!(e.message.contains("part of a message"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}
