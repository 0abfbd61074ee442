//! `ipw-agent run`: lease, execute, upload, repeat.

use crate::client::{self, Coordinator};
use crate::config::AgentConfig;
use crate::engine::{Completion, Engine};
use crate::power;
use crate::spool::{Spool, SpoolKey};
use anyhow::Context;
use futures::{Stream, StreamExt};
use ipw_proto::v1::{
    AcquireLeaseRequest, CompleteShardRequest, Energy, HeartbeatRequest, Lease, QueryResult,
    ResultBatch, WorkItem,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

/// How the run loop behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The engine's base URL.
    pub engine_url: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Wait between lease attempts when there is no work.
    pub poll_interval: Duration,
    /// Stop when the coordinator has no work (demos, tests) instead of waiting for more.
    pub exit_when_idle: bool,
    /// Results per upload batch.
    pub upload_batch: usize,
    /// Heartbeat period; heartbeats renew leases.
    pub heartbeat_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            engine_url: "http://127.0.0.1:8080".into(),
            request_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            exit_when_idle: false,
            upload_batch: 64,
            heartbeat_interval: Duration::from_secs(30),
        }
    }
}

/// What one `run` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Shards completed.
    pub shards: u32,
    /// Results newly committed by the coordinator.
    pub committed: u64,
    /// Results the coordinator already had (retries), not counted twice.
    pub duplicates: u64,
}

/// Runs until stopped (or until idle, with `exit_when_idle`).
pub async fn run(
    config: &AgentConfig,
    spool: &Spool,
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    let mut coord = client::connect(&config.coordinator, &config.credential).await?;
    let engine = Engine::new(&opts.engine_url, opts.request_timeout)?;
    let discovery = power::discover();
    let energy = discovery.energy_record();
    if discovery.sources.is_empty() {
        tracing::warn!(reason = %energy.null_reason, "no readable power source: energy will be recorded as unknown");
    }
    let heartbeat = tokio::spawn(heartbeat_loop(coord.clone(), opts.heartbeat_interval));
    let outcome = lease_loop(&mut coord, &engine, &energy, spool, opts).await;
    heartbeat.abort();
    outcome
}

async fn lease_loop(
    coord: &mut Coordinator,
    engine: &Engine,
    energy: &Energy,
    spool: &Spool,
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    let mut summary = RunSummary::default();
    // Whatever a previous life measured goes first.
    let (committed, duplicates) = flush_spool(coord, spool, opts.upload_batch).await?;
    summary.committed += committed;
    summary.duplicates += duplicates;
    loop {
        // No engine, no lease: a shard run against a dead engine would only record errors.
        if let Err(e) = engine.check().await {
            if opts.exit_when_idle {
                anyhow::bail!("the engine is not answering ({e}); not taking work");
            }
            tracing::error!("the engine is not answering ({e}); not taking work until it does");
            tokio::time::sleep(opts.poll_interval).await;
            continue;
        }
        let lease = match coord.acquire_lease(AcquireLeaseRequest {}).await {
            Ok(r) => r.into_inner().lease,
            Err(s) if s.code() == Code::PermissionDenied => {
                tracing::warn!("{}", s.message());
                if opts.exit_when_idle {
                    anyhow::bail!("{}", s.message());
                }
                tokio::time::sleep(opts.poll_interval).await;
                continue;
            }
            Err(s) => return Err(anyhow::anyhow!("acquiring a lease failed: {}", s.message())),
        };
        let Some(lease) = lease else {
            if opts.exit_when_idle {
                tracing::info!(shards = summary.shards, "no work left; exiting");
                return Ok(summary);
            }
            tokio::time::sleep(opts.poll_interval).await;
            continue;
        };
        let (committed, duplicates) =
            execute_shard(coord, engine, energy, spool, &lease, opts).await?;
        summary.committed += committed;
        summary.duplicates += duplicates;
        match coord
            .complete_shard(CompleteShardRequest {
                shard_id: lease.shard_id.clone(),
            })
            .await
        {
            Ok(r) => {
                summary.shards += 1;
                tracing::info!(shard = %lease.shard_id, run_completed = r.into_inner().run_completed, "shard completed");
            }
            Err(s) => {
                tracing::warn!(shard = %lease.shard_id, "completing shard refused: {}", s.message())
            }
        }
    }
}

/// Runs a shard's queries at the run's concurrency. Each result is spooled as soon as it is
/// measured and streamed to the coordinator; the spool keeps it until the commit is acked.
async fn execute_shard(
    coord: &mut Coordinator,
    engine: &Engine,
    energy: &Energy,
    spool: &Spool,
    lease: &Lease,
    opts: &RunOptions,
) -> anyhow::Result<(u64, u64)> {
    tracing::info!(shard = %lease.shard_id, index = lease.shard_index, queries = lease.items.len(), concurrency = lease.concurrency, "running shard");
    let params = lease.params.unwrap_or_default();
    let params = &params;
    let (tx, rx) = tokio::sync::mpsc::channel::<(SpoolKey, QueryResult)>(lease.items.len().max(1));
    let upload = {
        let mut coord = coord.clone();
        let spool = spool.clone();
        let batch = opts.upload_batch;
        tokio::spawn(async move {
            upload(
                &mut coord,
                &spool,
                tokio_stream::wrappers::ReceiverStream::new(rx),
                batch,
            )
            .await
        })
    };
    let concurrency = lease.concurrency.max(1) as usize;
    let mut measured = futures::stream::iter(lease.items.iter())
        .map(|item| async move {
            (
                item,
                engine.chat(&lease.model, &item.messages, params).await,
            )
        })
        .buffer_unordered(concurrency);
    let mut spool_error = None;
    while let Some((item, completion)) = measured.next().await {
        let result = to_result(lease, item, completion, energy);
        let writer = spool.clone();
        let put =
            tokio::task::spawn_blocking(move || writer.put(&result).map(|k| (k, result))).await?;
        match put {
            Ok(entry) => {
                if tx.send(entry).await.is_err() {
                    break; // the uploader failed; its error is reported below
                }
            }
            Err(e) => {
                tracing::error!(spool = %spool.dir().display(), error = %e, "cannot write to the spool; stopping this shard");
                spool_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let uploaded = upload.await.expect("uploader panicked");
    if let Some(e) = spool_error {
        return Err(anyhow::Error::new(e)
            .context(format!("spool {} is not writable", spool.dir().display())));
    }
    uploaded
}

fn to_result(lease: &Lease, item: &WorkItem, c: Completion, energy: &Energy) -> QueryResult {
    QueryResult {
        shard_id: lease.shard_id.clone(),
        run_id: lease.run_id.clone(),
        query_id: item.query_id,
        repetition: item.repetition,
        started_unix_us: c.started_at.timestamp_micros(),
        latency_s: c.latency_s,
        ttft_s: c.ttft_s,
        mean_itl_s: c.mean_itl_s,
        tokens_in: c.tokens_in,
        tokens_out: c.tokens_out,
        response: c.text,
        finish_reason: c.finish_reason,
        error: c.error.unwrap_or_default(),
        energy: Some(energy.clone()),
    }
}

/// Re-sends everything left in the spool by an earlier run.
pub async fn flush_spool(
    coord: &mut Coordinator,
    spool: &Spool,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let pending = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.pending()).await??
    };
    if pending.is_empty() {
        return Ok((0, 0));
    }
    tracing::info!(results = pending.len(), "re-sending spooled results");
    upload(coord, spool, tokio_stream::iter(pending), batch).await
}

/// Streams results in batches; each acknowledged batch is removed from the spool. Returns
/// (committed, duplicates). Fails if any batch went unacknowledged: those stay spooled.
pub async fn upload<S>(
    coord: &mut Coordinator,
    spool: &Spool,
    results: S,
    batch: usize,
) -> anyhow::Result<(u64, u64)>
where
    S: Stream<Item = (SpoolKey, QueryResult)> + Send + 'static,
{
    let in_flight: Arc<Mutex<HashMap<u64, Vec<SpoolKey>>>> = Arc::default();
    let batches = {
        let in_flight = in_flight.clone();
        let mut seq = 0u64;
        tokio_stream::StreamExt::chunks_timeout(results, batch.max(1), Duration::from_millis(500))
            .map(move |chunk| {
                seq += 1;
                let (keys, results): (Vec<SpoolKey>, Vec<QueryResult>) = chunk.into_iter().unzip();
                in_flight.lock().expect("not poisoned").insert(seq, keys);
                ResultBatch {
                    batch_seq: seq,
                    results,
                }
            })
    };
    let mut acks = coord
        .upload_results(batches)
        .await
        .map_err(|s| anyhow::anyhow!("upload refused: {}", s.message()))?
        .into_inner();
    let (mut committed, mut duplicates) = (0u64, 0u64);
    loop {
        let ack = match acks.message().await {
            Ok(Some(ack)) => ack,
            Ok(None) => break,
            Err(s) => return Err(anyhow::anyhow!("upload failed: {}", s.message())),
        };
        let keys = in_flight
            .lock()
            .expect("not poisoned")
            .remove(&ack.batch_seq)
            .unwrap_or_default();
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.remove(&keys))
            .await?
            .context("removing acknowledged results from the spool")?;
        committed += u64::from(ack.inserted);
        duplicates += u64::from(ack.duplicates);
    }
    let unacked = in_flight.lock().expect("not poisoned").len();
    if unacked > 0 {
        anyhow::bail!(
            "{unacked} result batches were not acknowledged; they stay in the spool for the next attempt"
        );
    }
    Ok((committed, duplicates))
}

async fn heartbeat_loop(mut coord: Coordinator, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(s) = coord.heartbeat(HeartbeatRequest {}).await {
            tracing::warn!("heartbeat failed: {}", s.message());
        }
    }
}
