//! Result batches as they arrive from agents: see `ipw_coordinator::domain::untrusted`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipw_coordinator::domain::untrusted::result_batch(data));
