//! `ipw-agent run`: lease a shard, run a measurement session on its run (see
//! [`crate::session`]), repeat.

use crate::client::{self, Coordinator};
use crate::commit;
use crate::config::AgentConfig;
use crate::engine::{Engine, EngineAccess};
use crate::leases::Held;
use crate::managed::{ManagedEngine, ManagedOptions};
use crate::meter::{Meter, PowerOptions};
use crate::metrics::AgentMetrics;
use crate::power::NoPower;
use crate::provenance;
use crate::session::{self, End};
use crate::shutdown::Shutdown;
use crate::spool::{Spool, SpoolKey};
use anyhow::Context;
use futures::StreamExt;
use ipw_proto::retry::backoff;
use ipw_proto::v1::{
    AcquireLeaseRequest, CompleteShardRequest, HeartbeatRequest, Lease, PowerReading, QueryResult, ResultBatch,
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
    /// Whether the engine is remote, its key, its rate-limit retries.
    pub engine_access: EngineAccess,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Wait between lease attempts when there is no work.
    pub poll_interval: Duration,
    /// Stop when the coordinator has no work (demos, tests) instead of waiting for more.
    pub exit_when_idle: bool,
    /// Results per upload batch, at most (a batch is one transaction on the coordinator).
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
    /// With `exit_when_idle`, how long to wait for an engine that is not answering before
    /// giving up (a service waits for ever).
    pub engine_wait: Duration,
    /// Asks the agent to stop (SIGTERM, SIGINT): no new work, leases given back.
    pub shutdown: Shutdown,
    /// On a stop, how long the queries in flight may take to finish before they are abandoned.
    pub shutdown_grace: Duration,
    /// What the run counts, for `/metrics`, `/readyz` and the progress line.
    pub metrics: AgentMetrics,
}

impl RunOptions {
    /// How long to keep retrying the coordinator now: `retry_for`, or once a stop is asked
    /// for, only a little past the grace period (what is not sent stays in the spool), so a
    /// stop finishes before a service manager's timeout.
    pub fn patience(&self) -> Duration {
        if self.shutdown.is_requested() {
            self.retry_for.min(self.shutdown_grace + Duration::from_secs(30))
        } else {
            self.retry_for
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            engine_url: "http://127.0.0.1:8080".into(),
            engine_access: EngineAccess::default(),
            request_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            exit_when_idle: false,
            upload_batch: 1000,
            heartbeat_interval: Duration::from_secs(30),
            power: PowerOptions::default(),
            model_aliases: Vec::new(),
            managed: None,
            retry_for: Duration::from_secs(3600),
            spool_min_free: 100 << 20,
            engine_wait: Duration::ZERO,
            shutdown: Shutdown::default(),
            shutdown_grace: Duration::from_secs(30),
            metrics: AgentMetrics::default(),
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
    let engine = Engine::new(&url, opts.request_timeout, &opts.engine_access)?;
    // A remote engine's energy is not observable here: no local power is read for it.
    let meter = Arc::new(if opts.engine_access.remote {
        Meter::unmetered(crate::meter::REMOTE_ENDPOINT, &opts.power)
    } else {
        Meter::start(&opts.power)
    });
    let power = tokio::spawn(power_gauges(meter.clone(), opts.metrics.clone()));
    let held = Held::default();
    let beats = Beats {
        every: opts.heartbeat_interval,
        held: held.clone(),
        meter: meter.clone(),
        metrics: opts.metrics.clone(),
    };
    let heartbeat = tokio::spawn(heartbeat_loop(coord.clone(), beats));
    let parts = Parts { engine: &engine, meter: &meter, spool, held: &held };
    let outcome = lease_loop(&mut coord, &parts, managed.as_mut(), opts).await;
    if let Some(m) = managed.as_mut() {
        m.stop().await;
    }
    heartbeat.abort();
    power.abort();
    outcome
}

/// Keeps the power gauges and energy counters current, once a second.
async fn power_gauges(meter: Arc<Meter>, metrics: AgentMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        metrics.power(&meter.readings(crate::meter::READING_WINDOW_S));
    }
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
    let mut unready_since: Option<tokio::time::Instant> = None;
    let mut engine_failed_in_a_row = 0;
    let mut last_idle = None;
    loop {
        if opts.shutdown.is_requested() {
            tracing::info!(shards = summary.shards, "stopped on request");
            return Ok(summary);
        }
        if !ready(engine, managed.is_some(), spool, opts, &mut unready_since).await? {
            continue;
        }
        let lease = match ask_for_lease(coord, engine, managed.as_deref(), opts).await? {
            Asked::Granted(lease) => lease,
            Asked::NotApproved(why) => {
                tracing::warn!("{why}");
                if opts.exit_when_idle {
                    anyhow::bail!("{why}");
                }
                opts.shutdown.sleep(opts.poll_interval).await;
                continue;
            }
            Asked::NoWork if opts.exit_when_idle => {
                tracing::info!(shards = summary.shards, "no work left; exiting");
                return Ok(summary);
            }
            Asked::NoWork => {
                opts.shutdown.sleep(opts.poll_interval).await;
                continue;
            }
        };
        // Named in heartbeats from now on: starting an engine or hashing a model file may take
        // longer than the lease.
        let holding = held.hold(&lease.shard_id);
        if opts.shutdown.is_requested() {
            holding.stop_naming();
            commit::give_back(coord, vec![lease.shard_id.clone()], Vec::new(), opts).await;
            continue;
        }
        if let Some(m) = managed.as_deref_mut()
            && let Err(e) = m.ensure(&lease.model).await
        {
            holding.stop_naming();
            commit::give_back(coord, vec![lease.shard_id.clone()], Vec::new(), opts).await;
            anyhow::bail!("managed engine: {e}");
        }
        if !reported.contains(&lease.run_id)
            && report_provenance(coord, engine, meter, spool, &lease.run_id, opts).await
        {
            reported.insert(lease.run_id.clone());
        }
        let tools = session::Tools { coord, engine, meter, spool, held };
        let outcome = session::run(tools, lease, holding, &mut last_idle, opts).await?;
        summary.committed += outcome.committed.committed;
        summary.duplicates += outcome.committed.duplicates;
        summary.shards += outcome.committed.shards;
        match outcome.end {
            End::RanOut => engine_failed_in_a_row = 0,
            End::EngineFailed => back_off_after_engine_failure(&mut engine_failed_in_a_row, opts).await,
            End::Stopped => {}
        }
    }
}

/// Whether work may be taken now. If not, says why (or gives up, with `exit_when_idle`, once
/// `engine_wait` has passed) and waits a poll interval. `unready_since` tracks the outage.
async fn ready(
    engine: &Engine,
    managed: bool,
    spool: &Spool,
    opts: &RunOptions,
    unready_since: &mut Option<tokio::time::Instant>,
) -> anyhow::Result<bool> {
    let Some((problem, until)) = not_ready(engine, managed, spool, opts).await? else {
        *unready_since = None;
        return Ok(true);
    };
    let since = *unready_since.get_or_insert_with(tokio::time::Instant::now);
    if opts.exit_when_idle && since.elapsed() >= opts.engine_wait {
        anyhow::bail!("{problem}; not taking work");
    }
    tracing::error!("{problem}; not taking work until {until}");
    opts.shutdown.sleep(opts.poll_interval).await;
    Ok(false)
}

/// What asking for a lease gave.
enum Asked {
    /// A shard.
    Granted(Lease),
    /// Nothing for this agent now.
    NoWork,
    /// The agent is not approved (yet); why.
    NotApproved(String),
}

/// Asks for a shard of a run whose model the engine serves, retrying while the coordinator is
/// away.
#[tracing::instrument(name = "lease", skip_all, fields(otel.name = "acquire lease", run = tracing::field::Empty))]
async fn ask_for_lease(
    coord: &mut Coordinator,
    engine: &Engine,
    managed: Option<&ManagedEngine>,
    opts: &RunOptions,
) -> anyhow::Result<Asked> {
    let mut available_models = match managed {
        Some(m) => m.model_names(),
        None => engine.model_names().await,
    };
    available_models.extend(opts.model_aliases.iter().cloned());
    let request = AcquireLeaseRequest { available_models, run_id: String::new() };
    let asked = patiently("acquire a lease", opts.retry_for, || {
        let (mut c, r) = (coord.clone(), request.clone());
        async move { c.acquire_lease(r).await }
    })
    .await;
    opts.metrics.contact.record(&asked);
    if let Ok(Some(lease)) = asked.as_ref().map(|r| r.get_ref().lease.as_ref()) {
        tracing::Span::current().record("run", lease.run_id.as_str());
        opts.metrics.leased(&lease.run_id, lease.items.len());
    }
    match asked {
        Ok(r) => match r.into_inner().lease.map(crate::leases::checked).transpose() {
            Ok(lease) => Ok(lease.map_or(Asked::NoWork, Asked::Granted)),
            Err(s) => Err(anyhow::anyhow!("{}", s.message())),
        },
        Err(s) if s.code() == Code::PermissionDenied => Ok(Asked::NotApproved(s.message().to_owned())),
        Err(s) => Err(anyhow::anyhow!("acquiring a lease failed: {}", s.message())),
    }
}

/// Backs off before the next lease after the engine failed (longer each time in a row), so
/// an engine that answers its health check but fails requests does not burn through the
/// queries' failure limit.
async fn back_off_after_engine_failure(in_a_row: &mut u32, opts: &RunOptions) {
    let wait = backoff(*in_a_row);
    *in_a_row += 1;
    tracing::warn!(wait_ms = wait.as_millis() as u64, "the engine failed; waiting before the next lease");
    opts.shutdown.sleep(wait).await;
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

/// Where, in the spool directory (the agent's durable state), model-file hashes are kept.
const MODEL_HASHES: &str = "model-sha256.json";

/// Sends the run's provenance record; returns whether the coordinator took it (if not, it is
/// tried again with the run's next shard).
async fn report_provenance(
    coord: &mut Coordinator,
    engine: &Engine,
    meter: &Meter,
    spool: &Spool,
    run_id: &str,
    opts: &RunOptions,
) -> bool {
    let hashes = Some(spool.dir().join(MODEL_HASHES));
    let record = if opts.engine_access.remote {
        provenance::collect_remote(run_id, engine).await
    } else {
        provenance::collect(run_id, engine, meter.source_details(), meter.scope_provenance(), hashes).await
    };
    match coord.report_provenance(record).await {
        Ok(_) => true,
        Err(s) => {
            tracing::warn!(run = %run_id, "recording provenance failed: {}", s.message());
            false
        }
    }
}

/// Marks a shard complete, retrying while the coordinator is away; returns whether it was.
pub(crate) async fn complete_shard(coord: &mut Coordinator, shard_id: &str, opts: &RunOptions) -> bool {
    let complete = CompleteShardRequest { shard_id: shard_id.to_owned() };
    match patiently("complete a shard", opts.patience(), || {
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
pub(crate) async fn patiently<T, F, Fut>(what: &str, patience: Duration, mut op: F) -> Result<T, tonic::Status>
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
pub(crate) async fn upload_patiently(
    coord: &mut Coordinator,
    spool: &Spool,
    mut entries: Vec<(SpoolKey, QueryResult)>,
    opts: &RunOptions,
) -> anyhow::Result<(u64, u64)> {
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match upload(coord, spool, entries.clone(), opts.upload_batch).await {
            Ok(counts) => {
                opts.metrics.uploaded(counts.0);
                return Ok(counts);
            }
            Err(UploadError::Refused { keys, .. }) => {
                let (suspects, mut rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| keys.contains(k));
                for entry in suspects {
                    match upload(coord, spool, vec![entry.clone()], 1).await {
                        Ok(_) => {}
                        Err(UploadError::Refused { status, .. }) => set_aside(spool, entry, status.message()).await?,
                        Err(UploadError::Failed(_)) => rest.push(entry),
                    }
                }
                entries = rest;
            }
            Err(UploadError::Failed(e)) if start.elapsed() < opts.patience() => {
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
#[tracing::instrument(name = "spool_flush", skip_all, fields(otel.name = "flush spool"))]
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

/// Most bytes of results in one batch: a batch is one message and one transaction.
const BATCH_BYTES: usize = 4 << 20;

/// Streams results in batches of at most `batch` results and [`BATCH_BYTES`]; each
/// acknowledged batch is removed from the spool. Returns (committed, duplicates).
#[tracing::instrument(
    name = "upload",
    skip_all,
    fields(otel.name = "upload results", otel.kind = "client", results = results.len())
)]
pub async fn upload(
    coord: &mut Coordinator,
    spool: &Spool,
    results: Vec<(SpoolKey, QueryResult)>,
    batch: usize,
) -> Result<(u64, u64), UploadError> {
    use prost::Message as _;
    let in_flight: Arc<Mutex<BTreeMap<u64, Vec<SpoolKey>>>> = Arc::default();
    let mut chunks: Vec<Vec<(SpoolKey, QueryResult)>> = Vec::new();
    let mut bytes = 0;
    for entry in results {
        let size = entry.1.encoded_len();
        match chunks.last_mut() {
            Some(last) if last.len() < batch.max(1) && bytes + size <= BATCH_BYTES => {
                last.push(entry);
                bytes += size;
            }
            _ => {
                chunks.push(vec![entry]);
                bytes = size;
            }
        }
    }
    let batches = {
        let in_flight = in_flight.clone();
        let mut seq = 0u64;
        tokio_stream::iter(chunks).map(move |chunk| {
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

/// What a heartbeat is made of: the leases held and the agent's state.
struct Beats {
    every: Duration,
    held: Held,
    meter: Arc<Meter>,
    metrics: AgentMetrics,
}

impl Beats {
    /// A heartbeat: the shards held (only those are renewed) and the agent's state now, read
    /// from what the metrics and the meter keep anyway.
    fn request(&self) -> HeartbeatRequest {
        let power = self.meter.readings(crate::meter::READING_WINDOW_S).into_iter().map(|r| PowerReading {
            kind: r.kind.into(),
            scope: r.scope.into(),
            name: r.name,
            watts: r.watts.filter(|w| w.is_finite() && *w >= 0.0),
        });
        HeartbeatRequest {
            shard_ids: self.held.shard_ids(),
            in_flight: Some(u32::try_from(self.metrics.in_flight.get()).unwrap_or(0)),
            queries_done: self.metrics.queries_finished(),
            power: power.collect(),
            sample_hz: self.meter.sample_hz(),
            heartbeat_interval_s: self.every.as_secs_f64(),
        }
    }
}

/// Says the agent is alive, with its state, every `beats.every` (between leases too), and
/// stops the work of any shard the coordinator says is lost.
async fn heartbeat_loop(mut coord: Coordinator, beats: Beats) {
    let mut tick = tokio::time::interval(beats.every);
    loop {
        tick.tick().await;
        let beat = coord.heartbeat(beats.request()).await;
        beats.metrics.contact.record(&beat);
        match beat {
            Ok(r) => beats.held.apply(r.get_ref()),
            Err(s) => tracing::warn!("heartbeat failed: {}", s.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(meter: Meter) -> Beats {
        Beats {
            every: Duration::from_secs(5),
            held: Held::default(),
            meter: Arc::new(meter),
            metrics: AgentMetrics::default(),
        }
    }

    #[test]
    fn a_heartbeat_carries_the_in_flight_gauge_and_the_query_counter() {
        let b = beats(Meter::unmetered(crate::meter::REMOTE_ENDPOINT, &PowerOptions::default()));
        b.metrics.in_flight.inc();
        b.metrics.in_flight.inc();
        b.metrics.query_done(None, "answered");
        let r = b.request();
        assert_eq!((r.in_flight, r.queries_done, r.heartbeat_interval_s), (Some(2), 1, 5.0));
        // A remote engine's agent reads no power: no readings, no rate.
        assert!(r.power.is_empty() && r.sample_hz.is_none());
    }

    #[test]
    fn a_metered_heartbeat_names_each_source_with_the_sampler_rate() {
        let root = tempfile::tempdir().unwrap();
        let zone = root.path().join("intel-rapl:0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("name"), "package-0\n").unwrap();
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
        std::fs::write(zone.join("energy_uj"), "1000\n").unwrap();
        let mut opts = PowerOptions::default();
        opts.discovery.powercap_root = root.path().to_owned();
        opts.discovery.drm_root = root.path().join("no-drm");
        opts.discovery.gpus = Some(String::new());
        let r = beats(Meter::start(&opts)).request();
        assert_eq!(r.sample_hz, Some(opts.hz));
        let names: Vec<_> = r.power.iter().map(|p| (p.kind.as_str(), p.scope.as_str(), p.name.as_str())).collect();
        assert_eq!(names, [("rapl", "cpu-package", "package-0")]);
        // A counter that stands still draws nothing; before two samples the power is unknown.
        assert!(r.power[0].watts.is_none_or(|w| w == 0.0), "{:?}", r.power[0].watts);
    }
}
