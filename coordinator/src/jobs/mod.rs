//! Background work over the database: the sweep scheduler and re-scoring.

pub mod rescore;
pub mod scheduler;
