//! The audit log's record and its integrity: every event is chained to the one before it by
//! SHA-256, and signed checkpoints of the chain head (ed25519) let a verifier notice events
//! cut off the end.
//!
//! The crate knows no SQL and no storage: `belay-store` persists events, this crate says what
//! an event is, how it is hashed and how a sequence of events and checkpoints is verified.
//! Events hold no secret by construction: there is no field for one.

mod checkpoint;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointKey};

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// What an event records, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Draft {
    /// Unix time in microseconds.
    pub time_us: i64,
    /// Who acted: `agent:NAME`, `human:NAME` or `belay`.
    pub actor: String,
    /// What happened: `decision`, `agent.add`, `config.change`, ...
    pub kind: String,
    pub environment: Option<String>,
    /// SHA-256 of the canonical action (for a statement: agent, environment and exact text).
    pub fingerprint: Option<String>,
    pub class: Option<String>,
    pub verdict: Option<String>,
    /// Why: the deciding policies' reasons, or a sentence.
    pub reasons: Vec<String>,
    pub policies: Vec<String>,
    /// What came of it: `forwarded`, `refused`, `DELETE 3`, `error: ...`.
    pub outcome: Option<String>,
    /// Anything else worth keeping (relations, flags, grants); never a secret.
    pub detail: serde_json::Value,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    #[serde(flatten)]
    pub draft: Draft,
    /// Hex SHA-256 of the previous event (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this event's canonical form.
    pub hash: String,
}

/// The fields that are hashed, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    prev_hash: &'a str,
    draft: &'a CanonicalDraft<'a>,
}

impl Event {
    /// Places `draft` after the event whose hash is `prev` at position `seq`.
    pub fn chain(seq: u64, prev: &[u8; 32], draft: Draft) -> Event {
        let prev_hash = hex::encode(prev);
        let hash = hex::encode(hash_of(seq, &prev_hash, &draft));
        Event {
            seq,
            draft,
            prev_hash,
            hash,
        }
    }

    /// The hash an event holding `draft` at `seq`, after the event whose hash is `prev`,
    /// has: what `chain` computes, without building the event.
    pub fn hash_for(seq: u64, prev: &[u8; 32], draft: &Draft) -> [u8; 32] {
        hash_of(seq, &hex::encode(prev), draft)
    }

    /// The hash this event should have, computed from its content.
    pub fn computed_hash(&self) -> [u8; 32] {
        hash_of(self.seq, &self.prev_hash, &self.draft)
    }

    /// This event's hash as bytes, if it is well-formed hex.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        decode_hash(&self.hash)
    }
}

fn hash_of(seq: u64, prev_hash: &str, draft: &Draft) -> [u8; 32] {
    // Object keys in `detail` are sorted as they are written, so the hash does not depend on
    // whether serde_json preserves insertion order in this build; the canonical form is
    // streamed into the hash, never built.
    let canonical = Canonical {
        seq,
        prev_hash,
        draft: &CanonicalDraft {
            time_us: draft.time_us,
            actor: &draft.actor,
            kind: &draft.kind,
            environment: &draft.environment,
            fingerprint: &draft.fingerprint,
            class: &draft.class,
            verdict: &draft.verdict,
            reasons: &draft.reasons,
            policies: &draft.policies,
            outcome: &draft.outcome,
            detail: Sorted(&draft.detail),
        },
    };
    let mut hasher = HashWriter(Sha256::new());
    // Serialising these types cannot fail: no maps with non-string keys, no floats NaN.
    let _ = serde_json::to_writer(&mut hasher, &canonical);
    hasher.0.finalize().into()
}

/// `Draft` as it is hashed: the same fields in the same order, borrowed.
#[derive(Serialize)]
struct CanonicalDraft<'a> {
    time_us: i64,
    actor: &'a str,
    kind: &'a str,
    environment: &'a Option<String>,
    fingerprint: &'a Option<String>,
    class: &'a Option<String>,
    verdict: &'a Option<String>,
    reasons: &'a [String],
    policies: &'a [String],
    outcome: &'a Option<String>,
    detail: Sorted<'a>,
}

/// A JSON value written with every object's keys in order.
struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Sorted(v))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Sorted(v))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Feeds what is written into SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// SHA-256 of `text`, in hex: how actions are fingerprinted.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The first place where a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Sequence number of the first event that does not verify (or where one is missing).
    pub seq: u64,
    pub problem: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.seq, self.problem)
    }
}

/// Walks a chain from its first event, checking sequence, links and hashes.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_seq: u64,
    prev: [u8; 32],
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev: GENESIS,
        }
    }
}

impl Verifier {
    /// Checks the next event. An edited event fails its hash; a deleted, inserted or
    /// reordered one breaks the sequence or the link to the previous hash.
    pub fn next(&mut self, event: &Event) -> Result<(), Broken> {
        let broken = |problem: String| Broken {
            seq: self.expected_seq,
            problem,
        };
        if event.seq != self.expected_seq {
            return Err(broken(format!(
                "expected event {} but found event {} (an event was deleted, inserted or moved)",
                self.expected_seq, event.seq
            )));
        }
        if decode_hash(&event.prev_hash) != Some(self.prev) {
            return Err(broken(
                "its link to the previous event does not match (an event before it was changed, deleted or moved)"
                    .to_owned(),
            ));
        }
        let computed = event.computed_hash();
        if event.hash_bytes() != Some(computed) {
            return Err(broken(
                "its content does not match its hash (the event was edited)".to_owned(),
            ));
        }
        self.prev = computed;
        self.expected_seq += 1;
        Ok(())
    }

    /// Number of events verified so far.
    pub fn verified(&self) -> u64 {
        self.expected_seq - 1
    }

    /// Hash of the last verified event.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }
}

/// Verifies a whole chain; returns the number of events.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<u64, Broken> {
    let mut verifier = Verifier::default();
    for event in events {
        verifier.next(event)?;
    }
    Ok(verifier.verified())
}
