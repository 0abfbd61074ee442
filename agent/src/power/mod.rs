//! Power sources: one trait, one file per kind of source.
//!
//! A source reports what it measures (its kind and scope) and how: a cumulative energy
//! counter, or instantaneous power that the sampler integrates. When nothing readable is
//! found, energy is recorded as unknown with the reason, never estimated.

pub mod amd_hwmon;
pub mod ioreport;
#[cfg(target_os = "macos")]
pub mod ioreport_live;
mod none;
pub mod nvml;
pub mod powermetrics;
pub mod rapl;

pub use none::NoPower;

pub use ipw_proto::kinds::PowerKind;
use std::path::PathBuf;
use std::time::Duration;

/// A reading from a power source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A cumulative energy counter, in joules. It may wrap (see [`PowerSource::wrap_j`]).
    EnergyJ(f64),
    /// Instantaneous (or short-average) power, in watts.
    PowerW(f64),
}

/// One place power can be read from.
pub trait PowerSource: Send {
    /// The provenance name stored with results.
    fn kind(&self) -> PowerKind;
    /// What the source covers: gpu, cpu-package, dram or soc.
    fn scope(&self) -> &'static str;
    /// Which device or domain, for people: "GPU 0 NVIDIA H100", "package-0".
    fn name(&self) -> String;
    /// Takes one reading.
    fn read(&mut self) -> std::io::Result<Reading>;
    /// Where an energy counter wraps around, in joules; `None` if it does not.
    fn wrap_j(&self) -> Option<f64> {
        None
    }
    /// How often the underlying value changes; windows shorter than this are warned about.
    /// Zero where it is not known.
    fn update_period(&self) -> Duration {
        Duration::ZERO
    }
    /// Settings worth keeping with the measurements: power limit, clocks, driver version.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A candidate that was looked for and not usable, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The kind of source.
    pub kind: &'static str,
    /// Why it cannot be used here.
    pub reason: String,
}

/// Where to look, and which devices to use. Defaults are the real system locations.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The powercap sysfs root (`/sys/class/powercap`).
    pub powercap_root: PathBuf,
    /// The DRM sysfs root for AMD GPUs (`/sys/class/drm`).
    pub drm_root: PathBuf,
    /// NVIDIA GPUs to measure (`--gpus`), overriding `CUDA_VISIBLE_DEVICES`.
    pub gpus: Option<String>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            powercap_root: PathBuf::from(rapl::POWERCAP_ROOT),
            drm_root: PathBuf::from(amd_hwmon::DRM_ROOT),
            gpus: None,
        }
    }
}

/// What [`discover`] found on this machine.
pub struct Discovery {
    /// Readable sources.
    pub sources: Vec<Box<dyn PowerSource>>,
    /// Sources looked for and not usable.
    pub unavailable: Vec<Unavailable>,
}

/// Looks for every kind of source this platform can have.
pub fn discover(opts: &DiscoveryOptions) -> Discovery {
    let mut d = Discovery { sources: Vec::new(), unavailable: Vec::new() };
    let gpu_spec = opts.gpus.clone().or_else(|| std::env::var("CUDA_VISIBLE_DEVICES").ok());
    d.take("nvml", nvml::discover(gpu_spec.as_deref()));
    d.take("rapl", rapl::discover(&opts.powercap_root));
    d.take("amd-hwmon", amd_hwmon::discover(&opts.drm_root));
    // IOReport and powermetrics both measure the SoC: powermetrics is only the fallback.
    #[cfg(target_os = "macos")]
    let ioreport_ok = d.take("apple-ioreport", ioreport_live::IoReport::open().map(|s| vec![s]));
    #[cfg(not(target_os = "macos"))]
    let ioreport_ok = {
        d.unavailable.push(Unavailable { kind: "apple-ioreport", reason: "only on macOS".into() });
        false
    };
    if ioreport_ok {
        d.unavailable.push(Unavailable { kind: "powermetrics", reason: "not needed: IOReport is read".into() });
    } else {
        d.take("powermetrics", powermetrics::discover());
    }
    d
}

impl Discovery {
    /// Keeps what was found, or records why nothing was; says whether something was found.
    fn take<S: PowerSource + 'static>(&mut self, kind: &'static str, found: Result<Vec<S>, String>) -> bool {
        match found {
            Ok(sources) => {
                let any = !sources.is_empty();
                self.sources.extend(sources.into_iter().map(|s| Box::new(s) as Box<dyn PowerSource>));
                any
            }
            Err(reason) => {
                self.unavailable.push(Unavailable { kind, reason });
                false
            }
        }
    }

    /// Why there is no energy, when no source was found: every candidate and its reason.
    pub fn null_reason(&self) -> String {
        let mut reasons = vec!["no readable power source".to_owned()];
        reasons.extend(self.unavailable.iter().map(|u| format!("{}: {}", u.kind, u.reason)));
        reasons.join("; ")
    }
}
