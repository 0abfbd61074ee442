//! Shared harness for the end-to-end tests.
//!
//! `scripts/test` provides a throwaway PostgreSQL cluster (`IPW_TEST_DATABASE_URL`) and a
//! llama-server with SmolLM2 (`IPW_TEST_ENGINE_URL`). Each test gets a fresh database,
//! migrated by a real coordinator serving on a free port.

pub mod browser;
pub mod fixture;
pub mod meter;

use anyhow::Context;
use ipw_agent::config::AgentConfig;
use ipw_agent::join::Trust;
use ipw_agent::runner::RunOptions;
use ipw_agent::spool::Spool;
use ipw_coordinator::api::State;
use ipw_coordinator::api::server::Background;
use ipw_coordinator::cli::{self, Admin};
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::enrollment_client::EnrollmentClient;
use ipw_proto::v1::{CreateRunRequest, CreateTokenRequest, GenerationParams, HardwareInfo, JoinRequest, RunInfo};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The cluster's admin URL, from `scripts/test`.
pub fn database_url() -> String {
    std::env::var("IPW_TEST_DATABASE_URL").expect("IPW_TEST_DATABASE_URL is unset: run the tests with scripts/test")
}

/// The llama-server serving SmolLM2, from `scripts/test`.
pub fn engine_url() -> String {
    std::env::var("IPW_TEST_ENGINE_URL").expect("IPW_TEST_ENGINE_URL is unset: run the tests with scripts/test")
}

/// The real MMLU-Pro test split in `../shared/data`.
pub fn mmlu_pro() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mmlu-pro-test.jsonl");
    assert!(p.exists(), "{} is missing: ../shared must sit beside the clone", p.display());
    p
}

/// Creates an empty database with a unique name and returns options for it.
pub async fn fresh_database() -> anyhow::Result<PgConnectOptions> {
    let admin = PgConnectOptions::from_str(&database_url())?;
    let name = format!("ipw_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin.connect().await.context("connecting to the test cluster")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    Ok(admin.database(&name))
}

/// Waits until `run` has at least `n` results (two minutes at most); returns how many.
pub async fn wait_for_results(pool: &PgPool, run: uuid::Uuid, n: i64) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let have: i64 =
            sqlx::query_scalar("SELECT count(*) FROM results WHERE run_id = $1").bind(run).fetch_one(pool).await?;
        if have >= n {
            return Ok(have);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "run {run} has {have} of {n} results after 2 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A machine with one GPU of `model` and `gib` GiB, for agents that join as other hardware.
pub fn gpu_box(model: &str, gib: u64) -> HardwareInfo {
    HardwareInfo {
        hostname: format!("{model}-box"),
        os: "Linux".into(),
        kernel: "6.8".into(),
        cpu_model: "EPYC".into(),
        cpu_cores: 64,
        memory_bytes: 512 << 30,
        accelerators: vec![ipw_proto::v1::Accelerator {
            index: 0,
            vendor: "nvidia".into(),
            model: model.into(),
            memory_bytes: gib << 30,
            driver_version: "560.35.03".into(),
            uuid: format!("GPU-{model}"),
        }],
    }
}

/// A coordinator over a fresh database, plus an admin client and a scratch directory.
pub struct Fleet {
    /// The coordinator serving in this process.
    pub coordinator: Background,
    /// A pool on the same database, for assertions.
    pub pool: PgPool,
    /// Admin client authenticated with the admin token.
    pub admin: Admin,
    /// The admin token.
    pub admin_token: String,
    /// The CA clients trust, when the coordinator serves TLS.
    pub tls: Option<ClientTls>,
    /// Agent configs and spools live here.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts a coordinator with a 10-minute lease TTL.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_lease_ttl(Duration::from_secs(600)).await
    }

    /// Starts a coordinator with the given lease TTL, serving plain text.
    pub async fn start_with_lease_ttl(lease_ttl: Duration) -> anyhow::Result<Self> {
        let pool = ipw_coordinator::infra::pool::connect_and_migrate(fresh_database().await?).await?;
        Self::start_with(State { lease_ttl, ..State::new(pool) }).await
    }

    /// Starts a coordinator serving TLS with a CA of its own, requiring agents' client
    /// certificates when `require_client_cert`.
    pub async fn start_tls(require_client_cert: bool) -> anyhow::Result<Self> {
        let pool = ipw_coordinator::infra::pool::connect_and_migrate(fresh_database().await?).await?;
        let authority = std::sync::Arc::new(ipw_coordinator::infra::tls::Authority::generate()?);
        Self::start_with(State { authority: Some(authority), require_client_cert, ..State::new(pool) }).await
    }

    /// Starts a coordinator with these settings.
    pub async fn start_with(state: State) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
        let pool = state.pool.clone();
        let tls = state.authority.as_ref().map(|a| ClientTls { ca_pem: a.ca_pem().to_owned(), identity: None });
        let admin_token = ipw_coordinator::infra::auth::new_secret();
        let coordinator =
            Background::spawn("127.0.0.1:0".parse().expect("valid address"), state, admin_token.clone()).await?;
        let admin = cli::connect(&coordinator.url(), tls.as_ref(), &admin_token).await?;
        Ok(Self { coordinator, pool, admin, admin_token, tls, dir: tempfile::tempdir()? })
    }

    /// How an agent joining this coordinator trusts it: the CA's fingerprint, or plain text.
    pub fn trust(&self) -> Trust {
        match &self.tls {
            Some(tls) => Trust::Pinned(ipw_proto::tls::fingerprint(
                &ipw_proto::tls::pem_to_der(&tls.ca_pem).expect("the CA is PEM"),
            )),
            None => Trust::Insecure,
        }
    }

    /// A join token.
    pub async fn token(&mut self, uses: u32, auto_approve: bool, ttl: Duration) -> anyhow::Result<String> {
        Ok(self
            .admin
            .create_token(CreateTokenRequest {
                ttl_seconds: ttl.as_secs(),
                max_uses: uses,
                auto_approve,
                description: "test".into(),
                viewer: false,
            })
            .await?
            .into_inner()
            .token)
    }

    /// Joins an agent named `name` the way `ipw-agent join` does.
    pub async fn join(&self, token: &str, name: &str) -> anyhow::Result<AgentConfig> {
        let labels = [("test".to_owned(), name.to_owned())].into();
        ipw_agent::join::join(&self.coordinator.url(), &self.trust(), token, name, labels).await
    }

    /// Joins an agent that describes its own hardware, as an agent on other hardware would.
    pub async fn join_with(
        &self,
        token: &str,
        name: &str,
        labels: &[(&str, &str)],
        hardware: HardwareInfo,
    ) -> anyhow::Result<AgentConfig> {
        let url = self.coordinator.url();
        let mut enrollment =
            EnrollmentClient::new(ipw_agent::client::endpoint(&url, self.tls.as_ref())?.connect().await?);
        let labels: std::collections::BTreeMap<String, String> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (key_pem, csr_pem) = ipw_agent::join::new_key_and_csr()?;
        let resp = enrollment
            .join(JoinRequest {
                token: token.into(),
                name: name.into(),
                labels: labels.clone().into_iter().collect(),
                hardware: Some(hardware),
                agent_version: "test".into(),
                csr_pem,
            })
            .await?
            .into_inner();
        Ok(AgentConfig {
            coordinator: url,
            agent_id: resp.agent_id,
            credential: resp.credential,
            name: name.into(),
            labels,
            hardware_class: resp.hardware_class,
            ca_pem: self.tls.as_ref().map(|t| t.ca_pem.clone()),
            client_cert: ipw_agent::config::client_cert_from(resp.client_cert_pem, key_pem),
        })
    }

    /// A spool directory of the agent's own.
    pub fn spool(&self, agent: &str) -> Spool {
        agent_spool(self.dir.path(), agent)
    }

    /// Agent options for tests: the test engine, exit when idle, and no power source at all
    /// (discovery looks at empty trees and no GPUs), so energy is NULL with its reason whatever
    /// machine the tests run on, and no idle baseline is waited for.
    pub fn run_options(&self) -> RunOptions {
        let mut opts = RunOptions { engine_url: engine_url(), exit_when_idle: true, ..RunOptions::default() };
        opts.power.idle = Duration::ZERO;
        opts.power.discovery.powercap_root = self.dir.path().join("no-powercap");
        opts.power.discovery.drm_root = self.dir.path().join("no-drm");
        opts.power.discovery.i2c_root = self.dir.path().join("no-i2c");
        opts.power.discovery.ipmitool = self.dir.path().join("no-ipmitool");
        opts.power.discovery.gpus = Some(String::new());
        opts
    }

    /// Creates a run of SmolLM2 over a seeded sample of `workload` (seed 7, greedy decoding).
    pub async fn create_run(
        &mut self,
        workload: &str,
        sample: u32,
        shard_size: u32,
        concurrency: u32,
        max_tokens: u32,
    ) -> anyhow::Result<RunInfo> {
        let request = CreateRunRequest {
            workload: workload.into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample,
            seed: 7,
            concurrency,
            shard_size,
            repetitions: 1,
            params: Some(GenerationParams { max_tokens, temperature: 0.0, top_p: 1.0 }),
            ..Default::default()
        };
        Ok(self.admin.create_run(request).await?.into_inner())
    }

    /// Imports the first `lines` questions of the MMLU-Pro split as workload `name`.
    pub async fn import_mmlu_slice(&mut self, lines: usize, name: &str) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(mmlu_pro())?;
        let file = self.dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&file, text.lines().take(lines).collect::<Vec<_>>().join("\n"))?;
        self.import(&file, name).await
    }

    /// Imports `lines` as workload `name`, one generic record per line (`{"id", "prompt",
    /// "answer"}`), through the CLI's code path.
    pub async fn import_lines(&mut self, name: &str, lines: &[&str]) -> anyhow::Result<u64> {
        let file = self.dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&file, lines.join("\n") + "\n")?;
        self.import(&file, name).await
    }

    /// Imports a workload of one query, "one", and creates a run of it (`max_tokens` 8).
    pub async fn one_query_run(&mut self) -> anyhow::Result<RunInfo> {
        self.import_lines("one", &[r#"{"id": "1", "prompt": "hi", "answer": "hello"}"#]).await?;
        self.create_run("one", 1, 1, 1, 8).await
    }

    /// Imports a workload file through the CLI's code path.
    pub async fn import(&mut self, file: &std::path::Path, name: &str) -> anyhow::Result<u64> {
        Ok(cli::workloads::import_workload(&mut self.admin, file, name).await?.queries)
    }
}

/// A binary of this build (`ipw-agent`, `ipw-coordinator`), for tests that need real
/// processes (ones that can be killed). `scripts/test` builds them before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe.parent().and_then(|d| d.parent()).expect("tests run from target/<profile>/deps").join(name);
    assert!(bin.exists(), "{} is missing: build it first (`cargo build --bins`, as scripts/test does)", bin.display());
    bin
}

/// A fresh database's URL, for a coordinator process.
pub async fn fresh_database_url() -> anyhow::Result<String> {
    let options = fresh_database().await?;
    let base = database_url();
    let (server, _) = base.rsplit_once('/').context("the test database URL ends in /<database>")?;
    Ok(format!("{server}/{}", options.get_database().context("a database name")?))
}

/// An approved agent named `name` of `hardware_class`, written straight into the database with
/// a join token of its own: for tests that write fixture results by hand.
pub async fn fixture_agent(pool: &PgPool, name: &str, hardware_class: &str) -> anyhow::Result<uuid::Uuid> {
    let (id, token) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    sqlx::query(
        "INSERT INTO join_tokens (id, token_hash, expires_at, max_uses) VALUES ($1, $2, now() + interval '1 day', 1)",
    )
    .bind(token)
    .bind(token.as_bytes().repeat(2))
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO agents (id, name, status, credential_hash, join_token_id, hardware_class, approved_at)
         VALUES ($1, $2, 'approved', $3, $4, $5, now())",
    )
    .bind(id)
    .bind(name)
    .bind(id.as_bytes().repeat(2))
    .bind(token)
    .bind(hardware_class)
    .execute(pool)
    .await?;
    Ok(id)
}

/// `ipw-coordinator` as a real process serving TLS, with its own data directory (CA, admin
/// token) and database, which survive a kill and restart.
pub struct CoordinatorProcess {
    child: tokio::process::Child,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its CA and admin token are: its data directory, or the one it shares.
    secrets_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl CoordinatorProcess {
    /// Starts it on a free port and waits until it serves.
    pub async fn start(data_dir: PathBuf, database_url: &str, lease_ttl: &str) -> anyhow::Result<Self> {
        Self::start_with(data_dir, database_url, lease_ttl, &[], &[]).await
    }

    /// [`CoordinatorProcess::start`] with more flags and environment variables.
    pub async fn start_with(
        data_dir: PathBuf,
        database_url: &str,
        lease_ttl: &str,
        flags: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let make_args = |port: u16| {
            let mut args = vec![
                format!("--listen=127.0.0.1:{port}"),
                format!("--database-url={database_url}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--lease-ttl={lease_ttl}"),
            ];
            args.extend_from_slice(flags);
            args
        };
        let (child, port, args) = Self::spawn_on_free_port(make_args, env).await?;
        let (secrets_dir, env) = (data_dir.clone(), env.to_vec());
        Ok(Self { child, url: format!("https://127.0.0.1:{port}"), secrets_dir, data_dir, args, env })
    }

    /// A second coordinator on the same database serving the same fleet: it reads `first`'s
    /// CA and admin token, read-only (`--tls-dir`, `--admin-token-file`).
    pub async fn start_replica(
        first: &Self,
        data_dir: PathBuf,
        database_url: &str,
        lease_ttl: &str,
    ) -> anyhow::Result<Self> {
        let secrets = &first.secrets_dir;
        let make_args = |port: u16| {
            vec![
                format!("--listen=127.0.0.1:{port}"),
                format!("--database-url={database_url}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--lease-ttl={lease_ttl}"),
                format!("--tls-dir={}", ipw_coordinator::infra::tls::tls_dir(secrets).display()),
                format!("--admin-token-file={}", ipw_coordinator::infra::paths::admin_token_file(secrets).display()),
            ]
        };
        let (child, port, args) = Self::spawn_on_free_port(make_args, &[]).await?;
        let secrets_dir = secrets.clone();
        Ok(Self { child, url: format!("https://127.0.0.1:{port}"), secrets_dir, data_dir, args, env: Vec::new() })
    }

    /// Starts one that speaks plain text (`--insecure`), for tests that speak raw HTTP/2.
    pub async fn start_plain(data_dir: PathBuf, database_url: &str) -> anyhow::Result<Self> {
        let make_args = |port: u16| {
            vec![
                format!("--listen=127.0.0.1:{port}"),
                format!("--database-url={database_url}"),
                format!("--data-dir={}", data_dir.display()),
                "--insecure".to_owned(),
            ]
        };
        let (child, port, args) = Self::spawn_on_free_port(make_args, &[]).await?;
        let secrets_dir = data_dir.clone();
        Ok(Self { child, url: format!("http://127.0.0.1:{port}"), secrets_dir, data_dir, args, env: Vec::new() })
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_memory(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the coordinator is running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("VmHWM in /proc/PID/status")?;
        Ok(kib << 10)
    }

    /// Spawns it on a port picked free, and on another if a second process took that port
    /// between the pick and the coordinator's bind (other tests pick ports the same way).
    async fn spawn_on_free_port(
        make_args: impl Fn(u16) -> Vec<String>,
        env: &[(String, String)],
    ) -> anyhow::Result<(tokio::process::Child, u16, Vec<String>)> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_addr()?.port();
            let args = make_args(port);
            match Self::spawn(&args, env).await {
                Ok(child) => return Ok((child, port, args)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// Spawns it and waits until it serves: until the port's listening socket is the child's
    /// own, not another process's that happens to hold the port.
    async fn spawn(args: &[String], env: &[(String, String)]) -> anyhow::Result<tokio::process::Child> {
        let mut child = tokio::process::Command::new(binary("ipw-coordinator"))
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().cloned())
            .kill_on_drop(true)
            .spawn()?;
        let addr: std::net::SocketAddr = args[0].trim_start_matches("--listen=").parse()?;
        let pid = child.id().context("the coordinator's pid")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !listens_on(pid, addr.port()) {
            anyhow::ensure!(child.try_wait()?.is_none(), "ipw-coordinator exited at start");
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "ipw-coordinator did not listen within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(child)
    }

    /// The CA clients trust, from the data directory.
    pub fn tls(&self) -> anyhow::Result<ClientTls> {
        let ca_pem = std::fs::read_to_string(ipw_coordinator::infra::tls::ca_file(&self.secrets_dir))?;
        Ok(ClientTls { ca_pem, identity: None })
    }

    /// The CA's fingerprint, as `ipw token create` prints it.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        Ok(ipw_proto::tls::fingerprint(&ipw_proto::tls::pem_to_der(&self.tls()?.ca_pem).map_err(anyhow::Error::msg)?))
    }

    /// An admin client, with the admin token the coordinator wrote.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        let token = std::fs::read_to_string(ipw_coordinator::infra::paths::admin_token_file(&self.secrets_dir))?;
        cli::connect(&self.url, Some(&self.tls()?), token.trim()).await
    }

    /// `kill -9`, as a crash or a pulled plug would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Starts it again with the same data directory, database and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(&self.args, &self.env).await?;
        Ok(())
    }
}

impl Fleet {
    /// `ipw-agent run` as a real process; see [`agent_process`].
    pub fn agent_process(&self, agent: &AgentConfig) -> anyhow::Result<tokio::process::Command> {
        agent_process(self.dir.path(), agent)
    }

    /// `ipw-agent run` as a real process that runs until stopped (see [`agent_service_process`]).
    pub fn agent_service_process(&self, agent: &AgentConfig) -> anyhow::Result<tokio::process::Command> {
        agent_service_process(self.dir.path(), agent)
    }
}

/// The spool of agent `name` under `dir`.
pub fn agent_spool(dir: &Path, name: &str) -> Spool {
    Spool::open(&dir.join(format!("spool-{name}"))).expect("spool opens")
}

/// `ipw-agent run` as a real process, its config and spool under `dir`, with the same settings
/// as [`Fleet::run_options`] (the test engine, no power source, exit when idle) and a heartbeat
/// every second.
pub fn agent_process(dir: &Path, agent: &AgentConfig) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = agent_service_process(dir, agent)?;
    cmd.arg("--exit-when-idle");
    Ok(cmd)
}

/// Like [`agent_process`], but it keeps running, as a service does, until it is stopped.
pub fn agent_service_process(dir: &Path, agent: &AgentConfig) -> anyhow::Result<tokio::process::Command> {
    agent_service_process_on(dir, agent, &engine_url())
}

/// [`agent_service_process`] against another engine.
pub fn agent_service_process_on(
    dir: &Path,
    agent: &AgentConfig,
    engine_url: &str,
) -> anyhow::Result<tokio::process::Command> {
    agent_command(dir, agent, engine_url, &dir.join("no-powercap"), "0s")
}

/// Like [`agent_process`], but sampling the RAPL zones under `powercap` (a
/// [`PowercapFixture`]'s root).
pub fn metered_agent_process(
    dir: &Path,
    agent: &AgentConfig,
    powercap: &Path,
) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = metered_agent_service_process(dir, agent, powercap)?;
    cmd.arg("--exit-when-idle");
    Ok(cmd)
}

/// Like [`metered_agent_process`], but it keeps running until it is stopped.
pub fn metered_agent_service_process(
    dir: &Path,
    agent: &AgentConfig,
    powercap: &Path,
) -> anyhow::Result<tokio::process::Command> {
    agent_command(dir, agent, &engine_url(), powercap, "0s")
}

/// Like [`metered_agent_process`], against another engine and measuring an idle baseline of
/// `idle` (e.g. `2s`) at the start of each session: for tests of what is, or is not, measured.
pub fn metered_agent_process_on(
    dir: &Path,
    agent: &AgentConfig,
    engine_url: &str,
    powercap: &Path,
    idle: &str,
) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = agent_command(dir, agent, engine_url, powercap, idle)?;
    cmd.arg("--exit-when-idle");
    Ok(cmd)
}

fn agent_command(
    dir: &Path,
    agent: &AgentConfig,
    engine_url: &str,
    powercap: &Path,
    idle: &str,
) -> anyhow::Result<tokio::process::Command> {
    let config = dir.join(format!("{}.json", agent.name));
    agent.save(&config)?;
    let mut cmd = tokio::process::Command::new(binary("ipw-agent"));
    cmd.arg("--config").arg(config).arg("run");
    cmd.arg("--engine-url").arg(engine_url);
    cmd.arg("--spool-dir").arg(agent_spool(dir, &agent.name).dir());
    cmd.args(["--idle", idle, "--poll-interval", "200ms", "--heartbeat-interval", "1s"]);
    cmd.args(["--retry-for", "60s", "--gpus="]);
    cmd.arg("--powercap-root").arg(powercap);
    cmd.arg("--drm-root").arg(dir.join("no-drm"));
    cmd.env("RUST_LOG", "warn").kill_on_drop(true);
    Ok(cmd)
}

/// A RAPL package zone in the kernel's sysfs format (`energy_uj`, `max_energy_range_uj`,
/// `name`) whose counter a thread advances at a known power, wrapping like the real one. A
/// FIXTURE for the energy path on machines without a power source: its figures are never a
/// measurement. Stops when dropped.
pub struct PowercapFixture {
    /// The powercap root to point an agent at (`--powercap-root`).
    pub root: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl PowercapFixture {
    /// The counter's wrap point, in µJ, as a real package zone reports it.
    pub const WRAP_UJ: u64 = 262_143_328_850;

    /// Starts a zone under `dir/powercap` drawing `watts`.
    pub fn start(dir: &Path, watts: f64) -> anyhow::Result<Self> {
        let root = dir.join("powercap");
        let zone = root.join("intel-rapl:0");
        std::fs::create_dir_all(&zone)?;
        std::fs::write(zone.join("name"), "package-0\n")?;
        std::fs::write(zone.join("max_energy_range_uj"), format!("{}\n", Self::WRAP_UJ))?;
        std::fs::write(zone.join("energy_uj"), "0\n")?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let uj = (start.elapsed().as_secs_f64() * watts * 1e6) as u64 % Self::WRAP_UJ;
                    let tmp = zone.join("energy_uj.tmp");
                    std::fs::write(&tmp, format!("{uj}\n")).expect("fixture counter written");
                    std::fs::rename(&tmp, zone.join("energy_uj")).expect("fixture counter renamed");
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Ok(Self { root, stop, writer: Some(writer) })
    }
}

impl Drop for PowercapFixture {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A llama-server of the test's own, serving SmolLM2 on a fixed port, which the test may kill
/// (as a crash would) and start again on the same port.
pub struct OwnEngine {
    /// Where it listens.
    pub port: u16,
    args: Vec<String>,
    child: Option<tokio::process::Child>,
}

impl OwnEngine {
    /// Starts one on a free port with these extra `llama-server` arguments, and waits until
    /// it is healthy.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut engine = Self { port, args: extra.iter().map(|a| (*a).to_owned()).collect(), child: None };
        engine.restart().await?;
        Ok(engine)
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: the engine process is gone, mid-request if there were any.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it (again) on its port and waits until it answers `/health`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let server = std::env::var("IPW_TEST_LLAMA_SERVER").context("IPW_TEST_LLAMA_SERVER is set by scripts/test")?;
        let model = std::env::var("IPW_TEST_MODEL_FILE").context("IPW_TEST_MODEL_FILE is set by scripts/test")?;
        let child = tokio::process::Command::new(server)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "-t", "1", "--log-disable"])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !http_ok(self.port, "/health").await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "llama-server on {} not healthy in 60 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// `GET path` on `addr` over HTTP/1.0: the status and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = http_request(addr, "GET", path, &[], "").await?;
    Ok((response.status, response.body))
}

/// An HTTP response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (lower-case), e.g. `set-cookie`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// `method path` on `addr` over HTTP/1.0 with `headers` and `body` (a `Content-Length` is
/// added when there is a body): the raw status, headers and body, redirects not followed.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut response)).await??;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).context("a status code")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse { status, headers, body: body.to_owned() })
}

/// Whether process `pid` holds a listening TCP socket on `port` (from `/proc/net/tcp*`).
fn listens_on(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == LISTEN)
                .then(|| f.get(9).map(|i| i.to_string()))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|i| target.to_string_lossy() == format!("socket:[{i}]")))
}

/// A free port on the loopback address.
pub fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A PostgreSQL cluster of a test's own (never the shared one), which the test may stop and
/// start. Stopped when dropped.
pub struct OwnPostgres {
    data: PathBuf,
    /// `postgres://...` to its `postgres` database.
    pub url: String,
}

impl OwnPostgres {
    /// `initdb` in `dir` (made readable by the cluster's owner) and starts it on a free port.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
        let data = dir.join("data");
        let port = free_addr()?.port();
        Self::as_owner("initdb", &["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .await?;
        let conf =
            format!("listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n", dir.display());
        std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?.write_all(conf.as_bytes())?;
        let pg = Self { data, url: format!("postgres://postgres@127.0.0.1:{port}/postgres") };
        pg.pg_ctl("start").await?;
        Ok(pg)
    }

    /// `pg_ctl stop -m fast`.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl("stop").await
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub async fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let (data, log) = (self.data.to_string_lossy().into_owned(), self.data.with_extension("log"));
        let log = log.to_string_lossy().into_owned();
        Self::as_owner("pg_ctl", &["-D", &data, "-l", &log, "-w", "-m", "fast", action]).await
    }

    /// A PostgreSQL program, run as the clusters' owner (initdb refuses root).
    fn owner_command(program: &str) -> anyhow::Result<std::process::Command> {
        let bin = std::env::var("IPW_TEST_PG_BIN").context("IPW_TEST_PG_BIN is set by scripts/test")?;
        let program = format!("{bin}/{program}");
        Ok(match std::env::var("IPW_TEST_PG_RUN_AS").ok().filter(|u| !u.is_empty()) {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", &user, "--", &program]);
                c
            }
            None => std::process::Command::new(&program),
        })
    }

    async fn as_owner(program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::from(Self::owner_command(program)?).args(args).output().await?;
        anyhow::ensure!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Ok(mut pg_ctl) = Self::owner_command("pg_ctl") {
            let _ = pg_ctl.args(["-D", &self.data.to_string_lossy(), "-m", "immediate", "stop"]).output();
        }
    }
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200.
pub async fn http_ok(port: u16, path: &str) -> bool {
    matches!(http_get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path).await, Ok((200, _)))
}

/// A result for `item` of `lease` whose content does not matter to the test (leasing,
/// ingest): a fixed answer, half a second, no power source.
pub fn made_up_result(lease: &ipw_proto::v1::Lease, item: &ipw_proto::v1::WorkItem) -> ipw_proto::v1::QueryResult {
    ipw_proto::v1::QueryResult {
        shard_id: lease.shard_id.clone(),
        run_id: lease.run_id.clone(),
        query_id: item.query_id,
        repetition: item.repetition,
        started_unix_us: chrono::Utc::now().timestamp_micros(),
        latency_s: 0.5,
        response: "a".into(),
        finish_reason: "stop".into(),
        energy: Some(ipw_proto::v1::Energy { source: "none".into(), null_reason: "test".into(), ..Default::default() }),
        ..Default::default()
    }
}
