//! Plumbing every layer leans on: secrets, TLS, rate limits, the pool, the embedded
//! PostgreSQL and the coordinator's files.

pub mod auth;
pub mod embedded_postgres;
pub mod metrics;
pub mod paths;
pub mod pool;
pub mod rate_limit;
pub mod revoked;
pub mod tls;
