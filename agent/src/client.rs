//! Connections to the coordinator.

use crate::config::AgentConfig;
use anyhow::Context;
use ipw_proto::BearerAuth;
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::agent_service_client::AgentServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An agent-service client that sends this agent's credential, and the caller's trace
/// context, on every call.
pub type Coordinator = AgentServiceClient<InterceptedService<Channel, AgentAuth>>;

/// The agent's credential, and the W3C trace context of the span making the call.
#[derive(Clone)]
pub struct AgentAuth(BearerAuth);

impl tonic::service::Interceptor for AgentAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = self.0.call(request)?;
        ipw_ops::propagation::inject(request.metadata_mut());
        Ok(request)
    }
}

/// Largest message the agent accepts (a lease of a large shard).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An endpoint for `url` (TLS with `tls`, plain text without) with sensible keepalives.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> anyhow::Result<Endpoint> {
    Ok(ipw_proto::tls::endpoint(url, tls)
        .map_err(anyhow::Error::msg)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// Connects to the agent's coordinator with its credential (and client certificate).
pub async fn connect(config: &AgentConfig) -> anyhow::Result<Coordinator> {
    let url = &config.coordinator;
    let channel = endpoint(url, config.client_tls().as_ref())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let auth = BearerAuth::new(&config.credential).context("the stored credential is not valid metadata")?;
    Ok(AgentServiceClient::with_interceptor(channel, AgentAuth(auth))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
