//! NVIDIA GPUs through NVML, every visible device.
//!
//! Volta and later expose a total-energy counter (millijoules since driver load), which is
//! read directly (`nvml-counter`). Older GPUs only report power, which the sampler integrates
//! (`nvml-power`); NVML updates that value about every 100 ms.

use super::{PowerKind, PowerScope, PowerSource, Reading};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::error::NvmlError;
use std::sync::Arc;
use std::time::Duration;

/// One NVIDIA GPU.
pub struct NvmlGpu {
    nvml: Arc<Nvml>,
    index: u32,
    counter: bool,
    name: String,
    details: serde_json::Value,
}

/// Which NVML indices a `--gpus` / `CUDA_VISIBLE_DEVICES` value selects. Entries are indices
/// or UUIDs (`GPU-...`, matched by prefix as CUDA does); an empty value selects none, and no
/// value selects all. `uuids[i]` is the UUID of NVML device `i`.
pub fn select(spec: Option<&str>, uuids: &[String]) -> Result<Vec<u32>, String> {
    let Some(spec) = spec.map(str::trim) else {
        return Ok((0..uuids.len() as u32).collect());
    };
    let mut out = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let index = if let Ok(i) = entry.parse::<u32>() {
            (i < uuids.len() as u32).then_some(i)
        } else if entry.starts_with("MIG-") {
            return Err(format!(
                "\"{entry}\": MIG instances have no energy counter of their own; select the parent GPU"
            ));
        } else {
            let matches: Vec<u32> = (0..uuids.len() as u32).filter(|&i| uuids[i as usize].starts_with(entry)).collect();
            match matches.as_slice() {
                [one] => Some(*one),
                [] => None,
                _ => return Err(format!("\"{entry}\" matches several GPUs")),
            }
        };
        let index = index.ok_or_else(|| format!("no GPU \"{entry}\" among {} visible to NVML", uuids.len()))?;
        if !out.contains(&index) {
            out.push(index);
        }
    }
    Ok(out)
}

/// Every selected GPU, or why there are none.
pub fn discover(spec: Option<&str>) -> Result<Vec<NvmlGpu>, String> {
    let nvml = Arc::new(Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?);
    let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
    let uuids: Vec<String> =
        (0..count).map(|i| nvml.device_by_index(i).and_then(|d| d.uuid()).unwrap_or_default()).collect();
    let selected = select(spec, &uuids)?;
    if selected.is_empty() {
        return Err(format!("no GPUs selected (NVML sees {count}; selection {spec:?})"));
    }
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let cuda = nvml.sys_cuda_driver_version().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)).unwrap_or_default();
    selected
        .into_iter()
        .map(|index| {
            let d = nvml.device_by_index(index).map_err(|e| format!("NVML device {index}: {e}"))?;
            let counter = match d.total_energy_consumption() {
                Ok(_) => true,
                Err(NvmlError::NotSupported) => false,
                Err(e) => return Err(format!("NVML device {index}: energy counter: {e}")),
            };
            if !counter {
                d.power_usage().map_err(|e| format!("NVML device {index}: neither energy nor power readable: {e}"))?;
            }
            let model = d.name().unwrap_or_default();
            let details = serde_json::json!({
                "index": index,
                "model": model,
                "uuid": uuids[index as usize],
                "pci_bus_id": d.pci_info().map(|p| p.bus_id).ok(),
                "driver_version": driver,
                "cuda_driver_version": cuda,
                "power_limit_w": d.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1e3),
                "sm_clock_mhz": d.clock_info(Clock::SM).ok(),
                "mem_clock_mhz": d.clock_info(Clock::Memory).ok(),
                "max_sm_clock_mhz": d.max_clock_info(Clock::SM).ok(),
                "method": if counter { "total energy counter" } else { "power polling" },
            });
            Ok(NvmlGpu { nvml: nvml.clone(), index, counter, name: format!("GPU {index} {model}"), details })
        })
        .collect()
}

impl PowerSource for NvmlGpu {
    fn kind(&self) -> PowerKind {
        if self.counter { PowerKind::NvmlCounter } else { PowerKind::NvmlPower }
    }

    fn scope(&self) -> PowerScope {
        PowerScope::Gpu
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let d = self.nvml.device_by_index(self.index).map_err(std::io::Error::other)?;
        if self.counter {
            Ok(Reading::EnergyJ(d.total_energy_consumption().map_err(std::io::Error::other)? as f64 / 1e3))
        } else {
            Ok(Reading::PowerW(f64::from(d.power_usage().map_err(std::io::Error::other)?) / 1e3))
        }
    }

    fn update_period(&self) -> Duration {
        // Seen to be about 100 ms for the power value; the counter is read as is.
        if self.counter { Duration::ZERO } else { Duration::from_millis(100) }
    }

    fn details(&self) -> serde_json::Value {
        self.details.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::select;

    fn uuids() -> Vec<String> {
        vec!["GPU-aaaa-1111".into(), "GPU-bbbb-2222".into(), "GPU-cccc-3333".into()]
    }

    #[test]
    fn no_selection_means_every_gpu_and_an_empty_one_means_none() {
        assert_eq!(select(None, &uuids()).unwrap(), [0, 1, 2]);
        assert_eq!(select(Some(""), &uuids()).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn indices_and_uuid_prefixes_select_in_the_given_order() {
        assert_eq!(select(Some("2,0"), &uuids()).unwrap(), [2, 0]);
        assert_eq!(select(Some("GPU-bbbb, 0, 0"), &uuids()).unwrap(), [1, 0]);
    }

    #[test]
    fn unknown_ambiguous_and_mig_entries_are_refused() {
        assert!(select(Some("7"), &uuids()).unwrap_err().contains("no GPU \"7\""));
        assert!(select(Some("GPU-"), &uuids()).unwrap_err().contains("several"));
        assert!(select(Some("MIG-123"), &uuids()).unwrap_err().contains("MIG"));
    }
}
