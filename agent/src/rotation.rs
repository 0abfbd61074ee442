//! A running agent follows `ipw-agent rotate`. After a rotation the coordinator accepts the
//! old credential only until the new one is first used, so an agent left running on the old
//! one would be locked out as soon as anything used the new one. The agent watches its config
//! file; when the credential there changes, it finishes its work (leases given back, results
//! committed, as on a stop) and starts again with the new one.

use crate::config::AgentConfig;
use crate::runner::{self, RunOptions, RunSummary};
use crate::shutdown::Shutdown;
use crate::spool::Spool;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs as [`runner::run`] does, with the config read from `config_path` (and `coordinator`,
/// when given, in place of its URL), starting again whenever the credential in the file is
/// replaced. Ends when `opts.shutdown` is requested, or when idle with `exit_when_idle`.
pub async fn run_following_rotations(
    config_path: &Path,
    coordinator: Option<&str>,
    spool: &Spool,
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    let mut total = RunSummary::default();
    loop {
        let mut config = AgentConfig::load(config_path)?;
        if let Some(url) = coordinator {
            config.coordinator = url.to_owned();
        }
        // Each round has its own stop, asked for by the caller's stop or by a rotation.
        let round = RunOptions { shutdown: Shutdown::default(), ..opts.clone() };
        let rotated = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch(
            config_path.to_owned(),
            config.credential.clone(),
            opts.shutdown.clone(),
            round.shutdown.clone(),
            rotated.clone(),
            opts.heartbeat_interval,
        ));
        let outcome = runner::run(&config, spool, &round).await;
        watcher.abort();
        let summary = outcome?;
        (total.shards, total.committed, total.duplicates) =
            (total.shards + summary.shards, total.committed + summary.committed, total.duplicates + summary.duplicates);
        if !rotated.load(Ordering::SeqCst) || opts.shutdown.is_requested() {
            return Ok(total);
        }
        tracing::info!("starting again with the rotated credential");
    }
}

/// Stops the round when the caller stops, or when the file's credential is no longer
/// `credential` (then marking `rotated`). An unreadable file is left for the next look.
async fn watch(
    path: std::path::PathBuf,
    credential: String,
    caller: Shutdown,
    round: Shutdown,
    rotated: Arc<AtomicBool>,
    every: std::time::Duration,
) {
    loop {
        tokio::select! {
            () = caller.requested() => {
                round.request();
                return;
            }
            () = tokio::time::sleep(every) => {}
        }
        if AgentConfig::load(&path).is_ok_and(|c| c.credential != credential) {
            tracing::warn!(config = %path.display(), "the credential was rotated; finishing the work in hand, then using it");
            rotated.store(true, Ordering::SeqCst);
            round.request();
            return;
        }
    }
}
