//! `ipw-agent`: join a fleet, run its work, probe this machine.

use clap::{Parser, Subcommand};
use ipw_agent::config::{self, AgentConfig};
use ipw_agent::runner::{self, RunOptions};
use ipw_agent::spool::Spool;
use ipw_agent::{hardware, join, power};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The ipw-fleet agent: runs leased queries on a local engine and uploads measured results."
)]
struct Args {
    /// Where the agent's identity is kept (written by `join`, mode 0600).
    #[arg(long, env = "IPW_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrolls this machine with a coordinator using a join token.
    Join {
        /// The coordinator, e.g. http://coord:7443.
        url: String,
        /// The join token from `ipw token create`.
        #[arg(long, env = "IPW_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Name shown to operators (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// A label, key=value; repeatable.
        #[arg(long = "label", value_parser = join::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Leases shards and runs them, until stopped.
    Run {
        /// The OpenAI-compatible engine serving the run's model.
        #[arg(long, env = "IPW_ENGINE_URL", default_value = "http://127.0.0.1:8080")]
        engine_url: String,
        /// Durable results waiting for the coordinator's acknowledgement.
        #[arg(long, env = "IPW_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
        /// Exit when the coordinator has no work, instead of waiting for more.
        #[arg(long)]
        exit_when_idle: bool,
        /// Wait between lease attempts when idle.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Per-request timeout.
        #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
        request_timeout: Duration,
    },
    /// Prints the detected hardware and power sources.
    Probe,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config_path = args.config.unwrap_or_else(config::default_config_path);
    match args.command {
        Command::Join {
            url,
            token,
            name,
            labels,
        } => {
            let name = name
                .unwrap_or_else(|| sysinfo::System::host_name().unwrap_or_else(|_| "agent".into()));
            let cfg = join::join(&url, &token, &name, labels.into_iter().collect()).await?;
            cfg.save(&config_path)?;
            println!(
                "joined {url} as {} ({}), hardware class {}",
                cfg.name, cfg.agent_id, cfg.hardware_class
            );
            println!("credential stored in {} (mode 0600)", config_path.display());
            println!(
                "an operator may need to approve it: ipw agents approve {}",
                cfg.agent_id
            );
        }
        Command::Run {
            engine_url,
            spool_dir,
            exit_when_idle,
            poll_interval,
            request_timeout,
        } => {
            let cfg = AgentConfig::load(&config_path)?;
            let spool = Spool::open(&spool_dir.unwrap_or_else(config::default_spool_dir))?;
            let opts = RunOptions {
                engine_url,
                exit_when_idle,
                poll_interval,
                request_timeout,
                ..RunOptions::default()
            };
            let s = runner::run(&cfg, &spool, &opts).await?;
            println!(
                "{} shards completed, {} results committed, {} duplicates ignored",
                s.shards, s.committed, s.duplicates
            );
        }
        Command::Probe => {
            let hw = hardware::probe();
            println!("host      {}", hw.hostname);
            println!("os        {} (kernel {})", hw.os, hw.kernel);
            println!(
                "cpu       {} ({} logical cores)",
                hw.cpu_model, hw.cpu_cores
            );
            println!(
                "memory    {:.1} GiB",
                hw.memory_bytes as f64 / (1u64 << 30) as f64
            );
            match hardware::nvidia_gpus() {
                Ok(gpus) if !gpus.is_empty() => {
                    for g in gpus {
                        println!(
                            "gpu {}     {} {} ({:.0} GiB, driver {})",
                            g.index,
                            g.vendor,
                            g.model,
                            g.memory_bytes as f64 / (1u64 << 30) as f64,
                            g.driver_version
                        );
                    }
                }
                Ok(_) => println!("gpus      none (NVML reports no devices)"),
                Err(reason) => println!("gpus      none ({reason})"),
            }
            let d = power::discover();
            println!("power sources found:");
            if d.sources.is_empty() {
                println!("  (none)");
            }
            for s in &d.sources {
                println!("  {} ({})", s.kind(), s.scope());
            }
            println!("power sources not usable:");
            for u in &d.unavailable {
                println!("  {}: {}", u.kind, u.reason);
            }
        }
    }
    Ok(())
}
