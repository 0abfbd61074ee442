//! Secrets: join tokens, agent credentials and the admin token.
//!
//! Every secret is 32 random bytes, shown once, and stored only as its SHA-256. A slow
//! password hash buys nothing for 256-bit random secrets.

use anyhow::Context;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A fresh random secret, hex-encoded (64 characters).
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Fewest characters an admin token may have: 32 hex characters are 128 bits.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Refuses an admin token too short to be a secret (an empty one would let `Bearer ` in).
pub fn check_admin_token(token: &str, from: &str) -> anyhow::Result<()> {
    let chars = token.trim().chars().count();
    anyhow::ensure!(
        chars >= MIN_ADMIN_TOKEN_CHARS,
        "the admin token from {from} has {chars} characters; at least {MIN_ADMIN_TOKEN_CHARS} are needed"
    );
    Ok(())
}

/// Reads `path` (DATA_DIR/admin-token), creating it on first start with a fresh token,
/// atomically and mode 0600. A file too short to hold a token is refused, not trusted: an
/// empty file once let anyone in.
pub fn load_or_create_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(_) => read_admin_token(path)
            .map_err(|e| e.context(format!("delete {} to have a new token generated", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_secret();
            ipw_proto::files::write_private(path, format!("{token}\n").as_bytes())?;
            tracing::info!(path = %path.display(), "generated the admin token for `ipw`");
            Ok(token)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

/// Reads the admin token from `path`, read-only (`--admin-token-file`: coordinators serving
/// one fleet share one token this way).
pub fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the admin token {}", path.display()))?;
    let token = text.trim().to_owned();
    check_admin_token(&token, &path.display().to_string())?;
    Ok(token)
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

    /// An empty `admin-token` (a crash between creating and writing it) used to be accepted,
    /// and `Bearer ` matched it. Now it, and any short token, is refused at start.
    #[test]
    fn an_empty_or_short_admin_token_is_refused_and_a_new_one_is_written_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "").unwrap();
        let e = format!("{:#}", load_or_create_admin_token(&path).unwrap_err());
        assert!(e.contains("has 0 characters; at least 32") && e.contains("delete"), "{e}");
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_or_create_admin_token(&path).is_err());
        assert!(check_admin_token("  ", "--admin-token").unwrap_err().to_string().contains("--admin-token"));

        std::fs::remove_file(&path).unwrap();
        let created = load_or_create_admin_token(&path).unwrap();
        assert_eq!(created.len(), 64);
        assert_eq!(load_or_create_admin_token(&path).unwrap(), created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

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
