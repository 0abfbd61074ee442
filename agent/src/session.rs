//! A measurement session: one agent working on one run, with one engine and model loaded,
//! holding the engine at the run's load until the run has no more work for it.
//!
//! - Warm-up and the idle baseline happen once, at the start, on the warm engine; the idle
//!   baseline again only after `--idle-every` (new requests pause, the load drains, idle is
//!   measured, requests resume; the pause is cut out of the steady window).
//! - Requests start closed-loop (exactly `concurrency` in flight) or open-loop (arrivals at a
//!   rate, Poisson or constant). Shards are the unit of leasing, never a pause: the next one
//!   is leased while the current one still has queries to start.
//! - Each result goes to the committer the moment it is measured ([`crate::commit`]): on disk
//!   within [`crate::commit::GROUP_COMMIT`], its energy attached by the ledger as soon as the
//!   power series covers it ([`crate::ledger`]), at the coordinator about a second later.
//! - The power series, idle baselines and load (the steady window, coverage) go to the
//!   coordinator every [`TELEMETRY_EVERY`], so a crash loses at most the last few seconds.
//!
//! The measuring loop never waits on the network or the disk: every call is spawned or
//! handed to the committer, so requests in flight are read as their bytes arrive.

use crate::client::Coordinator;
use crate::commit::{self, Committed, Msg};
use crate::engine::{Completion, Engine, FailedBy};
use crate::leases::{Held, HeldLease};
use crate::ledger::Ledger;
use crate::meter::{Idle, Meter};
use crate::runner::{RunOptions, patiently};
use crate::spool::Spool;
use crate::steady::LoadTracker;
use futures::future::BoxFuture;
use ipw_proto::limits::{MAX_RESPONSE_BYTES, MAX_SHORT_TEXT_BYTES, clamp};
use ipw_proto::v1::{
    AcquireLeaseRequest, EngineFailure, GenerationParams, IdleBaseline, Lease, LoadSummary, QueryResult,
    SessionTelemetry, WorkItem,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How often the ledger attributes energy.
const ENERGY_EVERY: Duration = Duration::from_secs(1);
/// How often the power series and load go to the coordinator.
pub const TELEMETRY_EVERY: Duration = Duration::from_secs(5);
/// A request that starts this much after its scheduled arrival (open loop) is late.
pub const LATE_AFTER_S: f64 = 0.010;
/// Open loop: requests in flight beyond this wait (and are counted late).
const OPEN_LOOP_CAP: usize = 4096;

/// What a session works with.
pub struct Tools<'a> {
    /// The coordinator.
    pub coord: &'a mut Coordinator,
    /// The engine.
    pub engine: &'a Engine,
    /// The power meter.
    pub meter: &'a Meter,
    /// The spool.
    pub spool: &'a Spool,
    /// The leases the heartbeat names.
    pub held: &'a Held,
}

/// The last idle baseline, kept across sessions of the same model.
#[derive(Debug, Clone)]
pub struct LastIdle {
    model: String,
    idle: Idle,
    at: Instant,
}

/// How a session ended, and what it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What reached the coordinator.
    pub committed: Committed,
    /// How it ended.
    pub end: End,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The run had no more work for this agent.
    RanOut,
    /// The engine failed: the leases were given back with its failures.
    EngineFailed,
    /// The agent is stopping: the leases were given back.
    Stopped,
}

/// One lease in the session.
struct Active {
    lease: Lease,
    holding: HeldLease,
    next: usize,
    outstanding: usize,
    failed: bool,
}

/// A request in flight.
struct Request {
    shard_id: String,
    item: usize,
    energy_id: Option<u64>,
    scheduled: Option<f64>,
}

/// When open-loop requests arrive.
struct Arrivals {
    rate: f64,
    poisson: bool,
    state: u64,
    next: f64,
}

impl Arrivals {
    /// The next arrival after the current one.
    fn advance(&mut self) {
        let gap = if self.poisson {
            // splitmix64: a seeded, dependency-free uniform draw, then an exponential gap.
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            -(1.0 - u).ln() / self.rate
        } else {
            1.0 / self.rate
        };
        self.next += gap;
    }
}

/// The requests in flight, each its own task: a streamed token wakes only its request, not
/// the session's loop (which wakes when a request ends). Dropping the set aborts them.
type InFlight = JoinSet<(Request, Completion)>;
type Leasing = BoxFuture<'static, Result<Option<Lease>, tonic::Status>>;

/// Why the loop woke.
enum Event {
    Done(Request, Completion),
    Leased(Result<Option<Lease>, tonic::Status>),
    Tick,
    Telemetry,
    Stop,
    GraceOver,
    Arrival,
}

/// One session's state (see the module docs).
struct Session<'a> {
    engine: &'a Engine,
    meter: &'a Meter,
    held: &'a Held,
    coord: Coordinator,
    opts: &'a RunOptions,
    id: String,
    first: Lease,
    leases: Vec<Active>,
    ledger: Option<Ledger>,
    first_tokens: HashMap<u64, Arc<OnceLock<Instant>>>,
    awaiting_energy: HashSet<u64>,
    tracker: LoadTracker,
    arrivals: Option<Arrivals>,
    commit: UnboundedSender<Msg>,
    failures: Vec<EngineFailure>,
    stopping: Option<End>,
    exhausted: bool,
    pausing: bool,
    idle: Option<LastIdle>,
    idles: Vec<IdleBaseline>,
    telemetry: Telemetry,
}

/// What has been sent of the series, and the load figures only the session knows.
#[derive(Default)]
struct Telemetry {
    sent_upto: f64,
    next_chunk: u32,
    in_progress: Option<tokio::task::JoinHandle<Option<(f64, u32)>>>,
    query_time_s: f64,
    covered_time_s: f64,
    steady_tokens: u64,
    late: u64,
    arrivals: u64,
    warmup: u32,
}

/// Runs a session on `first`'s run (see the module docs).
pub async fn run(
    t: Tools<'_>,
    first: Lease,
    holding: HeldLease,
    idle: &mut Option<LastIdle>,
    opts: &RunOptions,
) -> anyhow::Result<Outcome> {
    let (commit, committer) = commit::start(t.coord.clone(), t.spool.clone(), opts.clone());
    let load = first.load.clone().unwrap_or_default();
    let open_loop = matches!(load.kind.as_str(), "poisson" | "constant") && load.rate_per_s > 0.0;
    let target = if open_loop { load.rate_per_s } else { f64::from(first.concurrency.max(1)) };
    let now = t.meter.clock(Instant::now());
    let mut s = Session {
        engine: t.engine,
        meter: t.meter,
        held: t.held,
        coord: t.coord.clone(),
        opts,
        id: uuid::Uuid::now_v7().to_string(),
        leases: vec![Active { lease: first.clone(), holding, next: 0, outstanding: 0, failed: false }],
        ledger: t.meter.is_measuring().then(|| Ledger::new(t.meter.rule())),
        first_tokens: HashMap::new(),
        awaiting_energy: HashSet::new(),
        tracker: LoadTracker::new(target, open_loop),
        arrivals: open_loop.then(|| Arrivals {
            rate: load.rate_per_s,
            poisson: load.kind == "poisson",
            state: load.seed,
            next: now,
        }),
        commit,
        failures: Vec::new(),
        stopping: None,
        exhausted: false,
        pausing: false,
        idle: idle.take().filter(|i| i.model == first.model),
        idles: Vec::new(),
        telemetry: Telemetry::default(),
        first,
    };
    tracing::info!(session = %s.id, run = %s.first.run_id, model = %s.first.model, target, open_loop, "session starts");
    s.send_telemetry(false).await;
    s.warm_up().await;
    s.measure_idle_if_due().await;
    if let Some(a) = s.arrivals.as_mut() {
        a.next = s.meter.clock(Instant::now());
    }
    s.drive().await;
    s.finish().await;
    *idle = s.idle.take();
    let end = s.stopping.unwrap_or(End::RanOut);
    drop(s);
    let committed = committer.await??;
    Ok(Outcome { committed, end })
}

impl<'a> Session<'a> {
    /// Warm-up queries, not measured, once per session: caches and clocks settle.
    async fn warm_up(&mut self) {
        let params = self.first.params.unwrap_or_default();
        for item in self.first.items.iter().take(self.first.warmup as usize) {
            let params = item_params(&params, item);
            tokio::select! {
                _ = self.engine.chat(&self.first.model, &item.messages, &params) => self.telemetry.warmup += 1,
                () = self.opts.shutdown.requested() => break,
            }
        }
    }

    /// Measures idle power when there is none for this model yet, or it is older than
    /// `--idle-every`. Nothing is in flight.
    async fn measure_idle_if_due(&mut self) {
        let due = self.idle.as_ref().is_none_or(|i| i.at.elapsed() >= self.opts.power.idle_every);
        if due && self.meter.is_measuring() {
            let measured = tokio::select! {
                idle = self.meter.idle_baseline() => idle,
                () = self.opts.shutdown.requested() => None,
            };
            if let Some(idle) = measured {
                tracing::info!(session = %self.id, idle_w = idle.power_w, seconds = idle.seconds, "idle baseline");
                self.idle = Some(LastIdle { model: self.first.model.clone(), idle, at: Instant::now() });
            }
        }
        if let Some(i) = &self.idle
            && !self.idles.iter().any(|b| b.from_s == i.idle.from)
        {
            self.idles.push(IdleBaseline { from_s: i.idle.from, seconds: i.idle.seconds, power_w: i.idle.power_w });
        }
    }

    /// The measuring loop: until the work runs out, the engine fails or a stop.
    async fn drive(&mut self) {
        let mut in_flight = InFlight::new();
        let mut leasing: Option<Leasing> = None;
        let mut grace: Option<tokio::time::Instant> = None;
        let mut energy_tick = tokio::time::interval(ENERGY_EVERY);
        let mut telemetry_tick = tokio::time::interval(TELEMETRY_EVERY);
        loop {
            self.drop_lost_leases();
            self.complete_empty_leases();
            self.start_requests(&mut in_flight);
            if leasing.is_none() && self.wants_lease(in_flight.len()) {
                leasing = Some(self.lease_ahead());
            }
            if in_flight.is_empty() {
                if self.stopping.is_some() || (self.exhausted && self.next_item().is_none()) {
                    return;
                }
                if self.pausing {
                    self.resume_after_idle().await;
                    continue;
                }
            }
            let arrival = self.arrival_instant();
            let event = tokio::select! {
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => match joined {
                    Ok((r, c)) => Event::Done(r, c),
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                },
                got = async { leasing.as_mut().expect("guarded").await }, if leasing.is_some() => Event::Leased(got),
                _ = energy_tick.tick() => Event::Tick,
                _ = telemetry_tick.tick() => Event::Telemetry,
                () = self.opts.shutdown.requested(), if grace.is_none() => Event::Stop,
                () = tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)), if grace.is_some() => Event::GraceOver,
                () = tokio::time::sleep_until(arrival.unwrap_or_else(tokio::time::Instant::now)), if arrival.is_some() => Event::Arrival,
            };
            match event {
                Event::Done(r, c) => self.on_done(r, c),
                Event::Leased(got) => {
                    leasing = None;
                    self.on_leased(got);
                }
                Event::Tick => {
                    self.advance_energy(false);
                    if !self.pausing && self.idle.as_ref().is_some_and(|i| i.at.elapsed() >= self.opts.power.idle_every)
                    {
                        self.pausing = true;
                        self.tracker.pause(self.now());
                    }
                }
                Event::Telemetry => self.send_telemetry(false).await,
                Event::Stop => {
                    self.stopping = Some(End::Stopped);
                    grace = Some(tokio::time::Instant::now() + self.opts.shutdown_grace);
                }
                Event::GraceOver => {
                    tracing::warn!(session = %self.id, abandoned = in_flight.len(), "grace period over: abandoning the queries still in flight");
                    return;
                }
                Event::Arrival => {}
            }
        }
    }

    fn now(&self) -> f64 {
        self.meter.clock(Instant::now())
    }

    /// The next query to start: the oldest lease's next item.
    fn next_item(&self) -> Option<usize> {
        self.leases.iter().position(|a| !a.failed && a.next < a.lease.items.len())
    }

    /// Queries leased and not yet started.
    fn undispatched(&self) -> usize {
        self.leases.iter().filter(|a| !a.failed).map(|a| a.lease.items.len() - a.next).sum()
    }

    /// Whether to lease the next shard now: while fewer queries wait to start than two
    /// rounds of the load, so the engine never waits for a lease. With shards at least as
    /// large as the load that is one or two shards ahead.
    fn wants_lease(&self, in_flight: usize) -> bool {
        if self.exhausted || self.stopping.is_some() {
            return false;
        }
        let round = match &self.arrivals {
            Some(a) => (a.rate * 2.0).ceil() as usize,
            None => self.first.concurrency.max(1) as usize,
        };
        self.undispatched() < 2 * round.max(1) || in_flight == 0 && self.next_item().is_none()
    }

    /// Asks for another shard of this run.
    fn lease_ahead(&self) -> Leasing {
        let request =
            AcquireLeaseRequest { available_models: vec![self.first.model.clone()], run_id: self.first.run_id.clone() };
        let (coord, patience) = (self.coord.clone(), self.opts.retry_for);
        Box::pin(async move {
            patiently("lease ahead", patience, || {
                let (mut c, r) = (coord.clone(), request.clone());
                async move { c.acquire_lease(r).await }
            })
            .await
            .and_then(|r| r.into_inner().lease.map(crate::leases::checked).transpose())
        })
    }

    fn on_leased(&mut self, got: Result<Option<Lease>, tonic::Status>) {
        match got {
            // Our own lease of this shard ran out (slow heartbeats) and came back to us: we are
            // still measuring it under the first lease, whose items the requests in flight
            // point into, and its heartbeats renew the new one too.
            Ok(Some(lease)) if self.leases.iter().any(|a| a.lease.shard_id == lease.shard_id) => {
                tracing::warn!(session = %self.id, shard = %lease.shard_id, "leased a shard this session still holds; kept the first lease");
            }
            Ok(Some(lease)) => {
                tracing::debug!(session = %self.id, shard = %lease.shard_id, queries = lease.items.len(), "leased ahead");
                let holding = self.held.hold(&lease.shard_id);
                self.leases.push(Active { lease, holding, next: 0, outstanding: 0, failed: false });
            }
            Ok(None) => self.exhausted = true,
            Err(s) => {
                tracing::warn!(session = %self.id, "leasing ahead failed ({}); finishing what is held", s.message());
                self.exhausted = true;
            }
        }
    }

    /// When the next open-loop arrival is due, if one can start then.
    fn arrival_instant(&self) -> Option<tokio::time::Instant> {
        let a = self.arrivals.as_ref()?;
        if self.stopping.is_some() || self.pausing || self.next_item().is_none() {
            return None;
        }
        let wait = (a.next - self.now()).max(0.0);
        Some(tokio::time::Instant::now() + Duration::from_secs_f64(wait))
    }

    /// Starts what the load pattern allows now.
    fn start_requests(&mut self, in_flight: &mut InFlight) {
        if self.stopping.is_some() || self.pausing {
            return;
        }
        loop {
            let scheduled = match &self.arrivals {
                Some(a) if a.next > self.now() || in_flight.len() >= OPEN_LOOP_CAP => return,
                Some(a) => Some(a.next),
                None if in_flight.len() >= self.first.concurrency.max(1) as usize => return,
                None => None,
            };
            let Some(i) = self.next_item() else {
                if self.exhausted {
                    self.tracker.ran_out(self.now());
                }
                return;
            };
            if let Some(a) = self.arrivals.as_mut() {
                a.advance();
            }
            self.start(i, scheduled, in_flight);
        }
    }

    fn start(&mut self, lease: usize, scheduled: Option<f64>, in_flight: &mut InFlight) {
        let a = &mut self.leases[lease];
        let item = a.lease.items[a.next].clone();
        let request = Request { shard_id: a.lease.shard_id.clone(), item: a.next, energy_id: None, scheduled };
        a.next += 1;
        a.outstanding += 1;
        let params = item_params(&a.lease.params.unwrap_or_default(), &item);
        let model = a.lease.model.clone();
        let now = self.now();
        self.tracker.started(now);
        let first = Arc::new(OnceLock::new());
        let energy_id = self.ledger.as_mut().map(|l| l.open(now));
        if let Some(id) = energy_id {
            self.first_tokens.insert(id, first.clone());
        }
        let engine = self.engine.clone();
        self.opts.metrics.in_flight.inc();
        let span = tracing::info_span!(
            "query",
            otel.name = "engine request",
            otel.kind = "client",
            gen_ai.request.model = %model,
            shard = %request.shard_id,
            query_id = item.query_id,
            repetition = item.repetition,
        );
        in_flight.spawn(
            async move {
                let c = engine.chat_observed(&model, &item.messages, &params, &first).await;
                (Request { energy_id, ..request }, c)
            }
            .instrument(span),
        );
    }

    /// A request ended: its result goes to the committer, its energy follows.
    fn on_done(&mut self, r: Request, c: Completion) {
        let m = &self.opts.metrics;
        m.in_flight.dec();
        m.request_seconds.observe(c.latency_s);
        m.rate_limited.inc_by(u64::from(c.rate_limited));
        if let Some(t) = c.ttft_s {
            m.ttft_seconds.observe(t);
        }
        let outcome = match (c.failed_by, &c.error) {
            (Some(FailedBy::Engine), _) => "engine_failure",
            (_, Some(_)) => "error",
            _ => "answered",
        };
        let run = self.leases.iter().find(|a| a.lease.shard_id == r.shard_id).map(|a| a.lease.run_id.as_str());
        m.query_done(run, outcome);
        let start = c.started.map(|s| self.meter.clock(s)).unwrap_or_else(|| self.now());
        let end = start + c.latency_s;
        self.tracker.ended(end);
        if let (Some(l), Some(id)) = (self.ledger.as_mut(), r.energy_id) {
            self.first_tokens.remove(&id);
            l.close(id, end, c.first_token.map(|f| self.meter.clock(f)), f64::from(c.tokens_out));
        }
        let Some(li) = self.leases.iter().position(|a| a.lease.shard_id == r.shard_id) else {
            return; // its lease was lost: another agent measures it now
        };
        self.leases[li].outstanding -= 1;
        if c.failed_by == Some(FailedBy::Engine) {
            self.engine_failed(li, r.item, c);
        } else {
            self.measured(li, &r, start, end, c);
        }
        let a = &self.leases[li];
        if a.outstanding == 0 && a.next == a.lease.items.len() && !a.failed {
            let a = self.leases.remove(li);
            let _ = self.commit.send(Msg::Complete(a.holding));
        }
    }

    fn engine_failed(&mut self, li: usize, item: usize, c: Completion) {
        let a = &mut self.leases[li];
        a.failed = true;
        self.stopping.get_or_insert(End::EngineFailed);
        // While stopping, the engine may be going down with the agent (a terminal's Ctrl-C
        // reaches both): abandoned, not counted against the query.
        if self.opts.shutdown.is_requested() {
            return;
        }
        let error = c.error.unwrap_or_default();
        let w = &a.lease.items[item];
        tracing::error!(shard = %a.lease.shard_id, query = w.query_id, %error, "the engine failed: not an answer; the query goes back to the queue");
        self.failures.push(EngineFailure {
            shard_id: a.lease.shard_id.clone(),
            query_id: w.query_id,
            repetition: w.repetition,
            error,
        });
    }

    fn measured(&mut self, li: usize, r: &Request, start: f64, end: f64, c: Completion) {
        let in_steady = self.tracker.contains(start, end);
        if in_steady {
            self.telemetry.steady_tokens += u64::from(c.tokens_out);
        }
        let start_delay_s = r.scheduled.map(|s| (start - s).max(0.0));
        self.telemetry.arrivals += u64::from(r.scheduled.is_some());
        self.telemetry.late += u64::from(start_delay_s.is_some_and(|d| d > LATE_AFTER_S));
        let a = &self.leases[li];
        let mut result = to_result(&a.lease, r.item, c);
        (result.session_id, result.in_steady_window, result.start_delay_s) =
            (self.id.clone(), in_steady, start_delay_s);
        let energy_id = r.energy_id.filter(|_| self.ledger.is_some());
        match energy_id {
            Some(id) => {
                self.awaiting_energy.insert(id);
            }
            None => result.energy = Some(self.meter.energy_record(Err("no power source".into()))),
        }
        let _ = self.commit.send(Msg::Measured { result: Box::new(result), energy_id });
    }

    /// Completes leases with nothing to run: every result of the shard landed under an earlier
    /// lease whose agent could not complete it (its coordinator went down in between). No
    /// query's end would complete them, and given back they would come round for ever.
    fn complete_empty_leases(&mut self) {
        while let Some(i) = self.leases.iter().position(|a| a.lease.items.is_empty() && a.outstanding == 0) {
            let a = self.leases.remove(i);
            tracing::info!(session = %self.id, shard = %a.lease.shard_id, "leased a shard with every result in: completing it");
            let _ = self.commit.send(Msg::Complete(a.holding));
        }
    }

    /// Stops the work of leases the coordinator says are lost.
    fn drop_lost_leases(&mut self) {
        while let Some(i) = self.leases.iter().position(|a| a.holding.is_lost()) {
            let a = self.leases.remove(i);
            tracing::warn!(session = %self.id, shard = %a.lease.shard_id, "lease lost: its queries stop here");
            let _ = self.commit.send(Msg::Drop(a.lease.shard_id.clone()));
        }
    }

    /// Attributes the energy the series now covers; `last` waits for the series to pass every
    /// query's end, and gives the queries it cannot cover a NULL energy with the reason.
    fn advance_energy(&mut self, last: bool) {
        let Some(ledger) = self.ledger.as_mut() else { return };
        for (id, first) in &self.first_tokens {
            if let Some(t) = first.get() {
                ledger.first_token(*id, self.meter.clock(*t));
            }
        }
        let Some(newest) = self.meter.newest() else { return };
        // A first token stamped just now may not be recorded yet: stay a little behind.
        let to = ledger.reachable(if last { newest } else { newest.min(self.meter.clock(Instant::now()) - 0.05) });
        let series = self.meter.series(ledger.from().unwrap_or(to).min(to), to);
        match ledger.advance(&series, to, self.idle.as_ref().map(|i| i.idle.power_w)) {
            Ok((done, coverage)) => {
                self.telemetry.query_time_s += coverage.query_time_s;
                self.telemetry.covered_time_s += coverage.covered_time_s;
                for (id, e) in done {
                    if self.awaiting_energy.remove(&id) {
                        // NaN: a source of the IPW scope had a gap while the query ran.
                        let e = if e.raw_j().is_finite() {
                            Ok(e)
                        } else {
                            Err(self
                                .meter
                                .gap_reason(e.start, to)
                                .unwrap_or_else(|| "a gap in the power series".into()))
                        };
                        let _ = self.commit.send(Msg::Energy(id, self.meter.energy_record(e)));
                    }
                }
            }
            Err(e) => tracing::warn!(session = %self.id, error = %e, "energy not attributed yet"),
        }
        if last {
            for id in self.awaiting_energy.drain() {
                let reason = "the power series never covered this query".to_owned();
                let _ = self.commit.send(Msg::Energy(id, self.meter.energy_record(Err(reason))));
            }
        }
    }

    /// Nothing in flight after a pause: measure idle, then resume.
    async fn resume_after_idle(&mut self) {
        self.idle = None;
        self.measure_idle_if_due().await;
        self.pausing = false;
        self.tracker.resume(self.now());
    }

    /// The load as known now.
    fn load_summary(&self, now: f64) -> LoadSummary {
        let load = self.first.load.clone().unwrap_or_default();
        let w = self.tracker.window(now);
        let steady_energy_j = w.filter(|_| self.meter.is_measuring()).and_then(|w| {
            let paused: Option<f64> = self
                .tracker
                .pauses(now)
                .iter()
                .map(|&(a, b)| self.meter.energy_between(a.max(w.from), b.min(w.to).max(a)))
                .sum();
            Some(self.meter.energy_between(w.from, w.to)? - paused?)
        });
        LoadSummary {
            pattern: if self.arrivals.is_some() { load.kind } else { "closed".into() },
            target: self.tracker_target(),
            steady_from_s: w.map(|w| w.from),
            steady_to_s: w.map(|w| w.to),
            steady_load_mean: w.map(|w| w.load_mean),
            paused_s: w.map(|w| w.paused_s).unwrap_or(0.0),
            steady_energy_j,
            steady_tokens_out: self.telemetry.steady_tokens,
            query_time_s: self.telemetry.query_time_s,
            covered_time_s: self.telemetry.covered_time_s,
            late_starts: self.telemetry.late,
            arrivals: self.telemetry.arrivals,
            warmup_queries: self.telemetry.warmup,
        }
    }

    fn tracker_target(&self) -> f64 {
        match &self.arrivals {
            Some(a) => a.rate,
            None => f64::from(self.first.concurrency.max(1)),
        }
    }

    /// Sends the series since the last acknowledged upload, the idle baselines and the load,
    /// off the loop; `finished` waits for it (the session's end).
    async fn send_telemetry(&mut self, finished: bool) {
        let t = &mut self.telemetry;
        if let Some(h) = t.in_progress.take_if(|h| h.is_finished() || finished)
            && let Ok(Some((upto, next))) = h.await
        {
            (t.sent_upto, t.next_chunk) = (upto, next);
        }
        if t.in_progress.is_some() {
            return;
        }
        let now = self.now();
        let upto = self.meter.newest().unwrap_or(now);
        let (after, first_chunk) = (self.telemetry.sent_upto, self.telemetry.next_chunk);
        let mut record = self.meter.session_telemetry(&self.id, &self.first.run_id, after, upto, first_chunk);
        let next = record.chunks.iter().map(|c| c.chunk_index + 1).max().unwrap_or(first_chunk);
        record.idle = self.idles.clone();
        record.load = Some(self.load_summary(now));
        record.finished = finished;
        let (coord, patience) = (self.coord.clone(), self.opts.patience());
        let task = tokio::spawn(upload_telemetry(coord, record, patience, upto, next));
        if finished {
            if let Ok(Some((upto, next))) = task.await {
                (self.telemetry.sent_upto, self.telemetry.next_chunk) = (upto, next);
            }
        } else {
            self.telemetry.in_progress = Some(task);
        }
    }

    /// After the loop: the last energy, the final telemetry, the leases that are left.
    async fn finish(&mut self) {
        self.tracker.ran_out(self.now());
        if self.ledger.is_some() {
            let end = self.now();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.meter.newest().is_none_or(|n| n < end) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.advance_energy(true);
        self.send_telemetry(true).await;
        let left: Vec<HeldLease> = self.leases.drain(..).map(|a| a.holding).collect();
        if !left.is_empty() || !self.failures.is_empty() {
            let _ = self.commit.send(Msg::GiveBack(left, std::mem::take(&mut self.failures)));
        }
        tracing::info!(session = %self.id, end = ?self.stopping.unwrap_or(End::RanOut), "session ends");
    }
}

async fn upload_telemetry(
    coord: Coordinator,
    record: SessionTelemetry,
    patience: Duration,
    upto: f64,
    next: u32,
) -> Option<(f64, u32)> {
    let sent = patiently("upload the session's telemetry", patience, || {
        let (mut c, r) = (coord.clone(), record.clone());
        async move { c.upload_session_telemetry(r).await }
    })
    .await;
    match sent {
        Ok(_) => Some((upto, next)),
        Err(s) => {
            tracing::warn!(session = %record.session_id, "uploading the power series failed: {}", s.message());
            None
        }
    }
}

/// The generation settings of one item: the lease's, with the query's own completion budget
/// when it has one.
fn item_params(lease: &GenerationParams, item: &WorkItem) -> GenerationParams {
    let max_tokens = if item.max_tokens > 0 { item.max_tokens } else { lease.max_tokens };
    GenerationParams { max_tokens, ..*lease }
}

fn to_result(lease: &Lease, item: usize, c: Completion) -> QueryResult {
    let item = &lease.items[item];
    QueryResult {
        shard_id: lease.shard_id.clone(),
        run_id: lease.run_id.clone(),
        query_id: item.query_id,
        repetition: item.repetition,
        started_unix_us: c.started_at.timestamp_micros(),
        latency_s: c.latency_s,
        ttft_s: c.ttft_s,
        mean_itl_s: c.mean_itl_s,
        itl_p50_s: c.itl_p50_s,
        itl_p95_s: c.itl_p95_s,
        tpot_s: c.tpot_s,
        tokens_in: c.tokens_in,
        tokens_out: c.tokens_out,
        // Kept within what the coordinator accepts: a refused result would never complete.
        response: clamp(c.text, MAX_RESPONSE_BYTES),
        finish_reason: clamp(c.finish_reason, MAX_SHORT_TEXT_BYTES),
        error: clamp(c.error.unwrap_or_default(), MAX_SHORT_TEXT_BYTES),
        rate_limited: c.rate_limited,
        ..Default::default()
    }
}
