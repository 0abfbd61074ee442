//! Apple's `powermetrics` (needs root), the fallback when IOReport cannot be read. It
//! prints one XML plist per sample, separated by NUL bytes; `processor.combined_power`
//! (CPU + GPU + ANE, mW) is the SoC power used here.

use super::{PowerKind, PowerScope, PowerSource, Reading};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one powermetrics sample says about power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowermetricsSample {
    /// The sample's interval, in seconds.
    pub elapsed_s: Option<f64>,
    /// CPU + GPU + ANE power, in watts.
    pub combined_w: f64,
    /// CPU power, in watts.
    pub cpu_w: Option<f64>,
    /// GPU power, in watts.
    pub gpu_w: Option<f64>,
    /// Neural engine power, in watts.
    pub ane_w: Option<f64>,
}

/// Parses one plist document of `powermetrics -f plist` output.
pub fn parse_sample(doc: &[u8]) -> Result<PowermetricsSample, String> {
    let doc = doc.trim_ascii();
    let value = plist::Value::from_reader_xml(doc).map_err(|e| format!("not a powermetrics plist: {e}"))?;
    let top = value.as_dictionary().ok_or("the plist is not a dictionary")?;
    let processor = top.get("processor").and_then(|p| p.as_dictionary()).ok_or("no `processor` dictionary")?;
    let number = |d: &plist::Dictionary, key: &str| -> Option<f64> {
        d.get(key).and_then(|v| v.as_real().or_else(|| v.as_signed_integer().map(|i| i as f64)))
    };
    let mw = |key: &str| number(processor, key).map(|v| v / 1e3);
    let (cpu_w, gpu_w, ane_w) = (mw("cpu_power"), mw("gpu_power"), mw("ane_power"));
    let combined_w = mw("combined_power")
        .or_else(|| cpu_w.map(|c| c + gpu_w.unwrap_or(0.0) + ane_w.unwrap_or(0.0)))
        .ok_or("no combined_power or cpu_power in `processor`")?;
    Ok(PowermetricsSample { elapsed_s: number(top, "elapsed_ns").map(|ns| ns / 1e9), combined_w, cpu_w, gpu_w, ane_w })
}

/// A running `powermetrics`, whose latest sample is the current power.
pub struct Powermetrics {
    child: Child,
    latest: Arc<Mutex<Option<Result<f64, String>>>>,
}

/// Sampling interval asked of powermetrics, in ms (it cannot go much faster).
const INTERVAL_MS: u64 = 100;

/// Starts powermetrics when it can work here, or says why not.
pub fn discover() -> Result<Vec<Powermetrics>, String> {
    if !cfg!(target_os = "macos") {
        return Err("only on macOS".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("powermetrics needs root; run the agent as root or rely on IOReport".into());
    }
    let mut child = Command::new("powermetrics")
        .args(["--samplers", "cpu_power,gpu_power,ane_power", "-f", "plist", "-i", &INTERVAL_MS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start powermetrics: {e}"))?;
    let stdout = child.stdout.take().ok_or("powermetrics has no stdout")?;
    let latest: Arc<Mutex<Option<Result<f64, String>>>> = Arc::default();
    let sink = latest.clone();
    std::thread::spawn(move || {
        for doc in BufReader::new(stdout).split(0) {
            let Ok(doc) = doc else { break };
            let parsed = parse_sample(&doc).map(|s| s.combined_w);
            *sink.lock().expect("not poisoned") = Some(parsed);
        }
    });
    // Wait for a first sample, so a broken powermetrics is reported now, not mid-run.
    for _ in 0..50 {
        let first = latest.lock().expect("not poisoned").clone();
        if let Some(first) = first {
            first?;
            return Ok(vec![Powermetrics { child, latest }]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    Err("powermetrics produced no sample within 5 s".into())
}

impl PowerSource for Powermetrics {
    fn kind(&self) -> PowerKind {
        PowerKind::Powermetrics
    }

    fn scope(&self) -> PowerScope {
        PowerScope::Soc
    }

    fn name(&self) -> String {
        "powermetrics combined_power".into()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        match self.latest.lock().expect("not poisoned").clone() {
            Some(Ok(w)) => Ok(Reading::PowerW(w)),
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => Err(std::io::Error::other("no powermetrics sample yet")),
        }
    }

    fn update_period(&self) -> Duration {
        Duration::from_millis(INTERVAL_MS)
    }
}

impl Drop for Powermetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample in the form `powermetrics --samplers cpu_power,gpu_power,ane_power -f plist`
    /// prints on Apple silicon (macOS 13+): top-level metadata, then `processor` with the
    /// cluster data and the power totals in mW. Keys, nesting and units follow output published
    /// by open-source tools; no Mac was at hand to capture one ourselves.
    const CAPTURE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>is_delta</key>
	<true/>
	<key>elapsed_ns</key>
	<integer>100843208</integer>
	<key>hw_model</key>
	<string>Mac14,6</string>
	<key>kern_osversion</key>
	<string>23B81</string>
	<key>kern_bootargs</key>
	<string></string>
	<key>kern_boottime</key>
	<integer>1700000000</integer>
	<key>timestamp</key>
	<date>2023-11-20T10:00:00Z</date>
	<key>processor</key>
	<dict>
		<key>clusters</key>
		<array>
			<dict>
				<key>name</key>
				<string>E-Cluster</string>
				<key>freq_hz</key>
				<real>1028000000</real>
				<key>idle_ratio</key>
				<real>0.8125</real>
			</dict>
		</array>
		<key>ane_energy</key>
		<integer>0</integer>
		<key>ane_power</key>
		<real>0</real>
		<key>cpu_energy</key>
		<integer>93</integer>
		<key>cpu_power</key>
		<real>922.23</real>
		<key>gpu_energy</key>
		<integer>1513</integer>
		<key>gpu_power</key>
		<real>15003.5</real>
		<key>combined_power</key>
		<real>15925.73</real>
	</dict>
	<key>gpu</key>
	<dict>
		<key>freq_hz</key>
		<real>1398</real>
		<key>idle_ratio</key>
		<real>0.0120</real>
		<key>gpu_energy</key>
		<integer>1513</integer>
	</dict>
</dict>
</plist>
"#;

    #[test]
    fn a_captured_sample_yields_soc_power_in_watts() {
        let s = parse_sample(CAPTURE.as_bytes()).unwrap();
        assert!((s.combined_w - 15.92573).abs() < 1e-9);
        assert_eq!((s.cpu_w, s.gpu_w, s.ane_w), (Some(0.92223), Some(15.0035), Some(0.0)));
        assert!((s.elapsed_s.unwrap() - 0.100843208).abs() < 1e-12);
    }

    #[test]
    fn nul_separated_streams_split_into_samples() {
        let stream = format!("{CAPTURE}\0{}", CAPTURE.replace("15925.73", "2000"));
        let samples: Vec<f64> =
            BufReader::new(stream.as_bytes()).split(0).map(|d| parse_sample(&d.unwrap()).unwrap().combined_w).collect();
        assert_eq!(samples.len(), 2);
        assert!((samples[1] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn older_output_without_combined_power_sums_its_parts_and_garbage_is_refused() {
        let older = CAPTURE.replace("<key>combined_power</key>", "<key>unused</key>");
        assert!((parse_sample(older.as_bytes()).unwrap().combined_w - 15.92573).abs() < 1e-9);
        assert!(parse_sample(b"CPU Power: 922 mW").unwrap_err().contains("not a powermetrics plist"));
        let empty = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict></dict></plist>";
        assert!(parse_sample(empty.as_bytes()).unwrap_err().contains("processor"));
    }
}
