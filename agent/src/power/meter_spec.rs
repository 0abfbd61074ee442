//! The `--meter KIND:ADDRESS[#OPTION=VALUE,...]` flag: which meter, where, and its options.
//! The options after `#` are never sent to the meter. Every option is checked, and one the
//! meter does not know is an error naming the ones it does.

use super::PowerScope;
use std::collections::BTreeMap;
use std::time::Duration;

/// The meter kinds `--meter` accepts.
pub const KINDS: [&str; 5] = ["ipmi", "shelly", "tasmota", "json", "prometheus"];

/// A parsed `--meter` value, its options not yet taken.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSpec {
    /// ipmi, shelly, tasmota, json or prometheus.
    pub kind: String,
    /// A URL, or for ipmi `local` / `lanplus://user@host`.
    pub address: String,
    options: BTreeMap<String, String>,
    /// The flag as given, for messages.
    pub given: String,
}

impl std::str::FromStr for MeterSpec {
    type Err = String;

    fn from_str(given: &str) -> Result<Self, String> {
        let (kind, rest) = given
            .split_once(':')
            .ok_or_else(|| format!("--meter \"{given}\": expected KIND:ADDRESS, KIND one of {}", KINDS.join(", ")))?;
        if !KINDS.contains(&kind) {
            return Err(format!("--meter \"{given}\": unknown meter \"{kind}\"; expected {}", KINDS.join(", ")));
        }
        let (address, opts) = rest.split_once('#').unwrap_or((rest, ""));
        let mut options = BTreeMap::new();
        for pair in opts.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("--meter \"{given}\": option \"{pair}\" is not NAME=VALUE"))?;
            if options.insert(k.trim().to_owned(), v.trim().to_owned()).is_some() {
                return Err(format!("--meter \"{given}\": option \"{k}\" given twice"));
            }
        }
        Ok(Self { kind: kind.to_owned(), address: address.to_owned(), options, given: given.to_owned() })
    }
}

impl MeterSpec {
    /// Takes an option, if given.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.options.remove(name)
    }

    /// Takes a required option.
    pub fn require(&mut self, name: &str, what: &str) -> Result<String, String> {
        self.take(name).ok_or_else(|| format!("--meter \"{}\" needs #{name}=... ({what})", self.given))
    }

    /// `scope=`: what the meter covers, or `default`.
    pub fn scope(&mut self, default: Option<PowerScope>) -> Result<PowerScope, String> {
        match (self.take("scope"), default) {
            (Some(s), _) => s.parse().map_err(|e| format!("--meter \"{}\": {e}", self.given)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!(
                "--meter \"{}\" needs #scope=... (what the meter covers: {})",
                self.given,
                PowerScope::NAMES.join(", ")
            )),
        }
    }

    /// `every=`: how often to poll (at least 100 ms), or `default`.
    pub fn every(&mut self, default: Duration) -> Result<Duration, String> {
        let Some(v) = self.take("every") else { return Ok(default) };
        let d = humantime::parse_duration(&v).map_err(|e| format!("--meter \"{}\": every={v}: {e}", self.given))?;
        if d < Duration::from_millis(100) {
            return Err(format!("--meter \"{}\": every={v} is shorter than 100ms", self.given));
        }
        Ok(d)
    }

    /// `error=`: the meter's stated error, as `2%` or `0.02`.
    pub fn stated_error(&mut self) -> Result<Option<f64>, String> {
        let Some(v) = self.take("error") else { return Ok(None) };
        let parsed = match v.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => v.parse::<f64>(),
        };
        match parsed {
            Ok(e) if (0.0..1.0).contains(&e) => Ok(Some(e)),
            _ => Err(format!("--meter \"{}\": error={v} is not a fraction such as 2% or 0.02", self.given)),
        }
    }

    /// The options left, as label matchers (for prometheus).
    pub fn rest(&mut self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.options)
    }

    /// Fails if an option was given that the meter does not take.
    pub fn finish(&self, known: &[&str]) -> Result<(), String> {
        match self.options.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!(
                "--meter \"{}\": {} meters take no option \"{k}\"; they take {}",
                self.given,
                self.kind,
                known.join(", ")
            )),
        }
    }
}

/// A unit a meter reports energy or power in, and its factor to joules or watts.
pub fn unit_factor(unit: &str) -> Option<(f64, bool)> {
    // (factor, is energy)
    Some(match unit {
        "J" => (1.0, true),
        "mJ" => (1e-3, true),
        "uJ" => (1e-6, true),
        "Wh" => (3600.0, true),
        "kWh" => (3.6e6, true),
        "W" => (1.0, false),
        "mW" => (1e-3, false),
        "kW" => (1e3, false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_flag_splits_into_kind_address_and_options() {
        let mut m: MeterSpec = "shelly:http://10.0.0.7#id=1,scope=node,every=2s,error=1%".parse().unwrap();
        assert_eq!((m.kind.as_str(), m.address.as_str()), ("shelly", "http://10.0.0.7"));
        assert_eq!(m.take("id").as_deref(), Some("1"));
        assert_eq!(m.scope(Some(PowerScope::Wall)).unwrap(), PowerScope::Node);
        assert_eq!(m.every(Duration::from_secs(1)).unwrap(), Duration::from_secs(2));
        assert_eq!(m.stated_error().unwrap(), Some(0.01));
        m.finish(&["id"]).unwrap();
    }

    #[test]
    fn bad_meter_flags_say_what_is_wrong() {
        let err = |s: &str| s.parse::<MeterSpec>().unwrap_err();
        assert!(err("http://10.0.0.7").contains("unknown meter \"http\""));
        assert!(err("plug:http://x").contains("expected ipmi, shelly"));
        assert!(err("shelly:http://x#id").contains("\"id\" is not NAME=VALUE"));
        assert!(err("shelly:http://x#id=1,id=2").contains("given twice"));
        let mut m: MeterSpec = "tasmota:http://x#scope=plug,colour=red".parse().unwrap();
        assert!(m.scope(None).unwrap_err().contains("unknown power scope \"plug\""));
        assert!(m.finish(&["scope"]).unwrap_err().contains("no option \"colour\""));
        let mut m: MeterSpec = "json:http://x#every=10ms,error=150%".parse().unwrap();
        assert!(m.every(Duration::from_secs(1)).unwrap_err().contains("shorter than 100ms"));
        assert!(m.stated_error().unwrap_err().contains("error=150%"));
    }
}
