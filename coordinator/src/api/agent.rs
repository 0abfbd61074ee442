//! Calls from enrolled agents: heartbeat, lease, upload, complete.

use super::auth::{Caller, caller};
use super::error::prefixed;
use super::{State, parse_uuid};
use crate::domain::{fleet, prompt, results, telemetry};
use crate::infra::auth::{AgentCredential, hash_secret, new_secret};
use crate::infra::metrics::Metrics;
use crate::store::{self, agents, leases, provenance, unix_us};
use futures::Stream;
use ipw_proto::v1::agent_service_server::AgentService;
use ipw_proto::v1::{
    AcquireLeaseRequest, AcquireLeaseResponse, BatchAck, ChatMessage, CompleteShardRequest, CompleteShardResponse,
    GenerationParams, HeartbeatRequest, HeartbeatResponse, Lease, LoadPattern, Provenance, ProvenanceAck,
    ReleaseLeasesRequest, ReleaseLeasesResponse, ResultBatch, RotateCredentialRequest, RotateCredentialResponse,
    SessionTelemetry, SessionTelemetryAck, ShardTelemetry, ShardTelemetryAck, WorkItem,
};
use std::collections::HashSet;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
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

type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    async fn rotate_credential(
        &self,
        request: Request<RotateCredentialRequest>,
    ) -> Result<Response<RotateCredentialResponse>, Status> {
        let caller = caller(&request)?;
        let secret = new_secret();
        let client_cert = self.state.client_certificate(caller.id, &request.get_ref().csr_pem)?;
        let cert_sha256 = client_cert.as_ref().map(|c| c.sha256.as_slice());
        let used = (caller.credential_hash.as_slice(), caller.client_cert_sha256.as_deref());
        agents::rotate_credential(&self.state.pool, caller.id, &hash_secret(&secret), cert_sha256, used).await?;
        tracing::info!(agent = %caller.id, "agent credential rotated");
        Ok(Response::new(RotateCredentialResponse {
            credential: AgentCredential { agent_id: caller.id, secret }.encode(),
            client_cert_pem: client_cert.map(|c| c.cert_pem).unwrap_or_default(),
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = caller(&request)?;
        let named = shard_ids(&request.get_ref().shard_ids)?;
        let live = fleet::live_state(request.get_ref())
            .map_err(|e| Status::invalid_argument(format!("heartbeat state: {e}")))?;
        let renewed = leases::renew(&self.state.pool, caller.id, self.state.lease_ttl, &named).await?;
        if let Some(live) = &live {
            store::fleet::record_live(&self.state.pool, caller.id, live).await?;
        }
        let lost_shard_ids: Vec<String> =
            named.iter().filter(|id| !renewed.contains(id)).map(Uuid::to_string).collect();
        if !lost_shard_ids.is_empty() {
            tracing::warn!(agent = %caller.id, lost = ?lost_shard_ids, "agent told it lost leases");
        }
        Ok(Response::new(HeartbeatResponse {
            status: caller.status.as_str().into(),
            leases_renewed: renewed.len() as u32,
            lost_shard_ids,
        }))
    }

    async fn release_leases(
        &self,
        request: Request<ReleaseLeasesRequest>,
    ) -> Result<Response<ReleaseLeasesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let named = shard_ids(&req.shard_ids)?;
        if req.engine_failures.len() > results::MAX_BATCH_RESULTS {
            return Err(Status::invalid_argument(format!(
                "{} engine failures; at most {}",
                req.engine_failures.len(),
                results::MAX_BATCH_RESULTS
            )));
        }
        let failures = req
            .engine_failures
            .iter()
            .map(|f| {
                let error =
                    results::storable(&f.error.chars().take(results::MAX_SHORT_TEXT_BYTES / 4).collect::<String>());
                Ok(leases::EngineFailure {
                    shard_id: parse_uuid("engine_failures.shard_id", &f.shard_id)?,
                    query_id: f.query_id,
                    repetition: i32::try_from(f.repetition)
                        .map_err(|_| Status::invalid_argument("engine_failures.repetition out of range"))?,
                    error,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let limit = self.state.max_engine_failures as i32;
        let released = leases::release(&self.state.pool, caller.id, &named, &failures, limit).await?;
        self.state.metrics.leases_released.inc_by(released.leases as u64);
        tracing::info!(
            agent = %caller.id,
            leases = released.leases,
            engine_failures = failures.len(),
            recorded_as_errors = released.recorded_as_errors,
            "leases released"
        );
        Ok(Response::new(ReleaseLeasesResponse {
            released: released.leases as u32,
            recorded_as_errors: released.recorded_as_errors as u32,
        }))
    }

    async fn acquire_lease(
        &self,
        request: Request<AcquireLeaseRequest>,
    ) -> Result<Response<AcquireLeaseResponse>, Status> {
        // Approved: the guard let no other agent through.
        let caller = caller(&request)?;
        // Only runs of models this agent's engine serves: it could not run the others.
        let request = request.into_inner();
        let only_run = (!request.run_id.is_empty())
            .then(|| Uuid::parse_str(&request.run_id))
            .transpose()
            .map_err(|_| Status::invalid_argument(format!("run_id \"{}\" is not a UUID", request.run_id)))?;
        let lease = acquire(&self.state, caller, &request.available_models, only_run).await?;
        Ok(Response::new(AcquireLeaseResponse { lease }))
    }

    type UploadResultsStream = AckStream;

    async fn upload_results(
        &self,
        request: Request<Streaming<ResultBatch>>,
    ) -> Result<Response<Self::UploadResultsStream>, Status> {
        let caller = caller(&request)?;
        let mut inbound = request.into_inner();
        let (acks, rx) = tokio::sync::mpsc::channel(16);
        let (pool, metrics) = (self.state.pool.clone(), self.state.metrics.clone());
        // In the call's span: each batch's ingest joins the caller's trace.
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                loop {
                    match inbound.message().await {
                        Ok(Some(batch)) => {
                            let outcome = ingest_batch(&pool, &metrics, caller.id, batch).await;
                            let failed = outcome.is_err();
                            if acks.send(outcome).await.is_err() || failed {
                                break;
                            }
                        }
                        Ok(None) => break,
                        // A stream cut mid-message: every batch before it was committed and
                        // acknowledged; the partial one was never decoded, so nothing of it is written.
                        // A message over the method's limits (the guard's refusal) is bad input,
                        // not a break: it is passed on as it is, and not retried.
                        Err(status) if status.code() == tonic::Code::InvalidArgument => {
                            let _ = acks.send(Err(status)).await;
                            break;
                        }
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
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload_shard_telemetry(
        &self,
        request: Request<ShardTelemetry>,
    ) -> Result<Response<ShardTelemetryAck>, Status> {
        let caller = caller(&request)?;
        let t = request.into_inner();
        let shard_id = parse_uuid("shard_id", &t.shard_id)?;
        telemetry::validate(&t).map_err(|e| Status::invalid_argument(format!("telemetry of shard {shard_id}: {e}")))?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        if !leases::ever_leased_shard(&mut tx, shard_id, caller.id).await? {
            return Err(Status::permission_denied(format!("shard {shard_id} was never leased to this agent")));
        }
        store::telemetry::insert(&mut tx, shard_id, caller.id, &t).await?;
        tx.commit().await.map_err(store::Error::from)?;
        Ok(Response::new(ShardTelemetryAck {}))
    }

    async fn upload_session_telemetry(
        &self,
        request: Request<SessionTelemetry>,
    ) -> Result<Response<SessionTelemetryAck>, Status> {
        let caller = caller(&request)?;
        let t = request.into_inner();
        let session = telemetry::validate_session(&t)
            .map_err(|e| Status::invalid_argument(format!("telemetry of session {}: {e}", t.session_id)))?;
        if !leases::ever_leased_run(&self.state.pool, session.run_id, caller.id).await? {
            return Err(Status::permission_denied(format!("run {} was never leased to this agent", session.run_id)));
        }
        store::sessions::upsert(&self.state.pool, caller.id, &session, &t).await?;
        Ok(Response::new(SessionTelemetryAck {}))
    }

    async fn report_provenance(&self, request: Request<Provenance>) -> Result<Response<ProvenanceAck>, Status> {
        let caller = caller(&request)?;
        let p = request.into_inner();
        let run_id = parse_uuid("run_id", &p.run_id)?;
        let details = telemetry::validate_provenance(&p)?;
        if !leases::ever_leased_run(&self.state.pool, run_id, caller.id).await? {
            return Err(Status::permission_denied(format!("this agent never leased a shard of run {run_id}")));
        }
        provenance::insert(&self.state.pool, run_id, caller.id, &p, details).await?;
        Ok(Response::new(ProvenanceAck {}))
    }

    async fn complete_shard(
        &self,
        request: Request<CompleteShardRequest>,
    ) -> Result<Response<CompleteShardResponse>, Status> {
        let caller = caller(&request)?;
        let shard_id = parse_uuid("shard_id", &request.get_ref().shard_id)?;
        let run_completed = leases::complete(&self.state.pool, shard_id, caller.id).await?;
        Ok(Response::new(CompleteShardResponse { run_completed }))
    }
}

/// Most shards one call may name: far more than an agent works on at once.
const MAX_NAMED_SHARDS: usize = 1024;

/// Shard ids named by an agent, parsed.
fn shard_ids(ids: &[String]) -> Result<Vec<Uuid>, Status> {
    if ids.len() > MAX_NAMED_SHARDS {
        return Err(Status::invalid_argument(format!("{} shards named; at most {MAX_NAMED_SHARDS}", ids.len())));
    }
    ids.iter().map(|id| parse_uuid("shard_id", id)).collect()
}

/// Leases the next shard this agent may run, if any, with its work items: each query's
/// prompt for every repetition not yet committed.
async fn acquire(
    state: &State,
    caller: Caller,
    available_models: &[String],
    only_run: Option<Uuid>,
) -> store::Result<Option<Lease>> {
    let mut tx = state.pool.begin().await?;
    let failed = leases::fail_exhausted(&mut tx, state.max_attempts).await?;
    state.metrics.shards_failed.inc_by(failed);
    let Some(shard) = leases::lease_next(&mut tx, caller.id, state.lease_ttl, available_models, only_run).await? else {
        agents::touch(&mut tx, caller.id).await?;
        tx.commit().await?;
        return Ok(None);
    };
    let run = leases::start_run(&mut tx, shard.run_id).await?;
    let (queries, done) = leases::shard_work(&mut tx, shard.id).await?;
    tx.commit().await?;
    state.metrics.leases_granted.inc();
    if shard.reclaimed {
        state.metrics.leases_expired.inc();
    }

    let items = work_items(&queries, &done, run.repetitions);
    tracing::info!(agent = %caller.id, shard = %shard.id, index = shard.shard_index, items = items.len(), "lease granted");
    Ok(Some(Lease {
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
        load: Some(LoadPattern {
            kind: run.load_pattern,
            rate_per_s: run.rate_per_s.unwrap_or(0.0),
            seed: run.arrival_seed as u64,
        }),
    }))
}

/// A shard's work: each query's messages for every repetition not yet committed. A chat
/// query's conversation goes as it was imported; other queries are rendered from their prompt.
fn work_items(queries: &[leases::ShardQuery], done: &HashSet<(i64, i32)>, repetitions: i32) -> Vec<WorkItem> {
    let mut items = Vec::new();
    for q in queries {
        let messages = match &q.messages {
            Some(turns) => {
                turns.iter().map(|t| ChatMessage { role: t.role.clone(), content: t.content.clone() }).collect()
            }
            None => {
                let choices: Option<Vec<String>> = q.choices.clone().and_then(|c| serde_json::from_value(c).ok());
                prompt::render(&q.prompt, choices.as_deref(), q.category.as_deref())
            }
        };
        let max_tokens = q.max_tokens.map_or(0, |n| n as u32);
        for repetition in 0..repetitions {
            if !done.contains(&(q.id, repetition)) {
                let messages = messages.clone();
                items.push(WorkItem { query_id: q.id, repetition: repetition as u32, messages, max_tokens });
            }
        }
    }
    items
}

/// Validates and commits one batch; the ack is built only after the commit.
#[tracing::instrument(
    name = "ingest",
    skip_all,
    fields(otel.name = "ingest result batch", db.system = "postgresql", batch_seq = batch.batch_seq, results = batch.results.len())
)]
async fn ingest_batch(
    pool: &sqlx::PgPool,
    metrics: &Metrics,
    agent_id: Uuid,
    batch: ResultBatch,
) -> Result<BatchAck, Status> {
    let started = std::time::Instant::now();
    let seq = batch.batch_seq;
    let in_batch = |s: Status| prefixed(&format!("batch {seq}"), s);
    if batch.results.len() > results::MAX_BATCH_RESULTS {
        return Err(Status::invalid_argument(format!(
            "batch {seq} has {} results; at most {} per batch",
            batch.results.len(),
            results::MAX_BATCH_RESULTS
        )));
    }
    let valid = batch
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| results::validate(r).map_err(|e| in_batch(Status::invalid_argument(format!("result {i}: {e}")))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    // The stream was admitted once; each batch checks again that the agent is still approved,
    // holding its row so a revocation waits for this batch or this batch for it.
    agents::lock_approved(&mut tx, agent_id).await?;
    let outcome = store::results::insert_batch(&mut tx, agent_id, &valid).await.map_err(|e| match e {
        e @ store::Error::Db(_) => Status::from(e),
        e => in_batch(e.into()),
    })?;
    tx.commit().await.map_err(store::Error::from)?;
    metrics.results_ingested.inc_by(outcome.inserted as u64);
    metrics.results_duplicate.inc_by(outcome.duplicates as u64);
    metrics.ingest_batch_seconds.observe(started.elapsed().as_secs_f64());
    Ok(BatchAck { batch_seq: seq, inserted: outcome.inserted, duplicates: outcome.duplicates })
}
