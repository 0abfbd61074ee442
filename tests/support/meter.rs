//! A power meter on the network for the tests: a small HTTP server that answers in a real
//! meter's format (Shelly, Tasmota, a DCGM exporter, a generic JSON meter), its counter
//! advanced at a power the test sets. A FIXTURE for the meter path on machines without one:
//! its figures are never a measurement. The test can stop it answering (a dead meter) and
//! reset its counter (a meter that restarted).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which meter it plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeterFormat {
    /// `GET /rpc/Switch.GetStatus?id=0`.
    Shelly,
    /// `GET /cm?cmnd=Status%208`.
    Tasmota,
    /// DCGM-exporter's `/metrics`, two GPUs (gpu 1 draws twice gpu 0's power).
    Dcgm,
    /// `{"outlet": {"energy_wh": .., "watts": ..}}` at any path.
    Json,
}

struct State {
    watts: f64,
    joules: f64,
    at: Instant,
    answering: bool,
}

impl State {
    fn advance(&mut self) -> f64 {
        self.joules += self.watts * self.at.elapsed().as_secs_f64();
        self.at = Instant::now();
        self.joules
    }
}

/// A running fixture meter; stops when dropped.
pub struct FixtureMeter {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FixtureMeter {
    /// Starts one in `format` drawing `watts`.
    pub fn start(format: MeterFormat, watts: f64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State { watts, joules: 0.0, at: Instant::now(), answering: true }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, format, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { url, state, stop })
    }

    /// Makes the meter answer, or drop every connection unanswered (a dead meter).
    pub fn set_answering(&self, answering: bool) {
        self.state.lock().unwrap().answering = answering;
    }

    /// Sets its counter back to zero, as a meter that restarted does.
    pub fn reset_counter(&self) {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.joules = 0.0;
    }
}

impl Drop for FixtureMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, format: MeterFormat, state: &Mutex<State>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let (answering, watts, joules) = {
        let mut s = state.lock().unwrap();
        let j = s.advance();
        (s.answering, s.watts, j)
    };
    if !answering {
        return; // dropped unanswered
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match (format, path) {
        (MeterFormat::Shelly, "/rpc/Switch.GetStatus?id=0") => ("200 OK", shelly(watts, joules)),
        (MeterFormat::Tasmota, "/cm?cmnd=Status%208") => ("200 OK", tasmota(watts, joules)),
        (MeterFormat::Dcgm, "/metrics") => ("200 OK", dcgm(watts, joules)),
        (MeterFormat::Json, _) => {
            ("200 OK", format!(r#"{{"outlet":{{"energy_wh":{:.4},"watts":{watts:.1}}}}}"#, joules / 3600.0))
        }
        _ => ("404 Not Found", String::new()),
    };
    let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// Shelly's `Switch.GetStatus`, the documented fields (tests/formats), Wh to 3 decimals as
/// the device prints them.
fn shelly(watts: f64, joules: f64) -> String {
    format!(
        r#"{{"id": 0, "source": "init", "output": true, "apower": {watts:.1}, "voltage": 230.1, "aenergy": {{"total": {:.3}}}}}"#,
        joules / 3600.0
    )
}

/// Tasmota's `Status 8`, as in tests/formats/tasmota-status8.json, with `EnergyRes 5`.
fn tasmota(watts: f64, joules: f64) -> String {
    let kwh = joules / 3.6e6;
    format!(
        r#"{{"StatusSNS":{{"Time":"2026-12-02T10:00:00","ENERGY":{{"TotalStartTime":"2026-12-01T00:00:00","Total":{kwh:.5},"Yesterday":0.000,"Today":{kwh:.5},"Power":{watts:.0},"ApparentPower":{watts:.0},"ReactivePower":0,"Factor":1.00,"Voltage":230,"Current":{:.3}}}}}}}"#,
        watts / 230.0
    )
}

/// DCGM-exporter's text exposition (tests/formats/dcgm-exporter.txt): mJ since boot, two GPUs.
fn dcgm(watts: f64, joules: f64) -> String {
    let line = |gpu: u32, factor: f64| {
        format!(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu=\"{gpu}\",UUID=\"GPU-34319582-d595-d1c7-d1d2-179bcfa6166{gpu}\",device=\"nvidia{gpu}\",modelName=\"NVIDIA A100-SXM4-40GB\",Hostname=\"fixture\"}} {:.0}\n",
            joules * factor * 1e3
        )
    };
    format!(
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).\n# TYPE DCGM_FI_DEV_POWER_USAGE gauge\nDCGM_FI_DEV_POWER_USAGE{{gpu=\"0\",UUID=\"GPU-34319582-d595-d1c7-d1d2-179bcfa61660\",device=\"nvidia0\",Hostname=\"fixture\"}} {watts:.6}\n# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).\n# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n{}{}",
        line(0, 1.0),
        line(1, 2.0)
    )
}
