//! Validated types and pure logic: no SQL, no network, no gRPC statuses.

pub mod analysis;
pub mod export;
pub mod fleet;
pub mod hardware;
pub mod pricing;
pub mod prompt;
pub mod report;
pub mod results;
pub mod sampling;
pub mod schedule;
pub mod scoring;
pub mod settings;
pub mod sweep;
pub mod telemetry;
pub mod untrusted;
pub mod workload;

/// Input that breaks a rule; the message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}
