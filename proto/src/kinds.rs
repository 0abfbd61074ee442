//! The closed sets of values that travel between the parts as text: statuses, power source
//! kinds, the energy attribution rule, judge strictness, the missed-firing policy.
//!
//! Each is declared once here. The wire and the database carry the kebab-case name
//! ([`as_str`](PowerKind::as_str)); clap parses the same names; and a test in `tests/` checks
//! every set against the SQL `CHECK` constraint of the column that stores it.

use std::fmt;
use std::str::FromStr;

/// A value outside a closed set; the message names the set and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What the set is called, e.g. "power source".
    pub set: &'static str,
    /// The value given.
    pub value: String,
    /// The accepted names.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} \"{}\"; expected {}", self.set, self.value, self.expected.join(" or "))
    }
}

impl std::error::Error for UnknownValue {}

/// Declares a closed set: the enum, its names, `as_str`, `FromStr`, `Display` and clap's
/// `ValueEnum`, all from one list.
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident, $set:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* #[value(name = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { set: $set, value: s.to_owned(), expected: Self::NAMES }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// Where a result's energy figure came from. A result measured by several sources joins
    /// their names with `+`; `none` means no source could be read.
    PowerKind, "power source" {
        /// NVML's cumulative energy counter (Volta and later).
        NvmlCounter = "nvml-counter",
        /// NVML power readings, integrated.
        NvmlPower = "nvml-power",
        /// Linux RAPL powercap counters.
        Rapl = "rapl",
        /// AMD GPU power through hwmon.
        AmdHwmon = "amd-hwmon",
        /// Apple silicon through IOReport.
        AppleIoreport = "apple-ioreport",
        /// Apple's powermetrics tool.
        Powermetrics = "powermetrics",
        /// A BMC's DCMI power reading, through ipmitool.
        IpmiDcmi = "ipmi-dcmi",
        /// A Shelly Gen2 smart plug or relay (`Switch.GetStatus`).
        Shelly = "shelly",
        /// A Tasmota smart plug (`Status 8`).
        Tasmota = "tasmota",
        /// Any meter answering JSON over HTTP, read at a JSON pointer.
        JsonMeter = "json-meter",
        /// A metric scraped from a Prometheus exporter (DCGM, Kepler, node_exporter...).
        Prometheus = "prometheus",
        /// A Jetson module's INA3221 power monitor rails.
        JetsonIna3221 = "jetson-ina3221",
        /// Intel GPUs through the i915 or xe hwmon energy counter.
        IntelHwmon = "intel-hwmon",
    }
}

closed_set! {
    /// What a power source covers, from one chip to the whole machine at its plug.
    PowerScope, "power scope" {
        /// One GPU.
        Gpu = "gpu",
        /// A CPU package.
        CpuPackage = "cpu-package",
        /// The memory (RAPL's dram domain).
        Dram = "dram",
        /// A system on a chip: CPU, GPU and accelerators together (Apple silicon, Jetson).
        Soc = "soc",
        /// The whole server as its BMC or exporter sees it (DC side of the power supply).
        Node = "node",
        /// At the plug: the node plus the power supply's losses.
        Wall = "wall",
    }
}

closed_set! {
    /// Which sources a run's IPW energy is the sum of (`--ipw-scope`). The other sources are
    /// recorded beside it and cross-checked, never added in.
    IpwScope, "IPW scope" {
        /// Every chip-level source: GPUs, CPU packages, DRAM and SoCs (the default, and what
        /// runs measured before node and wall sources existed).
        Chips = "chips",
        /// The GPUs that serve the model, only.
        Gpu = "gpu",
        /// The node's BMC or exporter.
        Node = "node",
        /// The meter at the plug.
        Wall = "wall",
    }
}

impl IpwScope {
    /// Whether a source covering `scope` adds into this IPW scope.
    pub fn includes(self, scope: PowerScope) -> bool {
        match self {
            IpwScope::Chips => {
                matches!(scope, PowerScope::Gpu | PowerScope::CpuPackage | PowerScope::Dram | PowerScope::Soc)
            }
            IpwScope::Gpu => scope == PowerScope::Gpu,
            IpwScope::Node => scope == PowerScope::Node,
            IpwScope::Wall => scope == PowerScope::Wall,
        }
    }
}

closed_set! {
    /// How a sample interval's energy is split among the queries active in it.
    Attribution, "energy attribution" {
        /// In proportion to the time each query was active in the interval.
        TimeShare = "time-share",
        /// In proportion to the tokens each query produced in the interval.
        TokenShare = "token-share",
    }
}

closed_set! {
    /// Where an agent stands with the coordinator.
    AgentStatus, "agent status" {
        /// Joined, waiting for an operator's approval.
        Pending = "pending",
        /// May lease work.
        Approved = "approved",
        /// Every call refused; must join again.
        Revoked = "revoked",
    }
}

closed_set! {
    /// Where a run stands.
    RunStatus, "run status" {
        /// No shard leased yet.
        Pending = "pending",
        /// Shards are being worked on.
        Running = "running",
        /// Every shard completed.
        Completed = "completed",
        /// A shard failed and nothing is left open.
        Failed = "failed",
        /// Stopped by an operator.
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// Whether the run will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }
}

closed_set! {
    /// Where a shard stands.
    ShardStatus, "shard status" {
        /// Waiting for an agent.
        Pending = "pending",
        /// Held by an agent until its lease runs out.
        Leased = "leased",
        /// Every result committed.
        Completed = "completed",
        /// Its lease ran out too often.
        Failed = "failed",
    }
}

closed_set! {
    /// What an operator set a sweep instance to.
    SweepStatus, "sweep status" {
        /// Its shards are handed out.
        Active = "active",
        /// No new leases.
        Paused = "paused",
        /// Its runs are cancelled.
        Cancelled = "cancelled",
    }
}

closed_set! {
    /// How many of the judge's two answer orders must say the answers match.
    Strictness, "strictness" {
        /// Both orders.
        Strict = "strict",
        /// Either order.
        Lenient = "lenient",
    }
}

closed_set! {
    /// What happens to scheduled firings that were missed (the coordinators were down, say).
    MissedPolicy, "missed-firing policy" {
        /// Missed firings create nothing; the schedule resumes at the next one.
        Skip = "skip",
        /// However many were missed, one instance is created for the latest of them.
        CatchUpOnce = "catch-up-once",
    }
}

/// Checks a power source as results carry it: `none`, or kinds joined with `+`.
pub fn parse_power_sources(s: &str) -> Result<Vec<PowerKind>, UnknownValue> {
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split('+').map(str::parse).collect::<Result<Vec<PowerKind>, _>>().map_err(|_| UnknownValue {
        set: "power source",
        value: s.to_owned(),
        expected: PowerKind::NAMES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_expected() {
        for k in PowerKind::ALL {
            assert_eq!(k.as_str().parse::<PowerKind>().unwrap(), *k);
        }
        assert_eq!("catch-up-once".parse::<MissedPolicy>().unwrap(), MissedPolicy::CatchUpOnce);
        let e = "sometimes".parse::<Strictness>().unwrap_err().to_string();
        assert_eq!(e, "unknown strictness \"sometimes\"; expected strict or lenient");
        assert_eq!(RunStatus::Cancelled.to_string(), "cancelled");
        assert!(RunStatus::Failed.is_final() && !RunStatus::Running.is_final());
    }

    #[test]
    fn joined_power_sources_parse_kind_by_kind() {
        assert_eq!(parse_power_sources("none").unwrap(), []);
        assert_eq!(parse_power_sources("nvml-counter+rapl").unwrap(), [PowerKind::NvmlCounter, PowerKind::Rapl]);
        assert!(parse_power_sources("rapl+guess").is_err());
        assert!(parse_power_sources("").is_err());
    }
}
