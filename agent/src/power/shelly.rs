//! Shelly Gen2 and later plugs and relays, through their RPC API:
//! `GET /rpc/Switch.GetStatus?id=N` answers `apower` (W) and `aenergy.total` (Wh, counted
//! since the device started). `--meter shelly:http://10.0.0.7[#id=0]`; it measures at the
//! plug (`wall`) unless `#scope=` says otherwise.

use super::http::{self, HttpGet, Prefer};
use super::meter_spec::MeterSpec;
use super::polled::{Described, Polled};
use super::{PowerKind, PowerScope, Reading};
use std::time::Duration;

/// Reads a `Switch.GetStatus` answer.
pub fn parse(body: &str, prefer: Prefer) -> Result<Reading, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("Switch.GetStatus is not JSON: {e}"))?;
    let energy_wh = v.pointer("/aenergy/total").and_then(serde_json::Value::as_f64);
    let power_w = v.get("apower").and_then(serde_json::Value::as_f64);
    if energy_wh.is_none() && power_w.is_none() {
        return Err("Switch.GetStatus has no apower or aenergy.total: this switch does not meter power".into());
    }
    prefer.pick(energy_wh.map(|wh| wh * 3600.0), power_w)
}

/// Starts polling the Shelly device `spec` names.
pub fn open(mut spec: MeterSpec) -> Result<Polled, String> {
    let id: u32 = match spec.take("id") {
        None => 0,
        Some(v) => v.parse().map_err(|_| format!("--meter \"{}\": id={v} is not a switch number", spec.given))?,
    };
    let scope = spec.scope(Some(PowerScope::Wall))?;
    let period = spec.every(Duration::from_secs(1))?;
    // Shelly publishes no metering error (tests/formats/SOURCES.md): `#error=` gives it.
    let stated_error = spec.stated_error()?.unwrap_or(super::DEFAULT_STATED_ERROR);
    let prefer = Prefer::from_spec(&mut spec)?;
    spec.finish(&["id", "scope", "every", "error", "use"])?;
    let base = spec.address.trim_end_matches('/');
    let get = HttpGet::new(&format!("{base}/rpc/Switch.GetStatus?id={id}"))?;
    let about = Described {
        kind: PowerKind::Shelly,
        scope,
        name: format!("shelly {} switch {id}", get.url().host_str().unwrap_or_default()),
        period,
        timeout: http::TIMEOUT,
        stated_error,
        details: serde_json::json!({"url": get.url().as_str(), "use": format!("{prefer:?}").to_lowercase()}),
    };
    http::start(about, get, move |body| parse(body, prefer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_is_preferred_and_power_is_there_when_asked_for() {
        let body = include_str!("../../../tests/formats/shelly-switch-getstatus.json");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let wh = v["aenergy"]["total"].as_f64().unwrap();
        assert_eq!(parse(body, Prefer::Counter).unwrap(), Reading::EnergyJ(wh * 3600.0));
        assert_eq!(parse(body, Prefer::Power).unwrap(), Reading::PowerW(v["apower"].as_f64().unwrap()));
        assert!(parse(r#"{"id":0,"output":true}"#, Prefer::Counter).unwrap_err().contains("does not meter power"));
        assert!(parse("<html>", Prefer::Counter).unwrap_err().contains("not JSON"));
    }
}
