//! A load generator that acts as many agents: each joins with its own credential and
//! connection, then leases shards and uploads result batches as `ipw-agent` would. There is
//! no engine: the results are made up on the spot (no power source, so no energy), so the
//! coordinator and PostgreSQL are what is measured.

use super::stats::{median, percentile};
use ipw_agent::client::Coordinator;
use ipw_agent::join::{Trust, join};
use ipw_proto::v1::{AcquireLeaseRequest, CompleteShardRequest, Energy, Lease, QueryResult, ResultBatch};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

/// Joins `n` agents with `token` and connects each.
pub async fn enroll(url: &str, token: &str, n: usize) -> anyhow::Result<Vec<Coordinator>> {
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let config = join(url, &Trust::Insecure, token, &format!("load-{i:03}"), Default::default()).await?;
        agents.push(ipw_agent::client::connect(&config).await?);
    }
    Ok(agents)
}

/// What the lease benchmark saw.
#[derive(Debug, serde::Serialize)]
pub struct LeaseFigures {
    /// Agents asking at once.
    pub agents: usize,
    /// Leases handed out.
    pub leases: usize,
    /// Leases per second, first request to last reply.
    pub per_s: f64,
    /// Median and 99th-percentile latency of one `AcquireLease`, seconds.
    pub p50_s: f64,
    /// 99th percentile.
    pub p99_s: f64,
}

/// Every agent asks for leases of `run` at once, one call after another, until `total`
/// have been handed out between them.
pub async fn lease_throughput(
    agents: &[Coordinator],
    run: &str,
    model: &str,
    total: usize,
) -> anyhow::Result<LeaseFigures> {
    let left = Arc::new(AtomicUsize::new(total));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        let (mut agent, left) = (agent.clone(), left.clone());
        let request = AcquireLeaseRequest { available_models: vec![model.into()], run_id: run.into() };
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                let t = Instant::now();
                let lease = agent.acquire_lease(request.clone()).await?.into_inner().lease;
                latencies.push(t.elapsed().as_secs_f64());
                anyhow::ensure!(lease.is_some(), "the run ran out of shards to lease");
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let wall = start.elapsed().as_secs_f64();
    Ok(LeaseFigures {
        agents: agents.len(),
        leases: latencies.len(),
        per_s: latencies.len() as f64 / wall,
        p50_s: median(&latencies),
        p99_s: percentile(&latencies, 0.99),
    })
}

/// What the ingest benchmark saw.
#[derive(Debug, serde::Serialize)]
pub struct IngestFigures {
    /// Agents uploading at once.
    pub agents: usize,
    /// Results the coordinator acknowledged as inserted.
    pub inserted: u64,
    /// Results per second, first lease to last shard completed.
    pub per_s: f64,
    /// Median seconds from sending a batch to its acknowledgement.
    pub batch_p50_s: f64,
}

/// Every agent leases `shards_per_batch` shards of `run` at a time (as a session leases
/// ahead), uploads their results as one batch and completes them, until no shard is left.
pub async fn ingest(
    agents: &[Coordinator],
    run: &str,
    model: &str,
    shards_per_batch: usize,
) -> anyhow::Result<IngestFigures> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        let mut agent = agent.clone();
        let request = AcquireLeaseRequest { available_models: vec![model.into()], run_id: run.into() };
        tasks.spawn(async move {
            let (mut inserted, mut acks, mut seq) = (0u64, Vec::new(), 0u64);
            loop {
                let mut leases = Vec::new();
                while leases.len() < shards_per_batch {
                    match agent.acquire_lease(request.clone()).await?.into_inner().lease {
                        Some(lease) => leases.push(lease),
                        None => break,
                    }
                }
                if leases.is_empty() {
                    break;
                }
                seq += 1;
                let batch = ResultBatch { batch_seq: seq, results: leases.iter().flat_map(made_up_results).collect() };
                let t = Instant::now();
                let mut replies = agent.upload_results(futures::stream::iter([batch])).await?.into_inner();
                while let Some(ack) = replies.message().await? {
                    inserted += u64::from(ack.inserted);
                }
                acks.push(t.elapsed().as_secs_f64());
                for lease in leases {
                    agent.complete_shard(CompleteShardRequest { shard_id: lease.shard_id }).await?;
                }
            }
            anyhow::Ok((inserted, acks))
        });
    }
    let (mut inserted, mut acks) = (0, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (n, a) = done??;
        inserted += n;
        acks.extend(a);
    }
    let wall = start.elapsed().as_secs_f64();
    Ok(IngestFigures { agents: agents.len(), inserted, per_s: inserted as f64 / wall, batch_p50_s: median(&acks) })
}

/// A chain-of-thought answer of about a kilobyte, as SmolLM2 writes for MMLU-Pro.
const RESPONSE: &str = "Let's think step by step. The question asks which of the options follows from the \
premises. Option A restates the first premise but draws a conclusion that does not follow. Option B confuses \
the direction of the implication. Option C is consistent with both premises and with the definition given in \
the question, so it is a candidate. Option D adds an assumption the question never makes. Options E through J \
each contradict at least one premise or the definition. Checking C again against every premise, it holds in \
every case we considered, and none of the other options does. ";

/// One made-up result per item of the lease: an instant answer with no energy.
fn made_up_results(lease: &Lease) -> Vec<QueryResult> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros() as i64;
    lease
        .items
        .iter()
        .map(|item| QueryResult {
            shard_id: lease.shard_id.clone(),
            run_id: lease.run_id.clone(),
            query_id: item.query_id,
            repetition: item.repetition,
            started_unix_us: now,
            latency_s: 2.5,
            ttft_s: Some(0.12),
            mean_itl_s: Some(0.01),
            tokens_in: 350,
            tokens_out: 240,
            response: format!("{RESPONSE}The answer is ({}).", (b'A' + (item.query_id % 10) as u8) as char),
            finish_reason: "stop".into(),
            energy: Some(Energy {
                source: "none".into(),
                attribution: "time-share".into(),
                null_reason: "load generator: no engine, no power source".into(),
                ..Default::default()
            }),
            itl_p50_s: Some(0.01),
            itl_p95_s: Some(0.015),
            tpot_s: Some(0.01),
            ..Default::default()
        })
        .collect()
}
