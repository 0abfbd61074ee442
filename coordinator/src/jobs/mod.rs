//! Background work over the database: the sweep scheduler, re-scoring, and following
//! revocations.

pub mod rescore;
pub mod revocations;
pub mod scheduler;
