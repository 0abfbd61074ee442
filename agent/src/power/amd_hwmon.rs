//! AMD GPUs through the amdgpu hwmon files, for every card: the energy counter
//! (`energy1_input`, µJ) where the driver exposes one, else average or instantaneous power
//! (`power1_average` / `power1_input`, µW), which the sampler integrates.

use super::{PowerKind, PowerSource, Reading};
use std::path::{Path, PathBuf};

/// Where the kernel exposes DRM cards.
pub const DRM_ROOT: &str = "/sys/class/drm";

const AMD_PCI_VENDOR: &str = "0x1002";

/// One AMD GPU's hwmon.
#[derive(Debug, Clone)]
pub struct AmdGpu {
    card: String,
    file: PathBuf,
    counter: bool,
    details: serde_json::Value,
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned())
}

fn read_u64(path: &Path) -> std::io::Result<u64> {
    read_trimmed(path)?
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// Every AMD card with a readable power or energy file under `root`, or why there is none.
pub fn discover(root: &Path) -> Result<Vec<AmdGpu>, String> {
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
        if read_trimmed(&device.join("vendor")).ok().as_deref() != Some(AMD_PCI_VENDOR) {
            continue;
        }
        let card_name = card.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(hwmon) = std::fs::read_dir(device.join("hwmon")).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| read_trimmed(&p.join("name")).is_ok_and(|n| n == "amdgpu"))
        }) else {
            problems.push(format!("{card_name}: no amdgpu hwmon directory"));
            continue;
        };
        let candidates = [("energy1_input", true), ("power1_average", false), ("power1_input", false)];
        let mut chosen = None;
        for (file, counter) in candidates {
            let path = hwmon.join(file);
            match read_u64(&path) {
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
            problems.push(format!("{card_name}: no readable energy1_input, power1_average or power1_input"));
            continue;
        };
        let details = serde_json::json!({
            "card": card_name,
            "pci_device": read_trimmed(&device.join("device")).ok(),
            "power_cap_w": read_u64(&hwmon.join("power1_cap")).ok().map(|uw| uw as f64 / 1e6),
            "file": file.display().to_string(),
        });
        found.push(AmdGpu { card: card_name, file, counter, details });
    }
    if found.is_empty() {
        if problems.is_empty() {
            problems.push(format!("no AMD GPUs under {}", root.display()));
        }
        return Err(problems.join("; "));
    }
    Ok(found)
}

impl PowerSource for AmdGpu {
    fn kind(&self) -> PowerKind {
        PowerKind::AmdHwmon
    }

    fn scope(&self) -> &'static str {
        "gpu"
    }

    fn name(&self) -> String {
        self.card.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let v = read_u64(&self.file)? as f64 / 1e6;
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

    /// A card laid out as amdgpu does: card/device/{vendor,device}, card/device/hwmon/hwmonN/
    /// with name "amdgpu" and the given files (values in µW or µJ, one decimal line each).
    fn card(root: &Path, card: &str, vendor: &str, files: &[(&str, u64)]) {
        let hwmon = root.join(card).join("device/hwmon/hwmon3");
        fs::create_dir_all(&hwmon).unwrap();
        fs::write(root.join(card).join("device/vendor"), format!("{vendor}\n")).unwrap();
        fs::write(root.join(card).join("device/device"), "0x744c\n").unwrap();
        fs::write(hwmon.join("name"), "amdgpu\n").unwrap();
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
        let mut gpus = discover(root.path()).unwrap();
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
        assert!(discover(root.path()).unwrap_err().contains("card0: no readable energy1_input"));
        let none = tempfile::tempdir().unwrap();
        card(none.path(), "card0", "0x8086", &[("power1_average", 1)]);
        assert!(discover(none.path()).unwrap_err().contains("no AMD GPUs"));
    }
}
