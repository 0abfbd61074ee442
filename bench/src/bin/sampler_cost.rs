//! `ipw-sampler-cost`: the CPU the agent's power sampler costs at its rate (20 Hz by
//! default). It samples a FIXTURE powercap tree (RAPL zones as files in a temporary
//! directory) found by the agent's own RAPL discovery, through the agent's own `Sampler`,
//! while the main thread sleeps.
//!
//! Two figures: the whole process (`getrusage`, an upper bound: it includes start-up and the
//! sleeping main thread) and the sampler thread alone (`/proc/self/task/*/schedstat`, Linux).
//! A fixture file is cheaper to read than a real `energy_uj`, where the kernel reads an MSR;
//! `--powercap-root /sys/class/powercap` measures the real one where it is readable.

use clap::Parser;
use ipw_agent::power::{PowerSource, rapl};
use ipw_agent::sampler::Sampler;
use ipw_bench::cpu::{process_cpu_s, thread_cpu_s};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ipw-sampler-cost",
    version,
    about = "The CPU cost of the agent's power sampler, on a fixture \
    powercap tree. Prints one JSON line."
)]
struct Args {
    /// Sampling rate.
    #[arg(long, default_value_t = ipw_agent::sampler::DEFAULT_HZ)]
    hz: f64,
    /// How long to sample.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Sample this powercap tree instead of a fixture (energy_uj must be readable).
    #[arg(long)]
    powercap_root: Option<PathBuf>,
}

/// A package and a dram zone laid out as the kernel does (flat `intel-rapl:*` entries).
fn write_fixture(root: &Path) -> std::io::Result<()> {
    for (dir, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:0:1", "dram")] {
        let zone = root.join(dir);
        std::fs::create_dir_all(&zone)?;
        std::fs::write(zone.join("name"), format!("{name}\n"))?;
        std::fs::write(zone.join("energy_uj"), "123456789\n")?;
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n")?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixture = tempfile::Builder::new().prefix("ipw-sampler-cost-fixture-").tempdir()?;
    let (root, source) = match args.powercap_root {
        Some(root) => {
            let source = format!("powercap at {} (rapl)", root.display());
            (root, source)
        }
        None => {
            write_fixture(fixture.path())?;
            (fixture.path().to_owned(), "fixture powercap (rapl)".to_owned())
        }
    };
    let zones = rapl::discover(&root).map_err(anyhow::Error::msg)?;
    let zone_names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
    let sources: Vec<Box<dyn PowerSource>> = zones.into_iter().map(|z| Box::new(z) as Box<dyn PowerSource>).collect();
    let capacity = (args.hz * args.seconds).ceil() as usize + 64;

    let (user0, sys0) = process_cpu_s()?;
    let started = Instant::now();
    let sampler = Sampler::start(sources, args.hz, capacity);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let (user1, sys1) = process_cpu_s()?;
    let seconds = started.elapsed().as_secs_f64();
    // The thread was born with the sampler, so its whole life is inside the window.
    let thread_cpu = thread_cpu_s("ipw-power-sampler");
    let samples = sampler.samples(0.0, f64::INFINITY).len();
    drop(sampler);

    let cpu_s = (user1 - user0) + (sys1 - sys0);
    let report = serde_json::json!({
        "hz": args.hz,
        "seconds": seconds,
        "samples": samples,
        "zones": zone_names,
        "cpu_s": cpu_s,
        "cpu_user_s": user1 - user0,
        "cpu_sys_s": sys1 - sys0,
        "share_of_one_core": cpu_s / seconds,
        "cpu_scope": "process (upper bound)",
        "sampler_thread_cpu_s": thread_cpu,
        "sampler_thread_share_of_one_core": thread_cpu.map(|c| c / seconds),
        "source": source,
    });
    println!("{report}");
    Ok(())
}
