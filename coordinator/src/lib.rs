//! The ipw-fleet coordinator: a stateless gRPC server over PostgreSQL.
//!
//! It enrolls agents, shards runs into leases, ingests result batches idempotently and scores
//! them server side. Several replicas can serve one database, since every piece of state
//! lives in Postgres.
//!
//! The data path reads from the folder names: an agent's call arrives in [`api`] (thin tonic
//! handlers), which validates with [`domain`] (types and pure logic) and writes through
//! [`store`] (all SQL); the analysis views turn rows into figures, [`store::reports`] reads
//! them, and [`cli`] renders them. [`jobs`] hold the background work (the scheduler,
//! re-scoring) and [`infra`] the plumbing (secrets, TLS, limits, the pool, the embedded
//! PostgreSQL). [`dashboard`] is the web UI: thin HTTP handlers over [`store`], as [`api`]
//! is for gRPC.

pub mod api;
pub mod cli;
pub mod dashboard;
pub mod domain;
pub mod infra;
pub mod jobs;
pub mod store;
