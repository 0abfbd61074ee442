//! The `ipw` operator CLI: the admin client, one file per command group, and `render/`, one
//! file per output format. `bin/ipw.rs` only parses arguments and dispatches here.

use anyhow::Context;
use ipw_proto::BearerAuth;
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod admin_tokens;
pub mod agents;
pub mod export;
pub mod prices;
pub mod progress;
pub mod render;
pub mod reports;
pub mod research;
pub mod runs;
pub mod sweeps;
pub mod tokens;
pub mod workloads;

/// An admin client that sends the admin token on every call.
pub type Admin = AdminClient<InterceptedService<Channel, BearerAuth>>;

/// A refused call as the operator should read it: the server's message, with a hint when a
/// plain-text URL met a TLS server.
pub fn refused(url: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{}", ipw_proto::tls::explain(url, s.message()))
}

/// Connects to the coordinator's admin service: over TLS trusting `tls`'s CA for `https://`,
/// in plain text for `http://`.
pub async fn connect(url: &str, tls: Option<&ClientTls>, admin_token: &str) -> anyhow::Result<Admin> {
    let channel = ipw_proto::tls::endpoint(url, tls)
        .map_err(anyhow::Error::msg)?
        .initial_stream_window_size(crate::api::server::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(crate::api::server::CONNECTION_WINDOW_BYTES)
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}; is ipw-coordinator running?"))?;
    let auth = BearerAuth::new(admin_token).context("the admin token has characters that cannot be sent")?;
    Ok(AdminClient::with_interceptor(channel, auth)
        .max_decoding_message_size(crate::api::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::api::server::MAX_MESSAGE_BYTES))
}
