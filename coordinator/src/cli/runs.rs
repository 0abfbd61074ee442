//! `ipw run`: creating runs and following their progress.

use super::render::table::render_status;
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::kinds::RunStatus;
use ipw_proto::v1::{CreateRunRequest, GenerationParams, RunStatusRequest};
use std::time::Duration;

/// Engine settings and sharding, shared by `ipw run create` and `ipw sweep create`.
#[derive(clap::Args, Debug)]
pub struct EngineSettings {
    /// Queries in flight at once on an agent.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
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
    },
    /// Shows a run's progress.
    Status {
        /// The run id.
        run: String,
        /// Keep watching with a progress bar until the run completes.
        #[arg(long)]
        watch: bool,
    },
}

/// Runs one `ipw run` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: RunCmd) -> anyhow::Result<()> {
    match cmd {
        RunCmd::Create { workload, model, sample, seed, engine } => {
            let request = CreateRunRequest {
                workload,
                model,
                sample,
                seed,
                concurrency: engine.concurrency,
                shard_size: engine.shard_size,
                repetitions: engine.repetitions,
                params: Some(engine.params()),
            };
            let r = admin.create_run(request).await.map_err(refused(url))?.into_inner();
            println!(
                "run {}: {} queries of \"{}\" on {} in {} shards",
                r.run_id, r.queries, r.workload, r.model, r.shards
            );
        }
        RunCmd::Status { run, watch } => {
            if watch {
                watch_run(admin, url, &run).await?;
            }
            let st = admin.get_run_status(RunStatusRequest { run_id: run }).await.map_err(refused(url))?.into_inner();
            print!("{}", render_status(&st));
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
