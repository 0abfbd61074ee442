//! `ipw sweep`: models x hardware classes x a seeded sample, optionally on a schedule.

use super::render::table::{render_sweep, render_table, when};
use super::runs::{EngineSettings, LoadFlags};
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::kinds::{MissedPolicy, SweepStatus};
use ipw_proto::v1::{ListSweepsRequest, SweepInfo, SweepRequest, SweepSpec, SweepStatusRequest};

/// `ipw sweep ...`
#[derive(Subcommand, Debug)]
pub enum SweepCmd {
    /// Defines a sweep; without --cron it starts at once.
    Create(Box<CreateSweep>),
    /// Lists sweep instances and schedules.
    List,
    /// Shows each run's progress and ETA.
    Show {
        /// The sweep instance id.
        sweep: String,
    },
    /// Stops handing out the sweep's shards.
    Pause {
        /// The sweep instance id.
        sweep: String,
    },
    /// Hands out the sweep's shards again.
    Resume {
        /// The sweep instance id.
        sweep: String,
    },
    /// Cancels the sweep's runs.
    Cancel {
        /// The sweep instance id.
        sweep: String,
    },
}

/// `ipw sweep create`'s settings.
#[derive(clap::Args, Debug)]
pub struct CreateSweep {
    /// A unique name.
    #[arg(long)]
    name: String,
    /// Workload name or id.
    #[arg(long)]
    workload: String,
    /// Models, as the engines serve them (repeatable or comma-separated).
    #[arg(long = "model", required = true, value_delimiter = ',')]
    models: Vec<String>,
    /// Queries in the sample.
    #[arg(long)]
    sample: u32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Sample each category in proportion to its share of the workload.
    #[arg(long)]
    stratify: bool,
    /// Only agents with this label, key=value (repeatable).
    #[arg(long = "label", value_parser = ipw_proto::parse_label)]
    labels: Vec<(String, String)>,
    /// Only hardware classes containing this text, e.g. H100.
    #[arg(long, default_value = "")]
    accelerator: String,
    #[command(flatten)]
    engine: EngineSettings,
    #[command(flatten)]
    load: LoadFlags,
    /// Unmeasured warm-up queries at the start of each shard.
    #[arg(long, default_value_t = 0)]
    warmup: u32,
    /// Memory the models need, in GiB; smaller agents are not given them.
    #[arg(long, default_value_t = 0.0)]
    memory_gib: f64,
    /// Cron expression for a recurring sweep, e.g. "0 3 * * *".
    #[arg(long, default_value = "")]
    cron: String,
    /// IANA time zone of the cron expression.
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// What to do with missed firings.
    #[arg(long, value_enum, default_value = "skip")]
    missed: MissedPolicy,
}

impl CreateSweep {
    /// The sweep definition these flags describe.
    fn into_spec(self) -> SweepSpec {
        let (slo_ttft_s, slo_tpot_s) = self.load.slo.unwrap_or_default();
        SweepSpec {
            name: self.name,
            workload: self.workload,
            models: self.models,
            sample: self.sample,
            seed: self.seed,
            stratify: self.stratify,
            labels: self.labels.into_iter().collect(),
            accelerator: self.accelerator,
            concurrency: self.engine.concurrency.clone(),
            shard_size: self.engine.shard_size,
            repetitions: self.engine.repetitions,
            warmup: self.warmup,
            params: Some(self.engine.params()),
            model_memory_bytes: (self.memory_gib * (1u64 << 30) as f64) as u64,
            timezone: if self.cron.is_empty() { String::new() } else { self.timezone },
            cron: self.cron,
            missed_policy: self.missed.as_str().to_owned(),
            load: self.load.pattern(self.seed),
            slo_ttft_s,
            slo_tpot_s,
            repeat_until_cv: self.load.repeat_until_cv.unwrap_or(0.0),
            max_repeats: self.load.max_repeats.unwrap_or(0),
        }
    }
}

/// Runs one `ipw sweep` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: SweepCmd) -> anyhow::Result<()> {
    let set = |sweep_id: String, to: SweepStatus| SweepStatusRequest { sweep_id, status: to.as_str().into() };
    let info = match cmd {
        SweepCmd::Create(c) => admin.create_sweep(c.into_spec()).await,
        SweepCmd::List => {
            let sweeps = admin.list_sweeps(ListSweepsRequest {}).await.map_err(refused(url))?.into_inner().sweeps;
            print!("{}", list(sweeps));
            return Ok(());
        }
        SweepCmd::Show { sweep } => admin.get_sweep(SweepRequest { sweep_id: sweep }).await,
        SweepCmd::Pause { sweep } => admin.set_sweep_status(set(sweep, SweepStatus::Paused)).await,
        SweepCmd::Resume { sweep } => admin.set_sweep_status(set(sweep, SweepStatus::Active)).await,
        SweepCmd::Cancel { sweep } => admin.set_sweep_status(set(sweep, SweepStatus::Cancelled)).await,
    };
    let info = info.map_err(refused(url))?.into_inner();
    print!("{}", render_sweep(&info));
    Ok(())
}

/// One line per sweep: its state, progress and schedule.
fn list(sweeps: Vec<SweepInfo>) -> String {
    let rows = sweeps.into_iter().map(|s| {
        let done: u64 = s.runs.iter().map(|r| r.results).sum();
        let total: u64 = s.runs.iter().map(|r| r.expected_results).sum();
        let schedule = if s.cron.is_empty() {
            String::new()
        } else {
            format!("{} ({}), next {}", s.cron, s.timezone, when(s.next_fire_unix_us))
        };
        vec![
            if s.sweep_id.is_empty() { "-".into() } else { s.sweep_id },
            s.name,
            s.status,
            format!("{} runs, {done}/{total} results", s.runs.len()),
            schedule,
        ]
    });
    render_table(&["SWEEP", "NAME", "STATUS", "PROGRESS", "SCHEDULE"], rows)
}
