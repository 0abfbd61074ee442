//! Secrets: join tokens, agent credentials and the admin token.
//!
//! Every secret is 32 random bytes, shown once, and stored only as its SHA-256. A slow
//! password hash buys nothing for 256-bit random secrets.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A fresh random secret, hex-encoded (64 characters).
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The SHA-256 of a secret, as stored in the database.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    sha256(secret.as_bytes())
}

/// The SHA-256 of some bytes (a secret, a DER certificate).
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Compares two byte strings in time independent of where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an agent credential could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `.` between the id and the secret.
    #[error("malformed agent credential: expected `<agent-id>.<secret>`")]
    NoSeparator,
    /// The id part is not a UUID.
    #[error("malformed agent credential: the part before `.` is not an agent id")]
    BadId,
    /// Nothing after the `.`.
    #[error("malformed agent credential: empty secret")]
    EmptySecret,
}

/// An agent credential: `<agent-id>.<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    /// The agent the credential belongs to.
    pub agent_id: Uuid,
    /// The secret half, checked against the stored hash.
    pub secret: String,
}

impl AgentCredential {
    /// Parses `<agent-id>.<secret>`.
    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        let (id, secret) = s.split_once('.').ok_or(CredentialError::NoSeparator)?;
        let agent_id = Uuid::parse_str(id).map_err(|_| CredentialError::BadId)?;
        if secret.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        Ok(Self { agent_id, secret: secret.to_owned() })
    }

    /// The string form sent by the agent.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.agent_id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_round_trips_and_rejects_garbage() {
        let c = AgentCredential { agent_id: Uuid::new_v4(), secret: new_secret() };
        assert_eq!(AgentCredential::parse(&c.encode()).unwrap(), c);
        assert!(AgentCredential::parse("no-dot").is_err());
        assert!(AgentCredential::parse("not-a-uuid.abc").is_err());
        assert!(AgentCredential::parse(&format!("{}.", c.agent_id)).is_err());
    }

    #[test]
    fn secrets_are_random_and_hashes_compare() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(constant_time_eq(&hash_secret(&a), &hash_secret(&a)));
        assert!(!constant_time_eq(&hash_secret(&a), &hash_secret(&b)));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
