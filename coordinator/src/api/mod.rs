//! The gRPC services: thin tonic handlers that parse, authorize, call one function and map
//! its error to a status. This is the only layer that speaks `tonic::Status`.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod enrollment;
pub mod error;
pub mod guard;
pub mod ops;
pub mod research;
pub mod server;

use crate::infra::metrics::Metrics;
use crate::infra::rate_limit::RateLimiter;
use crate::infra::tls::{Authority, Issued};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;
use uuid::Uuid;

/// What every service needs: the pool and the coordinator's settings. Apart from the `Join`
/// rate limits, nothing is kept in memory, so replicas are interchangeable.
#[derive(Debug, Clone)]
pub struct State {
    /// The database.
    pub pool: PgPool,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Leases a shard may run out of before it is failed.
    pub max_attempts: u32,
    /// Times the engine may fail one query (not answering it) before the query is recorded
    /// as an error.
    pub max_engine_failures: u32,
    /// The CA that signs server and agent certificates; `None` serves plain text.
    pub authority: Option<Arc<Authority>>,
    /// Refuse agent calls that do not present the agent's own client certificate (mTLS).
    pub require_client_cert: bool,
    /// Where agents should join, as join commands print it.
    pub advertise_url: String,
    /// The dashboard's login page, as `ipw token create --viewer` prints it; empty when this
    /// coordinator serves no dashboard.
    pub dashboard_login_url: String,
    /// `Join` attempts per client address.
    pub join_limiter: Arc<RateLimiter>,
    /// What this replica counts, for `/metrics`.
    pub metrics: Metrics,
}

impl State {
    /// A client certificate for `agent_id`, for the key of the agent's `csr_pem`, when serving
    /// TLS; `None` for plain text. The agent's key never travels, so a CSR is required.
    pub fn client_certificate(&self, agent_id: Uuid, csr_pem: &str) -> Result<Option<Issued>, Status> {
        let Some(authority) = &self.authority else { return Ok(None) };
        if csr_pem.trim().is_empty() {
            return Err(Status::invalid_argument(
                "this coordinator signs the agent's own key: send a certificate signing request (csr_pem); \
                 upgrade ipw-agent",
            ));
        }
        authority
            .client_certificate(agent_id, csr_pem)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))
    }

    /// Plain text, 10-minute leases, 3 attempts, 3 engine failures per query, and 10 joins at once then 10 a minute per
    /// address.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            lease_ttl: Duration::from_secs(600),
            max_attempts: 3,
            max_engine_failures: 3,
            authority: None,
            require_client_cert: false,
            advertise_url: String::new(),
            dashboard_login_url: String::new(),
            join_limiter: Arc::new(RateLimiter::new(10, 10)),
            metrics: Metrics::default(),
        }
    }
}

/// Parses a UUID argument, naming the field when it is malformed.
pub(crate) fn parse_uuid(field: &str, s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s).map_err(|_| Status::invalid_argument(format!("{field} \"{s}\" is not a valid id")))
}
