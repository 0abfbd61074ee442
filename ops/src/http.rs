//! The operations listener: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (it can do its work), for probes and scrapers. A service may serve more
//! routes beside them (the coordinator's dashboard); those three stay unauthenticated.

use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Longest a readiness check may take: probes give up after a second or a few.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One readiness check's outcome: what was found, or what is wrong.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `postgres`.
    pub name: &'static str,
    /// Ok with a detail, or the reason it is not ready.
    pub outcome: Result<String, String>,
}

/// What a service tells its operations listener.
pub trait Probes: Send + Sync + 'static {
    /// The readiness checks; all must pass for `/readyz` to answer 200.
    fn ready(&self) -> BoxFuture<'_, Vec<Check>>;
    /// Brings gauges read at scrape time up to date (e.g. from the database).
    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct Shared {
    registry: Registry,
    probes: Arc<dyn Probes>,
}

/// Serves the three routes, and `extra`'s beside them, on `listener` until `shutdown`
/// resolves. Handlers in `extra` can read the peer's address (`ConnectInfo<SocketAddr>`).
/// `extra` must not route `/metrics`, `/healthz` or `/readyz` (axum panics on the overlap).
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    probes: Arc<dyn Probes>,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::routing::get;
    let shared = Arc::new(Shared { registry, probes });
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(extra);
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Binds `addr` and serves in the background; the address bound (port 0 picks one) is
/// returned, and the listener stops when the process does.
pub async fn spawn(
    addr: std::net::SocketAddr,
    registry: Registry,
    probes: Arc<dyn Probes>,
) -> anyhow::Result<std::net::SocketAddr> {
    spawn_with(addr, registry, probes, axum::Router::new()).await
}

/// [`spawn`], with `extra`'s routes served beside the three (see [`serve`]).
pub async fn spawn_with(
    addr: std::net::SocketAddr,
    registry: Registry,
    probes: Arc<dyn Probes>,
    extra: axum::Router,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics and health: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, registry, probes, extra, futures::future::pending()).await {
            tracing::error!(error = %e, "the metrics and health listener stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

/// `[+]name detail` per passing check and `[-]name reason` per failing one, as Kubernetes'
/// own `/readyz?verbose` lists them; 503 when any fails.
async fn readyz(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> (http::StatusCode, String) {
    let checks = match tokio::time::timeout(CHECK_TIMEOUT, shared.probes.ready()).await {
        Ok(checks) => checks,
        Err(_) => vec![Check { name: "checks", outcome: Err(format!("did not finish within {CHECK_TIMEOUT:?}")) }],
    };
    let mut body = String::new();
    for c in &checks {
        match &c.outcome {
            Ok(detail) => body.push_str(&format!("[+]{} ok: {detail}\n", c.name)),
            Err(reason) => body.push_str(&format!("[-]{} failed: {reason}\n", c.name)),
        }
    }
    let ready = checks.iter().all(|c| c.outcome.is_ok());
    body.push_str(if ready { "ready\n" } else { "not ready\n" });
    (if ready { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE }, body)
}

async fn metrics(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A slow database must not hang the scrape: the gauges keep their last values.
    let _ = tokio::time::timeout(CHECK_TIMEOUT, shared.probes.before_scrape()).await;
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}\n"))
            .into_response();
    }
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
