//! What `ipw-agent run` shows while it works: on a terminal, a status line per run redrawn
//! every second (queries done, rate, errors, current power); otherwise a log line per run
//! every 30 s while it moves.

use crate::metrics::{AgentMetrics, RunProgress};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reports until the task is dropped.
pub async fn report(metrics: AgentMetrics) {
    let terminal = ipw_ops::status_line::available();
    let every = if terminal { Duration::from_secs(1) } else { Duration::from_secs(30) };
    let mut tick = tokio::time::interval(every);
    // Each run's count at the previous ticks, for the rate (over the last 10 s on a terminal).
    let mut history: BTreeMap<String, Vec<(Instant, u64)>> = BTreeMap::new();
    loop {
        tick.tick().await;
        let runs = metrics.progress.lock().expect("not poisoned").clone();
        let watts = *metrics.now_watts.lock().expect("not poisoned");
        let mut lines = Vec::new();
        for (run, p) in &runs {
            let seen = history.entry(run.clone()).or_default();
            let moved = seen.last().is_none_or(|(_, done)| *done != p.done);
            seen.push((Instant::now(), p.done));
            if seen.len() > 11 {
                seen.remove(0);
            }
            let rate = match (seen.first(), seen.last()) {
                (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => (d1 - d0) as f64 / (*t1 - *t0).as_secs_f64(),
                _ => 0.0,
            };
            let active = p.done < p.leased || moved;
            if terminal && active {
                lines.push(line(run, p, rate, watts));
            } else if !terminal && moved {
                tracing::info!(
                    run = %run, done = p.done, leased = p.leased, errors = p.errors,
                    rate_per_s = rate, power_w = watts, "progress"
                );
            }
        }
        if terminal && !lines.is_empty() {
            ipw_ops::status_line::show(&lines.join("  |  "));
        }
    }
}

/// `run 1a2b3c4d: 120/500 queries, 3 errors, 4.1/s, 12.3 W`.
fn line(run: &str, p: &RunProgress, rate: f64, watts: Option<f64>) -> String {
    let power = watts.map_or("power not measured".to_string(), |w| format!("{w:.1} W"));
    let short: String = run.chars().take(8).collect();
    format!("run {short}: {}/{} queries, {} errors, {rate:.1}/s, {power}", p.done, p.leased, p.errors)
}
