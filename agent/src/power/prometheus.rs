//! A metric scraped from a Prometheus exporter: DCGM-exporter's
//! `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ), Kepler's `kepler_node_*_joules_total`,
//! node_exporter's `node_rapl_*_joules_total`, or any gauge in watts.
//! `--meter 'prometheus:http://host:9400/metrics#metric=NAME,scope=gpu,gpu=0'`: options other
//! than the meter's own are label matchers, and they must select exactly one series, so two
//! GPUs are never summed by accident.

use super::http::{self, HttpGet};
use super::meter_spec::{MeterSpec, unit_factor};
use super::polled::{Described, Polled};
use super::{PowerKind, Reading};
use std::collections::BTreeMap;
use std::time::Duration;

/// One sample of the text exposition format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the text exposition format (comments and timestamps skipped).
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(sample(line).map_err(|e| format!("line {}: {e}: {line}", n + 1))?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("\"{v}\" is not a number"))?,
    };
    Ok(Sample { name, labels, value })
}

/// Reads `name="value",...}`; returns the labels and what follows the brace.
fn label_set(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("a label without =")?;
        let key = s[..eq].trim().to_owned();
        let body = s[eq + 1..].trim_start();
        if !body.starts_with('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in body.char_indices().skip(1) {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| format!("label {key}'s value is not closed"))?;
        labels.insert(key, value);
        s = &body[end + 1..];
    }
}

/// The unit of well-known energy and power metrics, from their names.
pub fn known_unit(metric: &str) -> Option<&'static str> {
    match metric {
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" => Some("mJ"),
        "DCGM_FI_DEV_POWER_USAGE" => Some("W"),
        m if m.ends_with("_joules_total") || m.ends_with("_joules") => Some("J"),
        m if m.ends_with("_watts") => Some("W"),
        _ => None,
    }
}

/// The one sample of `metric` whose labels match `matchers`, or why there is not exactly one.
pub fn select<'a>(
    samples: &'a [Sample],
    metric: &str,
    matchers: &BTreeMap<String, String>,
) -> Result<&'a Sample, String> {
    let named: Vec<&Sample> = samples.iter().filter(|s| s.name == metric).collect();
    let matching: Vec<&Sample> =
        named.iter().copied().filter(|s| matchers.iter().all(|(k, v)| s.labels.get(k) == Some(v))).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] if named.is_empty() => Err(format!("the exporter has no metric {metric}")),
        [] => Err(format!("no {metric} series has the labels {matchers:?} ({} series have other labels)", named.len())),
        many => Err(format!(
            "{} {metric} series match {matchers:?}: add labels to pick one, e.g. {:?}",
            many.len(),
            many.iter().map(|s| &s.labels).collect::<Vec<_>>()
        )),
    }
}

/// Starts scraping the metric `spec` names.
pub fn open(mut spec: MeterSpec) -> Result<Polled, String> {
    let metric = spec.require("metric", "the metric's name")?;
    let scope = spec.scope(None)?;
    let period = spec.every(Duration::from_secs(1))?;
    let stated_error = spec.stated_error()?.unwrap_or(super::DEFAULT_STATED_ERROR);
    let unit = match spec.take("unit") {
        Some(u) => u,
        None => known_unit(&metric)
            .ok_or_else(|| {
                format!("--meter \"{}\": the unit of {metric} is not known; give #unit=J, mJ, W...", spec.given)
            })?
            .to_owned(),
    };
    let (factor, energy) = unit_factor(&unit)
        .ok_or_else(|| format!("--meter \"{}\": unit={unit}; expected J, mJ, uJ, Wh, kWh, W, mW or kW", spec.given))?;
    let matchers = spec.rest();
    let get = HttpGet::new(&spec.address)?;
    let selector = format!("{metric}{matchers:?}");
    let about = Described {
        kind: PowerKind::Prometheus,
        scope,
        name: format!("{selector} at {}", get.url().host_str().unwrap_or_default()),
        period,
        timeout: http::TIMEOUT,
        stated_error,
        details: serde_json::json!({"url": get.url().as_str(), "metric": metric, "labels": matchers, "unit": unit}),
    };
    http::start(about, get, move |body| {
        let v = select(&parse(body)?, &metric, &matchers)?.value * factor;
        Ok(if energy { Reading::EnergyJ(v) } else { Reading::PowerW(v) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_exposition_format_is_parsed_with_escapes_and_timestamps() {
        let samples = parse(include_str!("../../../tests/formats/prometheus-exposition-sample.txt")).unwrap();
        let post = select(&samples, "http_requests_total", &m(&[("code", "400")])).unwrap();
        assert_eq!(post.value, 3.0);
        let file = select(&samples, "msdos_file_access_time_seconds", &BTreeMap::new()).unwrap();
        assert_eq!(file.labels["path"], "C:\\DIR\\FILE.TXT");
        assert_eq!(file.labels["error"], "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(select(&samples, "something_weird", &BTreeMap::new()).unwrap().value, f64::INFINITY);
        assert_eq!(select(&samples, "metric_without_timestamp_and_labels", &BTreeMap::new()).unwrap().value, 12.47);
        assert!(parse("bad{label=1} 2").unwrap_err().contains("line 1"));
    }

    #[test]
    fn exporters_energy_series_are_selected_by_label_and_never_summed() {
        let dcgm = parse(include_str!("../../../tests/formats/dcgm-exporter.txt")).unwrap();
        let e = select(&dcgm, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &m(&[("gpu", "0")])).unwrap();
        assert_eq!(e.value, 319159391.0);
        assert_eq!(known_unit("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"), Some("mJ"));
        let two = select(&dcgm, "DCGM_FI_DEV_POWER_USAGE", &m(&[("modelName", "NVIDIA A30")])).unwrap_err();
        assert!(two.contains("2 DCGM_FI_DEV_POWER_USAGE series match"), "{two}");
        assert!(select(&dcgm, "DCGM_FI_DEV_POWER_USAGE", &m(&[("gpu", "7")])).unwrap_err().contains("no DCGM_FI"));
        let kepler = parse(include_str!("../../../tests/formats/kepler.txt")).unwrap();
        let pkg = select(&kepler, "kepler_node_cpu_joules_total", &m(&[("zone", "package")])).unwrap();
        assert_eq!(pkg.value, 123456.789);
        let rapl = parse(include_str!("../../../tests/formats/node-exporter-rapl.txt")).unwrap();
        assert_eq!(
            select(&rapl, "node_rapl_package_joules_total", &m(&[("index", "0")])).unwrap().value,
            240422.366267
        );
        assert_eq!(known_unit("node_rapl_package_joules_total"), Some("J"));
    }
}
