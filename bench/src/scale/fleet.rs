//! A coordinator on its embedded PostgreSQL, the `ipw` CLI against it, and a direct
//! connection to its database for the baselines and the synthetic rows.

use anyhow::{Context, bail};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ipw-coordinator` (plain text, on a free port) and its database.
pub struct Fleet {
    child: Child,
    /// The coordinator's URL.
    pub url: String,
    data_dir: PathBuf,
    bin: PathBuf,
    /// A pool on the coordinator's embedded PostgreSQL (its Unix socket).
    pub pool: PgPool,
}

impl Fleet {
    /// Starts `bin/ipw-coordinator` with its data in `work/coordinator`, `extra` flags after
    /// ours, and waits until the CLI reaches it.
    pub async fn start(bin: &Path, work: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let data_dir = work.join("coordinator");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(work.join("coordinator.log"))?;
        let child = Command::new(bin.join("ipw-coordinator"))
            .args(["--insecure", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            // The load generator enrolls a hundred agents from one address at once.
            .args(["--join-burst", "10000", "--join-per-minute", "100000"])
            .args(extra)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start ipw-coordinator; build it with `cargo build --release`")?;
        let url = format!("http://127.0.0.1:{port}");
        let options = PgConnectOptions::new()
            .socket(data_dir.join("postgres").join("run"))
            .port(5432)
            .username("ipw")
            .database("ipw");
        let mut fleet = Fleet { child, url, data_dir, bin: bin.to_owned(), pool: PgPool::connect_lazy_with(options) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while fleet.ipw(&["workload", "list"]).is_err() {
            if Instant::now() > deadline || fleet.child.try_wait()?.is_some() {
                bail!("the coordinator did not start; see {}", work.join("coordinator.log").display());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let options = fleet.pool.connect_options().as_ref().clone();
        fleet.pool = PgPoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(fleet)
    }

    /// Runs `ipw ARGS` against this coordinator: its wall seconds and standard output.
    pub fn ipw(&self, args: &[&str]) -> anyhow::Result<(f64, String)> {
        let (secs, out, _) = self.ipw_measured(args)?;
        Ok((secs, out))
    }

    /// Runs `ipw ARGS`: its wall seconds, standard output and peak resident memory in bytes
    /// (`VmHWM`, read every 20 ms while it runs).
    pub fn ipw_measured(&self, args: &[&str]) -> anyhow::Result<(f64, String, u64)> {
        let start = Instant::now();
        let mut child = Command::new(self.bin.join("ipw"))
            .args(args)
            .env("IPW_COORDINATOR", &self.url)
            .env("IPW_DATA_DIR", &self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = 0;
        // Output is small; the pipes do not fill while this polls.
        while child.try_wait()?.is_none() {
            peak = peak.max(vm_hwm(&status_file).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("ipw {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok((secs, String::from_utf8(out.stdout)?, peak))
    }

    /// A new auto-approved join token good for `uses` agents.
    pub fn join_token(&self, uses: usize) -> anyhow::Result<String> {
        let (_, out) = self.ipw(&["token", "create", "--auto-approve", "--ttl", "1h", "--uses", &uses.to_string()])?;
        out.lines()
            .find_map(|l| l.strip_prefix("token").map(|t| t.trim().to_owned()))
            .context("`ipw token create` printed no token")
    }

    /// `ipw run create` of `sample` queries of `workload` in shards of `shard_size`: the run
    /// id and the command's wall seconds.
    pub fn create_run(
        &self,
        workload: &str,
        model: &str,
        sample: usize,
        shard_size: usize,
        seed: u64,
    ) -> anyhow::Result<(String, f64)> {
        let (secs, out) = self.ipw(&[
            "run",
            "create",
            "--workload",
            workload,
            "--model",
            model,
            "--sample",
            &sample.to_string(),
            "--shard-size",
            &shard_size.to_string(),
            "--seed",
            &seed.to_string(),
        ])?;
        let id = out
            .split_whitespace()
            .skip_while(|w| *w != "run")
            .nth(1)
            .map(|w| w.trim_end_matches(':').to_owned())
            .with_context(|| format!("no run id in {out:?}"))?;
        Ok((id, secs))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A process's peak resident memory so far, from its `/proc/PID/status`, in bytes.
fn vm_hwm(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}
