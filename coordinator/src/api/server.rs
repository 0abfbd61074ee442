//! Wires the services onto one listener.

use super::State;
use super::admin::AdminService;
use super::agent::AgentServiceImpl;
use super::auth::{AdminAdmission, AgentAdmission};
use super::enrollment::{EnrollmentService, rate_limited};
use super::guard::GateLayer;
use crate::infra::auth::hash_secret;
use crate::infra::revoked::RevokedCerts;
use crate::jobs::revocations;
use crate::store;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ipw_proto::v1::admin_server::AdminServer;
use ipw_proto::v1::agent_service_server::AgentServiceServer;
use ipw_proto::v1::enrollment_server::EnrollmentServer;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tower::Layer;

/// HTTP/2 flow-control window of one stream, and of a whole connection, in bytes; the CLI
/// uses the same for what it receives (exports).
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// See [`STREAM_WINDOW_BYTES`].
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// Largest message accepted: result batches and workload chunks stay well under it.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest message accepted on the unauthenticated `Join`.
pub const MAX_JOIN_MESSAGE_BYTES: usize = 256 << 10;

/// Serves every service on `listener` until `shutdown` resolves, then drains in-flight calls.
/// With an authority in `state`, only TLS is spoken (a server certificate for `tls_names`
/// too), and revoked agents' certificates are refused at the handshake; without, plain text.
/// `admin_token` is registered as the admin credential named `initial` (unless an operator
/// revoked it).
pub async fn serve(
    listener: TcpListener,
    state: State,
    admin_token: &str,
    tls_names: &[String],
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    store::admin::register_initial(&state.pool, &hash_secret(admin_token))
        .await
        .map_err(|e| anyhow::anyhow!("registering the initial admin credential: {e}"))?;
    let (pool, authority) = (state.pool.clone(), state.authority.clone());
    let router = tonic::transport::Server::builder()
        // A span per call, joined to the caller's trace (W3C traceparent).
        .layer(ipw_ops::propagation::GrpcServerTraceLayer)
        // HTTP/2's default 64 KiB window made a workload import wait on window updates a third
        // of the time; large uploads (imports, result batches) need room in flight.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .add_service(InterceptedService::new(
            EnrollmentServer::new(EnrollmentService::new(state.clone()))
                .max_decoding_message_size(MAX_JOIN_MESSAGE_BYTES),
            rate_limited(state.join_limiter.clone()),
        ))
        // Agents and operators are authenticated before their bodies are read; each agent
        // method has its limits.
        .add_service(GateLayer::new(AgentAdmission(state.clone())).layer(
            AgentServiceServer::new(AgentServiceImpl::new(state.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES),
        ))
        .add_service(
            GateLayer::new(AdminAdmission(state.clone()))
                .layer(AdminServer::new(AdminService::new(state)).max_decoding_message_size(MAX_MESSAGE_BYTES)),
        );
    let Some(authority) = authority else {
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown).await?;
        return Ok(());
    };
    let revoked = RevokedCerts::default();
    revocations::load(&pool, &revoked).await?;
    let config = authority.server_config(tls_names, revoked.clone())?;
    tokio::select! {
        served = router.serve_with_incoming_shutdown(tls_connections(listener, config), shutdown) => served?,
        () = revocations::follow(pool, revoked) => {}
    }
    Ok(())
}

/// The TLS connections made on `listener`. Handshakes run side by side (a slow or silent
/// client holds up no one) and give up after 10 s; a failed one (a revoked certificate, a
/// client that does not trust our CA) is dropped. Owning the listener, the stream closes it
/// when the server stops.
fn tls_connections(
    listener: TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    type Handshake = Pin<Box<dyn Future<Output = Option<TlsStream<TcpStream>>> + Send>>;
    let acceptor = TlsAcceptor::from(config);
    let pending: FuturesUnordered<Handshake> = FuturesUnordered::new();
    futures::stream::unfold((listener, acceptor, pending), |(listener, acceptor, mut pending)| async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let handshake = acceptor.accept(tcp);
                        pending.push(Box::pin(async move {
                            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                                Ok(Ok(tls)) => Some(tls),
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                                    None
                                }
                                Err(_) => None,
                            }
                        }));
                    }
                    // Out of descriptors and the like: wait, rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(done) = pending.next(), if !pending.is_empty() => {
                    if let Some(tls) = done {
                        return Some((Ok(tls), (listener, acceptor, pending)));
                    }
                }
            }
        }
    })
}

/// A coordinator serving in the background of this process (tests, benchmarks).
#[derive(Debug)]
pub struct Background {
    /// Where it listens.
    pub addr: SocketAddr,
    state: State,
    admin_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Background {
    /// Binds `addr` (port 0 for any free port) and serves in a task: TLS when `state` has an
    /// authority, with a server certificate for `localhost` and the loopback addresses.
    pub async fn spawn(addr: SocketAddr, state: State, admin_token: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, task) = Self::serve_on(listener, state.clone(), admin_token.clone());
        Ok(Self { addr, state, admin_token, shutdown: Some(shutdown), task })
    }

    fn serve_on(
        listener: TcpListener,
        state: State,
        admin_token: String,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            serve(listener, state, &admin_token, &[], async {
                let _ = rx.await;
            })
            .await
        });
        (tx, task)
    }

    /// Kills the server abruptly, as a crash would (open calls and streams break), stays down
    /// for `down`, then serves again on the same address. For fault tests.
    pub async fn crash_and_restart(&mut self, down: std::time::Duration) -> std::io::Result<()> {
        self.task.abort();
        let _ = (&mut self.task).await;
        tokio::time::sleep(down).await;
        let listener = TcpListener::bind(self.addr).await?;
        let (shutdown, task) = Self::serve_on(listener, self.state.clone(), self.admin_token.clone());
        (self.shutdown, self.task) = (Some(shutdown), task);
        Ok(())
    }

    /// `https://addr` (or `http://addr` for plain text), for clients.
    pub fn url(&self) -> String {
        let scheme = if self.state.authority.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving and waits for in-flight calls.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("coordinator task panicked")
    }
}
