//! The scale benchmark (`ipw-scale-bench`): the coordinator and PostgreSQL at a million
//! queries, each step timed beside its raw PostgreSQL baseline in the same run.
//!
//! The data are generated here, never committed: a workload of MMLU-Pro questions repeated
//! with new ids, and result rows written straight into the database for the report and view
//! timings. Those rows are **synthetic**: they carry no energy (NULL, with the reason
//! "synthetic benchmark row") and exist only to time SQL; no accuracy or energy figure is
//! ever read from them. The ingest load generator's results are also made up (an instant
//! answer, no power source): it measures the coordinator's cost, not a model.

pub mod agents;
pub mod data;
pub mod fleet;
pub mod stats;
