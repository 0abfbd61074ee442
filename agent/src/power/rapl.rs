//! Linux RAPL through the powercap sysfs tree (`/sys/class/powercap/intel-rapl:*`; AMD Zen
//! exposes the same interface). Package and dram zones are read from `energy_uj`, which
//! wraps at `max_energy_range_uj`.

use super::sysfs::{read_number, read_trimmed};
use super::{PowerKind, PowerScope, PowerSource, Reading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kernel exposes powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// One RAPL zone (package or dram).
#[derive(Debug, Clone)]
pub struct RaplDomain {
    /// The zone directory.
    pub path: PathBuf,
    /// The zone's `name`: `package-0`, `dram`, ...
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
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("intel-rapl:")))
        .collect();
    zones.sort();
    if zones.is_empty() {
        return Err(format!("no intel-rapl zones under {}", root.display()));
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for path in zones {
        let name = read_trimmed(&path.join("name")).unwrap_or_default();
        if !(name.starts_with("package") || name == "dram") {
            continue; // core, uncore and psys overlap the package or the whole platform
        }
        let counter = path.join("energy_uj");
        match read_number::<u64>(&counter) {
            Ok(_) => found.push(RaplDomain {
                max_energy_range_uj: read_number::<u64>(&path.join("max_energy_range_uj")).unwrap_or(0),
                path,
                name,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => problems.push(format!(
                "{} is not readable (permission denied: since Linux 5.10 it is root-only; run the agent as root or grant read access)",
                counter.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", counter.display())),
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
    fn kind(&self) -> PowerKind {
        PowerKind::Rapl
    }

    fn scope(&self) -> PowerScope {
        if self.name == "dram" { PowerScope::Dram } else { PowerScope::CpuPackage }
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        Ok(Reading::EnergyJ(read_number::<u64>(&self.path.join("energy_uj"))? as f64 / 1e6))
    }

    fn wrap_j(&self) -> Option<f64> {
        (self.max_energy_range_uj > 0).then(|| self.max_energy_range_uj as f64 / 1e6)
    }

    fn update_period(&self) -> Duration {
        // The hardware updates the counter about every millisecond.
        Duration::from_millis(1)
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({"zone": self.path.display().to_string(), "max_energy_range_uj": self.max_energy_range_uj})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Accumulator;
    use std::fs;

    /// A zone as the kernel lays it out: name, energy_uj and max_energy_range_uj, each a
    /// decimal line.
    fn zone(root: &Path, dir: &str, name: &str, uj: u64) -> PathBuf {
        let z = root.join(dir);
        fs::create_dir_all(&z).unwrap();
        fs::write(z.join("name"), format!("{name}\n")).unwrap();
        fs::write(z.join("energy_uj"), format!("{uj}\n")).unwrap();
        fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
        fs::write(z.join("enabled"), "1\n").unwrap();
        z
    }

    #[test]
    fn finds_package_and_dram_zones_and_reads_joules() {
        let root = tempfile::tempdir().unwrap();
        zone(root.path(), "intel-rapl:0", "package-0", 1_500_000);
        zone(root.path(), "intel-rapl:0:0", "core", 10);
        zone(root.path(), "intel-rapl:0:1", "dram", 10);
        zone(root.path(), "intel-rapl:1", "psys", 10);
        fs::create_dir_all(root.path().join("dtpm")).unwrap();
        let mut d = discover(root.path()).unwrap();
        assert_eq!(d.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(), ["package-0", "dram"]);
        assert_eq!(d[0].wrap_j(), Some(262_143.328_85));
        assert_eq!((d[0].scope(), d[1].scope()), (PowerScope::CpuPackage, PowerScope::Dram));
        assert_eq!(d[0].read().unwrap(), Reading::EnergyJ(1.5));
    }

    #[test]
    fn a_wrapping_counter_is_unwrapped_through_the_sampler_accumulator() {
        let root = tempfile::tempdir().unwrap();
        let z = zone(root.path(), "intel-rapl:0", "package-0", 262_143_000_000);
        let mut d = discover(root.path()).unwrap().remove(0);
        let mut acc = Accumulator::new(d.wrap_j());
        acc.add(0.0, d.read().unwrap()).unwrap();
        // 328,850 µJ to the wrap point, then 1,000,000 µJ past zero.
        fs::write(z.join("energy_uj"), "1000000\n").unwrap();
        let total = acc.add(0.05, d.read().unwrap()).unwrap();
        assert!((total - 1.328_85).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_missing_domain_is_skipped_and_an_empty_tree_says_why() {
        let root = tempfile::tempdir().unwrap();
        zone(root.path(), "intel-rapl:0", "package-0", 5);
        let dram = zone(root.path(), "intel-rapl:0:1", "dram", 5);
        fs::remove_file(dram.join("energy_uj")).unwrap();
        assert_eq!(discover(root.path()).unwrap().len(), 1);

        let empty = tempfile::tempdir().unwrap();
        assert!(discover(empty.path()).unwrap_err().contains("no intel-rapl zones"));
        assert!(discover(&empty.path().join("absent")).is_err());
    }

    /// The kernel makes `energy_uj` root-only (0400). As root (CI), the check re-runs this
    /// test binary as `nobody`, so the refusal is real either way.
    #[test]
    fn permission_denied_is_reported_with_the_remedy() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let z = zone(root.path(), "intel-rapl:0", "package-0", 5);
        fs::set_permissions(&z, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(z.join("energy_uj"), fs::Permissions::from_mode(0o400)).unwrap();
        if !nix::unistd::geteuid().is_root() {
            let e = discover(root.path()).unwrap_err();
            assert!(e.contains("permission denied"), "{e}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "power::rapl::tests::permission_probe", "--ignored", "--nocapture"])
            .env("IPW_RAPL_FIXTURE", root.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Run by the test above as an unprivileged user.
    #[test]
    #[ignore = "run by permission_denied_is_reported_with_the_remedy as an unprivileged user"]
    fn permission_probe() {
        let root = std::env::var("IPW_RAPL_FIXTURE").expect("set by the calling test");
        let e = discover(Path::new(&root)).unwrap_err();
        assert!(e.contains("permission denied") && e.contains("root-only"), "{e}");
    }
}
