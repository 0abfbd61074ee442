//! CPU time used by this process, and by one of its threads.

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

/// User and system CPU seconds used by this process so far (all threads, `getrusage`).
pub fn process_cpu_s() -> nix::Result<(f64, f64)> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.num_microseconds() as f64 / 1e6;
    Ok((secs(usage.user_time()), secs(usage.system_time())))
}

/// CPU seconds used so far by this process's threads named `name`, summed; `None` where
/// `/proc/self/task` is missing (not Linux) or no such thread exists.
///
/// Reads `schedstat` (nanoseconds), not `stat`, whose clock ticks are too coarse for a
/// thread that runs for microseconds at a time. The kernel keeps 15 bytes of a thread's
/// name, so only that much is compared.
pub fn thread_cpu_s(name: &str) -> Option<f64> {
    let short = &name[..name.len().min(15)];
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != short {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += ns as f64 / 1e9;
    }
    found
}
