//! SCRAM-SHA-256 as PostgreSQL speaks it (RFC 5802 and 7677, without channel binding):
//! the stored verifier, the server's side of the exchange (agents authenticating to belay)
//! and the client's side (belay authenticating to an upstream server).
//!
//! A verifier holds only `StoredKey` and `ServerKey`; the password (an agent's token) cannot
//! be recovered from it, and a captured exchange cannot be replayed. Passwords are used as
//! their UTF-8 bytes: SASLprep is not applied, which matches PostgreSQL for ASCII passwords
//! (every belay token) and for any password SASLprep would reject.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The mechanism name sent in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PostgreSQL's default iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Why an exchange failed. Messages never contain the password or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported; connect without requiring it")]
    ChannelBinding,
    #[error("password authentication failed")]
    Failed,
    #[error("the server's SCRAM signature does not match: it does not know the password")]
    ServerSignature,
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// What the server stores for one password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with a 32-byte output: RFC 5802's `Hi`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random(n: usize) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes)
}

fn nonce() -> Result<String, Error> {
    Ok(B64.encode(random(18)?))
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Verifier, Error> {
        Ok(Verifier::with_salt(password, random(16)?, iterations))
    }

    pub fn with_salt(password: &[u8], salt: Vec<u8>, iterations: u32) -> Verifier {
        let salted = salted_password(password, &salt, iterations.max(1));
        let client_key = hmac(&salted, &[b"Client Key"]);
        Verifier {
            iterations: iterations.max(1),
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// Whether `password` is the one this verifier was made from (for a cleartext password).
    pub fn matches(&self, password: &[u8]) -> bool {
        let other = Verifier::with_salt(password, self.salt.clone(), self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }

    /// PostgreSQL's text form: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn encode(&self) -> String {
        format!(
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix(MECHANISM)?.strip_prefix('$')?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }
}

/// `key=value` attributes of a SCRAM message, in order.
fn attributes(message: &str) -> Result<Vec<(char, &str)>, Error> {
    message
        .split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(Error::Malformed("attribute is not `k=value`")),
            }
        })
        .collect()
}

fn attribute<'a>(attrs: &[(char, &'a str)], key: char) -> Result<&'a str, Error> {
    attrs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .ok_or(Error::Malformed("missing attribute"))
}

fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|_| Error::Malformed("not UTF-8"))
}

/// The server's side of one exchange, between its first and final message.
#[derive(Debug)]
pub struct ServerExchange {
    verifier: Verifier,
    /// False when the user is unknown: the exchange runs to the end with a made-up verifier
    /// and fails there, so that a client cannot tell unknown users from wrong passwords.
    real: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Answers the client-first-message (the SASLInitialResponse data) with the
    /// server-first-message.
    ///
    /// `verifier` is `None` for an unknown user; `decoy_seed` (the user name with a secret of
    /// the server's) then makes a salt that stays the same across attempts, as a real one would.
    pub fn start(
        verifier: Option<&Verifier>,
        decoy_seed: &[u8],
        client_first: &[u8],
    ) -> Result<(ServerExchange, String), Error> {
        let text = utf8(client_first)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(Error::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(Error::ChannelBinding),
            _ => return Err(Error::Malformed("bad channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(Error::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(Error::Malformed(
                "authorization identities are not supported",
            ));
        }
        let attrs = attributes(bare)?;
        let client_nonce = attribute(&attrs, 'r')?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(Error::Malformed("bad client nonce"));
        }
        if attrs.iter().any(|(k, _)| *k == 'm') {
            return Err(Error::Malformed("mandatory extensions are not supported"));
        }
        let (verifier, real) = match verifier {
            Some(v) => (v.clone(), true),
            None => {
                // Keys are never checked against a decoy, so one iteration is enough to make it.
                let mut decoy = Verifier::with_salt(b"", sha256(decoy_seed)[..16].to_vec(), 1);
                decoy.iterations = DEFAULT_ITERATIONS;
                (decoy, false)
            }
        };
        let nonce = format!("{client_nonce}{}", nonce()?);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            ServerExchange {
                verifier,
                real,
                gs2_header: format!("{flag},{authzid},"),
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final-message's proof and returns the server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, Error> {
        let text = utf8(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(Error::Malformed("no proof"))?;
        let attrs = attributes(without_proof)?;
        let binding = B64
            .decode(attribute(&attrs, 'c')?)
            .map_err(|_| Error::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(Error::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        if attribute(&attrs, 'r')? != self.nonce {
            return Err(Error::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| Error::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(Error::Failed);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let ok = constant_time_eq(&sha256(&client_key), &self.verifier.stored_key);
        if !(ok && self.real) {
            return Err(Error::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// The client's side of one exchange.
#[derive(Debug)]
pub struct ClientExchange {
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Starts an exchange; returns the client-first-message to send.
    pub fn new(password: &[u8]) -> Result<(ClientExchange, String), Error> {
        let nonce = nonce()?;
        let client_first_bare = format!("n=,r={nonce}");
        Ok((
            ClientExchange {
                password: password.to_vec(),
                client_first_bare: client_first_bare.clone(),
                nonce,
                server_signature: None,
            },
            format!("n,,{client_first_bare}"),
        ))
    }

    /// Answers the server-first-message with the client-final-message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, Error> {
        let text = utf8(server_first)?;
        let attrs = attributes(text)?;
        let nonce = attribute(&attrs, 'r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(Error::Malformed(
                "server nonce does not extend the client's",
            ));
        }
        let salt = B64
            .decode(attribute(&attrs, 's')?)
            .map_err(|_| Error::Malformed("salt is not base64"))?;
        let iterations: u32 = attribute(&attrs, 'i')?
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or(Error::Malformed("bad iteration count"))?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key = sha256(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, &[b"Server Key"]);
        self.server_signature = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message: the server must prove it knows the verifier.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), Error> {
        let text = utf8(server_final)?;
        let attrs = attributes(text)?;
        if attrs.iter().any(|(k, _)| *k == 'e') {
            return Err(Error::Failed);
        }
        let v = B64
            .decode(attribute(&attrs, 'v')?)
            .map_err(|_| Error::Malformed("server signature is not base64"))?;
        match self.server_signature {
            Some(expected) if constant_time_eq(&v, &expected) => Ok(()),
            _ => Err(Error::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly

    use super::*;

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt(b"pencil", salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let server_sig = hmac(&v.server_key, &[auth.as_bytes()]);
        assert_eq!(
            B64.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn client_and_server_agree_and_reject_wrong_password() {
        let v = Verifier::new(b"belay_agent_secret", 64).unwrap();
        let parsed = Verifier::parse(&v.encode()).unwrap();
        assert_eq!(parsed, v);
        for (password, ok) in [(&b"belay_agent_secret"[..], true), (b"wrong", false)] {
            let (mut client, first) = ClientExchange::new(password).unwrap();
            let (server, server_first) =
                ServerExchange::start(Some(&v), b"", first.as_bytes()).unwrap();
            let fin = client.respond(server_first.as_bytes()).unwrap();
            match server.finish(fin.as_bytes()) {
                Ok(server_final) => {
                    assert!(ok);
                    client.verify(server_final.as_bytes()).unwrap();
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, Error::Failed);
                }
            }
        }
    }

    #[test]
    fn unknown_user_fails_only_at_the_end() {
        let (mut client, first) = ClientExchange::new(b"anything").unwrap();
        let (server, server_first) =
            ServerExchange::start(None, b"seed", first.as_bytes()).unwrap();
        let fin = client.respond(server_first.as_bytes()).unwrap();
        assert_eq!(server.finish(fin.as_bytes()), Err(Error::Failed));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let v = Verifier::new(b"x", 16).unwrap();
        for bad in [
            &b""[..],
            b"n",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,a=me,n=,r=x",
            b"n,,n=",
            b"\xff",
        ] {
            assert!(
                ServerExchange::start(Some(&v), b"", bad).is_err(),
                "{bad:?}"
            );
        }
        let (server, _) = ServerExchange::start(Some(&v), b"", b"n,,n=,r=abc").unwrap();
        assert!(server.finish(b"c=biws,r=wrong,p=AAAA").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
    }
}
