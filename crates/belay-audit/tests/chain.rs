//! Any single edit, deletion, insertion or reordering of events fails verification, and a
//! checkpoint catches events cut off the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use belay_audit::{verify, CheckpointKey, Draft, Event, GENESIS};
use proptest::prelude::*;

fn draft(i: u64) -> Draft {
    Draft {
        time_us: 1_700_000_000_000_000 + i as i64,
        actor: format!("agent:bot-{}", i % 3),
        kind: "decision".into(),
        environment: Some(
            if i.is_multiple_of(2) {
                "staging"
            } else {
                "production"
            }
            .into(),
        ),
        fingerprint: Some(format!("{i:064x}")),
        class: Some("write".into()),
        verdict: Some("allow".into()),
        reasons: vec![format!("reason {i}")],
        policies: vec!["granted-work".into()],
        outcome: Some("forwarded".into()),
        detail: serde_json::json!({"relations": ["rentals"], "n": i}),
    }
}

fn chain(n: u64) -> Vec<Event> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let e = Event::chain(seq, &prev, draft(seq));
            prev = e.hash_bytes().unwrap();
            e
        })
        .collect()
}

#[test]
fn an_intact_chain_verifies() {
    assert_eq!(verify(&chain(50)), Ok(50));
    assert_eq!(verify(&chain(0)), Ok(0));
}

/// Ways to change one field of one event.
fn edit(event: &mut Event, field: u8) {
    match field % 7 {
        0 => event.draft.actor.push('x'),
        1 => event.draft.verdict = Some("deny".into()),
        2 => event.draft.time_us += 1,
        3 => event.draft.reasons.push("added".into()),
        4 => event.draft.detail = serde_json::json!({"relations": ["payments"]}),
        5 => event.draft.outcome = None,
        _ => event.draft.class = Some("read".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_edit_is_caught(n in 1u64..40, at in any::<prop::sample::Index>(), field in any::<u8>()) {
        let mut events = chain(n);
        let i = at.index(events.len());
        edit(&mut events[i], field);
        let broken = verify(&events).unwrap_err();
        prop_assert_eq!(broken.seq, i as u64 + 1);
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_is_caught_at_the_next_link(n in 2u64..40, at in any::<prop::sample::Index>(), field in any::<u8>()) {
        let mut events = chain(n);
        let i = at.index(events.len() - 1);
        edit(&mut events[i], field);
        events[i].hash = hex::encode(events[i].computed_hash());
        let broken = verify(&events).unwrap_err();
        prop_assert_eq!(broken.seq, i as u64 + 2);
    }

    #[test]
    fn any_deletion_is_caught_unless_it_is_the_last(n in 2u64..40, at in any::<prop::sample::Index>()) {
        let mut events = chain(n);
        let i = at.index(events.len() - 1);
        events.remove(i);
        prop_assert!(verify(&events).is_err());
    }

    #[test]
    fn any_insertion_is_caught(n in 1u64..40, at in any::<prop::sample::Index>()) {
        let mut events = chain(n);
        let i = at.index(events.len() + 1);
        let prev = if i == 0 { GENESIS } else { events[i - 1].hash_bytes().unwrap() };
        let forged = Event::chain(i as u64 + 1, &prev, draft(999));
        events.insert(i, forged);
        if i < events.len() - 1 {
            prop_assert!(verify(&events).is_err());
        }
    }

    #[test]
    fn any_reordering_is_caught(n in 2u64..40, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut events = chain(n);
        let (i, j) = (a.index(events.len()), b.index(events.len()));
        prop_assume!(i != j);
        events.swap(i, j);
        prop_assert!(verify(&events).is_err());
    }
}

#[test]
fn an_insertion_at_the_end_with_a_valid_link_is_only_caught_by_what_follows() {
    // Appending a well-formed event is what belay itself does; the chain cannot tell it from
    // a forged one. Checkpoints bound what can be appended unnoticed to after the last one.
    let mut events = chain(5);
    let prev = events[4].hash_bytes().unwrap();
    events.push(Event::chain(6, &prev, draft(6)));
    assert_eq!(verify(&events), Ok(6));
}

#[test]
fn checkpoints_catch_truncation_and_tampering() {
    let key = CheckpointKey::from_bytes([7; 32]);
    let events = chain(10);
    let head = events[9].hash_bytes().unwrap();
    let cp = key.sign(10, &head, 0);
    let public = key.public_hex();

    cp.verify(&public, Some(&events[9].hash)).unwrap();
    // The last events were cut off: the chain has no event 10.
    assert!(cp
        .verify(&public, None)
        .unwrap_err()
        .to_string()
        .contains("removed"));
    // The chain was rewritten from event 10 on.
    assert!(cp.verify(&public, Some(&events[8].hash)).is_err());
    // The checkpoint itself was altered.
    let mut forged = cp.clone();
    forged.seq = 9;
    assert!(forged
        .verify(&public, Some(&events[8].hash))
        .unwrap_err()
        .to_string()
        .contains("signature"));
    // Signed by another key.
    let other = CheckpointKey::from_bytes([8; 32]);
    assert!(cp
        .verify(&other.public_hex(), Some(&events[9].hash))
        .is_err());
    // The key round-trips through its stored form and never prints its secret.
    let again = CheckpointKey::from_hex(&key.to_hex()).unwrap();
    assert_eq!(again.public_hex(), public);
    assert!(!format!("{key:?}").contains(&key.to_hex()));
}

#[test]
fn the_hash_does_not_depend_on_key_order_in_detail() {
    let mut a = draft(1);
    a.detail = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
    let mut b = draft(1);
    b.detail = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
    assert_eq!(
        Event::chain(1, &GENESIS, a).hash,
        Event::chain(1, &GENESIS, b).hash
    );
}

#[test]
fn the_hash_is_sha256_of_the_canonical_form_with_sorted_keys() {
    use sha2::Digest;
    let draft = Draft {
        time_us: 7,
        actor: "agent:a".to_owned(),
        kind: "statement".to_owned(),
        environment: Some("staging".to_owned()),
        fingerprint: None,
        class: Some("write".to_owned()),
        verdict: Some("allow".to_owned()),
        reasons: vec!["why".to_owned()],
        policies: vec![],
        outcome: None,
        detail: serde_json::from_str(r#"{"b": [{"z": 1, "y": null}], "a": "x"}"#).unwrap(),
    };
    let canonical = format!(
        r#"{{"seq":3,"prev_hash":"{}","draft":{{"time_us":7,"actor":"agent:a","kind":"statement","environment":"staging","fingerprint":null,"class":"write","verdict":"allow","reasons":["why"],"policies":[],"outcome":null,"detail":{{"a":"x","b":[{{"y":null,"z":1}}]}}}}}}"#,
        "00".repeat(32)
    );
    assert_eq!(
        Event::chain(3, &GENESIS, draft).hash,
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
}
