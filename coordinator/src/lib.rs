//! The ipw-fleet coordinator: a stateless gRPC server over PostgreSQL.
//!
//! It enrolls agents, shards runs into leases, ingests result batches idempotently and scores
//! them server side. Several replicas can serve one database, since every piece of state
//! lives in Postgres.

pub mod auth;
pub mod cli;
pub mod db;
pub mod embedded_postgres;
pub mod hardware;
pub mod ingest;
pub mod paths;
pub mod plot;
pub mod prompt;
pub mod rate_limit;
pub mod rescore;
pub mod runs;
pub mod schedule;
pub mod scores;
pub mod scoring;
pub mod server;
pub mod service;
pub mod sweeps;
pub mod tls;
pub mod workload;
