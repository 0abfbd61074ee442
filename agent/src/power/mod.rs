//! Power sources: one trait, one file per kind of source.
//!
//! A source reports what it measures (its kind and scope). When nothing readable is found,
//! energy is recorded as unknown with the reason, never estimated.

mod none;
pub mod rapl;

pub use none::NoPower;

use ipw_proto::v1::Energy;

/// A reading from a power source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A monotonically increasing energy counter, in joules.
    EnergyJ(f64),
    /// Instantaneous power, in watts.
    PowerW(f64),
}

/// One place power can be read from.
pub trait PowerSource: Send {
    /// The provenance name stored with results: nvml-counter, nvml-power, rapl, amd-hwmon,
    /// apple-ioreport, powermetrics or none.
    fn kind(&self) -> &'static str;
    /// What the source covers: gpu, cpu-package, dram or soc.
    fn scope(&self) -> &'static str;
    /// Takes one reading.
    fn read(&mut self) -> std::io::Result<Reading>;
}

/// A candidate that was looked for and not usable, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The kind of source.
    pub kind: &'static str,
    /// Why it cannot be used here.
    pub reason: String,
}

/// What [`discover`] found on this machine.
pub struct Discovery {
    /// Readable sources.
    pub sources: Vec<Box<dyn PowerSource>>,
    /// Sources looked for and not usable.
    pub unavailable: Vec<Unavailable>,
}

/// Looks for every kind of source this platform can have.
pub fn discover() -> Discovery {
    let mut sources: Vec<Box<dyn PowerSource>> = Vec::new();
    let mut unavailable = Vec::new();
    match crate::hardware::nvidia_gpus() {
        Ok(gpus) if !gpus.is_empty() => unavailable.push(Unavailable {
            kind: "nvml-counter",
            reason: format!(
                "{} NVIDIA GPU(s) found, but NVML energy sampling is not implemented yet",
                gpus.len()
            ),
        }),
        Ok(_) => unavailable.push(Unavailable {
            kind: "nvml-counter",
            reason: "NVML reports no GPUs".into(),
        }),
        Err(reason) => unavailable.push(Unavailable {
            kind: "nvml-counter",
            reason,
        }),
    }
    match rapl::discover(std::path::Path::new(rapl::POWERCAP_ROOT)) {
        Ok(domains) => sources.extend(
            domains
                .into_iter()
                .map(|d| Box::new(d) as Box<dyn PowerSource>),
        ),
        Err(reason) => unavailable.push(Unavailable {
            kind: "rapl",
            reason,
        }),
    }
    Discovery {
        sources,
        unavailable,
    }
}

impl Discovery {
    /// The energy record for results measured with what was found. Until per-query
    /// attribution exists, every result records why its energy is unknown.
    pub fn energy_record(&self) -> Energy {
        let mut reasons: Vec<String> = self
            .unavailable
            .iter()
            .map(|u| format!("{}: {}", u.kind, u.reason))
            .collect();
        if !self.sources.is_empty() {
            let found: Vec<String> = self
                .sources
                .iter()
                .map(|s| format!("{} ({})", s.kind(), s.scope()))
                .collect();
            reasons.insert(
                0,
                format!(
                    "found {} but per-query energy attribution is not implemented yet",
                    found.join(", ")
                ),
            );
        } else {
            reasons.insert(0, "no readable power source".into());
        }
        NoPower::new(reasons.join("; ")).energy_record()
    }
}
