//! Apple silicon energy through IOReport's "Energy Model" channels, readable without sudo
//! (the approach of macmon). Each channel reports the energy spent since the previous sample
//! as an integer with a unit label.
//!
//! The value handling here is platform-independent and tested everywhere; the live reader
//! (`ioreport_live`, macOS only) only extracts channels and hands them to it.

/// One IOReport channel's delta, as the framework hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel group: "Energy Model" for energy.
    pub group: String,
    /// Channel name: "CPU Energy", "GPU Energy", "ANE", "DRAM", per-core "PCPU0", ...
    pub name: String,
    /// Unit label: "mJ", "uJ" or "nJ".
    pub unit: String,
    /// The integer delta.
    pub value: i64,
}

/// Joules for an energy value in an IOReport unit.
pub fn to_joules(value: i64, unit: &str) -> Result<f64, String> {
    let scale = match unit.trim() {
        "mJ" => 1e-3,
        "uJ" | "µJ" => 1e-6,
        "nJ" => 1e-9,
        other => return Err(format!("unknown IOReport energy unit \"{other}\"")),
    };
    Ok(value as f64 * scale)
}

/// SoC energy of one sample: the CPU, GPU, ANE and DRAM totals of the "Energy Model" group.
/// Per-core and per-cluster channels are parts of "CPU Energy" and are not added again.
pub fn soc_energy_j(channels: &[Channel]) -> Result<f64, String> {
    let mut total = 0.0;
    let mut seen = false;
    for c in channels.iter().filter(|c| c.group == "Energy Model") {
        let counted = c.name.ends_with("CPU Energy")
            || c.name == "GPU Energy"
            || c.name.starts_with("ANE")
            || c.name.starts_with("DRAM");
        if counted {
            total += to_joules(c.value, &c.unit)?;
            seen = true;
        }
    }
    if !seen {
        return Err("no CPU, GPU, ANE or DRAM energy channel in the Energy Model group".into());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(group: &str, name: &str, unit: &str, value: i64) -> Channel {
        Channel { group: group.into(), name: name.into(), unit: unit.into(), value }
    }

    #[test]
    fn units_convert_to_joules() {
        assert_eq!(to_joules(1500, "mJ").unwrap(), 1.5);
        assert_eq!(to_joules(2_000_000, "uJ").unwrap(), 2.0);
        assert!((to_joules(3_000_000_000, "nJ").unwrap() - 3.0).abs() < 1e-12);
        assert!(to_joules(1, "W").unwrap_err().contains("unknown"));
    }

    #[test]
    fn soc_energy_sums_the_totals_not_their_parts() {
        // Channel names and units as the Energy Model group reports them on an M2.
        let sample = [
            ch("Energy Model", "ECPU0", "mJ", 3),
            ch("Energy Model", "PCPU0", "mJ", 40),
            ch("Energy Model", "CPU Energy", "mJ", 93),
            ch("Energy Model", "GPU Energy", "nJ", 1_513_000_000),
            ch("Energy Model", "GPU SRAM", "mJ", 7),
            ch("Energy Model", "ANE", "mJ", 0),
            ch("Energy Model", "DRAM", "mJ", 120),
            ch("CPU Stats", "CPU Core Performance States", "", 5),
        ];
        assert!((soc_energy_j(&sample).unwrap() - (0.093 + 1.513 + 0.120)).abs() < 1e-12);
        assert!(soc_energy_j(&sample[7..]).is_err());
    }
}
