//! `ipw-agent`: join a fleet, run its work, probe this machine.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipw_agent::attribution::Rule;
use ipw_agent::config::{self, AgentConfig};
use ipw_agent::engine::{DEFAULT_RATE_LIMIT_RETRIES, EngineAccess};
use ipw_agent::health::AgentProbes;
use ipw_agent::managed::ManagedOptions;
use ipw_agent::meter::PowerOptions;
use ipw_agent::power::meter_spec::MeterSpec;
use ipw_agent::power::{self, DiscoveryOptions, IpwScope};
use ipw_agent::runner::RunOptions;
use ipw_agent::sampler::Sampler;
use ipw_agent::spool::Spool;
use ipw_agent::{hardware, join, rotation};
use ipw_ops::telemetry::{ServiceIdentity, TelemetryArgs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "The ipw-fleet agent: runs leased queries on a local engine and uploads measured results.")]
struct Args {
    /// Where the agent's identity is kept (written by `join`, mode 0600).
    #[arg(long, env = "IPW_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrolls this machine with a coordinator using a join token.
    Join {
        /// The coordinator, e.g. https://coord:7443.
        url: String,
        /// The join token from `ipw token create`. Prefer --token-file or IPW_JOIN_TOKEN: a
        /// command line is visible to every user of the machine.
        #[arg(long, env = "IPW_JOIN_TOKEN", hide_env_values = true, required_unless_present = "token_file")]
        token: Option<String>,
        /// A file holding the join token (its first line).
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The fingerprint of the coordinator's CA (sha256:<hex>), as `ipw token create` prints
        /// it. Only a coordinator whose certificate that CA signed is trusted.
        #[arg(long, required_unless_present = "insecure")]
        ca_cert_hash: Option<String>,
        /// Join a coordinator serving plain text (started with --insecure).
        #[arg(long, conflicts_with = "ca_cert_hash")]
        insecure: bool,
        /// Name shown to operators (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// A label, key=value; repeatable.
        #[arg(long = "label", value_parser = ipw_proto::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Replaces this agent's credential (and client certificate) with new ones; the old ones
    /// keep working until the new credential is first used.
    Rotate,
    /// Leases shards and runs them, until stopped.
    Run(Box<RunArgs>),
    /// Prints the detected hardware, and each power source with a reading.
    Probe {
        /// How long to read each source.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        seconds: Duration,
        #[command(flatten)]
        power: PowerArgs,
    },
    /// Installs, removes or prints the systemd unit (Linux) or launchd plist (macOS) that runs
    /// `ipw-agent run` as a service, with this machine's paths and user.
    Service {
        #[command(subcommand)]
        action: ipw_agent::service::ServiceAction,
    },
}

/// `ipw-agent run`'s settings.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The coordinator, when it has moved since `join` (default: the joined one).
    #[arg(long, env = "IPW_COORDINATOR")]
    coordinator: Option<String>,
    /// `url`: use the engine at --engine-url. `managed`: run llama-server for each lease's
    /// model from --model-dir.
    #[arg(long, value_parser = ["url", "managed"], default_value = "url")]
    engine: String,
    #[command(flatten)]
    managed: ManagedArgs,
    /// The OpenAI-compatible engine serving the run's model.
    #[arg(long, env = "IPW_ENGINE_URL", default_value = "http://127.0.0.1:8080")]
    engine_url: String,
    #[command(flatten)]
    access: AccessArgs,
    /// Durable results waiting for the coordinator's acknowledgement.
    #[arg(long, env = "IPW_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Take no new work while the spool's file system has less than this many MiB free
    /// (results already measured are kept, in memory if need be, and uploaded).
    #[arg(long, env = "IPW_SPOOL_MIN_FREE_MIB", default_value_t = 100)]
    spool_min_free_mib: u64,
    /// Exit when the coordinator has no work, instead of waiting for more.
    #[arg(long)]
    exit_when_idle: bool,
    /// Wait between lease attempts when idle.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// How often to tell the coordinator this agent is alive; each heartbeat renews its leases,
    /// so keep it well under the coordinator's --lease-ttl.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// How long to keep retrying while the coordinator is unreachable, before giving up.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    retry_for: Duration,
    /// With --exit-when-idle, how long to wait for an engine that is not answering before
    /// giving up (without it, the agent waits for its engine for ever).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    engine_wait: Duration,
    /// On SIGTERM or SIGINT, how long the queries in flight may take to finish before they are
    /// abandoned; then the leases are given back and the agent exits.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Another name the engine's model answers to (repeatable), e.g. the name runs use
    /// for a model an engine serves under another id.
    #[arg(long = "model-alias")]
    model_aliases: Vec<String>,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this address (e.g.
    /// 127.0.0.1:9465). Without it, they are not served.
    #[arg(long, env = "IPW_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// How the engine is reached: a remote endpoint, its key, its rate limits.
#[derive(clap::Args, Debug)]
struct AccessArgs {
    /// The engine at --engine-url is a remote OpenAI-compatible endpoint (a cloud API, say),
    /// run as a comparator: no local power is read for it, every query's energy is NULL
    /// ("remote endpoint: energy is not observable from the client"), and the run records that
    /// its engine was remote. Never guessed from the URL.
    #[arg(long)]
    engine_remote: bool,
    /// A file whose first line is the engine's API key, sent as `Authorization: Bearer`
    /// (remote or local). Or set IPW_ENGINE_KEY; a key is never taken on the command line.
    #[arg(long)]
    engine_key_file: Option<PathBuf>,
    /// How many rate-limited (429) answers one request waits out, each for its Retry-After
    /// (at most 60 s) or a backoff, before the query is recorded as an error.
    #[arg(long, default_value_t = DEFAULT_RATE_LIMIT_RETRIES)]
    engine_retries: u32,
}

/// The variable an engine's API key may come in, instead of --engine-key-file.
const ENGINE_KEY_VAR: &str = "IPW_ENGINE_KEY";

impl AccessArgs {
    /// The engine access these flags and `env_key` (IPW_ENGINE_KEY's value) give. A key file
    /// that cannot be read or is empty, or a key given both ways, is an error that says so.
    fn access(&self, env_key: Option<String>) -> anyhow::Result<EngineAccess> {
        let key =
            match (&self.engine_key_file, env_key.filter(|k| !k.trim().is_empty())) {
                (Some(_), Some(_)) => {
                    anyhow::bail!(
                        "the engine's API key is given twice: use --engine-key-file or {ENGINE_KEY_VAR}, not both"
                    )
                }
                (Some(path), None) => Some(ipw_proto::openai::ApiKey::read(path).with_context(|| {
                    format!("--engine-key-file {}: cannot read the engine's API key", path.display())
                })?),
                (None, Some(k)) => ipw_proto::openai::ApiKey::new(&k),
                (None, None) => None,
            };
        Ok(EngineAccess { remote: self.engine_remote, key, rate_limit_retries: self.engine_retries })
    }
}

/// How energy is measured while running: the idle baseline, attribution, and the sources.
#[derive(clap::Args, Debug)]
struct MeasureArgs {
    /// Idle power measurement on the warm engine, once per run session (0s to skip).
    #[arg(long, env = "IPW_IDLE", default_value = "10s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Measure idle power again after this long (pausing new requests), and whenever the
    /// model or engine changes.
    #[arg(long, env = "IPW_IDLE_EVERY", default_value = "30m", value_parser = humantime::parse_duration)]
    idle_every: Duration,
    /// How concurrent queries share an interval's energy: time-share or token-share.
    #[arg(long, value_enum, default_value = "time-share")]
    attribution: Rule,
    #[command(flatten)]
    power: PowerArgs,
}

impl MeasureArgs {
    fn options(&self) -> PowerOptions {
        PowerOptions {
            hz: self.power.power_hz,
            idle: self.idle,
            idle_every: self.idle_every,
            rule: self.attribution,
            discovery: self.power.discovery(),
            ipw_scope: self.power.ipw_scope,
        }
    }
}

/// Managed engine mode: the agent runs llama-server itself.
#[derive(clap::Args, Debug)]
struct ManagedArgs {
    /// Directory of .gguf models (managed mode).
    #[arg(long, env = "IPW_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// The llama-server binary (managed mode).
    #[arg(long, env = "IPW_LLAMA_SERVER")]
    llama_server: Option<PathBuf>,
    /// Port for the managed server.
    #[arg(long, default_value_t = 8090)]
    engine_port: u16,
    /// CPU threads for the managed server.
    #[arg(long, default_value_t = 4)]
    engine_threads: usize,
    /// Parallel slots for the managed server.
    #[arg(long, default_value_t = 4)]
    engine_parallel: usize,
    /// Extra argument for the managed server (repeatable), e.g. --engine-arg=-ngl --engine-arg=99.
    #[arg(long = "engine-arg", allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

impl ManagedArgs {
    fn options(&self, gpus: Option<String>) -> anyhow::Result<ManagedOptions> {
        let need =
            |v: &Option<PathBuf>, flag: &str| v.clone().ok_or_else(|| anyhow::anyhow!("--engine managed needs {flag}"));
        Ok(ManagedOptions {
            model_dir: need(&self.model_dir, "--model-dir")?,
            server: need(&self.llama_server, "--llama-server")?,
            port: self.engine_port,
            threads: self.engine_threads,
            parallel: self.engine_parallel,
            extra_args: self.engine_args.clone(),
            gpus,
        })
    }
}

/// Where power is read from, and how often.
#[derive(clap::Args, Debug)]
struct PowerArgs {
    /// Power samples per second.
    #[arg(long, env = "IPW_POWER_HZ", default_value_t = ipw_agent::sampler::DEFAULT_HZ)]
    power_hz: f64,
    /// GPUs that serve the model, the only ones measured: NVIDIA indices or UUIDs, AMD and
    /// Intel cards as cardN or their position, comma-separated (default:
    /// CUDA_VISIBLE_DEVICES, else all). The managed engine is given the same.
    #[arg(long, env = "IPW_GPUS")]
    gpus: Option<String>,
    /// Which sources IPW energy sums: chips (GPUs, CPU packages, DRAM, SoC), gpu, node (a
    /// BMC or exporter) or wall (a plug). The others are recorded beside it and cross-checked.
    #[arg(long, env = "IPW_SCOPE", value_enum, default_value = "chips")]
    ipw_scope: IpwScope,
    /// A meter to read (repeatable): shelly:URL, tasmota:URL, json:URL#power=/ptr,
    /// prometheus:URL#metric=NAME,scope=gpu,LABEL=VALUE, ipmi:lanplus://USER@HOST. Options
    /// follow `#`: scope=, every=, error=, use=counter|power.
    #[arg(long = "meter", env = "IPW_METERS", value_delimiter = ' ')]
    meters: Vec<MeterSpec>,
    /// The ipmitool binary, for this machine's BMC.
    #[arg(long, default_value = "ipmitool")]
    ipmitool: PathBuf,
    /// The powercap sysfs root, for RAPL.
    #[arg(long, default_value = power::rapl::POWERCAP_ROOT, hide = true)]
    powercap_root: PathBuf,
    /// The DRM sysfs root, for AMD and Intel GPUs.
    #[arg(long, default_value = power::gpu_hwmon::DRM_ROOT, hide = true)]
    drm_root: PathBuf,
    /// The I2C drivers directory, for a Jetson's INA3221 rails.
    #[arg(long, default_value = power::jetson::I2C_DRIVERS, hide = true)]
    i2c_root: PathBuf,
}

impl PowerArgs {
    fn discovery(&self) -> DiscoveryOptions {
        DiscoveryOptions {
            powercap_root: self.powercap_root.clone(),
            drm_root: self.drm_root.clone(),
            i2c_root: self.i2c_root.clone(),
            gpus: self.gpus.clone(),
            meters: self.meters.clone(),
            ipmitool: self.ipmitool.clone(),
        }
    }
}

// One thread: the agent waits on the engine and the network, and a multi-threaded runtime
// spent more CPU on waking threads than the work itself (BENCHMARKS.md). Hashing and the
// spool's fsyncs run on the blocking pool; the power sampler has its own thread.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let config_path = args.config.clone().unwrap_or_else(config::default_config_path);
    let telemetry = match ipw_ops::telemetry::init(&args.telemetry, identity(&config_path)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let outcome = run(args).await;
    ipw_ops::status_line::clear();
    telemetry.shutdown().await;
    if let Err(e) = outcome {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The traces' resource: the agent's id, name and hardware class once it has joined.
fn identity(config_path: &std::path::Path) -> ServiceIdentity {
    let mut attributes = vec![("host.name", sysinfo::System::host_name().unwrap_or_default())];
    if let Ok(c) = AgentConfig::load(config_path) {
        attributes.extend([
            ("ipw.agent.id", c.agent_id),
            ("ipw.agent.name", c.name),
            ("ipw.hardware_class", c.hardware_class),
        ]);
    }
    ServiceIdentity { name: "ipw-agent", attributes }
}

/// The join token: given, or the first line of `file`.
fn join_token(given: Option<String>, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match (given, file) {
        (Some(t), _) => Ok(t),
        (None, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the join token from {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()),
        (None, None) => anyhow::bail!("give the join token: --token-file, IPW_JOIN_TOKEN or --token"),
    }
}

/// Checks the arguments `service install -- ARGS` gives `ipw-agent run`, as `run` parses them.
fn check_run_args(extra: &[String]) -> anyhow::Result<()> {
    let argv = ["ipw-agent", "run"].into_iter().map(String::from).chain(extra.iter().cloned());
    match Args::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => {
            let what = e.to_string();
            let what = what.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
            anyhow::bail!("the arguments after -- are not valid for `ipw-agent run`: {what}")
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config_path = args.config.unwrap_or_else(config::default_config_path);
    match args.command {
        Command::Join { url, token, token_file, ca_cert_hash, insecure, name, labels } => {
            let token = join_token(token, token_file.as_deref())?;
            let name = name.unwrap_or_else(|| sysinfo::System::host_name().unwrap_or_else(|_| "agent".into()));
            let trust = match ca_cert_hash {
                Some(pin) if !insecure => join::Trust::Pinned(pin),
                _ => join::Trust::Insecure,
            };
            let (cfg, status) =
                join::join_with_status(&url, &trust, &token, &name, labels.into_iter().collect()).await?;
            cfg.save(&config_path)?;
            println!("joined {url} as {} ({}), hardware class {}", cfg.name, cfg.agent_id, cfg.hardware_class);
            println!("credential stored in {} (mode 0600)", config_path.display());
            match status.as_str() {
                "approved" => println!("approved by the join token: `ipw-agent run` can take work now"),
                _ => println!(
                    "waiting for approval: it takes no work until an operator runs `ipw agents approve {}`",
                    cfg.agent_id
                ),
            }
        }
        Command::Rotate => {
            let cfg = join::rotate(&AgentConfig::load(&config_path)?).await?;
            // The new secret is never printed: until it is first used, the one in the file still
            // works, so a failed write is fixed by rotating again.
            cfg.save(&config_path).with_context(|| {
                format!(
                    "the coordinator issued a new credential but {} could not be written; the credential in it \
                     still works (until a new one is used): fix the file's directory and run `ipw-agent rotate` again",
                    config_path.display()
                )
            })?;
            println!("rotated the credential of {} ({}); saved in {}", cfg.name, cfg.agent_id, config_path.display());
        }
        Command::Run(args) => run_service(*args, &config_path).await?,
        Command::Probe { seconds, power } => probe(seconds, &power),
        Command::Service { action } => ipw_agent::service::main(action, &config_path, check_run_args)?,
    }
    Ok(())
}

/// `ipw-agent run`: serves the operations listener if asked, shows progress, and runs until
/// stopped, following credential rotations.
async fn run_service(args: RunArgs, config_path: &std::path::Path) -> anyhow::Result<()> {
    let RunArgs {
        retry_for,
        engine_wait,
        shutdown_grace,
        spool_min_free_mib,
        heartbeat_interval,
        coordinator,
        engine_url,
        access,
        spool_dir,
        exit_when_idle,
        poll_interval,
        request_timeout,
        measure,
        model_aliases,
        engine,
        managed,
        metrics_listen,
    } = args;
    if access.engine_remote && engine == "managed" {
        anyhow::bail!(
            "--engine-remote names a remote endpoint at --engine-url; it cannot be used with --engine managed"
        );
    }
    let engine_access = access.access(std::env::var(ENGINE_KEY_VAR).ok())?;
    let spool = Spool::open(&spool_dir.unwrap_or_else(config::default_spool_dir))?;
    let opts = RunOptions {
        engine_url,
        engine_access,
        exit_when_idle,
        poll_interval,
        request_timeout,
        power: measure.options(),
        model_aliases,
        retry_for,
        heartbeat_interval,
        spool_min_free: spool_min_free_mib << 20,
        managed: (engine == "managed").then(|| managed.options(measure.power.gpus.clone())).transpose()?,
        engine_wait,
        shutdown_grace,
        ..RunOptions::default()
    };
    opts.shutdown.on_signals().context("cannot listen for SIGTERM and SIGINT")?;
    if let Some(addr) = metrics_listen {
        serve_ops(addr, config_path, &spool, &opts).await?;
    }
    let progress = tokio::spawn(ipw_agent::progress::report(opts.metrics.clone()));
    // Follows `ipw-agent rotate`: starts again with the new credential when it changes.
    let s = rotation::run_following_rotations(config_path, coordinator.as_deref(), &spool, &opts).await;
    progress.abort();
    ipw_ops::status_line::clear();
    let s = s?;
    println!("{} shards completed, {} results committed, {} duplicates ignored", s.shards, s.committed, s.duplicates);
    Ok(())
}

/// Serves /metrics, /healthz and /readyz on `addr` for this run.
async fn serve_ops(
    addr: std::net::SocketAddr,
    config_path: &std::path::Path,
    spool: &Spool,
    opts: &RunOptions,
) -> anyhow::Result<()> {
    let engine_url = match &opts.managed {
        Some(m) => format!("http://127.0.0.1:{}", m.port),
        None => opts.engine_url.clone(),
    };
    let probes = AgentProbes {
        config_path: config_path.to_owned(),
        engine: ipw_agent::engine::Engine::new(&engine_url, ipw_ops::http::CHECK_TIMEOUT, &opts.engine_access)?,
        spool: spool.clone(),
        metrics: opts.metrics.clone(),
        heartbeat: opts.heartbeat_interval,
    };
    ipw_ops::http::spawn(addr, opts.metrics.registry(), std::sync::Arc::new(probes)).await?;
    Ok(())
}

/// Hardware, then every power source found with a reading over `seconds`, then every source
/// not found with its reason.
fn probe(seconds: Duration, power: &PowerArgs) {
    let hw = hardware::probe();
    println!("host      {}", hw.hostname);
    println!("os        {} (kernel {})", hw.os, hw.kernel);
    println!("cpu       {} ({} logical cores)", hw.cpu_model, hw.cpu_cores);
    println!("memory    {:.1} GiB", hw.memory_bytes as f64 / (1u64 << 30) as f64);
    for g in &hw.accelerators {
        println!(
            "gpu {}     {} {} ({:.0} GiB, driver {})",
            g.index,
            g.vendor,
            g.model,
            g.memory_bytes as f64 / (1u64 << 30) as f64,
            g.driver_version
        );
    }
    let d = power::discover(&power.discovery());
    println!("gpus      {}", d.gpu_selection);
    println!("power sources found (* = summed into IPW energy, --ipw-scope {}):", power.ipw_scope);
    if d.sources.is_empty() {
        println!("  (none)");
    } else {
        let sampler =
            Sampler::start(d.sources, power.power_hz, (power.power_hz * (seconds.as_secs_f64() + 5.0)) as usize);
        std::thread::sleep(seconds);
        for (i, info) in sampler.sources().iter().enumerate() {
            let samples: Vec<(f64, f64)> = sampler.series_of(&[i], 0.0, f64::INFINITY);
            let known: Vec<&(f64, f64)> = samples.iter().filter(|s| s.1.is_finite()).collect();
            let reading = match (known.first(), known.last()) {
                (Some(a), Some(b)) if b.0 > a.0 => format!(
                    "{:.2} W mean over {:.1} s ({:.2} J, {} samples, +/-{:.0} %)",
                    (b.1 - a.1) / (b.0 - a.0),
                    b.0 - a.0,
                    b.1 - a.1,
                    known.len(),
                    info.stated_error * 100.0
                ),
                _ => "no reading in time".into(),
            };
            let mark = if power.ipw_scope.includes(info.scope) { "*" } else { " " };
            println!("{mark} {} {} ({}): {reading}", info.kind, info.name, info.scope);
            for gap in sampler.gaps(0.0, f64::INFINITY).iter().filter(|g| g.source == i) {
                println!("      gap {:.1}s..{:.1}s: {}", gap.from, gap.to, gap.reason);
            }
            if !info.details.is_null() {
                println!("      {}", info.details);
            }
        }
    }
    println!("power sources not usable:");
    for u in &d.unavailable {
        println!("  {}: {}", u.kind, u.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(args: &[&str], env_key: Option<&str>) -> anyhow::Result<EngineAccess> {
        let argv = ["ipw-agent", "run"].iter().chain(args).copied();
        let Command::Run(run) = Args::try_parse_from(argv)?.command else { panic!("run") };
        run.access.access(env_key.map(str::to_owned))
    }

    #[test]
    fn the_engine_key_comes_from_a_file_or_the_environment_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (key, empty) = (dir.path().join("key"), dir.path().join("empty"));
        std::fs::write(&key, "sk-test\n").unwrap();
        std::fs::write(&empty, " \n").unwrap();
        let file = access(&["--engine-remote", "--engine-key-file", key.to_str().unwrap()], None).unwrap();
        assert_eq!(file.key, ipw_proto::openai::ApiKey::new("sk-test"));
        assert!(file.remote);
        let env = access(&["--engine-retries", "2"], Some("sk-env")).unwrap();
        assert_eq!((env.key, env.remote, env.rate_limit_retries), (ipw_proto::openai::ApiKey::new("sk-env"), false, 2));
        assert_eq!(access(&[], None).unwrap(), EngineAccess::default());

        let missing = dir.path().join("missing");
        let e = format!("{:#}", access(&["--engine-key-file", missing.to_str().unwrap()], None).unwrap_err());
        assert!(e.starts_with(&format!("--engine-key-file {}: cannot read the engine's API key: ", missing.display())));
        let e = format!("{:#}", access(&["--engine-key-file", empty.to_str().unwrap()], None).unwrap_err());
        assert_eq!(
            e,
            format!("--engine-key-file {}: cannot read the engine's API key: the file is empty", empty.display())
        );
        let e = access(&["--engine-key-file", key.to_str().unwrap()], Some("sk-env")).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(
            Args::try_parse_from(["ipw-agent", "run", "--engine-key", "sk"]).is_err(),
            "no key on the command line"
        );
    }
}
