//! Stores the summaries of finished runs (`store::summaries`), so `ipw report` and
//! `ipw_summary` read a few stored rows instead of a million results. Every replica runs it;
//! two refreshing one run wait for each other (an advisory lock) and store the same rows.

use crate::store::{self, summaries};
use std::time::Duration;

/// Runs refreshed per pass.
const PER_PASS: i64 = 16;

/// Stores what is missing; returns how many runs were refreshed.
pub async fn tick(pool: &sqlx::PgPool) -> store::Result<usize> {
    let runs = summaries::missing(pool, PER_PASS).await?;
    for run in &runs {
        let started = std::time::Instant::now();
        let rows = summaries::refresh(pool, *run).await?;
        tracing::info!(run = %run, rows, took = ?started.elapsed(), "run summary stored");
    }
    Ok(runs.len())
}

/// Ticks every `every` (at once again when a pass was full) until the process ends.
pub async fn run_forever(pool: sqlx::PgPool, every: Duration) {
    loop {
        match tick(&pool).await {
            Ok(n) if n as i64 == PER_PASS => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storing run summaries failed; retried next pass"),
        }
        tokio::time::sleep(every).await;
    }
}
