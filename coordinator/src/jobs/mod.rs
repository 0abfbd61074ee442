//! Background work over the database: the sweep scheduler, re-scoring, following
//! revocations, and storing finished runs' summaries.

pub mod rescore;
pub mod revocations;
pub mod scheduler;
pub mod summaries;
