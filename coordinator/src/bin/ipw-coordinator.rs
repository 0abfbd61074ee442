//! `ipw-coordinator`: the fleet's gRPC server.

use anyhow::Context;
use clap::Parser;
use ipw_coordinator::api::ops::CoordinatorProbes;
use ipw_coordinator::api::{State, server};
use ipw_coordinator::dashboard::{Dashboard, Settings, router};
use ipw_coordinator::infra::embedded_postgres::EmbeddedPostgres;
use ipw_coordinator::infra::metrics::Metrics;
use ipw_coordinator::infra::rate_limit::RateLimiter;
use ipw_coordinator::infra::{auth, paths, pool, tls};
use ipw_coordinator::jobs::{scheduler, summaries};
use ipw_ops::telemetry::{ServiceIdentity, TelemetryArgs};
use sqlx::postgres::PgConnectOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Times the engine may fail one query (a crash, a refused connection: not an answer)
    /// before the query is recorded as an error.
    #[arg(long, env = "IPW_MAX_ENGINE_FAILURES", default_value_t = 3)]
    max_engine_failures: u32,
    /// How long to wait, retrying with backoff, for a --database-url that is not up yet.
    #[arg(long, env = "IPW_DB_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    db_wait: std::time::Duration,
    /// Serve plain-text gRPC instead of TLS. Only for a trusted network or a local demo.
    #[arg(long, env = "IPW_INSECURE")]
    insecure: bool,
    /// Refuse agent calls without the agent's own client certificate (mTLS). Agents get one
    /// when they join.
    #[arg(long, env = "IPW_REQUIRE_CLIENT_CERT", conflicts_with = "insecure")]
    require_client_cert: bool,
    /// Another name or IP address for the server certificate (repeatable). Not needed for
    /// agents, which verify the name `ipw-coordinator`; useful for other TLS clients.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// The URL agents should join, printed in join commands (default: this host's name and
    /// the --listen port).
    #[arg(long, env = "IPW_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Read the CA (ca.pem, ca.key) from this folder, read-only, instead of DATA_DIR/tls:
    /// several coordinators serving one fleet share one CA
    #[arg(long, env = "IPW_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Read the admin token from this file, read-only, instead of DATA_DIR/admin-token:
    /// several coordinators serving one fleet share one admin credential
    #[arg(long, env = "IPW_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// `Join` calls allowed at once from one address, then --join-per-minute.
    #[arg(long, default_value_t = 10)]
    join_burst: u32,
    /// `Join` calls allowed per minute from one address, sustained.
    #[arg(long, default_value_t = 10)]
    join_per_minute: u32,
    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this address (e.g.
    /// 0.0.0.0:9464), and the web dashboard (log in with `ipw token create --viewer`).
    /// Without it, none of them is served.
    #[arg(long, env = "IPW_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve no dashboard on the --metrics-listen listener: only /metrics, /healthz, /readyz.
    #[arg(long, env = "IPW_NO_DASHBOARD")]
    no_dashboard: bool,
    /// Mark the dashboard's cookies Secure. The listener speaks plain HTTP: give this when
    /// browsers reach it over HTTPS through a proxy that does not send X-Forwarded-Proto
    /// (with `X-Forwarded-Proto: https` the cookies are Secure anyway).
    #[arg(long, env = "IPW_DASHBOARD_SECURE_COOKIES")]
    dashboard_secure_cookies: bool,
    /// The dashboard's address as browsers reach it (e.g. through a proxy), for the login URL
    /// `ipw token create --viewer` prints (default: http://<this host>:<--metrics-listen port>).
    #[arg(long, env = "IPW_DASHBOARD_URL")]
    dashboard_url: Option<String>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let identity = ServiceIdentity { name: "ipw-coordinator", attributes: Vec::new() };
    let telemetry = ipw_ops::telemetry::init(&args.telemetry, identity)?;
    let outcome = coordinate(args).await;
    telemetry.shutdown().await;
    outcome
}

async fn coordinate(args: Args) -> anyhow::Result<()> {
    let data_dir = paths::data_dir(args.data_dir.clone()).context("resolving --data-dir")?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let admin_token = admin_token(&args, &data_dir)?;

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

    let metrics = Metrics::default();
    let probes = std::sync::Arc::new(CoordinatorProbes::new(metrics.clone()));
    let (dashboard, dashboard_login_url) = serve_ops(&args, &metrics, probes.clone()).await?;
    let served = async {
        let pool = pool::connect_and_migrate_within(options, args.db_wait).await?;
        if let Some(dashboard) = &dashboard {
            dashboard.connect(pool.clone()).await?;
        }
        // The CA and certificate exist before the port opens: whoever sees it listening can
        // read the CA (tests, `ipw token create`) and be served TLS.
        let authority = match (&args.tls_dir, args.insecure) {
            (_, true) => None,
            (Some(dir), false) => Some(tls::Authority::load(dir)?),
            (None, false) => Some(tls::Authority::load_or_create(&data_dir)?),
        };
        match &authority {
            Some(a) => tracing::info!(
                ca = %args.tls_dir.as_ref().map(|d| d.join("ca.pem")).unwrap_or_else(|| tls::ca_file(&data_dir)).display(),
                fingerprint = %a.fingerprint(),
                mtls_required = args.require_client_cert,
                "serving TLS"
            ),
            None => tracing::warn!("serving plain-text gRPC (--insecure): credentials and results travel unencrypted"),
        }
        // Before the port answers: a stop sent as soon as it does must be a clean one.
        let shutdown = shutdown_signal();
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(addr = %args.listen, "coordinator listening");
        probes.connected(pool.clone());
        // Every replica runs the scheduler; the advisory lock lets one act at a time.
        let every = std::time::Duration::from_secs(15);
        let scheduler = tokio::spawn(scheduler::run_forever(pool.clone(), every, metrics.clone()));
        let summaries = tokio::spawn(summaries::run_forever(pool.clone(), std::time::Duration::from_secs(5)));
        let state = State {
            lease_ttl: args.lease_ttl,
            max_attempts: args.max_attempts,
            max_engine_failures: args.max_engine_failures.max(1),
            authority: authority.map(std::sync::Arc::new),
            require_client_cert: args.require_client_cert,
            advertise_url: args.advertise_url.clone().unwrap_or_else(|| default_advertise_url(&args)),
            dashboard_login_url,
            join_limiter: std::sync::Arc::new(RateLimiter::new(args.join_burst, args.join_per_minute)),
            metrics,
            ..State::new(pool.clone())
        };
        server::serve(listener, state, &admin_token, &args.tls_names, shutdown).await?;
        scheduler.abort();
        summaries.abort();
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

/// The admin token: --admin-token, --admin-token-file, or DATA_DIR/admin-token (made on
/// first start).
fn admin_token(args: &Args, data_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(match (args.admin_token.clone(), &args.admin_token_file) {
        (Some(_), Some(_)) => anyhow::bail!("give --admin-token or --admin-token-file, not both"),
        (Some(t), None) => {
            auth::check_admin_token(&t, "--admin-token")?;
            t.trim().to_owned()
        }
        (None, Some(file)) => auth::read_admin_token(file)?,
        (None, None) => auth::load_or_create_admin_token(&paths::admin_token_file(data_dir))?,
    })
}

/// Starts the operations listener on --metrics-listen, with the dashboard unless
/// --no-dashboard: returns the dashboard, to connect once the database is, and its login URL.
async fn serve_ops(
    args: &Args,
    metrics: &Metrics,
    probes: std::sync::Arc<CoordinatorProbes>,
) -> anyhow::Result<(Option<std::sync::Arc<Dashboard>>, String)> {
    let Some(addr) = args.metrics_listen else { return Ok((None, String::new())) };
    if args.no_dashboard {
        ipw_ops::http::spawn(addr, metrics.registry(), probes).await?;
        return Ok((None, String::new()));
    }
    let dashboard = Dashboard::new(Settings { secure_cookies: args.dashboard_secure_cookies });
    let bound = ipw_ops::http::spawn_with(addr, metrics.registry(), probes, router(dashboard.clone())).await?;
    let base = args.dashboard_url.clone().unwrap_or_else(|| url_of("http", bound));
    let login = format!("{}/login", base.trim_end_matches('/'));
    tracing::info!(url = %login, "serving the dashboard");
    Ok((Some(dashboard), login))
}

/// `https://<host name>:<port>`, or `http://` with --insecure; the loopback address when
/// listening on loopback only.
fn default_advertise_url(args: &Args) -> String {
    url_of(if args.insecure { "http" } else { "https" }, args.listen)
}

/// `<scheme>://<host>:<port>` for a listening address: this host's name when it listens on
/// every address, else the address itself.
fn url_of(scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Handles SIGTERM and SIGINT from now on (not from the first poll, as `ctrl_c()` would), and
/// resolves at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
