//! All SQL, one file per table family. Functions take a connection or a transaction (the
//! caller decides what commits together) and fail with [`Error`], which `api/` turns into a
//! gRPC status.

pub mod admin;
pub mod agents;
pub mod exports;
pub mod fleet;
pub mod gauges;
pub mod leases;
pub mod pricing;
pub mod provenance;
pub mod reports;
pub mod research;
pub mod results;
pub mod run_list;
pub mod runs;
pub mod sessions;
pub mod summaries;
pub mod sweeps;
pub mod telemetry;
pub mod tokens;
pub mod viewers;
pub mod workloads;

use crate::domain::Invalid;

/// Why a store call failed. The message says what was wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule, or does not fit what is stored.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something with that name or id exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The stored state does not allow it now (a revoked agent, a cancelled sweep).
    #[error("{0}")]
    Precondition(String),
    /// The caller may not touch this (another agent's shard).
    #[error("{0}")]
    Forbidden(String),
    /// The caller's credential or token is not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// PostgreSQL failed or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::Invalid(e.0)
    }
}

/// What store calls return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A unique violation becomes `make(message)`; any other error stays a database error.
pub(crate) fn on_unique_violation(e: sqlx::Error, make: impl FnOnce() -> Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => make(),
        _ => Error::Db(e),
    }
}

/// Microseconds since the epoch, the protocol's time unit.
pub fn unix_us(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// A closed-set value read back from a column whose `CHECK` admits only its names. A name
/// outside the set means the schema and `ipw_proto::kinds` disagree: a decode error.
pub(crate) fn stored<T>(s: &str) -> Result<T>
where
    T: std::str::FromStr<Err = ipw_proto::kinds::UnknownValue>,
{
    s.parse().map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e))))
}

/// A scorer read back from `queries.scorer` or `scores.scorer`, whose `CHECK` admits only
/// known scorers.
pub(crate) fn stored_scorer(s: &str) -> Result<crate::domain::scoring::Scorer> {
    crate::domain::scoring::Scorer::parse(s)
        .ok_or_else(|| Error::Db(sqlx::Error::Decode(format!("unknown scorer \"{s}\" in the database").into())))
}
