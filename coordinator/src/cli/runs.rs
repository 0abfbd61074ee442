//! `ipw run`: creating runs and following their progress.

use super::render::table::{render_runs, render_status};
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::kinds::RunStatus;
use ipw_proto::v1::{
    CancelRunRequest, CreateRunRequest, GenerationParams, ListRunsRequest, LoadPattern, RunStatusRequest,
};
use std::time::Duration;

/// Engine settings and sharding, shared by `ipw run create` and `ipw sweep create`.
#[derive(clap::Args, Debug)]
pub struct EngineSettings {
    /// Queries in flight at once on an agent. A list (`1,4,16,64`) makes one run per level,
    /// all on one sample, so energy per query against batch size is one query.
    #[arg(long, default_value = "1", value_delimiter = ',', num_args = 1..)]
    pub concurrency: Vec<u32>,
    /// Queries per shard (the unit of leasing).
    #[arg(long, default_value_t = 50)]
    pub shard_size: u32,
    /// Times each query is run.
    #[arg(long, default_value_t = 1)]
    pub repetitions: u32,
    /// Completion token budget per query.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
}

/// How requests are started, what counts as good and when to repeat: `ipw run create` and
/// `ipw sweep create`.
#[derive(clap::Args, Debug)]
pub struct LoadFlags {
    /// Open-loop arrivals at this rate (`5/s`, `300/min`) instead of a fixed concurrency.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open-loop arrival process.
    #[arg(long, default_value = "poisson", value_parser = ["poisson", "constant"])]
    pub arrival: String,
    /// Goodput SLOs: `ttft=2s,tpot=100ms` (either or both).
    #[arg(long, value_parser = parse_slo)]
    pub slo: Option<(f64, f64)>,
    /// Repeat the run (same sample) until the steady-state IPW's coefficient of variation
    /// across repeats is at most this (`2%` or `0.02`).
    #[arg(long, value_parser = parse_fraction)]
    pub repeat_until_cv: Option<f64>,
    /// Runs in all, at most, with --repeat-until-cv (default 5).
    #[arg(long, requires = "repeat_until_cv")]
    pub max_repeats: Option<u32>,
}

/// `2%` or `0.02`.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let (n, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    n.trim().parse::<f64>().map(|v| v / scale).map_err(|_| format!("\"{s}\" is not a share such as 2% or 0.02"))
}

impl LoadFlags {
    /// The load pattern these flags ask for (`None`: closed loop).
    pub fn pattern(&self, seed: i64) -> Option<LoadPattern> {
        self.rate.map(|rate_per_s| LoadPattern { kind: self.arrival.clone(), rate_per_s, seed: seed as u64 })
    }
}

/// `5/s`, `5`, `300/min`: arrivals per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = n.trim().parse().map_err(|_| format!("\"{s}\" is not a rate such as 5/s"))?;
    let seconds = match per.trim() {
        "s" | "sec" => 1.0,
        "min" | "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown rate unit \"{other}\"; use /s, /min or /h")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("the rate must be positive, got \"{s}\""));
    }
    Ok(n / seconds)
}

/// `ttft=2s,tpot=100ms` → (ttft, tpot) in seconds, 0 for an SLO not given.
fn parse_slo(s: &str) -> Result<(f64, f64), String> {
    let (mut ttft, mut tpot) = (0.0, 0.0);
    for part in s.split(',') {
        let (name, value) = part.split_once('=').ok_or_else(|| format!("\"{part}\" is not name=duration"))?;
        let d = humantime::parse_duration(value.trim()).map_err(|e| format!("SLO {name}: {e}"))?.as_secs_f64();
        match name.trim() {
            "ttft" => ttft = d,
            "tpot" => tpot = d,
            other => return Err(format!("unknown SLO \"{other}\"; expected ttft or tpot")),
        }
    }
    Ok((ttft, tpot))
}

impl EngineSettings {
    /// The generation parameters these flags set.
    pub fn params(&self) -> GenerationParams {
        GenerationParams { max_tokens: self.max_tokens, temperature: self.temperature, top_p: self.top_p }
    }
}

/// `ipw run ...`
#[derive(Subcommand, Debug)]
pub enum RunCmd {
    /// Creates a run: a seeded sample of the workload, cut into shards for agents to lease.
    Create {
        /// Workload name or id.
        #[arg(long)]
        workload: String,
        /// Model name, as the agents' engine serves it.
        #[arg(long)]
        model: String,
        /// How many queries to sample.
        #[arg(long)]
        sample: u32,
        /// Sampling seed; the same seed gives the same queries.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Engine settings and sharding.
        #[command(flatten)]
        engine: EngineSettings,
        /// Load pattern and SLOs.
        #[command(flatten)]
        load: LoadFlags,
    },
    /// Shows a run's progress.
    Status {
        /// The run id.
        run: String,
        /// Keep watching with a progress bar until the run completes.
        #[arg(long)]
        watch: bool,
    },
    /// Lists runs, newest first.
    List {
        /// Only runs in this status (repeatable): pending, running, completed, failed, cancelled.
        #[arg(long = "status", value_parser = parse_status)]
        statuses: Vec<RunStatus>,
        /// Only runs of this workload (name or id).
        #[arg(long)]
        workload: Option<String>,
        /// Only runs of this model.
        #[arg(long)]
        model: Option<String>,
        /// Only runs of this sweep.
        #[arg(long)]
        sweep: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancels a run: no more leases; the leases held are released and their agents stop its
    /// queries at their next heartbeat. Results already committed stay.
    Cancel {
        /// The run id.
        run: String,
    },
}

/// A run status, by name.
fn parse_status(s: &str) -> Result<RunStatus, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// Runs one `ipw run` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: RunCmd) -> anyhow::Result<()> {
    match cmd {
        RunCmd::Create { workload, model, sample, seed, engine, load } => {
            let (slo_ttft_s, slo_tpot_s) = load.slo.unwrap_or_default();
            // One run per concurrency level, all on the same seeded sample.
            for &concurrency in &engine.concurrency {
                let request = CreateRunRequest {
                    workload: workload.clone(),
                    model: model.clone(),
                    sample,
                    seed,
                    concurrency,
                    shard_size: engine.shard_size,
                    repetitions: engine.repetitions,
                    params: Some(engine.params()),
                    load: load.pattern(seed),
                    slo_ttft_s,
                    slo_tpot_s,
                    repeat_until_cv: load.repeat_until_cv.unwrap_or(0.0),
                    max_repeats: load.max_repeats.unwrap_or(0),
                };
                let (sample, workload) = (request.sample, request.workload.clone());
                let call = admin.create_run(request);
                tokio::pin!(call);
                // A large run takes a while: say what is happening instead of hanging silently.
                let r = tokio::select! {
                    r = &mut call => r,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        eprintln!("drawing {sample} queries of \"{workload}\" and cutting them into shards...");
                        call.await
                    }
                };
                let r = r.map_err(refused(url))?.into_inner();
                let how = match load.rate {
                    Some(rate) => format!("{} arrivals at {rate}/s", load.arrival),
                    None => format!("concurrency {concurrency}"),
                };
                println!(
                    "run {}: {} queries of \"{}\" on {} in {} shards, {how}",
                    r.run_id, r.queries, r.workload, r.model, r.shards
                );
            }
        }
        RunCmd::Status { run, watch } => {
            if watch {
                watch_run(admin, url, &run).await?;
            }
            let st = admin.get_run_status(RunStatusRequest { run_id: run }).await.map_err(refused(url))?.into_inner();
            print!("{}", render_status(&st));
        }
        RunCmd::List { statuses, workload, model, sweep, limit } => {
            let request = ListRunsRequest {
                statuses: statuses.iter().map(|s| s.as_str().to_owned()).collect(),
                workload: workload.unwrap_or_default(),
                model: model.unwrap_or_default(),
                sweep_id: sweep.unwrap_or_default(),
                limit,
            };
            let runs = admin.list_runs(request).await.map_err(refused(url))?.into_inner().runs;
            print!("{}", render_runs(&runs));
        }
        RunCmd::Cancel { run } => {
            let c =
                admin.cancel_run(CancelRunRequest { run_id: run.clone() }).await.map_err(refused(url))?.into_inner();
            println!(
                "cancelled run {run} (it was {}); {} leases released: their agents stop at their next heartbeat",
                c.previous_status, c.leases_released
            );
            if let Some(st) = c.status {
                print!("{}", render_status(&st));
            }
        }
    }
    Ok(())
}

/// Polls the run, with a progress bar on a terminal (indicatif hides it otherwise).
async fn watch_run(admin: &mut Admin, url: &str, run: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} results · {msg} · ETA {eta}")
            .expect("valid template"),
    );
    let mut failed_in_a_row = 0;
    loop {
        let request = RunStatusRequest { run_id: run.to_owned() };
        let st = match admin.get_run_status(request).await {
            Ok(st) => st.into_inner(),
            // A coordinator restarting (or its database) does not end the watch.
            Err(s) if s.code() == tonic::Code::Unavailable && failed_in_a_row < 10 => {
                bar.set_message(format!("coordinator unavailable ({}); retrying", s.message()));
                tokio::time::sleep(ipw_proto::retry::backoff(failed_in_a_row)).await;
                failed_in_a_row += 1;
                continue;
            }
            Err(s) => return Err(refused(url)(s)),
        };
        failed_in_a_row = 0;
        bar.set_length(st.expected_results);
        bar.set_position(st.results);
        bar.set_message(format!("{} errors, {} shards leased", st.errors, st.shards_leased));
        if st.status.parse::<RunStatus>().is_ok_and(RunStatus::is_final) {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
