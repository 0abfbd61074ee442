//! Calls from enrolled agents: heartbeat, lease, upload, complete.

use super::{State, db_error, parse_uuid, unix_us};
use crate::auth::{AgentCredential, bearer, constant_time_eq, hash_secret, new_secret};
use crate::ingest::{self, IngestError, MAX_BATCH_RESULTS};
use crate::prompt;
use futures::Stream;
use ipw_proto::v1::agent_service_server::AgentService;
use ipw_proto::v1::{
    AcquireLeaseRequest, AcquireLeaseResponse, BatchAck, CompleteShardRequest, CompleteShardResponse, GenerationParams,
    HeartbeatRequest, HeartbeatResponse, Lease, Provenance, ProvenanceAck, ResultBatch, RotateCredentialRequest,
    RotateCredentialResponse, ShardTelemetry, ShardTelemetryAck, WorkItem,
};
use std::collections::HashSet;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// The agent service.
#[derive(Debug, Clone)]
pub struct AgentServiceImpl {
    state: State,
}

impl AgentServiceImpl {
    /// Serves agents over `state`.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

/// An agent whose credential checked out.
struct Caller {
    id: Uuid,
    status: String,
}

/// Checks the request's agent credential against its stored hash, and the client certificate
/// against the one issued to the agent: a certificate presented must be the agent's own, and
/// with mTLS required one must be presented. Revoked agents are refused, every call.
async fn authenticate<T>(state: &State, request: &Request<T>) -> Result<Caller, Status> {
    let cred = AgentCredential::parse(bearer(request)?)?;
    let row = sqlx::query!(
        "SELECT credential_hash, status, revoked_reason, client_cert_sha256 FROM agents WHERE id = $1",
        cred.agent_id
    )
    .fetch_optional(&state.pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Status::unauthenticated(format!("unknown agent {}; join again", cred.agent_id)))?;
    if !constant_time_eq(&row.credential_hash, &hash_secret(&cred.secret)) {
        return Err(Status::unauthenticated("agent credential rejected (rotated, or not this agent's)"));
    }
    // Unauthenticated, not PermissionDenied: the credential itself is void, and the agent
    // stops instead of waiting for an approval that will not come.
    if row.status == "revoked" {
        return Err(Status::unauthenticated(format!(
            "agent {} was revoked ({}); it must join again with a new token",
            cred.agent_id,
            row.revoked_reason.unwrap_or_default()
        )));
    }
    let presented = request.peer_certs().and_then(|certs| certs.first().map(|c| crate::auth::sha256(c)));
    match (presented, row.client_cert_sha256) {
        (Some(p), Some(issued)) if constant_time_eq(&p, &issued) => {}
        (Some(_), _) => {
            return Err(Status::unauthenticated(format!(
                "the client certificate presented is not the one issued to agent {}",
                cred.agent_id
            )));
        }
        (None, _) if state.require_client_cert => {
            return Err(Status::unauthenticated(
                "this coordinator requires the agent's client certificate (mTLS); join again to get one",
            ));
        }
        (None, _) => {}
    }
    Ok(Caller { id: cred.agent_id, status: row.status })
}

type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    async fn rotate_credential(
        &self,
        request: Request<RotateCredentialRequest>,
    ) -> Result<Response<RotateCredentialResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let secret = new_secret();
        let client_cert = self.state.client_certificate(caller.id)?;
        sqlx::query!(
            "UPDATE agents SET credential_hash = $2, client_cert_sha256 = $3, credential_rotated_at = now()
             WHERE id = $1",
            caller.id,
            hash_secret(&secret),
            client_cert.as_ref().map(|c| c.sha256.clone()),
        )
        .execute(&self.state.pool)
        .await
        .map_err(db_error)?;
        tracing::info!(agent = %caller.id, "agent credential rotated");
        let (client_cert_pem, client_key_pem) = crate::tls::client_pems(client_cert);
        Ok(Response::new(RotateCredentialResponse {
            credential: AgentCredential { agent_id: caller.id, secret }.encode(),
            client_cert_pem,
            client_key_pem,
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let renewed = sqlx::query!(
            "WITH seen AS (UPDATE agents SET last_seen_at = now() WHERE id = $1)
             UPDATE shards SET lease_expires_at = now() + make_interval(secs => $2)
             WHERE lease_owner = $1 AND status = 'leased'",
            caller.id,
            self.state.lease_ttl.as_secs_f64(),
        )
        .execute(&self.state.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        Ok(Response::new(HeartbeatResponse { status: caller.status, leases_renewed: renewed as u32 }))
    }

    async fn acquire_lease(
        &self,
        request: Request<AcquireLeaseRequest>,
    ) -> Result<Response<AcquireLeaseResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        if caller.status != "approved" {
            return Err(Status::permission_denied(format!(
                "agent {} is {}: an operator must run `ipw agents approve {}` before it gets work",
                caller.id, caller.status, caller.id
            )));
        }
        // Only runs of models this agent's engine serves: it could not run the others.
        let available_models = request.into_inner().available_models;
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        // Shards whose leases ran out too often fail, with the reason, instead of circulating;
        // a run with nothing left open and a failed shard fails too.
        let failed_runs: Vec<Uuid> = sqlx::query_scalar!(
            "UPDATE shards s
             SET status = 'failed', lease_expires_at = NULL,
                 failure_reason = format('its lease ran out %s times without the shard completing (last agent: %s)',
                                         s.attempts, a.name)
             FROM agents a
             WHERE a.id = s.lease_owner AND s.status = 'leased' AND s.lease_expires_at < now() AND s.attempts >= $1
             RETURNING s.run_id",
            self.state.max_attempts as i32
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if !failed_runs.is_empty() {
            sqlx::query!(
                "UPDATE runs r SET status = 'failed', completed_at = now()
                 WHERE r.id = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM shards o WHERE o.run_id = r.id AND o.status IN ('pending', 'leased'))",
                &failed_runs
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        // The next pending shard, or one whose lease ran out, of the oldest active run. SKIP
        // LOCKED lets many agents (and replicas) take different shards at once without waiting.
        let shard = sqlx::query!(
            r#"WITH me AS (
                 SELECT a.hardware_class, a.labels,
                        coalesce((SELECT sum(memory_bytes) FROM accelerators WHERE agent_id = a.id)::bigint,
                                 a.memory_bytes) AS capacity
                 FROM agents a WHERE a.id = $1),
               next AS (
                 SELECT s.id FROM shards s
                 JOIN runs r ON r.id = s.run_id
                 JOIN models m ON m.id = r.model_id
                 LEFT JOIN sweeps sw ON sw.id = r.sweep_id
                 CROSS JOIN me
                 WHERE r.status IN ('pending', 'running')
                   AND (sw.id IS NULL OR sw.status = 'active')
                   AND (r.hardware_class IS NULL OR r.hardware_class = me.hardware_class)
                   AND me.labels @> r.label_selector
                   AND m.name = ANY($3::text[])
                   AND (r.model_memory_bytes IS NULL OR r.model_memory_bytes <= me.capacity)
                   AND (s.status = 'pending' OR (s.status = 'leased' AND s.lease_expires_at < now()))
                 ORDER BY r.created_at, s.shard_index
                 LIMIT 1
                 FOR UPDATE OF s SKIP LOCKED)
               UPDATE shards s
               SET status = 'leased', lease_owner = $1, attempts = s.attempts + 1,
                   lease_expires_at = now() + make_interval(secs => $2)
               FROM next WHERE s.id = next.id
               RETURNING s.id, s.run_id, s.shard_index, s.attempts, s.lease_expires_at AS "expires_at!""#,
            caller.id,
            self.state.lease_ttl.as_secs_f64(),
            &available_models,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(shard) = shard else {
            sqlx::query!("UPDATE agents SET last_seen_at = now() WHERE id = $1", caller.id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Response::new(AcquireLeaseResponse { lease: None }));
        };
        sqlx::query!(
            "INSERT INTO lease_attempts (shard_id, attempt, agent_id) VALUES ($1, $2, $3)",
            shard.id,
            shard.attempts,
            caller.id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let run = sqlx::query!(
            "UPDATE runs r SET status = 'running', started_at = coalesce(r.started_at, now())
             FROM models m WHERE r.id = $1 AND m.id = r.model_id
             RETURNING r.concurrency, r.max_tokens, r.temperature, r.top_p, r.repetitions, r.warmup, m.name AS model",
            shard.run_id
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let queries = sqlx::query!(
            "SELECT q.id, q.prompt, q.choices, q.category
             FROM run_queries rq JOIN queries q ON q.id = rq.query_id
             WHERE rq.shard_id = $1 ORDER BY rq.position",
            shard.id
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // A re-leased shard only hands out what no earlier attempt has committed.
        let done: HashSet<(i64, i32)> =
            sqlx::query!("SELECT query_id, repetition FROM results WHERE shard_id = $1", shard.id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|r| (r.query_id, r.repetition))
                .collect();
        tx.commit().await.map_err(db_error)?;

        let mut items = Vec::new();
        for q in &queries {
            let choices: Option<Vec<String>> = q.choices.clone().and_then(|c| serde_json::from_value(c).ok());
            let messages = prompt::render(&q.prompt, choices.as_deref(), q.category.as_deref());
            for repetition in 0..run.repetitions {
                if !done.contains(&(q.id, repetition)) {
                    items.push(WorkItem { query_id: q.id, repetition: repetition as u32, messages: messages.clone() });
                }
            }
        }
        tracing::info!(agent = %caller.id, shard = %shard.id, index = shard.shard_index, items = items.len(), "lease granted");
        Ok(Response::new(AcquireLeaseResponse {
            lease: Some(Lease {
                shard_id: shard.id.to_string(),
                run_id: shard.run_id.to_string(),
                shard_index: shard.shard_index as u32,
                expires_unix_us: unix_us(shard.expires_at),
                model: run.model,
                warmup: run.warmup as u32,
                concurrency: run.concurrency as u32,
                params: Some(GenerationParams {
                    max_tokens: run.max_tokens as u32,
                    temperature: run.temperature,
                    top_p: run.top_p,
                }),
                items,
            }),
        }))
    }

    type UploadResultsStream = AckStream;

    async fn upload_results(
        &self,
        request: Request<Streaming<ResultBatch>>,
    ) -> Result<Response<Self::UploadResultsStream>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let mut inbound = request.into_inner();
        let (acks, rx) = tokio::sync::mpsc::channel(16);
        let pool = self.state.pool.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        let outcome = ingest_batch(&pool, caller.id, batch).await;
                        let failed = outcome.is_err();
                        if acks.send(outcome).await.is_err() || failed {
                            break;
                        }
                    }
                    Ok(None) => break,
                    // A stream cut mid-message: every batch before it was committed and
                    // acknowledged; the partial one was never decoded, so nothing of it is written.
                    Err(status) => {
                        tracing::warn!(agent = %caller.id, %status, "result stream broke off");
                        let _ = acks
                            .send(Err(Status::aborted(format!(
                                "the result stream was cut off ({}); the unfinished batch was not written, \
                                 acknowledged batches were",
                                status.message()
                            ))))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload_shard_telemetry(
        &self,
        request: Request<ShardTelemetry>,
    ) -> Result<Response<ShardTelemetryAck>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let t = request.into_inner();
        let shard_id = parse_uuid("shard_id", &t.shard_id)?;
        validate_telemetry(&t).map_err(|e| Status::invalid_argument(format!("telemetry of shard {shard_id}: {e}")))?;
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let leased = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM lease_attempts WHERE shard_id = $1 AND agent_id = $2) AS "leased!""#,
            shard_id,
            caller.id
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if !leased {
            return Err(Status::permission_denied(format!("shard {shard_id} was never leased to this agent")));
        }
        let sources: Vec<serde_json::Value> = t
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "kind": s.kind, "scope": s.scope, "name": s.name,
                    "details": serde_json::from_str::<serde_json::Value>(&s.details_json).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect();
        let clock_zero = chrono::DateTime::from_timestamp_micros(t.clock_zero_unix_us)
            .ok_or_else(|| Status::invalid_argument("clock_zero_unix_us is not a valid time"))?;
        let fresh = sqlx::query!(
            "INSERT INTO shard_telemetry (shard_id, agent_id, idle_power_w, idle_seconds, sample_hz, attribution,
                                          sources, clock_zero, active_energy_j)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (shard_id, agent_id) DO NOTHING",
            shard_id,
            caller.id,
            t.idle_power_w,
            t.idle_seconds,
            t.sample_hz,
            t.attribution,
            serde_json::Value::Array(sources),
            clock_zero,
            t.active_energy_j,
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
        // A retry finds the first upload in place and changes nothing.
        if fresh {
            for c in &t.chunks {
                sqlx::query!(
                    "INSERT INTO power_series (shard_id, agent_id, source_index, chunk_index, t_s, energy_j)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    shard_id,
                    caller.id,
                    c.source_index as i32,
                    c.chunk_index as i32,
                    &c.t_s,
                    &c.energy_j
                )
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => Status::invalid_argument(format!(
                        "chunk {} of source {} appears twice",
                        c.chunk_index, c.source_index
                    )),
                    _ => db_error(e),
                })?;
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(ShardTelemetryAck {}))
    }

    async fn report_provenance(&self, request: Request<Provenance>) -> Result<Response<ProvenanceAck>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let p = request.into_inner();
        let run_id = parse_uuid("run_id", &p.run_id)?;
        let texts = [
            &p.agent_version,
            &p.agent_git_revision,
            &p.engine_name,
            &p.engine_version,
            &p.engine_model,
            &p.model_digest,
            &p.quantization,
            &p.driver_version,
            &p.cuda_version,
            &p.rocm_version,
            &p.os,
            &p.kernel,
            &p.cpu_model,
        ];
        if texts.iter().any(|t| t.len() > crate::ingest::MAX_SHORT_TEXT_BYTES) || p.details_json.len() > 1 << 16 {
            return Err(Status::invalid_argument("a provenance field is too long"));
        }
        let sha = p.model_sha256.trim().to_lowercase();
        let is_sha256 = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !sha.is_empty() && !is_sha256 {
            return Err(Status::invalid_argument("model_sha256 must be 64 hex digits"));
        }
        if p.power_limit_w.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            return Err(Status::invalid_argument("power_limit_w must be a positive number"));
        }
        let details: serde_json::Value = if p.details_json.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&p.details_json)
                .map_err(|e| Status::invalid_argument(format!("details_json is not JSON: {e}")))?
        };
        let leased = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM lease_attempts la JOIN shards s ON s.id = la.shard_id
                              WHERE s.run_id = $1 AND la.agent_id = $2) AS "leased!""#,
            run_id,
            caller.id
        )
        .fetch_one(&self.state.pool)
        .await
        .map_err(db_error)?;
        if !leased {
            return Err(Status::permission_denied(format!("this agent never leased a shard of run {run_id}")));
        }
        let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        sqlx::query!(
            "INSERT INTO run_provenance (run_id, agent_id, agent_version, agent_git_revision, engine_name,
                 engine_version, engine_model, model_sha256, model_digest, quantization, driver_version, cuda_version,
                 rocm_version, os, kernel, cpu_model, power_limit_w, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (run_id, agent_id) DO NOTHING",
            run_id,
            caller.id,
            p.agent_version,
            p.agent_git_revision,
            p.engine_name,
            p.engine_version,
            p.engine_model,
            blank(&sha),
            blank(&p.model_digest),
            blank(&p.quantization),
            blank(&p.driver_version),
            blank(&p.cuda_version),
            blank(&p.rocm_version),
            p.os,
            p.kernel,
            p.cpu_model,
            p.power_limit_w,
            details,
        )
        .execute(&self.state.pool)
        .await
        .map_err(db_error)?;
        Ok(Response::new(ProvenanceAck {}))
    }

    async fn complete_shard(
        &self,
        request: Request<CompleteShardRequest>,
    ) -> Result<Response<CompleteShardResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let shard_id = parse_uuid("shard_id", &request.get_ref().shard_id)?;
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let shard = sqlx::query!(
            "SELECT s.status, s.lease_owner, s.run_id, r.repetitions,
                    (SELECT count(*) FROM run_queries WHERE shard_id = s.id) AS \"queries!\",
                    (SELECT count(*) FROM results WHERE shard_id = s.id) AS \"results!\"
             FROM shards s JOIN runs r ON r.id = s.run_id WHERE s.id = $1 FOR UPDATE OF s",
            shard_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Status::not_found(format!("no shard {shard_id}")))?;
        if shard.lease_owner != Some(caller.id) {
            return Err(Status::permission_denied(format!("shard {shard_id} is not leased to this agent")));
        }
        if shard.status != "completed" {
            let expected = shard.queries * i64::from(shard.repetitions);
            if shard.results < expected {
                return Err(Status::failed_precondition(format!(
                    "shard {shard_id} has {} of {expected} results committed; upload the rest first",
                    shard.results
                )));
            }
            sqlx::query!(
                "UPDATE shards SET status = 'completed', completed_by = $2, completed_at = now(),
                                   lease_expires_at = NULL
                 WHERE id = $1",
                shard_id,
                caller.id
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let run_completed = sqlx::query!(
            "UPDATE runs SET status = 'completed', completed_at = now()
             WHERE id = $1 AND status <> 'completed'
               AND NOT EXISTS (SELECT 1 FROM shards WHERE run_id = $1 AND status <> 'completed')",
            shard.run_id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
        tx.commit().await.map_err(db_error)?;
        if run_completed {
            tracing::info!(run = %shard.run_id, "run completed");
        }
        Ok(Response::new(CompleteShardResponse { run_completed }))
    }
}

/// Most power sources one shard's telemetry may name.
const MAX_TELEMETRY_SOURCES: usize = 64;

/// Checks a telemetry upload on its own; the error names what is wrong.
fn validate_telemetry(t: &ShardTelemetry) -> Result<(), String> {
    let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if t.sources.len() > MAX_TELEMETRY_SOURCES {
        return Err(format!("{} sources; at most {MAX_TELEMETRY_SOURCES}", t.sources.len()));
    }
    if !(t.sample_hz.is_finite() && t.sample_hz > 0.0) {
        return Err(format!("sample_hz must be > 0, got {}", t.sample_hz));
    }
    if !finite_nonneg(t.idle_seconds) || t.idle_power_w.is_some_and(|p| !finite_nonneg(p)) {
        return Err("idle_seconds and idle_power_w must be finite and >= 0".into());
    }
    if t.active_energy_j.is_some_and(|e| !finite_nonneg(e)) {
        return Err("active_energy_j must be finite and >= 0".into());
    }
    if !["time-share", "token-share"].contains(&t.attribution.as_str()) {
        return Err(format!("unknown attribution \"{}\"", t.attribution));
    }
    for s in &t.sources {
        if !crate::ingest::POWER_SOURCES.contains(&s.kind.as_str()) {
            return Err(format!("unknown power source \"{}\"", s.kind));
        }
        serde_json::from_str::<serde_json::Value>(if s.details_json.is_empty() { "null" } else { &s.details_json })
            .map_err(|e| format!("details of {} are not JSON: {e}", s.name))?;
    }
    for c in &t.chunks {
        if c.source_index as usize >= t.sources.len() {
            return Err(format!("chunk {} names source {} of {}", c.chunk_index, c.source_index, t.sources.len()));
        }
        if c.t_s.len() != c.energy_j.len() {
            return Err(format!("chunk {} has {} times but {} energies", c.chunk_index, c.t_s.len(), c.energy_j.len()));
        }
        if !c.t_s.iter().chain(&c.energy_j).all(|v| v.is_finite()) {
            return Err(format!("chunk {} holds a non-finite value", c.chunk_index));
        }
    }
    Ok(())
}

/// Validates and commits one batch; the ack is built only after the commit.
async fn ingest_batch(pool: &sqlx::PgPool, agent_id: Uuid, batch: ResultBatch) -> Result<BatchAck, Status> {
    let seq = batch.batch_seq;
    if batch.results.len() > MAX_BATCH_RESULTS {
        return Err(Status::invalid_argument(format!(
            "batch {seq} has {} results; at most {MAX_BATCH_RESULTS} per batch",
            batch.results.len()
        )));
    }
    let valid = batch
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            ingest::validate(r).map_err(|e| Status::invalid_argument(format!("batch {seq}: result {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = pool.begin().await.map_err(db_error)?;
    let outcome = ingest::insert_batch(&mut tx, agent_id, &valid).await.map_err(|e| match e {
        IngestError::Db(e) => db_error(e),
        e @ IngestError::NotYourShard { .. } => Status::permission_denied(format!("batch {seq}: {e}")),
        e @ IngestError::Invalid { .. } => Status::invalid_argument(format!("batch {seq}: {e}")),
    })?;
    tx.commit().await.map_err(db_error)?;
    Ok(BatchAck { batch_seq: seq, inserted: outcome.inserted, duplicates: outcome.duplicates })
}
