//! AMD and Intel GPUs through their drivers' hwmon files, for every card: an energy counter
//! (µJ) where the driver exposes one, else average or instantaneous power (µW), which the
//! sampler integrates.
//!
//! - amdgpu: `energy1_input`, else `power1_average` / `power1_input`.
//! - Intel i915 (discrete cards; hwmon `i915`): `energy1_input`, the whole device.
//! - Intel xe: `energy1_input` (the card) where it exists, else `energy2_input` (the
//!   package; DG2 has only this one).
//!
//! Integrated Intel GPUs have no hwmon energy of their own: RAPL's package covers them.

use super::sysfs::{read_number, read_trimmed};
use super::{PowerKind, PowerScope, PowerSource, Reading};
use std::path::{Path, PathBuf};

/// Where the kernel exposes DRM cards.
pub const DRM_ROOT: &str = "/sys/class/drm";

/// A GPU maker whose driver exposes power through hwmon.
#[derive(Debug, Clone, Copy)]
pub struct Vendor {
    /// The provenance kind of its cards.
    pub kind: PowerKind,
    /// The PCI vendor id in `device/vendor`.
    pci_id: &'static str,
    /// The hwmon `name` of the driver's device-level hwmon.
    hwmon_names: &'static [&'static str],
    /// The files to read, best first: (file, is it an energy counter).
    files: &'static [(&'static str, bool)],
}

/// AMD cards (amdgpu).
pub const AMD: Vendor = Vendor {
    kind: PowerKind::AmdHwmon,
    pci_id: "0x1002",
    hwmon_names: &["amdgpu"],
    files: &[("energy1_input", true), ("power1_average", false), ("power1_input", false)],
};

/// Intel cards (i915 and xe).
pub const INTEL: Vendor = Vendor {
    kind: PowerKind::IntelHwmon,
    pci_id: "0x8086",
    hwmon_names: &["i915", "xe"],
    files: &[("energy1_input", true), ("energy2_input", true)],
};

/// One GPU's hwmon.
#[derive(Debug, Clone)]
pub struct HwmonGpu {
    kind: PowerKind,
    card: String,
    file: PathBuf,
    counter: bool,
    details: serde_json::Value,
}

/// Every card of `vendor` under `root` with a readable power or energy file, or why there is
/// none.
pub fn discover(root: &Path, vendor: Vendor) -> Result<Vec<HwmonGpu>, String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut cards: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            // card0, card1, ... but not connectors such as card0-DP-1.
            let n: u32 = name.strip_prefix("card")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    cards.sort();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (_, card) in cards {
        let device = card.join("device");
        if read_trimmed(&device.join("vendor")).ok().as_deref() != Some(vendor.pci_id) {
            continue;
        }
        let card_name = card.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(hwmon) = std::fs::read_dir(device.join("hwmon")).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| read_trimmed(&p.join("name")).is_ok_and(|n| vendor.hwmon_names.contains(&n.as_str())))
        }) else {
            problems.push(format!("{card_name}: no {} hwmon directory", vendor.hwmon_names.join(" or ")));
            continue;
        };
        let mut chosen = None;
        for &(file, counter) in vendor.files {
            let path = hwmon.join(file);
            match read_number::<u64>(&path) {
                Ok(_) => {
                    chosen = Some((path, counter));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    problems.push(format!("{} is not readable (permission denied)", path.display()))
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        let Some((file, counter)) = chosen else {
            let names: Vec<&str> = vendor.files.iter().map(|f| f.0).collect();
            problems.push(format!("{card_name}: no readable {}", names.join(", ")));
            continue;
        };
        let details = serde_json::json!({
            "card": card_name,
            "pci_device": read_trimmed(&device.join("device")).ok(),
            "driver": read_trimmed(&hwmon.join("name")).ok(),
            "power_cap_w": read_number::<u64>(&hwmon.join("power1_cap")).or_else(|_| read_number::<u64>(&hwmon.join("power1_max"))).ok().map(|uw| uw as f64 / 1e6),
            "file": file.display().to_string(),
        });
        found.push(HwmonGpu { kind: vendor.kind, card: card_name, file, counter, details });
    }
    if found.is_empty() {
        if problems.is_empty() {
            problems.push(format!("no {} GPUs under {}", vendor.hwmon_names.join("/"), root.display()));
        }
        return Err(problems.join("; "));
    }
    Ok(found)
}

/// The cards a `--gpus` / `CUDA_VISIBLE_DEVICES` value selects: entries `cardN` by name, and
/// numbers as the N-th card of this driver (in card order), as ROCm numbers them. No value
/// selects every card.
pub fn select(cards: Vec<HwmonGpu>, spec: Option<&str>) -> Result<Vec<HwmonGpu>, String> {
    let Some(spec) = spec else { return Ok(cards) };
    let entries: Vec<&str> = spec.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let chosen: Vec<HwmonGpu> = cards
        .iter()
        .enumerate()
        .filter(|(i, c)| entries.iter().any(|e| *e == c.card || e.parse::<usize>() == Ok(*i)))
        .map(|(_, c)| c.clone())
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = cards.iter().map(|c| c.card.as_str()).collect();
        return Err(format!("the GPU selection \"{spec}\" names none of {}", names.join(", ")));
    }
    Ok(chosen)
}

impl PowerSource for HwmonGpu {
    fn kind(&self) -> PowerKind {
        self.kind
    }

    fn scope(&self) -> PowerScope {
        PowerScope::Gpu
    }

    fn name(&self) -> String {
        self.card.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let v = read_number::<u64>(&self.file)? as f64 / 1e6;
        Ok(if self.counter { Reading::EnergyJ(v) } else { Reading::PowerW(v) })
    }

    fn details(&self) -> serde_json::Value {
        self.details.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A card laid out as the DRM drivers do: card/device/{vendor,device},
    /// card/device/hwmon/hwmonN/ with the driver's name and the given files (values in µW or
    /// µJ, one decimal line each).
    fn card(root: &Path, card: &str, vendor: &str, files: &[(&str, u64)]) {
        driver_card(root, card, vendor, "amdgpu", files)
    }

    fn driver_card(root: &Path, card: &str, vendor: &str, driver: &str, files: &[(&str, u64)]) {
        let hwmon = root.join(card).join("device/hwmon/hwmon3");
        fs::create_dir_all(&hwmon).unwrap();
        fs::write(root.join(card).join("device/vendor"), format!("{vendor}\n")).unwrap();
        fs::write(root.join(card).join("device/device"), "0x744c\n").unwrap();
        fs::write(hwmon.join("name"), format!("{driver}\n")).unwrap();
        for (f, v) in files {
            fs::write(hwmon.join(f), format!("{v}\n")).unwrap();
        }
    }

    #[test]
    fn every_amd_card_is_found_and_read_in_its_own_unit() {
        let root = tempfile::tempdir().unwrap();
        card(root.path(), "card0", "0x1002", &[("power1_average", 45_000_000), ("power1_cap", 300_000_000)]);
        card(root.path(), "card1", "0x1002", &[("energy1_input", 2_500_000), ("power1_average", 1)]);
        card(root.path(), "card2", "0x10de", &[("power1_average", 1)]);
        card(root.path(), "card3", "0x1002", &[("power1_input", 7_000_000)]);
        fs::create_dir_all(root.path().join("card0-DP-1")).unwrap();
        let mut gpus = discover(root.path(), AMD).unwrap();
        assert_eq!(gpus.iter().map(|g| g.name()).collect::<Vec<_>>(), ["card0", "card1", "card3"]);
        assert_eq!(gpus[0].read().unwrap(), Reading::PowerW(45.0));
        assert_eq!(gpus[0].details()["power_cap_w"], 300.0);
        assert_eq!(gpus[1].read().unwrap(), Reading::EnergyJ(2.5));
        assert_eq!(gpus[2].read().unwrap(), Reading::PowerW(7.0));
    }

    #[test]
    fn a_card_without_power_files_and_a_machine_without_amd_gpus_say_why() {
        let root = tempfile::tempdir().unwrap();
        card(root.path(), "card0", "0x1002", &[]);
        assert!(discover(root.path(), AMD).unwrap_err().contains("card0: no readable energy1_input"));
        let none = tempfile::tempdir().unwrap();
        card(none.path(), "card0", "0x8086", &[("power1_average", 1)]);
        assert!(discover(none.path(), AMD).unwrap_err().contains("no amdgpu GPUs"));
    }

    #[test]
    fn a_gpu_selection_picks_cards_by_name_or_position() {
        let root = tempfile::tempdir().unwrap();
        for c in ["card0", "card1", "card2"] {
            card(root.path(), c, "0x1002", &[("power1_average", 1)]);
        }
        let names = |spec| {
            select(discover(root.path(), AMD).unwrap(), spec).map(|g| g.iter().map(|c| c.name()).collect::<Vec<_>>())
        };
        assert_eq!(names(None).unwrap(), ["card0", "card1", "card2"]);
        assert_eq!(names(Some("1,card2")).unwrap(), ["card1", "card2"]);
        assert!(names(Some("7")).unwrap_err().contains("names none of card0, card1, card2"));
    }

    #[test]
    fn intel_cards_are_read_from_i915_and_xe_and_integrated_gpus_say_why_not() {
        let root = tempfile::tempdir().unwrap();
        // i915 on a discrete card: energy1_input (µJ) for the whole device, power1_max.
        driver_card(
            root.path(),
            "card0",
            "0x8086",
            "i915",
            &[("energy1_input", 7_000_000), ("power1_max", 190_000_000)],
        );
        // xe on DG2: only the package counter, energy2_input.
        driver_card(root.path(), "card1", "0x8086", "xe", &[("energy2_input", 1_500_000)]);
        // xe on Battlemage: the card's counter first.
        driver_card(root.path(), "card2", "0x8086", "xe", &[("energy1_input", 3_000_000), ("energy2_input", 1)]);
        // An AMD card is not Intel's.
        driver_card(root.path(), "card3", "0x1002", "amdgpu", &[("energy1_input", 1)]);
        let mut gpus = discover(root.path(), INTEL).unwrap();
        assert_eq!(gpus.iter().map(|g| g.name()).collect::<Vec<_>>(), ["card0", "card1", "card2"]);
        assert!(gpus.iter().all(|g| g.kind() == PowerKind::IntelHwmon));
        assert_eq!(gpus[0].read().unwrap(), Reading::EnergyJ(7.0));
        assert_eq!(gpus[0].details()["power_cap_w"], 190.0);
        assert_eq!(gpus[1].read().unwrap(), Reading::EnergyJ(1.5));
        assert_eq!(gpus[2].read().unwrap(), Reading::EnergyJ(3.0));
        // An integrated GPU: the i915 driver, no device-level hwmon.
        let igpu = tempfile::tempdir().unwrap();
        fs::create_dir_all(igpu.path().join("card0/device")).unwrap();
        fs::write(igpu.path().join("card0/device/vendor"), "0x8086\n").unwrap();
        assert!(discover(igpu.path(), INTEL).unwrap_err().contains("card0: no i915 or xe hwmon directory"));
    }
}
