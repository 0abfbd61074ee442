//! `ipw-agent join`: trade a join token for this agent's credential.

use crate::config::AgentConfig;
use crate::{VERSION, client, hardware};
use anyhow::Context;
use ipw_proto::v1::JoinRequest;
use ipw_proto::v1::enrollment_client::EnrollmentClient;
use std::collections::BTreeMap;

/// Joins the coordinator at `url` and returns the config to save.
pub async fn join(url: &str, token: &str, name: &str, labels: BTreeMap<String, String>) -> anyhow::Result<AgentConfig> {
    let channel =
        client::endpoint(url)?.connect().await.with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let resp = EnrollmentClient::new(channel)
        .join(JoinRequest {
            token: token.to_owned(),
            name: name.to_owned(),
            labels: labels.clone().into_iter().collect(),
            hardware: Some(hardware::probe()),
            agent_version: VERSION.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?
        .into_inner();
    Ok(AgentConfig {
        coordinator: url.to_owned(),
        agent_id: resp.agent_id,
        credential: resp.credential,
        name: name.to_owned(),
        labels,
        hardware_class: resp.hardware_class,
    })
}
