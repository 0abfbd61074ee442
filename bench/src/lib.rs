//! Tools that measure the fleet's own cost, not models or hardware: an engine simulator, a
//! minimal streaming client to compare the agent with, and a meter for the power sampler's CPU.
//!
//! The simulator answers with canned text and does no inference: it is a benchmark tool
//! only, never used where accuracy or energy is claimed.

pub mod cpu;
pub mod load;
pub mod scale;

/// A tokio runtime with `threads` workers; one means a current-thread runtime, the cheapest.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}
