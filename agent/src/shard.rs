//! One leased shard: warm up, measure idle power, run the queries at the run's concurrency,
//! attribute their energy, upload, and say how it ended.
//!
//! Each result is spooled the moment it is measured (energy follows once the shard's windows
//! are all known) and stays spooled until its commit is acknowledged. A shard ends in one of
//! three ways:
//! - every query answered: the caller completes it;
//! - the lease was lost: the queries stop and what they measured is dropped;
//! - the engine failed, or the agent is stopping: what was answered is uploaded, and the lease
//!   goes back with the engine's failures, so the rest is measured again (by this agent once
//!   its engine is back, or by another).

use crate::attribution::Window;
use crate::client::Coordinator;
use crate::engine::{Completion, Engine, FailedBy};
use crate::leases::HeldLease;
use crate::meter::Meter;
use crate::runner::{RunOptions, patiently, upload_patiently};
use crate::spool::{Spool, SpoolKey};
use futures::StreamExt;
use ipw_proto::v1::{Energy, EngineFailure, Lease, QueryResult, ReleaseLeasesRequest, WorkItem};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a shard ended, and what of it was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Results newly committed.
    pub committed: u64,
    /// Results the coordinator already had.
    pub duplicates: u64,
    /// How it ended.
    pub end: End,
}

/// How a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every query has its result: the shard can be completed.
    Answered,
    /// The lease moved away; nothing of the shard was kept.
    Lost,
    /// The engine failed: the lease was given back with its failures.
    EngineFailed,
    /// The agent is stopping: the lease was given back.
    Stopped,
}

/// What a shard is run with.
pub struct Tools<'a> {
    /// The coordinator.
    pub coord: &'a mut Coordinator,
    /// The engine.
    pub engine: &'a Engine,
    /// The power meter.
    pub meter: &'a Meter,
    /// The spool.
    pub spool: &'a Spool,
}

/// What the queries of a shard gave.
#[derive(Default)]
struct Measured {
    results: Vec<QueryResult>,
    windows: Vec<Window>,
    engine_failures: Vec<EngineFailure>,
}

/// Runs one leased shard (see the module docs).
pub async fn run(t: Tools<'_>, lease: &Lease, holding: &HeldLease, opts: &RunOptions) -> anyhow::Result<Outcome> {
    tracing::info!(shard = %lease.shard_id, index = lease.shard_index, queries = lease.items.len(), concurrency = lease.concurrency, "running shard");
    let params = lease.params.unwrap_or_default();
    // Warm-up queries run first and are not measured: caches and clocks settle. A stop cuts
    // the warm-up and the idle baseline short.
    for item in lease.items.iter().take(lease.warmup as usize) {
        tokio::select! {
            _ = t.engine.chat(&lease.model, &item.messages, &params) => {}
            () = opts.shutdown.requested() => break,
        }
    }
    let idle = tokio::select! {
        idle = t.meter.idle_baseline() => idle,
        () = opts.shutdown.requested() => None,
    };
    if let Some(i) = idle {
        tracing::info!(shard = %lease.shard_id, idle_w = i.power_w, seconds = i.seconds, "idle baseline");
    }
    let mut m = measure(&t, lease, holding, opts).await;
    let answered_all = m.results.len() == lease.items.len();

    let (energies, active) = t.meter.attribute(&m.windows, idle).await;
    for (r, e) in m.results.iter_mut().zip(energies) {
        r.energy = Some(e);
    }
    let entries = match spool_put(t.spool, m.results.clone()).await {
        Ok(entries) => entries,
        Err(_) => m.results.iter().map(|r| (SpoolKey::of(r), r.clone())).collect(),
    };
    // Checked once, last thing before the upload: a lease lost while measuring or while
    // attributing energy keeps nothing.
    if holding.is_lost() {
        drop_lost(t.spool, lease, &m.results).await;
        return Ok(Outcome { committed: 0, duplicates: 0, end: End::Lost });
    }
    let (committed, duplicates) = upload_patiently(t.coord, t.spool, entries, opts).await?;
    if !m.windows.is_empty() {
        let from =
            idle.map(|i| i.from).unwrap_or_else(|| m.windows.iter().map(|w| w.start).fold(f64::INFINITY, f64::min));
        let to = m.windows.iter().map(|w| w.end).fold(from, f64::max);
        if let Some(telemetry) = t.meter.telemetry(&lease.shard_id, from, to, idle, active) {
            patiently("upload the power series", opts.patience(), || {
                let (mut c, telemetry) = (t.coord.clone(), telemetry.clone());
                async move { c.upload_shard_telemetry(telemetry).await }
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!("uploading the power series of shard {} failed: {}", lease.shard_id, s.message())
            })?;
        }
    }
    if answered_all {
        return Ok(Outcome { committed, duplicates, end: End::Answered });
    }
    // No longer named in heartbeats: a heartbeat racing the release must not renew it.
    holding.stop_naming();
    let end = if m.engine_failures.is_empty() { End::Stopped } else { End::EngineFailed };
    give_back(t.coord, lease, std::mem::take(&mut m.engine_failures), opts).await;
    Ok(Outcome { committed, duplicates, end })
}

/// Runs the queries at the run's concurrency until all are answered, the lease is lost, the
/// engine fails (no new queries; those in flight finish or fail), or a stop is asked for (no
/// new queries; those in flight may finish within the grace period, then are abandoned).
async fn measure(t: &Tools<'_>, lease: &Lease, holding: &HeldLease, opts: &RunOptions) -> Measured {
    let params = lease.params.unwrap_or_default();
    let params = &params;
    let engine = t.engine;
    let stopping = Arc::new(AtomicBool::new(false));
    let more = stopping.clone();
    let mut in_flight = futures::stream::iter(lease.items.iter())
        .take_while(move |_| futures::future::ready(!more.load(Ordering::Relaxed)))
        .map(|item| async move { (item, engine.chat(&lease.model, &item.messages, params).await) })
        .buffer_unordered(lease.concurrency.max(1) as usize);
    let mut m = Measured::default();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            next = in_flight.next() => next,
            () = holding.lost() => None,
            () = opts.shutdown.requested(), if grace.is_none() => {
                stopping.store(true, Ordering::Relaxed);
                grace = Some(tokio::time::Instant::now() + opts.shutdown_grace);
                continue;
            }
            () = tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)), if grace.is_some() => {
                tracing::warn!(shard = %lease.shard_id, "grace period over: abandoning the queries still in flight");
                None
            }
        };
        let Some((item, completion)) = next else { break };
        if completion.failed_by == Some(FailedBy::Engine) {
            stopping.store(true, Ordering::Relaxed);
            // While stopping, the engine may be going down with the agent (a terminal's
            // Ctrl-C reaches both): abandoned, not counted against the query.
            if opts.shutdown.is_requested() {
                continue;
            }
            let error = completion.error.clone().unwrap_or_default();
            tracing::error!(shard = %lease.shard_id, query = item.query_id, %error, "the engine failed: not an answer; the query goes back to the queue");
            m.engine_failures.push(EngineFailure {
                shard_id: lease.shard_id.clone(),
                query_id: item.query_id,
                repetition: item.repetition,
                error,
            });
            continue;
        }
        let start = completion.started.map(|s| t.meter.clock(s)).unwrap_or(0.0);
        m.windows.push(Window { start, end: start + completion.latency_s, tokens: f64::from(completion.tokens_out) });
        // A result the spool cannot take (a full disk) is kept in memory and uploaded all the
        // same: never dropped. The lease loop then takes no new work until the disk is fixed.
        let result = to_result(lease, item, completion, None);
        let _ = spool_put(t.spool, vec![result.clone()]).await;
        m.results.push(result);
    }
    m
}

/// Gives the lease back at once, with the engine's failures, so the shard's unanswered queries
/// are leased again without waiting for the lease to run out. If the coordinator cannot be
/// told, the lease runs out as usual.
pub async fn give_back(coord: &mut Coordinator, lease: &Lease, engine_failures: Vec<EngineFailure>, opts: &RunOptions) {
    let request = ReleaseLeasesRequest { shard_ids: vec![lease.shard_id.clone()], engine_failures };
    let released = patiently("give a lease back", opts.patience(), || {
        let (mut c, r) = (coord.clone(), request.clone());
        async move { c.release_leases(r).await }
    })
    .await;
    match released {
        Ok(r) => {
            let r = r.into_inner();
            tracing::info!(shard = %lease.shard_id, recorded_as_errors = r.recorded_as_errors, "lease given back")
        }
        Err(s) => {
            tracing::warn!(shard = %lease.shard_id, "giving the lease back failed ({}); it will run out", s.message())
        }
    }
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
