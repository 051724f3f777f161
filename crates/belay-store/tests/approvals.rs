//! Approval requests in the SQLite store: one open request per exact action, one vote per
//! human, quorum, denial, expiry, and an approval used at most once even when two stores on
//! the same file race for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::{Arc, Barrier};

use belay_store::{
    ApprovalStatus, AuditOptions, Error, NewApproval, SqliteStore, StateStore, Vote,
};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("state.db"), AuditOptions::default()).unwrap()
}

fn request(fingerprint: &str, required: u32, approvers: &[&str]) -> NewApproval {
    NewApproval {
        agent: "bot".to_owned(),
        environment: "production".to_owned(),
        action: "DROP TABLE payments".to_owned(),
        parameters: None,
        fingerprint: fingerprint.to_owned(),
        class: "destructive".to_owned(),
        flags: vec![],
        relations: vec!["payments".to_owned()],
        policies: vec!["production-destructive".to_owned()],
        reason: "destructive actions in production need a human's approval".to_owned(),
        blast_radius: None,
        required,
        approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
        expires_us: 1_000,
        run_within_us: 100,
        request_seq: Some(7),
    }
}

fn vote(human: &str, approve: bool, at: i64) -> Vote {
    Vote {
        human: human.to_owned(),
        approve,
        time_us: at,
        channel: "cli".to_owned(),
        comment: (!approve).then(|| "no".to_owned()),
    }
}

#[test]
fn one_open_request_per_exact_action() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, created) = store
        .request_approval(&request("fp-1", 1, &[]), 10)
        .unwrap();
    assert!(created);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.request.request_seq, Some(7));
    let (again, created) = store
        .request_approval(&request("fp-1", 1, &[]), 20)
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, a.id);
    let (other, created) = store
        .request_approval(&request("fp-2", 1, &[]), 20)
        .unwrap();
    assert!(created);
    assert_ne!(other.id, a.id);
    let mut other_agent = request("fp-1", 1, &[]);
    other_agent.agent = "another-bot".to_owned();
    assert_ne!(store.request_approval(&other_agent, 20).unwrap().0.id, a.id);
}

#[test]
fn a_quorum_counts_each_human_once_and_only_listed_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, _) = store
        .request_approval(&request("fp", 2, &["alice", "bob"]), 10)
        .unwrap();
    let after = store.vote(a.id, &vote("alice", true, 11)).unwrap();
    assert_eq!(after.status, ApprovalStatus::Pending);
    assert_eq!(after.approvals(), 1);
    assert!(
        matches!(store.vote(a.id, &vote("alice", true, 12)), Err(Error::Conflict(m)) if m.contains("one human counts once"))
    );
    assert!(
        matches!(store.vote(a.id, &vote("mallory", true, 12)), Err(Error::Invalid(m)) if m.contains("not among the approvers"))
    );
    assert_eq!(
        store
            .consume_approval("bot", "production", "fp", 13)
            .unwrap(),
        None
    );
    let done = store.vote(a.id, &vote("bob", true, 14)).unwrap();
    assert_eq!(done.status, ApprovalStatus::Approved);
    assert_eq!(done.approved_us, Some(14));
    assert_eq!(done.run_by_us, Some(114));
    assert_eq!(done.votes.len(), 2);
    // Once approved, no more votes.
    assert!(matches!(
        store.vote(a.id, &vote("carol", false, 15)),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn a_denial_denies_and_stands_until_the_request_would_have_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, _) = store.request_approval(&request("fp", 2, &[]), 10).unwrap();
    store.vote(a.id, &vote("alice", true, 11)).unwrap();
    let denied = store.vote(a.id, &vote("bob", false, 12)).unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(
        store
            .consume_approval("bot", "production", "fp", 13)
            .unwrap(),
        None
    );
    let (same, created) = store.request_approval(&request("fp", 2, &[]), 500).unwrap();
    assert!(!created);
    assert_eq!((same.id, same.status), (a.id, ApprovalStatus::Denied));
    let (fresh, created) = store
        .request_approval(&request("fp", 2, &[]), 1_000)
        .unwrap();
    assert!(
        created,
        "after its expiry a denied action may be asked for again"
    );
    assert_ne!(fresh.id, a.id);
}

#[test]
fn an_approval_is_used_once_and_only_for_its_action_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, _) = store.request_approval(&request("fp", 1, &[]), 10).unwrap();
    store.vote(a.id, &vote("alice", true, 20)).unwrap();
    assert_eq!(
        store
            .consume_approval("bot", "production", "other", 21)
            .unwrap(),
        None
    );
    assert_eq!(
        store.consume_approval("bot", "staging", "fp", 21).unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_approval("other-bot", "production", "fp", 21)
            .unwrap(),
        None
    );
    let used = store
        .consume_approval("bot", "production", "fp", 21)
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.id, used.status, used.executed_us),
        (a.id, ApprovalStatus::Executed, Some(21))
    );
    assert_eq!(
        store
            .consume_approval("bot", "production", "fp", 22)
            .unwrap(),
        None
    );

    // Not run within its window (approved at 20, 100 us to run): it lapses.
    let (b, _) = store
        .request_approval(&request("fp-b", 1, &[]), 30)
        .unwrap();
    store.vote(b.id, &vote("alice", true, 40)).unwrap();
    assert_eq!(
        store
            .consume_approval("bot", "production", "fp-b", 140)
            .unwrap(),
        None
    );
    let expired = store.expire_approvals(140).unwrap();
    assert_eq!(expired.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b.id]);
    assert_eq!(
        store.approval(b.id).unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
}

#[test]
fn a_request_expires_and_cannot_be_approved_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, _) = store.request_approval(&request("fp", 1, &[]), 10).unwrap();
    assert!(
        matches!(store.vote(a.id, &vote("alice", true, 1_000)), Err(Error::Conflict(m)) if m.contains("expired"))
    );
    assert!(store.expire_approvals(999).unwrap().is_empty());
    assert_eq!(store.expire_approvals(1_000).unwrap().len(), 1);
    assert!(
        store.expire_approvals(1_001).unwrap().is_empty(),
        "reported once"
    );
    assert!(matches!(
        store.vote(a.id, &vote("alice", true, 1_001)),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.vote(999, &vote("alice", true, 1)),
        Err(Error::NotFound(_))
    ));
    let listed = store.approvals(&[ApprovalStatus::Expired], 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store
        .approvals(&[ApprovalStatus::Pending], 10)
        .unwrap()
        .is_empty());
    assert_eq!(store.approvals(&[], 10).unwrap().len(), 1);
}

#[test]
fn two_stores_racing_for_one_approval_use_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(open(&dir));
    let second = Arc::new(open(&dir));
    for round in 0..20 {
        let fp = format!("fp-{round}");
        let (a, _) = first.request_approval(&request(&fp, 1, &[]), 10).unwrap();
        first.vote(a.id, &vote("alice", true, 11)).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .map(|store| {
                let barrier = barrier.clone();
                let fp = fp.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .consume_approval("bot", "production", &fp, 12)
                        .unwrap()
                })
            })
            .collect();
        let won = racers
            .into_iter()
            .map(|r| r.join().unwrap())
            .filter(Option::is_some)
            .count();
        assert_eq!(won, 1, "round {round}");
    }
}
