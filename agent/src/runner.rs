//! `ipw-agent run`: lease, execute, upload, repeat.

use crate::attribution::Window;
use crate::client::{self, Coordinator};
use crate::config::AgentConfig;
use crate::engine::{Completion, Engine};
use crate::leases::{Held, HeldLease};
use crate::managed::{ManagedEngine, ManagedOptions};
use crate::meter::{Meter, PowerOptions};
use crate::power::NoPower;
use crate::provenance;
use crate::spool::{Spool, SpoolKey};
use anyhow::Context;
use futures::{Stream, StreamExt};
use ipw_proto::retry::backoff;
use ipw_proto::v1::{
    AcquireLeaseRequest, CompleteShardRequest, Energy, HeartbeatRequest, Lease, QueryResult, ResultBatch, WorkItem,
};
use std::collections::BTreeMap;
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
    /// How power is sampled and attributed.
    pub power: PowerOptions,
    /// More names the engine's model answers to (`--model-alias`), beyond what it reports.
    pub model_aliases: Vec<String>,
    /// Run llama-server for each lease's model instead of using `engine_url`.
    pub managed: Option<ManagedOptions>,
    /// How long to keep retrying while the coordinator is unreachable (restarts, network
    /// cuts) before giving up. Measured results wait in the spool meanwhile.
    pub retry_for: Duration,
    /// No new work while the spool's file system has less free than this (bytes).
    pub spool_min_free: u64,
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
            power: PowerOptions::default(),
            model_aliases: Vec::new(),
            managed: None,
            retry_for: Duration::from_secs(3600),
            spool_min_free: 100 << 20,
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
pub async fn run(config: &AgentConfig, spool: &Spool, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    let mut coord = client::connect(config).await?;
    let mut managed = opts.managed.clone().map(ManagedEngine::new).transpose().map_err(anyhow::Error::msg)?;
    let url = managed.as_ref().map(ManagedEngine::url).unwrap_or_else(|| opts.engine_url.clone());
    let engine = Engine::new(&url, opts.request_timeout)?;
    let meter = Meter::start(&opts.power);
    let held = Held::default();
    let heartbeat = tokio::spawn(heartbeat_loop(coord.clone(), opts.heartbeat_interval, held.clone()));
    let parts = Parts { engine: &engine, meter: &meter, spool, held: &held };
    let outcome = lease_loop(&mut coord, &parts, managed.as_mut(), opts).await;
    if let Some(m) = managed.as_mut() {
        m.stop().await;
    }
    heartbeat.abort();
    outcome
}

/// What the lease loop works with.
struct Parts<'a> {
    engine: &'a Engine,
    meter: &'a Meter,
    spool: &'a Spool,
    held: &'a Held,
}

async fn lease_loop(
    coord: &mut Coordinator,
    parts: &Parts<'_>,
    mut managed: Option<&mut ManagedEngine>,
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    let Parts { engine, meter, spool, held } = *parts;
    let mut summary = RunSummary::default();
    let mut reported: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Whatever a previous life measured goes first.
    let (committed, duplicates) = flush_patiently(coord, spool, opts).await?;
    summary.committed += committed;
    summary.duplicates += duplicates;
    loop {
        if let Some((problem, until)) = not_ready(engine, managed.is_some(), spool, opts).await? {
            if opts.exit_when_idle {
                anyhow::bail!("{problem}; not taking work");
            }
            tracing::error!("{problem}; not taking work until {until}");
            tokio::time::sleep(opts.poll_interval).await;
            continue;
        }
        let mut available_models = match &managed {
            Some(m) => m.model_names(),
            None => engine.model_names().await,
        };
        available_models.extend(opts.model_aliases.iter().cloned());
        let request = AcquireLeaseRequest { available_models };
        let lease = match patiently("acquire a lease", opts.retry_for, || {
            let (mut c, r) = (coord.clone(), request.clone());
            async move { c.acquire_lease(r).await }
        })
        .await
        {
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
        if let Some(m) = managed.as_deref_mut() {
            // Unhealthy servers fail here; the lease expires and another agent takes the shard.
            m.ensure(&lease.model).await.map_err(|e| anyhow::anyhow!("managed engine: {e}"))?;
        }
        if !reported.contains(&lease.run_id) && report_provenance(coord, engine, meter, &lease.run_id).await {
            reported.insert(lease.run_id.clone());
        }
        let holding = held.hold(&lease.shard_id);
        let Some((committed, duplicates)) = execute_shard(coord, engine, meter, spool, &lease, &holding, opts).await?
        else {
            continue;
        };
        summary.committed += committed;
        summary.duplicates += duplicates;
        if complete_shard(coord, &lease.shard_id, opts).await {
            summary.shards += 1;
        }
    }
}

/// Why no work should be taken now, and until what: the engine is down (a shard run against
/// a dead engine would only record errors; a managed engine is started after the lease), or
/// the spool disk is full or broken (whatever is measured could not be kept safe; what is
/// already spooled stays, and is sent as usual).
async fn not_ready(
    engine: &Engine,
    managed: bool,
    spool: &Spool,
    opts: &RunOptions,
) -> anyhow::Result<Option<(String, &'static str)>> {
    if !managed && let Err(e) = engine.check().await {
        return Ok(Some((format!("the engine is not answering ({e})"), "it does")));
    }
    let (spool, min_free) = (spool.clone(), opts.spool_min_free);
    let checked = tokio::task::spawn_blocking(move || spool.check_writable(min_free)).await?;
    Ok(checked.err().map(|problem| (problem.to_string(), "it is fixed")))
}

/// Sends the run's provenance record; returns whether the coordinator took it (if not, it is
/// tried again with the run's next shard).
async fn report_provenance(coord: &mut Coordinator, engine: &Engine, meter: &Meter, run_id: &str) -> bool {
    let record = provenance::collect(run_id, engine, meter.source_details()).await;
    match coord.report_provenance(record).await {
        Ok(_) => true,
        Err(s) => {
            tracing::warn!(run = %run_id, "recording provenance failed: {}", s.message());
            false
        }
    }
}

/// Marks a shard complete, retrying while the coordinator is away; returns whether it was.
async fn complete_shard(coord: &mut Coordinator, shard_id: &str, opts: &RunOptions) -> bool {
    let complete = CompleteShardRequest { shard_id: shard_id.to_owned() };
    match patiently("complete a shard", opts.retry_for, || {
        let (mut c, r) = (coord.clone(), complete.clone());
        async move { c.complete_shard(r).await }
    })
    .await
    {
        Ok(r) => {
            tracing::info!(shard = %shard_id, run_completed = r.into_inner().run_completed, "shard completed");
            true
        }
        Err(s) => {
            tracing::warn!(shard = %shard_id, "completing shard refused: {}", s.message());
            false
        }
    }
}

/// Measures idle power, runs a shard's queries at the run's concurrency, attributes their
/// energy, then uploads. Each result is spooled the moment it is measured (energy follows once
/// the shard's windows are all known) and stays spooled until its commit is acknowledged.
/// When the lease is lost meanwhile, the queries stop, their results are dropped, and the
/// answer is `None`.
async fn execute_shard(
    coord: &mut Coordinator,
    engine: &Engine,
    meter: &Meter,
    spool: &Spool,
    lease: &Lease,
    holding: &HeldLease,
    opts: &RunOptions,
) -> anyhow::Result<Option<(u64, u64)>> {
    tracing::info!(shard = %lease.shard_id, index = lease.shard_index, queries = lease.items.len(), concurrency = lease.concurrency, "running shard");
    let params = lease.params.unwrap_or_default();
    // Warm-up queries run first and are not measured: caches and clocks settle.
    for item in lease.items.iter().take(lease.warmup as usize) {
        engine.chat(&lease.model, &item.messages, &params).await;
    }
    let idle = meter.idle_baseline().await;
    if let Some(i) = idle {
        tracing::info!(shard = %lease.shard_id, idle_w = i.power_w, seconds = i.seconds, "idle baseline");
    }
    let params = &params;
    let concurrency = lease.concurrency.max(1) as usize;
    let mut measured = futures::stream::iter(lease.items.iter())
        .map(|item| async move { (item, engine.chat(&lease.model, &item.messages, params).await) })
        .buffer_unordered(concurrency);
    let mut results: Vec<QueryResult> = Vec::with_capacity(lease.items.len());
    let mut windows: Vec<Window> = Vec::with_capacity(lease.items.len());
    // A result the spool cannot take (a full disk) is kept in memory and uploaded all the
    // same: never dropped. The lease loop then takes no new work until the disk is fixed.
    loop {
        let next = tokio::select! {
            next = measured.next() => next,
            () = holding.lost() => None,
        };
        let Some((item, completion)) = next else { break };
        let start = completion.started.map(|s| meter.clock(s)).unwrap_or(0.0);
        windows.push(Window { start, end: start + completion.latency_s, tokens: f64::from(completion.tokens_out) });
        let result = to_result(lease, item, completion, None);
        let _ = spool_put(spool, vec![result.clone()]).await;
        results.push(result);
    }
    drop(measured); // requests still in flight (a lost lease) are abandoned here
    if holding.is_lost() {
        drop_lost(spool, lease, &results).await;
        return Ok(None);
    }

    let (energies, active) = meter.attribute(&windows, idle).await;
    for (r, e) in results.iter_mut().zip(energies) {
        r.energy = Some(e);
    }
    let entries = match spool_put(spool, results.clone()).await {
        Ok(entries) => entries,
        Err(_) => results.into_iter().map(|r| (SpoolKey::of(&r), r)).collect(),
    };
    let uploaded = upload_patiently(coord, spool, entries, opts).await?;

    let from = idle.map(|i| i.from).unwrap_or_else(|| windows.iter().map(|w| w.start).fold(f64::INFINITY, f64::min));
    let to = windows.iter().map(|w| w.end).fold(from, f64::max);
    if let Some(t) = meter.telemetry(&lease.shard_id, from, to, idle, active) {
        patiently("upload the power series", opts.retry_for, || {
            let (mut c, t) = (coord.clone(), t.clone());
            async move { c.upload_shard_telemetry(t).await }
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!("uploading the power series of shard {} failed: {}", lease.shard_id, s.message())
        })?;
    }
    Ok(Some(uploaded))
}

/// Drops what a lost lease measured: another agent holds the shard now, and its results are
/// the ones that count.
async fn drop_lost(spool: &Spool, lease: &Lease, results: &[QueryResult]) {
    let keys: Vec<SpoolKey> = results.iter().map(SpoolKey::of).collect();
    let remover = spool.clone();
    match tokio::task::spawn_blocking(move || remover.remove(&keys)).await {
        Ok(Ok(())) => {
            tracing::warn!(shard = %lease.shard_id, dropped = results.len(), "lease lost: the shard's results were dropped")
        }
        Ok(Err(e)) => {
            tracing::error!(shard = %lease.shard_id, error = %e, "lease lost: cannot drop its spooled results")
        }
        Err(e) => tracing::error!(shard = %lease.shard_id, error = %e, "lease lost: dropping its results panicked"),
    }
}

/// Writes results to the spool durably (off the async threads). A failure (a full or broken
/// disk) is logged loudly here; the caller keeps the results in memory.
async fn spool_put(spool: &Spool, results: Vec<QueryResult>) -> anyhow::Result<Vec<(SpoolKey, QueryResult)>> {
    let writer = spool.clone();
    tokio::task::spawn_blocking(move || {
        results.into_iter().map(|r| writer.put(&r).map(|k| (k, r))).collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(|e| {
        tracing::error!(
            spool = %spool.dir().display(),
            error = %e,
            "CANNOT WRITE TO THE SPOOL: results are kept in memory until uploaded; no new work until this is fixed"
        );
        anyhow::Error::new(e).context(format!("spool {} is not writable", spool.dir().display()))
    })
}

fn to_result(lease: &Lease, item: &WorkItem, c: Completion, energy: Option<Energy>) -> QueryResult {
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
        energy,
    }
}

/// Whether a coordinator error may pass: it is down, restarting or overloaded.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
}

/// Calls `op` until it succeeds, fails with a refusal, or transient failures have lasted
/// `patience`.
async fn patiently<T, F, Fut>(what: &str, patience: Duration, mut op: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Err(s) if transient(&s) && start.elapsed() < patience => {
                let wait = backoff(attempt);
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, "cannot {what} ({}); retrying", s.message());
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Uploads `entries` (a shard's results, spooled or, on a full disk, only in memory), retrying
/// with backoff for up to `opts.retry_for`. A retry re-sends every entry: those committed
/// before the failure come back as duplicates (counted as such, never twice as results).
///
/// A batch the coordinator refuses outright (a result it finds invalid, or for a shard it never
/// leased to this agent) would be refused forever: its results are tried one by one, and those
/// refused again are set aside in the spool as `*.rejected`, loudly, so the rest still land.
async fn upload_patiently(
    coord: &mut Coordinator,
    spool: &Spool,
    mut entries: Vec<(SpoolKey, QueryResult)>,
    opts: &RunOptions,
) -> anyhow::Result<(u64, u64)> {
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match upload(coord, spool, tokio_stream::iter(entries.clone()), opts.upload_batch).await {
            Ok(counts) => return Ok(counts),
            Err(UploadError::Refused { keys, .. }) => {
                let (suspects, mut rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| keys.contains(k));
                for entry in suspects {
                    match upload(coord, spool, tokio_stream::iter(vec![entry.clone()]), 1).await {
                        Ok(_) => {}
                        Err(UploadError::Refused { status, .. }) => set_aside(spool, entry, status.message()).await?,
                        Err(UploadError::Failed(_)) => rest.push(entry),
                    }
                }
                entries = rest;
            }
            Err(UploadError::Failed(e)) if start.elapsed() < opts.retry_for => {
                let wait = backoff(attempt);
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, "upload failed ({e:#}); retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(UploadError::Failed(e)) => {
                return Err(e.context(format!("the coordinator stayed unreachable for {:?}", opts.retry_for)));
            }
        }
    }
}

/// Keeps a result the coordinator will not take as `<key>.rejected`, and says so.
async fn set_aside(spool: &Spool, (key, result): (SpoolKey, QueryResult), reason: &str) -> anyhow::Result<()> {
    tracing::error!(
        run = %result.run_id,
        query = result.query_id,
        reason,
        "THE COORDINATOR REFUSED A RESULT: kept in the spool as .rejected, not uploaded"
    );
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.reject(&key, &result)).await?.context("setting a refused result aside")
}

/// Re-sends everything an earlier run left in the spool, retrying like [`upload_patiently`].
async fn flush_patiently(coord: &mut Coordinator, spool: &Spool, opts: &RunOptions) -> anyhow::Result<(u64, u64)> {
    let pending = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.pending()).await??
    };
    if pending.is_empty() {
        return Ok((0, 0));
    }
    tracing::info!(results = pending.len(), "re-sending spooled results");
    // A result spooled before its shard's energy was attributed lost its power series with
    // the process: its energy is unknown, and says so.
    let pending = pending
        .into_iter()
        .map(|(k, mut r)| {
            if r.energy.is_none() {
                r.energy = Some(
                    NoPower::new("the agent stopped before this result's energy was attributed")
                        .energy_record(ipw_proto::kinds::Attribution::TimeShare),
                );
            }
            (k, r)
        })
        .collect::<Vec<_>>();
    upload_patiently(coord, spool, pending, opts).await
}

/// Why an upload stopped before every batch was acknowledged. Unacknowledged results stay
/// spooled either way.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The coordinator refused a batch on its merits; sending it again will not help.
    #[error("the coordinator refused a batch: {}", status.message())]
    Refused {
        /// The refused batch's results.
        keys: Vec<SpoolKey>,
        /// The refusal.
        status: tonic::Status,
    },
    /// The call failed (network, restart, database): worth retrying.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Streams results in batches; each acknowledged batch is removed from the spool. Returns
/// (committed, duplicates).
pub async fn upload<S>(
    coord: &mut Coordinator,
    spool: &Spool,
    results: S,
    batch: usize,
) -> Result<(u64, u64), UploadError>
where
    S: Stream<Item = (SpoolKey, QueryResult)> + Send + 'static,
{
    let in_flight: Arc<Mutex<BTreeMap<u64, Vec<SpoolKey>>>> = Arc::default();
    let batches = {
        let in_flight = in_flight.clone();
        let mut seq = 0u64;
        tokio_stream::StreamExt::chunks_timeout(results, batch.max(1), Duration::from_millis(500)).map(move |chunk| {
            seq += 1;
            let (keys, results): (Vec<SpoolKey>, Vec<QueryResult>) = chunk.into_iter().unzip();
            in_flight.lock().expect("not poisoned").insert(seq, keys);
            ResultBatch { batch_seq: seq, results }
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
            // The coordinator takes batches in order, so the refused one is the oldest
            // unacknowledged.
            Err(status) if matches!(status.code(), Code::InvalidArgument | Code::PermissionDenied) => {
                let keys = in_flight.lock().expect("not poisoned").pop_first().map(|(_, k)| k).unwrap_or_default();
                return Err(UploadError::Refused { keys, status });
            }
            Err(s) => return Err(anyhow::anyhow!("upload failed: {}", s.message()).into()),
        };
        let keys = in_flight.lock().expect("not poisoned").remove(&ack.batch_seq).unwrap_or_default();
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.remove(&keys))
            .await
            .map_err(anyhow::Error::from)?
            .context("removing acknowledged results from the spool")?;
        committed += u64::from(ack.inserted);
        duplicates += u64::from(ack.duplicates);
    }
    let unacked = in_flight.lock().expect("not poisoned").len();
    if unacked > 0 {
        return Err(anyhow::anyhow!(
            "{unacked} result batches were not acknowledged; they stay in the spool for the next attempt"
        )
        .into());
    }
    Ok((committed, duplicates))
}

/// Says the agent is alive every `every`, naming the shards it holds (only those are
/// renewed), and stops the work of any the coordinator says are lost.
async fn heartbeat_loop(mut coord: Coordinator, every: Duration, held: Held) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match coord.heartbeat(HeartbeatRequest { shard_ids: held.shard_ids() }).await {
            Ok(r) => held.apply(r.get_ref()),
            Err(s) => tracing::warn!("heartbeat failed: {}", s.message()),
        }
    }
}
