//! The wire contracts between the parts of ipw-fleet: `ipw-coordinator`, `ipw-agent`, the
//! `ipw` CLI, and the inference engines and judges they call.
//!
//! - [`v1`]: the gRPC contract, generated from `proto/ipw/v1/*.proto` (edit the `.proto`, not
//!   the generated code), with [`BearerAuth`] for its calls;
//! - [`openai`]: the client for OpenAI-compatible endpoints (engines, the LLM judge);
//! - [`retry`]: the one backoff schedule for every retry;
//! - [`files`]: writing files that hold secrets, crash-safely;
//! - [`tls`]: how clients reach the coordinator over TLS;
//! - [`kinds`]: the closed sets of values that travel as text;
//! - [`limits`]: what the coordinator accepts in a result.

pub mod files;
pub mod kinds;
pub mod limits;
pub mod openai;
pub mod retry;
pub mod tls;

/// Version 1 of the ipw-fleet protocol.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("ipw.v1");
}

/// Adds `authorization: Bearer <token>` to every call: the admin token for the CLI, the
/// agent credential for agents.
#[derive(Clone, Debug)]
pub struct BearerAuth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BearerAuth {
    /// Fails when the token has characters that cannot travel in gRPC metadata.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self(format!("Bearer {}", token.trim()).parse()?))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Parses a `key=value` label, as agents and sweeps carry them.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("label \"{s}\" must look like key=value")),
    }
}
