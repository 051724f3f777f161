//! Signed checkpoints of the chain head. A chain alone cannot show that its last events were
//! cut off; a checkpoint signed with belay's key, kept on other storage, can.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::decode_hash;

const DOMAIN: &[u8] = b"belay audit checkpoint v1\0";

/// One line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last event covered.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    pub time_us: i64,
    /// Hex ed25519 public key that signed.
    pub key: String,
    /// Hex signature over the domain, `seq` and `hash`.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the signing key is malformed: it must be 32 bytes of hex")]
    BadKey,
    #[error("checkpoint for event {seq}: {problem}")]
    Invalid { seq: u64, problem: String },
}

/// The key that signs checkpoints. Its `Debug` never shows the secret half.
pub struct CheckpointKey(SigningKey);

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointKey(public {})", self.public_hex())
    }
}

fn message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

impl CheckpointKey {
    /// A key from 32 secret bytes (from the OS's random source when new).
    pub fn from_bytes(bytes: [u8; 32]) -> CheckpointKey {
        CheckpointKey(SigningKey::from_bytes(&bytes))
    }

    /// Reads the hex form kept in the state directory.
    pub fn from_hex(text: &str) -> Result<CheckpointKey, CheckpointError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CheckpointError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CheckpointError::BadKey)?;
        Ok(CheckpointKey::from_bytes(bytes))
    }

    /// The hex form to keep in the state directory (secret).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs the head `(seq, hash)`.
    pub fn sign(&self, seq: u64, hash: &[u8; 32], time_us: i64) -> Checkpoint {
        let signature = self.0.sign(&message(seq, hash));
        Checkpoint {
            seq,
            hash: hex::encode(hash),
            time_us,
            key: self.public_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl Checkpoint {
    /// Checks the signature against `public_key` (hex), and that the checkpoint names the
    /// same hash as the chain's event `seq` (`chain_hash`, `None` when the chain has no such
    /// event: it was cut off).
    pub fn verify(
        &self,
        public_key: &str,
        chain_hash: Option<&str>,
    ) -> Result<(), CheckpointError> {
        let invalid = |problem: &str| CheckpointError::Invalid {
            seq: self.seq,
            problem: problem.to_owned(),
        };
        if self.key != public_key {
            return Err(invalid(
                "it was signed by another key than this state directory's",
            ));
        }
        let key_bytes: [u8; 32] = hex::decode(&self.key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("its key is malformed"))?;
        let key =
            VerifyingKey::from_bytes(&key_bytes).map_err(|_| invalid("its key is malformed"))?;
        let sig_bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("its signature is malformed"))?;
        let hash = decode_hash(&self.hash).ok_or_else(|| invalid("its hash is malformed"))?;
        key.verify(
            &message(self.seq, &hash),
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| invalid("its signature does not verify (the checkpoint was altered)"))?;
        match chain_hash {
            None => Err(invalid(
                "the log has no such event: events at the end of the log were removed",
            )),
            Some(h) if h != self.hash => Err(invalid(
                "the log's event differs from the one that was signed",
            )),
            Some(_) => Ok(()),
        }
    }
}
