//! The gRPC services, one file each, over one shared [`State`].

pub mod admin;
pub mod agent;
pub mod enrollment;

use sqlx::PgPool;
use std::time::Duration;
use tonic::Status;
use uuid::Uuid;

/// What every service needs: the pool and the coordinator's settings. Nothing else is kept
/// in memory, so replicas are interchangeable.
#[derive(Debug, Clone)]
pub struct State {
    /// The database.
    pub pool: PgPool,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// Leases a shard may run out of before it is failed.
    pub max_attempts: u32,
}

/// Logs a database error and reports it as `unavailable`.
pub fn db_error(e: sqlx::Error) -> Status {
    tracing::error!(error = %e, "database error");
    Status::unavailable(format!("database error: {e}"))
}

/// Parses a UUID argument, naming the field when it is malformed.
pub(crate) fn parse_uuid(field: &str, s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s).map_err(|_| Status::invalid_argument(format!("{field} \"{s}\" is not a valid id")))
}

/// Microseconds since the epoch, the protocol's time unit.
pub(crate) fn unix_us(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}
