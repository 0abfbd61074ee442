//! Tasmota plugs, through `GET /cm?cmnd=Status%208`: `StatusSNS.ENERGY.Total` (kWh since
//! `TotalStartTime`) and `Power` (W); both are arrays on multi-channel meters, where
//! `#channel=N` (from 1) picks one or `#channel=all` sums them. `--meter tasmota:http://host`.
//!
//! Tasmota prints `Total` with 3 decimals unless `EnergyRes` is raised: 1 Wh (3.6 kJ) steps.
//! Over a run that is small; for per-query energy set `EnergyRes 5` or `#use=power`.

use super::http::{self, HttpGet, Prefer};
use super::meter_spec::MeterSpec;
use super::polled::{Described, Polled};
use super::{PowerKind, PowerScope, Reading};
use serde_json::Value;
use std::time::Duration;

/// Which channel of a multi-channel meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A single-channel meter, or channel N (from 1).
    One(usize),
    /// Every channel, summed.
    All,
}

/// A figure of the ENERGY object: a number, or one per channel.
fn figure(energy: &Value, key: &str, channel: Channel) -> Result<Option<f64>, String> {
    match (energy.get(key), channel) {
        (None, _) => Ok(None),
        (Some(Value::Number(n)), _) => Ok(n.as_f64()),
        (Some(Value::Array(values)), channel) => {
            let values: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
            match channel {
                Channel::All => Ok(Some(values.iter().sum())),
                Channel::One(n) if n >= 1 && n <= values.len() => Ok(Some(values[n - 1])),
                Channel::One(_) => Err(format!(
                    "ENERGY.{key} has {} channels: pick one with #channel=1..{} or #channel=all",
                    values.len(),
                    values.len()
                )),
            }
        }
        (Some(other), _) => Err(format!("ENERGY.{key} is {other}, not a number")),
    }
}

/// Reads a `Status 8` answer (or a `SENSOR` telemetry message, which has the same ENERGY).
pub fn parse(body: &str, channel: Channel, prefer: Prefer) -> Result<Reading, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("Status 8 is not JSON: {e}"))?;
    let energy = v
        .pointer("/StatusSNS/ENERGY")
        .or_else(|| v.get("ENERGY"))
        .ok_or("the answer has no StatusSNS.ENERGY: this device has no energy monitoring")?;
    let total_kwh = figure(energy, "Total", channel)?;
    let power_w = figure(energy, "Power", channel)?;
    prefer.pick(total_kwh.map(|kwh| kwh * 3.6e6), power_w)
}

/// Starts polling the Tasmota device `spec` names.
pub fn open(mut spec: MeterSpec) -> Result<Polled, String> {
    let channel = match spec.take("channel").as_deref() {
        None => Channel::One(1),
        Some("all") => Channel::All,
        Some(n) => Channel::One(
            n.parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("--meter \"{}\": channel={n}; expected a number from 1, or all", spec.given))?,
        ),
    };
    let scope = spec.scope(Some(PowerScope::Wall))?;
    let period = spec.every(Duration::from_secs(1))?;
    let stated_error = spec.stated_error()?.unwrap_or(super::DEFAULT_STATED_ERROR);
    let prefer = Prefer::from_spec(&mut spec)?;
    spec.finish(&["channel", "scope", "every", "error", "use"])?;
    let get = HttpGet::new(&format!("{}/cm?cmnd=Status%208", spec.address.trim_end_matches('/')))?;
    let about = Described {
        kind: PowerKind::Tasmota,
        scope,
        name: format!("tasmota {}", get.url().host_str().unwrap_or_default()),
        period,
        timeout: http::TIMEOUT,
        stated_error,
        details: serde_json::json!({
            "url": get.url().as_str(),
            "channel": format!("{channel:?}"),
            "use": format!("{prefer:?}").to_lowercase(),
        }),
    };
    http::start(about, get, move |body| parse(body, channel, prefer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_8_gives_the_total_in_joules_or_the_power() {
        let body = include_str!("../../../tests/formats/tasmota-status8.json");
        assert_eq!(parse(body, Channel::One(1), Prefer::Counter).unwrap(), Reading::EnergyJ(6.404 * 3.6e6));
        assert_eq!(parse(body, Channel::One(1), Prefer::Power).unwrap(), Reading::PowerW(2629.0));
        let padded = include_str!("../../../tests/formats/tasmota-status8-padded.json");
        assert_eq!(parse(padded, Channel::One(1), Prefer::Power).unwrap(), Reading::PowerW(0.0));
    }

    #[test]
    fn a_multi_channel_meter_needs_a_channel_and_can_be_summed() {
        let body = include_str!("../../../tests/formats/tasmota-sensor-multichannel.json");
        assert_eq!(parse(body, Channel::One(2), Prefer::Power).unwrap(), Reading::PowerW(5.0));
        assert_eq!(parse(body, Channel::All, Prefer::Power).unwrap(), Reading::PowerW(57.0));
        let e = parse(body, Channel::One(3), Prefer::Counter).unwrap_err();
        assert!(e.contains("2 channels"), "{e}");
        assert!(parse(r#"{"StatusSNS":{"Time":"x"}}"#, Channel::One(1), Prefer::Counter).is_err());
    }
}
