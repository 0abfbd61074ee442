//! `Join`: a join token becomes a per-agent credential.

use super::{State, db_error};
use crate::auth::{AgentCredential, hash_secret, new_secret};
use crate::hardware;
use ipw_proto::v1::enrollment_server::Enrollment;
use ipw_proto::v1::{JoinRequest, JoinResponse};
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

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        // Before anything else, so that guessing tokens costs the guesser, not the database.
        if let Some(addr) = request.remote_addr()
            && let Err(wait) = self.state.join_limiter.check(addr.ip())
        {
            tracing::warn!(%addr, "join refused: rate limit");
            return Err(Status::resource_exhausted(format!(
                "too many join attempts from {}; try again in {} s",
                addr.ip(),
                wait.as_secs_f64().ceil().max(1.0)
            )));
        }
        let req = request.into_inner();
        let name = req.name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!("agent name must be 1 to {MAX_NAME_BYTES} bytes")));
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

        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let token_hash = hash_secret(req.token.trim());
        let token = sqlx::query!(
            "UPDATE join_tokens SET uses = uses + 1
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() AND uses < max_uses
             RETURNING id, auto_approve",
            token_hash
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(token) = token else {
            return Err(refusal(&self.state, &token_hash).await);
        };

        let agent_id = Uuid::now_v7();
        let secret = new_secret();
        let client_cert = self.state.client_certificate(agent_id)?;
        let status = if token.auto_approve { "approved" } else { "pending" };
        let labels = serde_json::to_value(&req.labels).expect("a string map is JSON");
        sqlx::query!(
            "INSERT INTO agents (id, name, status, credential_hash, join_token_id, labels, hardware_class,
                                 hostname, os, kernel, cpu_model, cpu_cores, memory_bytes, agent_version,
                                 approved_at, client_cert_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                     CASE WHEN $3 = 'approved' THEN now() END, $15)",
            agent_id,
            name,
            status,
            hash_secret(&secret),
            token.id,
            labels,
            class,
            hw.hostname,
            hw.os,
            hw.kernel,
            hw.cpu_model,
            i32::try_from(hw.cpu_cores).unwrap_or(i32::MAX),
            i64::try_from(hw.memory_bytes).unwrap_or(i64::MAX),
            req.agent_version,
            client_cert.as_ref().map(|c| c.sha256.clone()),
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for a in &hw.accelerators {
            sqlx::query!(
                "INSERT INTO accelerators (agent_id, idx, vendor, model, memory_bytes, driver_version, device_uuid)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                agent_id,
                a.index as i32,
                a.vendor,
                a.model,
                i64::try_from(a.memory_bytes).unwrap_or(i64::MAX),
                a.driver_version,
                a.uuid,
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    Status::invalid_argument(format!("accelerator index {} appears twice", a.index))
                }
                _ => db_error(e),
            })?;
        }
        tx.commit().await.map_err(db_error)?;
        tracing::info!(%agent_id, name, status, hardware_class = %class, "agent joined");
        let (client_cert_pem, client_key_pem) = crate::tls::client_pems(client_cert);
        Ok(Response::new(JoinResponse {
            agent_id: agent_id.to_string(),
            credential: AgentCredential { agent_id, secret }.encode(),
            status: status.into(),
            hardware_class: class,
            client_cert_pem,
            client_key_pem,
        }))
    }
}

/// Says exactly why a token was refused: unknown, revoked, expired or used up.
async fn refusal(state: &State, token_hash: &[u8]) -> Status {
    let row = sqlx::query!(
        "SELECT expires_at, max_uses, uses, revoked_at, revoked_reason, expires_at <= now() AS \"expired!\"
         FROM join_tokens WHERE token_hash = $1",
        token_hash
    )
    .fetch_optional(&state.pool)
    .await;
    match row {
        Err(e) => db_error(e),
        Ok(None) => {
            Status::unauthenticated("join token not recognised; ask an operator for a new one (`ipw token create`)")
        }
        Ok(Some(t)) if t.revoked_at.is_some() => Status::unauthenticated(format!(
            "join token was revoked ({}); ask for a new one",
            t.revoked_reason.unwrap_or_default()
        )),
        Ok(Some(t)) if t.expired => {
            Status::unauthenticated(format!("join token expired at {}; ask for a new one", t.expires_at.to_rfc3339()))
        }
        Ok(Some(t)) => Status::unauthenticated(format!("join token is used up ({} of {} uses)", t.uses, t.max_uses)),
    }
}
