//! `ipw-agent`: enrolls with a coordinator, then leases shards of queries, runs them on a
//! local OpenAI-compatible engine while sampling power, and uploads the results from a durable
//! spool that is emptied only after the coordinator has committed them.

pub mod attribution;
pub mod client;
pub mod commit;
pub mod config;
pub mod engine;
pub mod hardware;
pub mod health;
pub mod join;
pub mod leases;
pub mod ledger;
pub mod managed;
pub mod meter;
pub mod metrics;
pub mod pin;
pub mod power;
pub mod progress;
pub mod provenance;
pub mod rotation;
pub mod runner;
pub mod sampler;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod spool;
pub mod steady;

/// The agent's version, recorded with every join.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
