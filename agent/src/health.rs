//! What the agent tells its operations listener (`ipw_ops::http`): ready when it holds a
//! credential, the coordinator has answered lately and the engine answers now; at each
//! scrape, the spool's depth and the free disk.

use crate::config::AgentConfig;
use crate::engine::Engine;
use crate::metrics::AgentMetrics;
use crate::spool::Spool;
use futures::future::BoxFuture;
use ipw_ops::http::{Check, Probes};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The outcome of the agent's latest call to the coordinator.
#[derive(Debug, Clone, Default)]
pub struct Contact(Arc<Mutex<Option<Call>>>);

/// When a call ended, and whether it succeeded (else why not).
type Call = (Instant, Result<(), String>);

impl Contact {
    /// Records a call's outcome.
    pub fn record<T>(&self, outcome: &Result<T, tonic::Status>) {
        let outcome = outcome.as_ref().map(drop).map_err(|s| format!("{}: {}", s.code(), s.message()));
        *self.0.lock().expect("not poisoned") = Some((Instant::now(), outcome));
    }

    /// Ok if the latest call, within `fresh`, succeeded; else why not.
    pub fn check(&self, fresh: Duration) -> Result<String, String> {
        match &*self.0.lock().expect("not poisoned") {
            None => Err("no call has reached the coordinator yet".into()),
            Some((at, _)) if at.elapsed() > fresh => {
                Err(format!("no answer for {:.0} s (expected at least every {fresh:?})", at.elapsed().as_secs_f64()))
            }
            Some((at, Ok(()))) => Ok(format!("answered {:.0} s ago", at.elapsed().as_secs_f64())),
            Some((_, Err(e))) => Err(format!("the latest call failed: {e}")),
        }
    }
}

/// The agent's readiness checks and scrape-time gauges.
pub struct AgentProbes {
    /// Where the credential is kept.
    pub config_path: PathBuf,
    /// The engine the agent runs queries on.
    pub engine: Engine,
    /// The spool.
    pub spool: Spool,
    /// The metrics, and the coordinator contact they carry.
    pub metrics: AgentMetrics,
    /// How often the agent calls the coordinator when idle (the heartbeat).
    pub heartbeat: Duration,
}

impl Probes for AgentProbes {
    fn ready(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let credential = AgentConfig::load(&self.config_path)
                .map(|c| format!("{} ({})", c.name, c.agent_id))
                .map_err(|e| format!("{e:#}"));
            // Heartbeats come every interval; allow for two to be late.
            let coordinator = self.metrics.contact.check(self.heartbeat * 3 + Duration::from_secs(5));
            let engine = self.engine.check().await.map(|()| format!("{} answers", self.engine.base_url()));
            vec![
                Check { name: "credential", outcome: credential },
                Check { name: "coordinator", outcome: coordinator },
                Check { name: "engine", outcome: engine },
            ]
        })
    }

    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let m = &self.metrics;
            m.spool_results.set(self.spool.waiting() as i64);
            if let Ok(bytes) = self.spool.disk_bytes() {
                m.spool_bytes.set(bytes as i64);
            }
            if let Ok(free) = self.spool.free_bytes() {
                m.spool_free_bytes.set(free as i64);
            }
        })
    }
}
