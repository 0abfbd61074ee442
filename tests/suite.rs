//! The end-to-end suite: one test binary, so the workspace links once. Each module is one
//! area; all share the harness in `support/` (a fresh database per test on the cluster that
//! `scripts/test` starts, a real coordinator, real agents, the real llama-server).
//!
//! `pg_restart.rs` is the one test kept apart: it stops the shared PostgreSQL cluster, so
//! it runs in a binary of its own, after this one.

mod analysis;
mod browser;
mod dashboard;
mod end_to_end;
mod engines;
mod enrollment;
mod faults;
mod fleet_live;
mod helm;
mod leases;
mod load;
mod meters;
mod operate;
mod remote;
mod research;
mod scale;
mod schema;
mod security;
mod sweeps;
mod workload_import;
