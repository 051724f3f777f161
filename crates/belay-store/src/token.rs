//! Credentials: random tokens with a recognisable prefix, shown once, stored as SHA-256.

use belay_core::Secret;
use sha2::{Digest, Sha256};

use crate::Error;

pub const TOKEN_PREFIX_AGENT: &str = "belay_agent_";
pub const TOKEN_PREFIX_HUMAN: &str = "belay_human_";

/// Whose token it is; an agent token never authenticates a human, and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Agent,
    Human,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Agent => TOKEN_PREFIX_AGENT,
            TokenKind::Human => TOKEN_PREFIX_HUMAN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Agent => "agent",
            TokenKind::Human => "human",
        }
    }
}

/// A new token (256 random bits), the hash to store and its SCRAM-SHA-256 verifier.
pub(crate) fn new_token(kind: TokenKind) -> Result<(Secret, String, String), Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Storage(format!("the system's random source failed: {e}")))?;
    let token = Secret::new(format!("{}{}", kind.prefix(), hex::encode(bytes)));
    let hash = token_hash(&token);
    let verifier =
        belay_scram::Verifier::new(token.expose().as_bytes(), belay_scram::DEFAULT_ITERATIONS)
            .map_err(|e| Error::Storage(e.to_string()))?;
    Ok((token, hash, verifier.encode()))
}

/// The stored form of a token. Tokens carry 256 random bits, so a plain SHA-256 cannot be
/// reversed or guessed.
pub(crate) fn token_hash(token: &Secret) -> String {
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}
