//! Any meter that answers JSON over HTTP, read at JSON pointers (RFC 6901):
//! `--meter 'json:http://pdu/outlet/3#energy=/outlet/energy,energy_unit=Wh,power=/outlet/watts'`.
//! Give `energy=` (a cumulative counter, preferred), `power=`, or both; units default to J
//! and W. It measures at the plug (`wall`) unless `#scope=` says otherwise.

use super::http::{self, HttpGet, Prefer};
use super::meter_spec::{MeterSpec, unit_factor};
use super::polled::{Described, Polled};
use super::{PowerKind, PowerScope, Reading};
use std::time::Duration;

/// Where the figures are in the meter's answer, and their units.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointers {
    /// The energy counter's pointer and its factor to joules.
    pub energy: Option<(String, f64)>,
    /// The power reading's pointer and its factor to watts.
    pub power: Option<(String, f64)>,
}

/// Reads one answer.
pub fn parse(body: &str, at: &Pointers, prefer: Prefer) -> Result<Reading, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let number = |p: &Option<(String, f64)>| -> Result<Option<f64>, String> {
        let Some((pointer, factor)) = p else { return Ok(None) };
        let found = v.pointer(pointer).ok_or_else(|| format!("nothing at {pointer} in the answer"))?;
        // Some meters quote their numbers.
        let n = found.as_f64().or_else(|| found.as_str().and_then(|s| s.trim().parse().ok()));
        n.map(|n| Some(n * factor)).ok_or_else(|| format!("{pointer} is {found}, not a number"))
    };
    prefer.pick(number(&at.energy)?, number(&at.power)?)
}

/// Takes `NAME=/pointer` and `NAME_unit=` from the spec.
fn pointer(
    spec: &mut MeterSpec,
    name: &str,
    default_unit: &str,
    energy: bool,
) -> Result<Option<(String, f64)>, String> {
    let unit = spec.take(&format!("{name}_unit")).unwrap_or_else(|| default_unit.to_owned());
    let Some(p) = spec.take(name) else { return Ok(None) };
    if !p.starts_with('/') {
        return Err(format!("--meter \"{}\": {name}={p} is not a JSON pointer (it starts with /)", spec.given));
    }
    match unit_factor(&unit) {
        Some((factor, is_energy)) if is_energy == energy => Ok(Some((p, factor))),
        _ => Err(format!(
            "--meter \"{}\": {name}_unit={unit}; expected {}",
            spec.given,
            if energy { "J, mJ, uJ, Wh or kWh" } else { "W, mW or kW" }
        )),
    }
}

/// Starts polling the meter `spec` names.
pub fn open(mut spec: MeterSpec) -> Result<Polled, String> {
    let at =
        Pointers { energy: pointer(&mut spec, "energy", "J", true)?, power: pointer(&mut spec, "power", "W", false)? };
    if at.energy.is_none() && at.power.is_none() {
        return Err(format!("--meter \"{}\" needs #energy=/pointer or #power=/pointer", spec.given));
    }
    let scope = spec.scope(Some(PowerScope::Wall))?;
    let period = spec.every(Duration::from_secs(1))?;
    let stated_error = spec.stated_error()?.unwrap_or(super::DEFAULT_STATED_ERROR);
    let prefer = Prefer::from_spec(&mut spec)?;
    spec.finish(&["energy", "energy_unit", "power", "power_unit", "scope", "every", "error", "use"])?;
    let get = HttpGet::new(&spec.address)?;
    let about = Described {
        kind: PowerKind::JsonMeter,
        scope,
        name: format!("json meter {}", get.url().host_str().unwrap_or_default()),
        period,
        timeout: http::TIMEOUT,
        stated_error,
        details: serde_json::json!({
            "url": get.url().as_str(),
            "energy_pointer": at.energy.as_ref().map(|e| &e.0),
            "power_pointer": at.power.as_ref().map(|p| &p.0),
            "use": format!("{prefer:?}").to_lowercase(),
        }),
    };
    http::start(about, get, move |body| parse(body, &at, prefer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> MeterSpec {
        s.parse().unwrap()
    }

    #[test]
    fn figures_are_read_at_their_pointers_in_their_units() {
        let mut s = spec("json:http://m#energy=/emeters/0/total,energy_unit=Wh,power=/emeters/0/power");
        let at = Pointers {
            energy: pointer(&mut s, "energy", "J", true).unwrap(),
            power: pointer(&mut s, "power", "W", false).unwrap(),
        };
        let body = r#"{"emeters":[{"power":"41.5","total":2.5}]}"#;
        assert_eq!(parse(body, &at, Prefer::Counter).unwrap(), Reading::EnergyJ(9000.0));
        assert_eq!(parse(body, &at, Prefer::Power).unwrap(), Reading::PowerW(41.5));
        assert!(parse(r#"{"emeters":[]}"#, &at, Prefer::Counter).unwrap_err().contains("nothing at /emeters/0/total"));
    }

    #[test]
    fn bad_pointers_and_units_are_named() {
        assert!(open(spec("json:http://m")).err().unwrap().contains("needs #energy=/pointer or #power=/pointer"));
        assert!(open(spec("json:http://m#power=watts")).err().unwrap().contains("not a JSON pointer"));
        assert!(open(spec("json:http://m#power=/w,power_unit=Wh")).err().unwrap().contains("expected W, mW or kW"));
    }
}
