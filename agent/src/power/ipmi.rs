//! A server's BMC through IPMI DCMI (`ipmitool dcmi power reading`), in band through
//! `/dev/ipmi0` or over the network (`--meter ipmi:lanplus://user@host`, the password in
//! `IPMI_PASSWORD`). It covers the whole node: every chip, fans, drives, the DC side of the
//! power supplies.
//!
//! A BMC updates its reading about once a second at best, and reports the window it averages
//! over; the source is polled at that pace (never at the sampler's 20 Hz) and the window is
//! recorded with its details.

use super::meter_spec::MeterSpec;
use super::polled::{Described, Poll, Polled};
use super::{PowerKind, PowerScope, Reading};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The in-band device nodes ipmitool opens, in the order it tries them.
pub const DEVICES: [&str; 3] = ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"];
/// How long one ipmitool call may take (a busy BMC can take seconds).
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the BMC is asked.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One DCMI power reading as ipmitool prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct DcmiReading {
    /// Instantaneous power, W.
    pub instantaneous_w: f64,
    /// Average over the BMC's sampling period, W.
    pub average_w: f64,
    /// Minimum and maximum over that period, W.
    pub min_w: f64,
    /// See `min_w`.
    pub max_w: f64,
    /// The BMC's averaging window, in seconds.
    pub sampling_period_s: u64,
    /// Whether the BMC says its reading is active.
    pub active: bool,
}

/// Parses `ipmitool dcmi power reading`. Fields are found by their labels anywhere in the
/// text: ipmitool 1.8.19 prints the timestamp without a line break, so "Sampling period"
/// follows it on the same line.
pub fn parse(text: &str) -> Result<DcmiReading, String> {
    if let Some(line) = text.lines().find(|l| l.contains("DCMI request failed")) {
        return Err(format!("the BMC refused the DCMI power reading: {}", line.trim()));
    }
    let value = |label: &str| -> Result<&str, String> {
        let at = text.find(label).ok_or_else(|| format!("no \"{label}\" in ipmitool's output"))?;
        let rest = text[at + label.len()..].trim_start_matches([' ', ':', '\t']);
        Ok(rest.split_whitespace().next().unwrap_or(""))
    };
    let watts = |label: &str| -> Result<f64, String> {
        let v = value(label)?;
        v.parse::<f64>().map_err(|_| format!("\"{label}\" is \"{v}\", not a number of watts"))
    };
    let instantaneous_w = watts("Instantaneous power reading")?;
    let period = value("Sampling period")?;
    Ok(DcmiReading {
        instantaneous_w,
        average_w: watts("Average power reading over sample period")?,
        min_w: watts("Minimum during sampling period")?,
        max_w: watts("Maximum during sampling period")?,
        sampling_period_s: period
            .parse()
            .map_err(|_| format!("\"Sampling period\" is \"{period}\", not a number of seconds"))?,
        active: value("Power reading state is")? == "activated",
    })
}

/// Where the BMC is: in band, or over the LAN (`lanplus://user@host`).
#[derive(Debug, Clone, PartialEq)]
pub enum Bmc {
    /// This machine's own BMC, through its device node.
    InBand,
    /// A BMC on the network; the password comes from `IPMI_PASSWORD` (ipmitool's `-E`).
    Lan {
        /// The BMC's address.
        host: String,
        /// The IPMI user.
        user: String,
    },
}

impl Bmc {
    /// Parses the address part of `--meter ipmi:...`: empty for in band, or
    /// `lanplus://user@host`.
    pub fn parse(address: &str) -> Result<Self, String> {
        if address.is_empty() || address == "local" {
            return Ok(Bmc::InBand);
        }
        let rest = address
            .strip_prefix("lanplus://")
            .ok_or_else(|| format!("\"{address}\": expected ipmi:local or ipmi:lanplus://USER@HOST"))?;
        match rest.split_once('@') {
            Some((user, host)) if !user.is_empty() && !host.is_empty() => {
                Ok(Bmc::Lan { host: host.to_owned(), user: user.to_owned() })
            }
            _ => Err(format!("\"{address}\": expected lanplus://USER@HOST")),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = match self {
            Bmc::InBand => vec![],
            Bmc::Lan { host, user } => {
                ["-I", "lanplus", "-H", host, "-U", user, "-E"].iter().map(|s| s.to_string()).collect()
            }
        };
        args.extend(["dcmi", "power", "reading"].map(String::from));
        args
    }
}

/// Polls the BMC through ipmitool.
struct IpmiPoll {
    ipmitool: PathBuf,
    bmc: Bmc,
}

impl Poll for IpmiPoll {
    fn poll(&mut self) -> Result<Reading, String> {
        let reading = parse(&run(&self.ipmitool, &self.bmc.args())?)?;
        if !reading.active {
            return Err("the BMC reports its power reading as deactivated".into());
        }
        Ok(Reading::PowerW(reading.instantaneous_w))
    }
}

/// Starts reading the BMC, or says why it cannot be read here.
pub fn discover(ipmitool: &Path, bmc: Bmc, stated_error: Option<f64>) -> Result<Polled, String> {
    if bmc == Bmc::InBand && !DEVICES.iter().any(|d| Path::new(d).exists()) {
        return Err(format!(
            "no in-band IPMI device ({}): no BMC, or the ipmi_si and ipmi_devintf modules are not loaded",
            DEVICES.join(", ")
        ));
    }
    let first = parse(&run(ipmitool, &bmc.args())?)?;
    if !first.active {
        return Err("the BMC reports its DCMI power reading as deactivated".into());
    }
    let name = match &bmc {
        Bmc::InBand => "BMC (in band)".to_owned(),
        Bmc::Lan { host, .. } => format!("BMC {host}"),
    };
    let about = Described {
        kind: PowerKind::IpmiDcmi,
        scope: PowerScope::Node,
        name,
        period: PERIOD,
        timeout: TIMEOUT,
        stated_error: stated_error.unwrap_or(super::DEFAULT_STATED_ERROR),
        details: serde_json::json!({
            "reading": "instantaneous",
            "bmc_sampling_period_s": first.sampling_period_s,
            "average_w_at_start": first.average_w,
            "polled_every_s": PERIOD.as_secs_f64(),
        }),
    };
    Polled::start(about, Box::new(IpmiPoll { ipmitool: ipmitool.to_owned(), bmc }))
}

/// Starts reading the BMC a `--meter ipmi:...` names.
pub fn open(mut spec: MeterSpec, ipmitool: &Path) -> Result<Polled, String> {
    let stated_error = spec.stated_error()?;
    spec.finish(&["error"])?;
    discover(ipmitool, Bmc::parse(&spec.address)?, stated_error)
}

/// Runs ipmitool with a deadline; its stderr is the error when it fails.
fn run(ipmitool: &Path, args: &[String]) -> Result<String, String> {
    let mut child = Command::new(ipmitool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", ipmitool.display()))?;
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("ipmitool did not answer in {TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
        return Err(format!("ipmitool failed ({}): {said}", out.status));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ipmitool 1.8.18's output as quoted in a bug report (see tests/formats/SOURCES.md).
    const READING: &str = include_str!("../../../tests/formats/ipmitool-dcmi-power-reading.txt");
    /// ipmitool 1.8.19: the timestamp line has no line break.
    const READING_1_8_19: &str = include_str!("../../../tests/formats/ipmitool-1.8.19-dcmi-power-reading.txt");

    #[test]
    fn dcmi_readings_are_parsed_in_both_ipmitool_layouts() {
        let r = parse(READING).unwrap();
        assert_eq!(
            r,
            DcmiReading {
                instantaneous_w: 215.0,
                average_w: 176.0,
                min_w: 162.0,
                max_w: 276.0,
                sampling_period_s: 1_131_466,
                active: true
            }
        );
        let r = parse(READING_1_8_19).unwrap();
        assert_eq!((r.instantaneous_w, r.average_w, r.sampling_period_s, r.active), (240.0, 204.0, 1, true));
    }

    #[test]
    fn a_deactivated_reading_and_a_refusing_bmc_are_named() {
        let off = parse(include_str!("../../../tests/formats/ipmitool-dcmi-deactivated.txt")).unwrap();
        assert!(!off.active);
        let refused = parse(include_str!("../../../tests/formats/ipmitool-dcmi-unsupported.txt")).unwrap_err();
        assert!(refused.contains("Invalid command (c1)"), "{refused}");
        assert!(parse("Instantaneous power reading: many Watts").unwrap_err().contains("not a number of watts"));
    }

    #[test]
    fn bmc_addresses_are_in_band_or_lanplus() {
        assert_eq!(Bmc::parse("").unwrap(), Bmc::InBand);
        assert_eq!(
            Bmc::parse("lanplus://admin@10.0.0.5").unwrap(),
            Bmc::Lan { host: "10.0.0.5".into(), user: "admin".into() }
        );
        assert!(Bmc::parse("lan://10.0.0.5").unwrap_err().contains("lanplus://USER@HOST"));
        assert!(Bmc::parse("lanplus://10.0.0.5").unwrap_err().contains("USER@HOST"));
    }

    #[test]
    fn ipmitool_is_run_with_a_deadline_and_its_errors_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("ipmitool");
        // A stand-in for the ipmitool binary that prints a captured reading: the parser and
        // the process handling are under test here, not a BMC.
        std::fs::write(&fake, format!("#!/bin/sh\ncat <<'OUT'\n{READING}OUT\n")).unwrap();
        let mut perms = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&fake, perms).unwrap();
        let bmc = Bmc::Lan { host: "10.0.0.5".into(), user: "admin".into() };
        let mut source = discover(&fake, bmc, None).unwrap();
        assert_eq!(super::super::PowerSource::read(&mut source).unwrap(), Reading::PowerW(215.0));
        let missing = discover(&dir.path().join("absent"), Bmc::Lan { host: "h".into(), user: "u".into() }, None);
        assert!(missing.err().unwrap().contains("absent"));
    }
}
