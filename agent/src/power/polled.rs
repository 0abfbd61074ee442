//! Slow sources (a BMC, a meter on the network) read on a thread of their own at their own
//! period. The sampler takes the latest reading at each tick, so a slow or dead meter never
//! holds back the other sources; when the meter's last poll failed, or its reading is older
//! than the staleness limit, the sampler gets an error and records a gap.

use super::{PowerKind, PowerScope, PowerSource, Reading};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A source read by polling: a meter's protocol, without the thread.
pub trait Poll: Send + 'static {
    /// Takes one reading; may block up to the source's own timeout. Runs on the polling
    /// thread (never on the agent's runtime).
    fn poll(&mut self) -> Result<Reading, String>;
}

/// What a polled source says about itself, fixed when it starts.
#[derive(Debug, Clone)]
pub struct Described {
    /// The provenance kind.
    pub kind: PowerKind,
    /// What it covers.
    pub scope: PowerScope,
    /// Which meter, for people: "shelly 10.0.0.7".
    pub name: String,
    /// How often it is polled, which is as often as its value can change here.
    pub period: Duration,
    /// How long one poll may take before it fails.
    pub timeout: Duration,
    /// The maker's stated error, as a fraction of the reading.
    pub stated_error: f64,
    /// Settings worth keeping: the URL, the metric, the BMC's averaging window...
    pub details: serde_json::Value,
}

#[derive(Default)]
struct Latest {
    reading: Option<(Instant, Reading)>,
    error: Option<String>,
    polls: u64,
}

/// A polled source, sampled like any other.
pub struct Polled {
    about: Described,
    latest: Arc<Mutex<Latest>>,
    stop: Arc<AtomicBool>,
    stale_after: Duration,
}

impl Polled {
    /// Starts polling on a thread of its own and waits for the first poll: its error is
    /// why the source is unusable here.
    pub fn start(about: Described, mut poller: Box<dyn Poll>) -> Result<Self, String> {
        let latest = Arc::new(Mutex::new(Latest::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let (shared, stopping, period) = (latest.clone(), stop.clone(), about.period);
        std::thread::Builder::new()
            .name(format!("ipw-meter-{}", about.kind))
            .spawn(move || {
                let mut next = Instant::now();
                while !stopping.load(Ordering::Relaxed) {
                    let outcome = poller.poll();
                    let mut l = shared.lock().expect("not poisoned");
                    if l.polls == 0 {
                        let _ = first_tx.send(outcome.clone());
                    }
                    l.polls += 1;
                    match outcome {
                        Ok(r) => (l.reading, l.error) = (Some((Instant::now(), r)), None),
                        Err(e) => l.error = Some(e),
                    }
                    drop(l);
                    crate::sampler::pace(&mut next, period);
                }
            })
            .map_err(|e| format!("starting the polling thread: {e}"))?;
        // A reading is stale once two polls have been missed, each allowed its timeout.
        let stale_after = period * 2 + about.timeout;
        let first_within = about.timeout + Duration::from_secs(1);
        let first =
            first_rx.recv_timeout(first_within).unwrap_or_else(|_| Err(format!("no answer in {first_within:?}")));
        let polled = Self { about, latest, stop, stale_after };
        first.map(|_| polled)
    }
}

impl Drop for Polled {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PowerSource for Polled {
    fn kind(&self) -> PowerKind {
        self.about.kind
    }

    fn scope(&self) -> PowerScope {
        self.about.scope
    }

    fn name(&self) -> String {
        self.about.name.clone()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let l = self.latest.lock().expect("not poisoned");
        if let Some(e) = &l.error {
            return Err(std::io::Error::other(format!("{}: {e}", self.about.name)));
        }
        match l.reading {
            Some((at, r)) if at.elapsed() <= self.stale_after => Ok(r),
            Some((at, _)) => Err(std::io::Error::other(format!(
                "{}: no answer for {:.1} s",
                self.about.name,
                at.elapsed().as_secs_f64()
            ))),
            None => Err(std::io::Error::other(format!("{}: no reading yet", self.about.name))),
        }
    }

    fn update_period(&self) -> Duration {
        self.about.period
    }

    fn stated_error(&self) -> f64 {
        self.about.stated_error
    }

    fn details(&self) -> serde_json::Value {
        self.about.details.clone()
    }
}
