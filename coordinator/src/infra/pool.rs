//! The connection pool and the embedded migrations.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

/// The schema and analysis views in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool and brings the schema up to date.
///
/// Several coordinator replicas may start at once: sqlx takes an advisory lock around the
/// migrations, so only one applies them.
pub async fn connect_and_migrate(options: PgConnectOptions) -> anyhow::Result<PgPool> {
    connect_and_migrate_within(options, Duration::ZERO).await
}

/// Like [`connect_and_migrate`], but a database that is not up yet (a host booting, a
/// database restarting) is waited for, with backoff, for up to `patience`.
pub async fn connect_and_migrate_within(options: PgConnectOptions, patience: Duration) -> anyhow::Result<PgPool> {
    let start = std::time::Instant::now();
    let mut attempt = 0;
    let pool = loop {
        let connected = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await;
        match connected {
            Ok(pool) => break pool,
            Err(e) if start.elapsed() < patience => {
                let wait = ipw_proto::retry::backoff(attempt);
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "cannot connect to PostgreSQL ({e}); retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => anyhow::bail!("cannot connect to PostgreSQL: {e}"),
        }
    };
    MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"))?;
    Ok(pool)
}
