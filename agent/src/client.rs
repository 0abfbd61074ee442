//! Connections to the coordinator.

use anyhow::Context;
use ipw_proto::BearerAuth;
use ipw_proto::v1::agent_service_client::AgentServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An agent-service client that sends this agent's credential on every call.
pub type Coordinator = AgentServiceClient<InterceptedService<Channel, BearerAuth>>;

/// Largest message the agent accepts (a lease of a large shard).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An endpoint for `url` with sensible keepalives.
pub fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a valid coordinator URL"))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// Connects with the agent credential.
pub async fn connect(url: &str, credential: &str) -> anyhow::Result<Coordinator> {
    let channel = endpoint(url)?.connect().await.with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let auth = BearerAuth::new(credential).context("the stored credential is not valid metadata")?;
    Ok(AgentServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
