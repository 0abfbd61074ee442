//! `ipw`: the operator CLI. Every command is an admin call to the coordinator; the commands
//! live in `ipw_coordinator::cli`, one file per group.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipw_coordinator::cli::admin_tokens::AdminTokenCmd;
use ipw_coordinator::cli::agents::AgentsCmd;
use ipw_coordinator::cli::export::ExportFormat;
use ipw_coordinator::cli::prices::{PriceCmd, WeightsCmd};
use ipw_coordinator::cli::render::Format;
use ipw_coordinator::cli::reports::ScoreArgs;
use ipw_coordinator::cli::research::{PlotResearchArgs, RoutingArgs};
use ipw_coordinator::cli::runs::RunCmd;
use ipw_coordinator::cli::sweeps::SweepCmd;
use ipw_coordinator::cli::tokens::TokenCmd;
use ipw_coordinator::cli::workloads::WorkloadCmd;
use ipw_coordinator::cli::{
    self, admin_tokens, agents, export, prices, reports, research, runs, sweeps, tokens, workloads,
};
use ipw_coordinator::infra::{paths, tls};
use ipw_proto::tls::ClientTls;
use std::path::PathBuf;

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
    /// Join tokens for enrolling agents, and viewer tokens for the dashboard.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Named admin credentials for operators and their tools.
    #[command(subcommand)]
    AdminToken(AdminTokenCmd),
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
        format: Format,
        /// Use this scoring instead of each run's latest.
        #[arg(long, conflicts_with = "sources")]
        scoring: Option<String>,
        /// Instead: each session's power sources over one window (the steady one), their
        /// energy and ratios (the GPU's share of the node's), and the gpu <= node <= wall check.
        #[arg(long)]
        sources: bool,
    },
    /// Scores a run again, keeping earlier scorings; with a judge for open answers.
    Score(ScoreArgs),
    /// Sweeps: models x hardware classes x a seeded sample, optionally on a schedule.
    #[command(subcommand)]
    Sweep(SweepCmd),
    /// Writes SVG figures: IPW bars, accuracy vs energy with its Pareto frontier, energy vs
    /// output tokens, IPW over time, accuracy vs cost per query with its Pareto frontier; with
    /// --routing-fallback the routing curve (savings against router accuracy), with --weights
    /// weighted against unweighted IPW.
    Plot {
        /// Run ids (none: every run).
        runs: Vec<String>,
        /// Folder for the SVG files.
        #[arg(long, default_value = "ipw-plots")]
        out: PathBuf,
        /// Use this scoring instead of each run's latest.
        #[arg(long)]
        scoring: Option<String>,
        #[command(flatten)]
        research: PlotResearchArgs,
    },
    /// API prices per model and the electricity price: what cost per query is computed at.
    #[command(subcommand)]
    Price(PriceCmd),
    /// Task weights (category, weight) for weighted IPW.
    #[command(subcommand)]
    Weights(WeightsCmd),
    /// One row per model x hardware class x workload: accuracy with its CI, IPW, IPJ,
    /// J/query, tokens/J, $/query, $/correct answer, TTFT and latency.
    Leaderboard {
        /// Run ids (none: every completed run).
        runs: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Simulates a hybrid router over measured runs on the same queries: each query goes to
    /// the cheapest run that answered it correctly (by energy or cost), with probability
    /// --router-accuracy; prints each run's share and the savings against the fallback alone.
    Routing {
        #[command(flatten)]
        args: RoutingArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Accuracy and IPW per run, weighted by a weight set (see `ipw weights import`).
    Weighted {
        /// The weight set's name.
        weights: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The fleet as capacity: per hardware class, agents, power limit and best measured IPW.
    Capacity {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Writes every result of the runs, with its score and provenance, to a file: CSV, JSON
    /// lines or Parquet.
    Export {
        /// Run ids (at least one).
        #[arg(required = true)]
        runs: Vec<String>,
        /// File format.
        #[arg(long, value_enum, default_value = "parquet")]
        format: ExportFormat,
        /// The file to write; it appears only once complete.
        #[arg(long)]
        out: PathBuf,
        /// Use this scoring instead of each run's latest.
        #[arg(long)]
        scoring: Option<String>,
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
    let client_tls = if args.coordinator.starts_with("https://") {
        let path = args.ca_cert.clone().unwrap_or_else(|| tls::ca_file(&data_dir));
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
    let url = args.coordinator.as_str();
    let mut admin = cli::connect(url, client_tls.as_ref(), &token).await?;
    let admin = &mut admin;
    match args.command {
        Command::Token(cmd) => tokens::run(admin, url, cmd).await,
        Command::AdminToken(cmd) => admin_tokens::run(admin, url, cmd).await,
        Command::Agents(cmd) => agents::run(admin, url, cmd).await,
        Command::Workload(cmd) => workloads::run(admin, url, cmd).await,
        Command::Run(cmd) => runs::run(admin, url, cmd).await,
        Command::Sweep(cmd) => sweeps::run(admin, url, cmd).await,
        Command::Report { runs, format, sources: true, .. } => research::sources(admin, url, runs, format).await,
        Command::Report { runs, format, scoring, .. } => reports::report(admin, url, runs, scoring, format).await,
        Command::Score(score) => reports::score(admin, url, score).await,
        Command::Plot { runs, out, scoring, research } => {
            reports::plot(admin, url, runs, scoring, &out, &research).await.map(drop)
        }
        Command::Price(cmd) => prices::run(admin, url, cmd).await,
        Command::Weights(cmd) => prices::weights(admin, url, cmd).await,
        Command::Leaderboard { runs, format } => research::leaderboard(admin, url, runs, format).await,
        Command::Routing { args, format } => research::routing(admin, url, args, format).await,
        Command::Weighted { weights, format } => research::weighted(admin, url, weights, format).await,
        Command::Capacity { format } => research::capacity(admin, url, format).await,
        Command::Export { runs, format, out, scoring } => {
            let rows = export::export(admin, url, runs, scoring, format, &out).await?;
            println!("wrote {rows} results to {}", out.display());
            Ok(())
        }
    }
}
