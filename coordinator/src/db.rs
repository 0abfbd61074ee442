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
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL: {e}"))?;
    MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"))?;
    Ok(pool)
}
