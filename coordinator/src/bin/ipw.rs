//! `ipw`: the operator CLI. Every command is an admin call to the coordinator.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipw_coordinator::cli::{self, Admin};
use ipw_coordinator::paths;
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::{
    ApproveAgentRequest, CreateRunRequest, CreateTokenRequest, GenerationParams, ListAgentsRequest, ListSweepsRequest,
    ListTokensRequest, ListWorkloadsRequest, ReportRequest, RevokeRequest, RunStatusRequest, ScoreRunRequest,
    SweepRequest, SweepSpec, SweepStatusRequest,
};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Operate an ipw-fleet: enroll agents, import workloads, run and report.")]
struct Args {
    /// The coordinator's address: https://..., or http://... for one started with --insecure.
    #[arg(long, env = "IPW_COORDINATOR", default_value = "https://127.0.0.1:7443", global = true)]
    coordinator: String,
    /// The coordinator's CA certificate (PEM). Default: DATA_DIR/tls/ca.pem.
    #[arg(long, env = "IPW_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// The admin token. Default: read from the coordinator's DATA_DIR/admin-token.
    #[arg(long, env = "IPW_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// The coordinator's data directory, where its admin token is kept.
    #[arg(long, env = "IPW_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join tokens for enrolling agents.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Enrolled agents.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Query workloads.
    #[command(subcommand)]
    Workload(WorkloadCmd),
    /// Runs: one model over a seeded sample of a workload.
    #[command(subcommand)]
    Run(RunCmd),
    /// Accuracy, latency, energy and IPW of a run.
    Report {
        /// Run ids (none: every run).
        runs: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: cli::Format,
        /// Use this scoring instead of each run's latest.
        #[arg(long)]
        scoring: Option<String>,
    },
    /// Scores a run again, keeping earlier scorings; with a judge for open answers.
    Score {
        /// The run id.
        run: String,
        /// An OpenAI-compatible endpoint to use as the judge.
        #[arg(long)]
        judge_url: Option<String>,
        /// The judge's model name.
        #[arg(long)]
        judge_model: Option<String>,
        /// strict: both answer orders must agree; lenient: either.
        #[arg(long, default_value = "strict")]
        strictness: String,
        /// Judge calls in flight at once.
        #[arg(long, default_value_t = 4)]
        judge_concurrency: u32,
        /// Judge every query, not only those whose scorer is `judge`.
        #[arg(long)]
        judge_all: bool,
    },
    /// Sweeps: models x hardware classes x a seeded sample, optionally on a schedule.
    #[command(subcommand)]
    Sweep(SweepCmd),
    /// Writes SVG figures: IPW bars, accuracy vs energy with its Pareto frontier, energy vs
    /// output tokens, IPW over time.
    Plot {
        /// Run ids (none: every run).
        runs: Vec<String>,
        /// Folder for the SVG files.
        #[arg(long, default_value = "ipw-plots")]
        out: PathBuf,
        /// Use this scoring instead of each run's latest.
        #[arg(long)]
        scoring: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SweepCmd {
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

impl CreateSweep {
    /// The sweep definition these flags describe.
    fn into_spec(self) -> SweepSpec {
        SweepSpec {
            name: self.name,
            workload: self.workload,
            models: self.models,
            sample: self.sample,
            seed: self.seed,
            stratify: self.stratify,
            labels: self.labels.into_iter().collect(),
            accelerator: self.accelerator,
            concurrency: self.engine.concurrency,
            shard_size: self.engine.shard_size,
            repetitions: self.engine.repetitions,
            warmup: self.warmup,
            params: Some(self.engine.params()),
            model_memory_bytes: (self.memory_gib * (1u64 << 30) as f64) as u64,
            timezone: if self.cron.is_empty() { String::new() } else { self.timezone },
            cron: self.cron,
            missed_policy: self.missed,
        }
    }
}

/// Engine settings and sharding, shared by `ipw run create` and `ipw sweep create`.
#[derive(clap::Args, Debug)]
struct EngineSettings {
    /// Queries in flight at once on an agent.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Queries per shard (the unit of leasing).
    #[arg(long, default_value_t = 50)]
    shard_size: u32,
    /// Times each query is run.
    #[arg(long, default_value_t = 1)]
    repetitions: u32,
    /// Completion token budget per query.
    #[arg(long, default_value_t = 1024)]
    max_tokens: u32,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
}

impl EngineSettings {
    fn params(&self) -> GenerationParams {
        GenerationParams { max_tokens: self.max_tokens, temperature: self.temperature, top_p: self.top_p }
    }
}

/// `ipw sweep create`'s settings.
#[derive(clap::Args, Debug)]
struct CreateSweep {
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
    /// What to do with missed firings: skip, or catch-up-once.
    #[arg(long, default_value = "skip")]
    missed: String,
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Creates a join token; it is shown once.
    Create {
        /// How long the token stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many agents may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Agents joining with this token are approved at once.
        #[arg(long)]
        auto_approve: bool,
        /// A note for other operators.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists join tokens (never the tokens themselves) with their uses and state.
    List,
    /// Revokes a join token: no one more joins with it. Agents it enrolled keep working.
    Revoke {
        /// The token id (from `ipw token list`).
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum AgentsCmd {
    /// Lists agents with their status and hardware class.
    List,
    /// Approves a pending agent, by id or unique name.
    Approve {
        /// Agent id or name.
        id: String,
    },
    /// Revokes an agent: every call it makes is refused from now on and its leases go back
    /// to the queue. Its committed results are kept.
    Revoke {
        /// Agent id or name.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum WorkloadCmd {
    /// Imports a JSONL file (MMLU-Pro, or generic {id, prompt, answer}); all or nothing.
    Import {
        /// The JSONL file.
        file: PathBuf,
        /// Name to refer to the workload by.
        #[arg(long)]
        name: String,
    },
    /// Lists imported workloads.
    List,
}

#[derive(Subcommand, Debug)]
enum RunCmd {
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(paths::default_data_dir);
    let tls = if args.coordinator.starts_with("https://") {
        let path = args.ca_cert.clone().unwrap_or_else(|| ipw_coordinator::tls::ca_file(&data_dir));
        let ca_pem = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the coordinator's CA certificate {}; pass --ca-cert, or use http:// for a coordinator \
                 started with --insecure",
                path.display()
            )
        })?;
        Some(ClientTls { ca_pem, identity: None })
    } else {
        None
    };
    let token = match args.admin_token {
        Some(t) => t,
        None => {
            let path = paths::admin_token_file(&data_dir);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no --admin-token given and {} is unreadable; pass --admin-token or IPW_ADMIN_TOKEN",
                    path.display()
                )
            })?
        }
    };
    let mut admin = cli::connect(&args.coordinator, tls.as_ref(), &token).await?;
    let url = args.coordinator.clone();
    let status = |s: tonic::Status| anyhow::anyhow!("{}", ipw_proto::tls::explain(&url, s.message()));
    match args.command {
        Command::Token(TokenCmd::Create { ttl, uses, auto_approve, description }) => {
            let t = admin
                .create_token(CreateTokenRequest {
                    ttl_seconds: ttl.as_secs().max(1),
                    max_uses: uses,
                    auto_approve,
                    description,
                })
                .await
                .map_err(status)?
                .into_inner();
            let expires = chrono::DateTime::from_timestamp_micros(t.expires_unix_us).unwrap_or_default();
            println!("token {}", t.token);
            println!(
                "expires {} · {} use(s){}",
                expires.to_rfc3339(),
                t.max_uses,
                if t.auto_approve { " · auto-approve" } else { "" }
            );
            let trust = if t.ca_cert_hash.is_empty() {
                "--insecure".to_owned()
            } else {
                format!("--ca-cert-hash {}", t.ca_cert_hash)
            };
            println!("join with:  ipw-agent join {} --token {} {trust}", t.join_url, t.token);
        }
        Command::Token(TokenCmd::List) => {
            let tokens = admin.list_tokens(ListTokensRequest {}).await.map_err(status)?.into_inner().tokens;
            let now = chrono::Utc::now().timestamp_micros();
            let rows = tokens.into_iter().map(|t| {
                let state = if t.revoked_unix_us > 0 {
                    format!("revoked ({})", t.revoked_reason)
                } else if t.expires_unix_us <= now {
                    "expired".into()
                } else if t.uses >= t.max_uses {
                    "used up".into()
                } else {
                    format!("valid until {}", cli::when(t.expires_unix_us))
                };
                vec![t.token_id, format!("{}/{}", t.uses, t.max_uses), state, t.description]
            });
            print!("{}", cli::render_table(&["ID", "USES", "STATE", "DESCRIPTION"], rows));
        }
        Command::Token(TokenCmd::Revoke { id, reason }) => {
            let t = admin.revoke_token(RevokeRequest { id, reason }).await.map_err(status)?.into_inner();
            println!(
                "revoked join token {} ({}); it was used {} of {} times",
                t.token_id, t.revoked_reason, t.uses, t.max_uses
            );
        }
        Command::Agents(AgentsCmd::Revoke { id, reason }) => {
            let a = admin.revoke_agent(RevokeRequest { id, reason }).await.map_err(status)?.into_inner();
            println!("revoked {} ({}): its calls are refused from now on", a.name, a.id);
        }
        Command::Agents(AgentsCmd::List) => {
            let agents = admin.list_agents(ListAgentsRequest {}).await.map_err(status)?.into_inner().agents;
            let rows = agents.into_iter().map(|a| vec![a.id, a.name, a.status, a.hardware_class]);
            print!("{}", cli::render_table(&["ID", "NAME", "STATUS", "HARDWARE CLASS"], rows));
        }
        Command::Agents(AgentsCmd::Approve { id }) => {
            let a = admin.approve_agent(ApproveAgentRequest { agent_id: id }).await.map_err(status)?.into_inner();
            println!("approved {} ({})", a.name, a.id);
        }
        Command::Workload(WorkloadCmd::Import { file, name }) => {
            let w = cli::import_workload(&mut admin, &file, &name).await?;
            println!("imported {} {} queries as workload \"{}\" ({})", w.queries, w.format, w.name, w.workload_id);
        }
        Command::Workload(WorkloadCmd::List) => {
            let ws = admin.list_workloads(ListWorkloadsRequest {}).await.map_err(status)?.into_inner().workloads;
            let rows = ws.into_iter().map(|w| vec![w.workload_id, w.name, w.format, w.queries.to_string()]);
            print!("{}", cli::render_table(&["ID", "NAME", "FORMAT", "QUERIES"], rows));
        }
        Command::Run(RunCmd::Create { workload, model, sample, seed, engine }) => {
            let r = admin
                .create_run(CreateRunRequest {
                    workload,
                    model,
                    sample,
                    seed,
                    concurrency: engine.concurrency,
                    shard_size: engine.shard_size,
                    repetitions: engine.repetitions,
                    params: Some(engine.params()),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "run {}: {} queries of \"{}\" on {} in {} shards",
                r.run_id, r.queries, r.workload, r.model, r.shards
            );
        }
        Command::Run(RunCmd::Status { run, watch }) => {
            if watch {
                watch_run(&mut admin, &run).await?;
            }
            let st = admin.get_run_status(RunStatusRequest { run_id: run }).await.map_err(status)?.into_inner();
            print!("{}", cli::render_status(&st));
        }
        Command::Sweep(cmd) => sweep(&mut admin, cmd).await?,
        Command::Report { runs, format, scoring } => {
            let request = ReportRequest { run_ids: runs, scoring_id: scoring.unwrap_or_default(), with_points: false };
            let report = admin.get_report(request).await.map_err(status)?.into_inner();
            print!("{}", cli::render_report(&report, format));
        }
        Command::Score { run, judge_url, judge_model, strictness, judge_concurrency, judge_all } => {
            let r = admin
                .score_run(ScoreRunRequest {
                    run_id: run,
                    judge_url: judge_url.unwrap_or_default(),
                    judge_model: judge_model.unwrap_or_default(),
                    strictness,
                    judge_concurrency,
                    judge_all,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "scoring {}: {} scored, {} correct, {} failed (left unscored)",
                r.scoring_id, r.scored, r.correct, r.failed
            );
            if !r.judge_version.is_empty() {
                println!("judge: {}", r.judge_version);
            }
            for f in &r.failures {
                println!("  {f}");
            }
        }
        Command::Plot { runs, out, scoring } => {
            let request = ReportRequest { run_ids: runs, scoring_id: scoring.unwrap_or_default(), with_points: true };
            let report = admin.get_report(request).await.map_err(status)?.into_inner();
            for f in ipw_coordinator::plot::write_all(&report, &out).map_err(|e| anyhow::anyhow!(e))? {
                println!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}

/// Polls the run, with a progress bar on a terminal (indicatif hides it otherwise).
async fn watch_run(admin: &mut Admin, run: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} results · {msg} · ETA {eta}")
            .expect("valid template"),
    );
    loop {
        let st = admin
            .get_run_status(RunStatusRequest { run_id: run.to_owned() })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        bar.set_length(st.expected_results);
        bar.set_position(st.results);
        bar.set_message(format!("{} errors, {} shards leased", st.errors, st.shards_leased));
        if matches!(st.status.as_str(), "completed" | "failed" | "cancelled") {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn sweep(admin: &mut Admin, cmd: SweepCmd) -> anyhow::Result<()> {
    let status = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let set = |sweep_id: String, to: &str| SweepStatusRequest { sweep_id, status: to.into() };
    let info = match cmd {
        SweepCmd::Create(c) => admin.create_sweep(c.into_spec()).await.map_err(status)?.into_inner(),
        SweepCmd::List => {
            let sweeps = admin.list_sweeps(ListSweepsRequest {}).await.map_err(status)?.into_inner().sweeps;
            let rows = sweeps.into_iter().map(|s| {
                let done: u64 = s.runs.iter().map(|r| r.results).sum();
                let total: u64 = s.runs.iter().map(|r| r.expected_results).sum();
                let schedule = if s.cron.is_empty() {
                    String::new()
                } else {
                    format!("{} ({}), next {}", s.cron, s.timezone, cli::when(s.next_fire_unix_us))
                };
                vec![
                    if s.sweep_id.is_empty() { "-".into() } else { s.sweep_id },
                    s.name,
                    s.status,
                    format!("{} runs, {done}/{total} results", s.runs.len()),
                    schedule,
                ]
            });
            print!("{}", cli::render_table(&["SWEEP", "NAME", "STATUS", "PROGRESS", "SCHEDULE"], rows));
            return Ok(());
        }
        SweepCmd::Show { sweep } => {
            admin.get_sweep(SweepRequest { sweep_id: sweep }).await.map_err(status)?.into_inner()
        }
        SweepCmd::Pause { sweep } => admin.set_sweep_status(set(sweep, "paused")).await.map_err(status)?.into_inner(),
        SweepCmd::Resume { sweep } => admin.set_sweep_status(set(sweep, "active")).await.map_err(status)?.into_inner(),
        SweepCmd::Cancel { sweep } => {
            admin.set_sweep_status(set(sweep, "cancelled")).await.map_err(status)?.into_inner()
        }
    };
    print!("{}", cli::render_sweep(&info));
    Ok(())
}
