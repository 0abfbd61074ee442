//! Workload lines: see `ipw_coordinator::domain::untrusted`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipw_coordinator::domain::untrusted::workload_lines(data));
