//! `ipw-coordinator`: the fleet's gRPC server.

use anyhow::Context;
use clap::Parser;
use ipw_coordinator::embedded_postgres::EmbeddedPostgres;
use ipw_coordinator::service::State;
use ipw_coordinator::{auth, db, paths, schedule, server};
use sqlx::postgres::PgConnectOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The ipw-fleet coordinator: enrolls agents, hands out shards, ingests results into PostgreSQL."
)]
struct Args {
    /// Address to serve gRPC on. Use 0.0.0.0:7443 to serve other machines.
    #[arg(long, env = "IPW_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// PostgreSQL URL. Without one, an embedded PostgreSQL is started in --data-dir.
    #[arg(long, env = "IPW_DATABASE_URL")]
    database_url: Option<String>,
    /// Where the coordinator keeps its files: the admin token, and the embedded PostgreSQL.
    #[arg(long, env = "IPW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Admin token for the `ipw` CLI. Without one, a token is generated into DATA_DIR/admin-token.
    #[arg(long, env = "IPW_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a lease lasts without a heartbeat (e.g. 90s, 10m).
    #[arg(long, env = "IPW_LEASE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// Leases a shard may run out of before it is failed (its reason shown by `ipw run status`).
    #[arg(long, env = "IPW_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let data_dir = args.data_dir.clone().unwrap_or_else(paths::default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let admin_token = match args.admin_token.clone() {
        Some(t) => t,
        None => load_or_create_admin_token(&data_dir)?,
    };

    let (options, embedded) = match &args.database_url {
        Some(url) => (PgConnectOptions::from_str(url).context("--database-url is not a valid PostgreSQL URL")?, None),
        None => {
            let pg = EmbeddedPostgres::start(&data_dir).await?;
            tracing::info!(
                "no --database-url given: started embedded PostgreSQL in {} (connect with: {})",
                data_dir.join("postgres").display(),
                pg.psql_command()
            );
            (pg.connect_options(), Some(pg))
        }
    };

    let served = async {
        let pool = db::connect_and_migrate(options).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(addr = %args.listen, "coordinator listening");
        // Every replica runs the scheduler; the advisory lock lets one act at a time.
        let scheduler = tokio::spawn(schedule::run_forever(pool.clone(), std::time::Duration::from_secs(15)));
        let state = State { pool: pool.clone(), lease_ttl: args.lease_ttl, max_attempts: args.max_attempts };
        server::serve(listener, state, &admin_token, shutdown_signal()).await?;
        scheduler.abort();
        pool.close().await;
        anyhow::Ok(())
    }
    .await;

    if let Some(pg) = embedded {
        tracing::info!("stopping embedded PostgreSQL");
        pg.stop().await?;
    }
    served
}

/// Reads DATA_DIR/admin-token, creating it (mode 0600) on first start.
fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = paths::admin_token_file(data_dir);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let token = auth::new_secret();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated the admin token for `ipw`");
    Ok(token)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
