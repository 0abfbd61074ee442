//! `ipw-agent join`: trade a join token for this agent's credential, and `ipw-agent rotate`:
//! trade the credential for a new one.

use crate::config::{AgentConfig, client_cert_from};
use crate::{VERSION, client, hardware, pin};
use anyhow::Context;
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::enrollment_client::EnrollmentClient;
use ipw_proto::v1::{JoinRequest, RotateCredentialRequest};
use std::collections::BTreeMap;

/// How the agent decides to trust the coordinator it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// TLS, trusting only the CA with this fingerprint (`sha256:<hex>`).
    Pinned(String),
    /// Plain text, asked for with `--insecure`.
    Insecure,
}

/// Joins the coordinator at `url` and returns the config to save.
pub async fn join(
    url: &str,
    trust: &Trust,
    token: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<AgentConfig> {
    Ok(join_with_status(url, trust, token, name, labels).await?.0)
}

/// [`join`], also returning the status the coordinator gave the agent: `approved` (the token
/// approves) or `pending` (an operator must approve it).
pub async fn join_with_status(
    url: &str,
    trust: &Trust,
    token: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<(AgentConfig, String)> {
    let tls = match (trust, url.starts_with("https://")) {
        (Trust::Pinned(pin), true) => Some(ClientTls { ca_pem: pin::fetch_pinned_ca(url, pin).await?, identity: None }),
        (Trust::Insecure, false) => None,
        (Trust::Pinned(_), false) => {
            anyhow::bail!("{url} is not https://; a plain-text coordinator is joined with --insecure")
        }
        (Trust::Insecure, true) => {
            anyhow::bail!("{url} is https: pass the --ca-cert-hash that `ipw token create` printed, not --insecure")
        }
    };
    let (key_pem, csr_pem) = new_key_and_csr()?;
    let channel = client::endpoint(url, tls.as_ref())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let resp = EnrollmentClient::new(channel)
        .join(JoinRequest {
            token: token.to_owned(),
            name: name.to_owned(),
            labels: labels.clone().into_iter().collect(),
            hardware: Some(hardware::probe()),
            agent_version: VERSION.to_owned(),
            csr_pem,
        })
        .await
        .map_err(|s| anyhow::anyhow!("join refused: {}", ipw_proto::tls::explain(url, s.message())))?
        .into_inner();
    let config = AgentConfig {
        coordinator: url.to_owned(),
        agent_id: resp.agent_id,
        credential: resp.credential,
        name: name.to_owned(),
        labels,
        hardware_class: resp.hardware_class,
        ca_pem: tls.map(|t| t.ca_pem),
        client_cert: client_cert_from(resp.client_cert_pem, key_pem),
    };
    Ok((config, resp.status))
}

/// A new key pair for this agent's client certificate, and a request to sign it: the key is
/// made here and never leaves the machine (it is kept in the config, mode 0600).
pub fn new_key_and_csr() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generating the agent's key")?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key).context("making the signing request")?;
    Ok((key.serialize_pem(), csr.pem().context("encoding the signing request")?))
}

/// Replaces the agent's credential (and client certificate, for a key made here) with new
/// ones. The old ones keep working until the new credential is first used.
pub async fn rotate(config: &AgentConfig) -> anyhow::Result<AgentConfig> {
    let (key_pem, csr_pem) = new_key_and_csr()?;
    let resp = client::connect(config)
        .await?
        .rotate_credential(RotateCredentialRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("rotation refused: {}", s.message()))?
        .into_inner();
    Ok(AgentConfig {
        credential: resp.credential,
        client_cert: client_cert_from(resp.client_cert_pem, key_pem),
        ..config.clone()
    })
}
