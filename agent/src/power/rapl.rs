//! Linux RAPL through the powercap sysfs tree (`/sys/class/powercap/intel-rapl:*`; AMD Zen
//! exposes the same interface).

use super::{PowerSource, Reading};
use std::path::{Path, PathBuf};

/// Where the kernel exposes powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// One RAPL zone (package or dram), read from its `energy_uj` counter.
#[derive(Debug, Clone)]
pub struct RaplDomain {
    /// The zone directory.
    pub path: PathBuf,
    /// The zone's `name` file: `package-0`, `dram`, ...
    pub name: String,
    /// `max_energy_range_uj`: where the counter wraps.
    pub max_energy_range_uj: u64,
}

/// Finds readable package and dram zones under `root`, or says why there are none.
pub fn discover(root: &Path) -> Result<Vec<RaplDomain>, String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut zones: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("intel-rapl:"))
        })
        .collect();
    zones.sort();
    if zones.is_empty() {
        return Err(format!("no intel-rapl zones under {}", root.display()));
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for path in zones {
        let read =
            |file: &str| std::fs::read_to_string(path.join(file)).map(|s| s.trim().to_owned());
        let name = read("name").unwrap_or_default();
        if !(name.starts_with("package") || name == "dram") {
            continue;
        }
        match read("energy_uj").and_then(|v| v.parse::<u64>().map_err(std::io::Error::other)) {
            Ok(_) => found.push(RaplDomain {
                max_energy_range_uj: read("max_energy_range_uj")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                path,
                name,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => problems.push(format!(
                "{}/energy_uj is not readable (permission denied; run as root or relax its mode)",
                path.display()
            )),
            Err(e) => problems.push(format!("{}/energy_uj: {e}", path.display())),
        }
    }
    if found.is_empty() {
        if problems.is_empty() {
            problems.push(format!("no package or dram zones under {}", root.display()));
        }
        return Err(problems.join("; "));
    }
    Ok(found)
}

impl PowerSource for RaplDomain {
    fn kind(&self) -> &'static str {
        "rapl"
    }

    fn scope(&self) -> &'static str {
        if self.name == "dram" {
            "dram"
        } else {
            "cpu-package"
        }
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let uj: u64 = std::fs::read_to_string(self.path.join("energy_uj"))?
            .trim()
            .parse()
            .map_err(std::io::Error::other)?;
        Ok(Reading::EnergyJ(uj as f64 / 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn zone(root: &Path, dir: &str, name: &str, uj: u64) {
        let z = root.join(dir);
        fs::create_dir_all(&z).unwrap();
        fs::write(z.join("name"), format!("{name}\n")).unwrap();
        fs::write(z.join("energy_uj"), format!("{uj}\n")).unwrap();
        fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
    }

    #[test]
    fn finds_package_and_dram_zones_and_reads_joules() {
        let root = tempfile::tempdir().unwrap();
        zone(root.path(), "intel-rapl:0", "package-0", 1_500_000);
        zone(root.path(), "intel-rapl:0:0", "dram", 10);
        zone(root.path(), "intel-rapl:0:1", "core", 10);
        fs::create_dir_all(root.path().join("dtpm")).unwrap();
        let mut d = discover(root.path()).unwrap();
        assert_eq!(
            d.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
            ["package-0", "dram"]
        );
        assert_eq!(d[0].max_energy_range_uj, 262_143_328_850);
        assert_eq!(d[0].scope(), "cpu-package");
        assert_eq!(d[1].scope(), "dram");
        assert_eq!(d[0].read().unwrap(), Reading::EnergyJ(1.5));
    }

    #[test]
    fn no_zones_and_missing_root_say_why() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            discover(root.path())
                .unwrap_err()
                .contains("no intel-rapl zones")
        );
        assert!(discover(&root.path().join("absent")).is_err());
    }
}
