//! Power sources: one trait, one file per kind of source.
//!
//! A source reports what it measures (its kind and scope) and how: a cumulative energy
//! counter, or instantaneous power that the sampler integrates. When nothing readable is
//! found, energy is recorded as unknown with the reason, never estimated.

pub mod gpu_hwmon;
pub mod http;
pub mod ioreport;
#[cfg(target_os = "macos")]
pub mod ioreport_live;
pub mod ipmi;
pub mod jetson;
pub mod json_meter;
pub mod meter_spec;
mod none;
pub mod nvml;
pub mod polled;
pub mod powermetrics;
pub mod prometheus;
pub mod rapl;
pub mod shelly;
mod sysfs;
pub mod tasmota;

pub use none::NoPower;

pub use ipw_proto::kinds::{IpwScope, PowerKind, PowerScope};

/// The stated error assumed for a source whose maker states none: NVML's +/-5 %.
pub const DEFAULT_STATED_ERROR: f64 = 0.05;
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
    /// What the source covers, from one chip to the plug.
    fn scope(&self) -> PowerScope;
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
    /// The error its maker states, as a fraction of the reading; the cross-check between
    /// scopes allows for it. 5 % where nothing is stated (NVML's own figure).
    fn stated_error(&self) -> f64 {
        DEFAULT_STATED_ERROR
    }
    /// Settings worth keeping with the measurements: power limit, clocks, driver version.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// The provenance kind a `--meter` kind produces.
fn meter_kind(meter: &str) -> &'static str {
    match meter {
        "ipmi" => PowerKind::IpmiDcmi.as_str(),
        "shelly" => PowerKind::Shelly.as_str(),
        "tasmota" => PowerKind::Tasmota.as_str(),
        "json" => PowerKind::JsonMeter.as_str(),
        _ => PowerKind::Prometheus.as_str(),
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
    /// The DRM sysfs root for AMD and Intel GPUs (`/sys/class/drm`).
    pub drm_root: PathBuf,
    /// The I2C drivers directory, for a Jetson's INA3221 rails.
    pub i2c_root: PathBuf,
    /// GPUs to measure (`--gpus`), overriding `CUDA_VISIBLE_DEVICES`.
    pub gpus: Option<String>,
    /// Meters given with `--meter`.
    pub meters: Vec<meter_spec::MeterSpec>,
    /// The ipmitool binary, for this machine's BMC.
    pub ipmitool: PathBuf,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            powercap_root: PathBuf::from(rapl::POWERCAP_ROOT),
            drm_root: PathBuf::from(gpu_hwmon::DRM_ROOT),
            i2c_root: PathBuf::from(jetson::I2C_DRIVERS),
            gpus: None,
            meters: Vec::new(),
            ipmitool: PathBuf::from("ipmitool"),
        }
    }
}

/// What [`discover`] found on this machine.
pub struct Discovery {
    /// Readable sources.
    pub sources: Vec<Box<dyn PowerSource>>,
    /// Sources looked for and not usable.
    pub unavailable: Vec<Unavailable>,
    /// Which GPUs are measured, and what chose them, for the provenance.
    pub gpu_selection: String,
}

/// Which GPUs to measure: `--gpus`, else `CUDA_VISIBLE_DEVICES`, else all; and what chose.
fn gpu_selection(opts: &DiscoveryOptions) -> (Option<String>, String) {
    if let Some(g) = &opts.gpus {
        return (Some(g.clone()), format!("--gpus {g}"));
    }
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => (Some(v.clone()), format!("CUDA_VISIBLE_DEVICES={v}")),
        Err(_) => (None, "every GPU: neither --gpus nor CUDA_VISIBLE_DEVICES is set".into()),
    }
}

/// Looks for every kind of source this platform can have.
pub fn discover(opts: &DiscoveryOptions) -> Discovery {
    let (gpu_spec, gpu_selection) = gpu_selection(opts);
    let mut d = Discovery { sources: Vec::new(), unavailable: Vec::new(), gpu_selection };
    let jetson = jetson::discover(&opts.i2c_root);
    match nvml::discover(gpu_spec.as_deref()) {
        // On Jetson NVML reads no power: say so, and read the rails below.
        Err(e) if jetson.is_ok() => d.unavailable.push(Unavailable {
            kind: "nvml",
            reason: format!("{e} (a Jetson: NVML reads no power here; its INA3221 rails are read instead)"),
        }),
        found => _ = d.take("nvml", found),
    }
    d.take("jetson-ina3221", jetson);
    d.take("rapl", rapl::discover(&opts.powercap_root));
    for vendor in [gpu_hwmon::AMD, gpu_hwmon::INTEL] {
        let found =
            gpu_hwmon::discover(&opts.drm_root, vendor).and_then(|cards| gpu_hwmon::select(cards, gpu_spec.as_deref()));
        d.take(vendor.kind.as_str(), found);
    }
    let gpus = d.sources.iter().filter(|s| s.scope() == PowerScope::Gpu).count();
    if gpus > 1 && gpu_spec.is_none() {
        tracing::warn!(gpus, "summing several GPUs: if the model runs on fewer, name them with --gpus");
    }
    d.take_meters(opts);
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
    /// This machine's BMC (when it has an IPMI device) and every `--meter`.
    fn take_meters(&mut self, opts: &DiscoveryOptions) {
        let asked_for_ipmi = opts.meters.iter().any(|m| m.kind == "ipmi");
        if !asked_for_ipmi {
            self.take("ipmi-dcmi", ipmi::discover(&opts.ipmitool, ipmi::Bmc::InBand, None).map(|s| vec![s]));
        }
        for spec in &opts.meters {
            let kind = spec.kind.clone();
            let found = match kind.as_str() {
                "ipmi" => ipmi::open(spec.clone(), &opts.ipmitool),
                "shelly" => shelly::open(spec.clone()),
                "tasmota" => tasmota::open(spec.clone()),
                "json" => json_meter::open(spec.clone()),
                _ => prometheus::open(spec.clone()),
            };
            // Each error names the flag or the meter's URL already.
            self.take(meter_kind(&kind), found.map(|s| vec![s]));
        }
        // Meters on the network are never guessed at: say how to name one.
        for (kind, example) in [
            ("shelly", "shelly:http://HOST"),
            ("tasmota", "tasmota:http://HOST"),
            ("json", "'json:http://HOST/PATH#power=/POINTER'"),
            ("prometheus", "'prometheus:http://HOST:9400/metrics#metric=NAME,scope=gpu,gpu=0'"),
        ] {
            if !opts.meters.iter().any(|m| m.kind == kind) {
                let reason = format!("none given (--meter {example})");
                self.unavailable.push(Unavailable { kind: meter_kind(kind), reason });
            }
        }
    }

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
