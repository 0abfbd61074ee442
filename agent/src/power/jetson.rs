//! NVIDIA Jetson modules through their INA3221 power monitors. NVML reads no power on
//! Jetson (it answers NotSupported), so these rails are the module's only power figure.
//!
//! Two driver generations, both instantaneous (no energy counter; the sampler integrates):
//! - JetPack 4 (Nano, TX2, Xavier), `ina3221x` over IIO:
//!   `.../ina3221x/<bus-addr>/iio:device<N>/rail_name_<k>` and `in_power<k>_input` (mW).
//! - JetPack 5 and 6 (Orin), the upstream `ina3221` hwmon driver:
//!   `.../ina3221/<bus-addr>/hwmon/hwmon<N>/in<k>_label`, `in<k>_input` (mV) and
//!   `curr<k>_input` (mA); power is their product.
//!
//! The module's input rail (`VDD_IN`, or `POM_5V_IN` on a Nano) is the whole module; the
//! other rails (CPU, GPU, SoC...) are parts of it and never added to it. A module without an
//! input rail (AGX Xavier) is measured as the sum of its rails, as jetson-stats does. Either
//! way it is one source, of scope `soc`; the carrier board is outside it.

use super::sysfs::read_number;
use super::{PowerKind, PowerScope, PowerSource, Reading};
use std::path::{Path, PathBuf};

/// Where the kernel lists I2C drivers.
pub const I2C_DRIVERS: &str = "/sys/bus/i2c/drivers";

/// The rails that carry the whole module's input.
const INPUT_RAILS: [&str; 2] = ["VDD_IN", "POM_5V_IN"];

/// How one rail's power is read.
#[derive(Debug, Clone, PartialEq)]
enum RailFiles {
    /// `in_power<k>_input`, mW.
    Power(PathBuf),
    /// `in<k>_input` (mV) times `curr<k>_input` (mA).
    VoltsAmps(PathBuf, PathBuf),
}

/// One INA3221 channel.
#[derive(Debug, Clone, PartialEq)]
struct Rail {
    name: String,
    files: RailFiles,
}

impl Rail {
    fn watts(&self) -> std::io::Result<f64> {
        Ok(match &self.files {
            RailFiles::Power(p) => read_number::<f64>(p)? / 1e3,
            RailFiles::VoltsAmps(v, a) => read_number::<f64>(v)? * read_number::<f64>(a)? / 1e6,
        })
    }
}

/// A Jetson module's power.
#[derive(Debug, Clone)]
pub struct Jetson {
    rails: Vec<Rail>,
    name: String,
    details: serde_json::Value,
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The rails of every INA3221 under the I2C drivers directory, both generations.
fn rails(i2c_drivers: &Path) -> Vec<Rail> {
    let mut rails = Vec::new();
    for chip in subdirs(&i2c_drivers.join("ina3221x")) {
        for iio in subdirs(&chip)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("iio:device")))
        {
            for k in 0..3 {
                if let Ok(name) = std::fs::read_to_string(iio.join(format!("rail_name_{k}"))) {
                    rails.push(Rail {
                        name: name.trim().to_owned(),
                        files: RailFiles::Power(iio.join(format!("in_power{k}_input"))),
                    });
                }
            }
        }
    }
    for chip in subdirs(&i2c_drivers.join("ina3221")) {
        for hwmon in subdirs(&chip.join("hwmon")) {
            for k in 1..=3 {
                let Ok(label) = std::fs::read_to_string(hwmon.join(format!("in{k}_label"))) else { continue };
                let label = label.trim();
                // Orin labels unconnected channels "NC".
                if label.is_empty() || label.contains("NC") {
                    continue;
                }
                let files =
                    RailFiles::VoltsAmps(hwmon.join(format!("in{k}_input")), hwmon.join(format!("curr{k}_input")));
                rails.push(Rail { name: label.to_owned(), files });
            }
        }
    }
    rails
}

/// The module's power source, or why there is none.
pub fn discover(i2c_drivers: &Path) -> Result<Vec<Jetson>, String> {
    let all = rails(i2c_drivers);
    if all.is_empty() {
        return Err(format!("no INA3221 rails under {} (not a Jetson)", i2c_drivers.display()));
    }
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    let (used, how) = match all.iter().find(|r| INPUT_RAILS.contains(&r.name.as_str())) {
        Some(input) => (vec![input.clone()], format!("the module's input rail {}", input.name)),
        None => (all.clone(), format!("the sum of its rails ({}): no input rail", names.join(", "))),
    };
    for r in &used {
        r.watts().map_err(|e| format!("rail {}: {e}", r.name))?;
    }
    let details = serde_json::json!({"measured": how, "rails": names, "carrier_board": "not included"});
    Ok(vec![Jetson {
        name: format!("Jetson module ({})", used.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join("+")),
        rails: used,
        details,
    }])
}

impl PowerSource for Jetson {
    fn kind(&self) -> PowerKind {
        PowerKind::JetsonIna3221
    }

    fn scope(&self) -> PowerScope {
        PowerScope::Soc
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let mut w = 0.0;
        for r in &self.rails {
            w += r.watts()?;
        }
        Ok(Reading::PowerW(w))
    }

    fn details(&self) -> serde_json::Value {
        self.details.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            fs::write(dir.join(f), format!("{v}\n")).unwrap();
        }
    }

    #[test]
    fn a_jetpack_4_nano_is_read_from_its_input_rail_in_milliwatts() {
        let root = tempfile::tempdir().unwrap();
        let iio = root.path().join("ina3221x/6-0040/iio:device0");
        write(
            &iio,
            &[
                ("rail_name_0", "POM_5V_IN"),
                ("in_power0_input", "4933"),
                ("rail_name_1", "POM_5V_GPU"),
                ("in_power1_input", "1200"),
                ("rail_name_2", "POM_5V_CPU"),
                ("in_power2_input", "900"),
            ],
        );
        let mut j = discover(root.path()).unwrap().remove(0);
        assert_eq!(j.read().unwrap(), Reading::PowerW(4.933));
        assert_eq!(j.scope(), PowerScope::Soc);
        assert_eq!(j.details()["rails"], serde_json::json!(["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]));
    }

    #[test]
    fn an_orin_is_read_from_volts_and_amps_and_unconnected_channels_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let hwmon = root.path().join("ina3221/1-0040/hwmon/hwmon3");
        write(
            &hwmon,
            &[
                ("in1_label", "VDD_IN"),
                ("in1_input", "5008"),
                ("curr1_input", "1464"),
                ("in2_label", "VDD_CPU_GPU_CV"),
                ("in2_input", "5000"),
                ("curr2_input", "300"),
                ("in3_label", "NC"),
                ("in3_input", "0"),
                ("curr3_input", "0"),
            ],
        );
        let mut j = discover(root.path()).unwrap().remove(0);
        let Reading::PowerW(w) = j.read().unwrap() else { panic!("power") };
        assert!((w - 5.008 * 1.464).abs() < 1e-9, "{w}");
        assert_eq!(j.details()["rails"], serde_json::json!(["VDD_IN", "VDD_CPU_GPU_CV"]));
    }

    #[test]
    fn without_an_input_rail_the_rails_are_summed_and_a_non_jetson_says_so() {
        let root = tempfile::tempdir().unwrap();
        let hwmon = root.path().join("ina3221/1-0040/hwmon/hwmon2");
        write(
            &hwmon,
            &[
                ("in1_label", "GPU"),
                ("in1_input", "1000"),
                ("curr1_input", "2000"),
                ("in2_label", "CPU"),
                ("in2_input", "1000"),
                ("curr2_input", "1000"),
            ],
        );
        let mut j = discover(root.path()).unwrap().remove(0);
        assert_eq!(j.read().unwrap(), Reading::PowerW(3.0));
        assert!(j.details()["measured"].as_str().unwrap().contains("no input rail"));
        let empty = tempfile::tempdir().unwrap();
        assert!(discover(empty.path()).unwrap_err().contains("not a Jetson"));
    }
}
