//! `Join`: a join token becomes a per-agent credential.

use super::State;
use crate::domain::hardware;
use crate::infra::auth::{AgentCredential, hash_secret, new_secret};
use crate::infra::rate_limit::RateLimiter;
use crate::store::{self, agents, tokens};
use ipw_proto::kinds::AgentStatus;
use ipw_proto::v1::enrollment_server::Enrollment;
use ipw_proto::v1::{JoinRequest, JoinResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Most labels an agent may carry.
const MAX_LABELS: usize = 64;
/// Longest agent name, label key or label value, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// The enrollment service.
#[derive(Debug, Clone)]
pub struct EnrollmentService {
    state: State,
}

impl EnrollmentService {
    /// Serves enrollment over `state`.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

/// An interceptor applying the `Join` rate limit per client address from the call's headers,
/// before its body is decoded: guessing tokens costs the guesser, not the coordinator.
pub fn rate_limited(limiter: Arc<RateLimiter>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if let Some(addr) = request.remote_addr()
            && let Err(wait) = limiter.check(addr.ip())
        {
            tracing::warn!(%addr, "join refused: rate limit");
            return Err(Status::resource_exhausted(format!(
                "too many join attempts from {}; try again in {} s",
                addr.ip(),
                wait.as_secs_f64().ceil().max(1.0)
            )));
        }
        Ok(request)
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!("agent name must be 1 to {MAX_NAME_BYTES} bytes")));
        }
        // Agents are named by operators by id or name: a name shaped like an id could stand in
        // for another agent's.
        if Uuid::parse_str(name).is_ok() {
            return Err(Status::invalid_argument(format!(
                "agent name \"{name}\" looks like an agent id; choose another"
            )));
        }
        if req.labels.len() > MAX_LABELS
            || req.labels.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_NAME_BYTES || v.len() > MAX_NAME_BYTES)
        {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_LABELS} labels, each a non-empty key and a value of at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let hw = req.hardware.unwrap_or_default();
        let class = hardware::class_of(&hw);
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        let token = tokens::consume(&mut tx, &hash_secret(req.token.trim())).await?;
        let agent_id = Uuid::now_v7();
        let secret = new_secret();
        let client_cert = self.state.client_certificate(agent_id, &req.csr_pem)?;
        let status = if token.auto_approve { AgentStatus::Approved } else { AgentStatus::Pending };
        let agent = agents::NewAgent {
            id: agent_id,
            name,
            status,
            credential_hash: hash_secret(&secret),
            join_token_id: token.id,
            labels: &req.labels,
            hardware_class: &class,
            hardware: &hw,
            agent_version: &req.agent_version,
            client_cert_sha256: client_cert.as_ref().map(|c| c.sha256.clone()),
        };
        agents::insert(&mut tx, &agent).await?;
        tx.commit().await.map_err(store::Error::from)?;
        tracing::info!(%agent_id, name, %status, hardware_class = %class, "agent joined");
        Ok(Response::new(JoinResponse {
            agent_id: agent_id.to_string(),
            credential: AgentCredential { agent_id, secret }.encode(),
            status: status.as_str().into(),
            hardware_class: class,
            client_cert_pem: client_cert.map(|c| c.cert_pem).unwrap_or_default(),
        }))
    }
}
