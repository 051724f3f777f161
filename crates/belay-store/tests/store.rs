//! The SQLite store against real files: identities, credentials and the audit chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::sync::Arc;

use belay_audit::{verify, CheckpointKey, Draft};
use belay_core::{Class, Secret};
use belay_store::{AuditOptions, AuthError, SqliteStore, StateStore};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("state.db"), AuditOptions::default()).unwrap()
}

fn grants(pairs: &[(&str, Class)]) -> BTreeMap<String, Class> {
    pairs.iter().map(|(e, c)| ((*e).to_owned(), *c)).collect()
}

#[test]
fn agents_and_humans_have_separate_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (_, human_token) = store.add_human("alice", 1).unwrap();
    let (agent, agent_token) = store
        .add_agent(
            "ci-bot",
            "alice",
            &grants(&[("staging", Class::Destructive), ("production", Class::Read)]),
            None,
            2,
        )
        .unwrap();
    assert_eq!(agent.grants["production"], Class::Read);
    assert!(agent_token.expose().starts_with("belay_agent_") && agent_token.expose().len() > 70);
    assert!(human_token.expose().starts_with("belay_human_"));

    assert_eq!(
        store
            .authenticate_agent(&agent_token, 3)
            .unwrap()
            .unwrap()
            .name,
        "ci-bot"
    );
    assert_eq!(
        store
            .authenticate_human(&human_token, 3)
            .unwrap()
            .unwrap()
            .name,
        "alice"
    );
    // An agent token never authenticates a human, and the reverse.
    assert!(matches!(
        store.authenticate_human(&agent_token, 3).unwrap(),
        Err(AuthError::Unknown(_))
    ));
    assert!(matches!(
        store.authenticate_agent(&human_token, 3).unwrap(),
        Err(AuthError::Unknown(_))
    ));
    // A token with the right prefix but made up is refused.
    let forged = Secret::new(format!("belay_agent_{}", "0".repeat(64)));
    assert!(store.authenticate_agent(&forged, 3).unwrap().is_err());
    assert_eq!(
        store.agent("ci-bot").unwrap().unwrap().last_used_us,
        Some(3)
    );
}

#[test]
fn only_hashes_of_tokens_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (_, token) = store.add_human("alice", 1).unwrap();
    store.close();
    let bytes = std::fs::read(dir.path().join("state.db")).unwrap();
    let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default();
    let secret_part = &token.expose()["belay_human_".len()..];
    for file in [bytes, wal] {
        assert!(!String::from_utf8_lossy(&file).contains(secret_part));
    }
}

#[test]
fn rotate_and_revoke_take_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.add_human("alice", 1).unwrap();
    let (_, old) = store
        .add_agent(
            "bot",
            "alice",
            &grants(&[("staging", Class::Read)]),
            None,
            1,
        )
        .unwrap();
    let new = store.rotate_agent("bot", 2).unwrap();
    assert!(matches!(
        store.authenticate_agent(&old, 3).unwrap(),
        Err(AuthError::Revoked(_))
    ));
    assert!(store.authenticate_agent(&new, 3).unwrap().is_ok());
    store.revoke_agent("bot", 4).unwrap();
    assert!(store.authenticate_agent(&new, 5).unwrap().is_err());
    assert!(store
        .revoke_agent("bot", 6)
        .unwrap_err()
        .to_string()
        .contains("already revoked"));
    assert!(store
        .rotate_agent("ghost", 6)
        .unwrap_err()
        .to_string()
        .contains("no agent named"));
}

#[test]
fn expired_agents_cannot_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.add_human("alice", 1).unwrap();
    let (_, token) = store
        .add_agent("bot", "alice", &BTreeMap::new(), Some(100), 1)
        .unwrap();
    assert!(store.authenticate_agent(&token, 99).unwrap().is_ok());
    assert!(matches!(
        store.authenticate_agent(&token, 100).unwrap(),
        Err(AuthError::Expired(_))
    ));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store
        .add_human("Alice Smith", 1)
        .unwrap_err()
        .to_string()
        .contains("lowercase"));
    assert!(store
        .add_agent("bot", "nobody", &BTreeMap::new(), None, 1)
        .unwrap_err()
        .to_string()
        .contains("belay human add nobody"));
    store.add_human("alice", 1).unwrap();
    assert!(store
        .add_human("alice", 1)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    let err = store
        .add_agent("bot", "alice", &grants(&[("prod", Class::Admin)]), None, 1)
        .unwrap_err();
    assert!(
        err.to_string().contains("read, write, ddl or destructive"),
        "{err}"
    );
}

fn draft(i: u64) -> Draft {
    Draft {
        time_us: i as i64,
        actor: "agent:bot".into(),
        kind: "decision".into(),
        detail: serde_json::json!({}),
        ..Draft::default()
    }
}

#[test]
fn concurrent_appends_form_one_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|i| store.append(draft(t * 1000 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    let events = store.events(1, 10_000).unwrap();
    assert_eq!(verify(&events), Ok(2000));
}

#[test]
fn two_stores_on_one_file_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    let b = open(&dir);
    for i in 0..20 {
        a.append(draft(i)).unwrap();
        b.append(draft(i)).unwrap();
    }
    assert_eq!(verify(&a.events(1, 100).unwrap()), Ok(40));
}

#[test]
fn checkpoints_are_signed_and_appended() {
    let dir = tempfile::tempdir().unwrap();
    let key = CheckpointKey::from_bytes([3; 32]);
    let public = key.public_hex();
    let file = dir.path().join("checkpoints.jsonl");
    let store = SqliteStore::open(
        &dir.path().join("state.db"),
        AuditOptions {
            key: Some(key),
            checkpoint_file: Some(file.clone()),
            checkpoint_every: 10,
        },
    )
    .unwrap();
    for i in 0..25 {
        store.append(draft(i)).unwrap();
    }
    assert_eq!(store.checkpoint(99).unwrap(), Some(25));
    assert_eq!(store.checkpoint(99).unwrap(), None, "the head did not move");
    let lines: Vec<belay_audit::Checkpoint> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    let events = store.events(1, 100).unwrap();
    for cp in &lines {
        cp.verify(&public, Some(&events[cp.seq as usize - 1].hash))
            .unwrap();
    }
}

#[test]
fn a_closed_store_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.close();
    assert!(store
        .append(draft(1))
        .unwrap_err()
        .to_string()
        .contains("audit log is unavailable"));
}

#[test]
fn recorded_events_are_committed_with_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store
            .record(Draft {
                time_us: i,
                actor: "agent:bot".into(),
                kind: "statement".into(),
                ..Draft::default()
            })
            .unwrap();
    }
    // A waited-for event is committed at once, and whatever lingers goes with it, in order.
    let seq = store
        .append(Draft {
            time_us: 10,
            actor: "agent:bot".into(),
            kind: "statement".into(),
            verdict: Some("deny".into()),
            ..Draft::default()
        })
        .unwrap();
    assert_eq!(seq, 11);
    let times: Vec<i64> = store
        .events(1, 100)
        .unwrap()
        .iter()
        .map(|e| e.draft.time_us)
        .collect();
    assert_eq!(times, (0..=10).collect::<Vec<_>>());
    // Alone, a recorded event is committed after the linger.
    store
        .record(Draft {
            time_us: 11,
            actor: "agent:bot".into(),
            kind: "statement".into(),
            ..Draft::default()
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.head_seq().unwrap() < 12 {
        assert!(std::time::Instant::now() < deadline, "never committed");
        std::thread::sleep(belay_store::LINGER);
    }
    store.close();
    assert!(
        store.record(Draft::default()).is_err(),
        "a closed writer refuses"
    );
}

#[test]
fn events_are_in_time_order_as_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Drafts made earlier can reach the writer later (sessions race to it).
    for t in [5_000, 9_000, 7_000, 1_000, 12_000] {
        store.append(draft(t)).unwrap();
    }
    let events = store.events(1, 100).unwrap();
    let times: Vec<i64> = events.iter().map(|e| e.draft.time_us).collect();
    assert_eq!(times, vec![5_000, 9_000, 9_000, 9_000, 12_000]);
    assert_eq!(verify(&events), Ok(5));
}

#[test]
fn the_chain_tells_which_ledger_keys_it_holds_whether_given_as_drafts_or_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let keyed = |key: &str| Draft {
        detail: serde_json::json!({ "ledger": key, "sql": "UPDATE t SET a = $1" }),
        ..draft(1)
    };
    store.append(keyed("run-1")).unwrap();
    store.append(draft(2)).unwrap();
    let text = serde_json::to_string(&keyed("run-7")).unwrap();
    store.submit_lazily_text(text.into()).wait().unwrap();
    // A text that is not an event fails its ticket and leaves the chain as it was.
    assert!(store
        .submit_lazily_text("{\"not\": \"an event\"}".into())
        .wait()
        .is_err());
    // More keys than one query takes, most of them absent.
    let mut asked: Vec<String> = (0..1200).map(|i| format!("other-{i}")).collect();
    asked.extend(["run-1".to_owned(), "run-7".to_owned(), "run-3".to_owned()]);
    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
    let held = store.ledger_keys_held(&asked).unwrap();
    assert_eq!(
        held,
        ["run-1", "run-7"].iter().map(|k| (*k).to_owned()).collect()
    );
    assert!(store.ledger_keys_held(&[]).unwrap().is_empty());
    // The column is not hashed: one edited to name another key counts for neither.
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    conn.execute(
        "UPDATE audit_events SET ledger = 'forged' WHERE ledger = 'run-1'",
        [],
    )
    .unwrap();
    assert_eq!(
        store
            .ledger_keys_held(&["forged", "run-1", "run-7"])
            .unwrap(),
        ["run-7".to_owned()].into_iter().collect()
    );
    let events = store.events(1, 100).unwrap();
    assert_eq!(events.len(), 3);
    assert!(verify(&events).is_ok());
}

#[test]
fn a_key_the_writer_made_durable_is_answered_from_memory_once_and_then_by_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let keyed = |key: &str| Draft {
        detail: serde_json::json!({ "ledger": key }),
        ..draft(1)
    };
    store.append(keyed("run-9")).unwrap();
    let text = serde_json::to_string(&keyed("run-10")).unwrap();
    store.submit_lazily_text(text.into()).wait().unwrap();
    // The chain's column edited behind the store's back no longer names either key...
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    conn.execute("UPDATE audit_events SET ledger = 'elsewhere'", [])
        .unwrap();
    // ...but the writer made both events durable, and says so without asking the chain.
    let both: std::collections::HashSet<String> = ["run-9".to_owned(), "run-10".to_owned()]
        .into_iter()
        .collect();
    assert_eq!(
        store
            .ledger_keys_held(&["run-9", "run-10", "run-11"])
            .unwrap(),
        both
    );
    // Asked again, the chain answers, and by its column it holds neither.
    assert!(store
        .ledger_keys_held(&["run-9", "run-10"])
        .unwrap()
        .is_empty());
    conn.execute(
        "UPDATE audit_events SET ledger = json_extract(detail, '$.ledger')",
        [],
    )
    .unwrap();
    assert_eq!(store.ledger_keys_held(&["run-9", "run-10"]).unwrap(), both);
}
