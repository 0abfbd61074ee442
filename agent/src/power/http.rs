//! The one HTTP GET of the meters on the network. It runs on a meter's polling thread, with
//! a small runtime of its own, so a meter that hangs never blocks the agent.

use super::Reading;
use super::meter_spec::MeterSpec;
use super::polled::{Described, Poll, Polled};
use std::time::Duration;

/// How long one request to a meter may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A meter's endpoint and a client for it, made on the polling thread at its first use.
pub struct HttpGet {
    url: reqwest::Url,
    client: Option<(tokio::runtime::Runtime, reqwest::Client)>,
}

impl HttpGet {
    /// Checks the URL: http or https, with a host.
    pub fn new(url: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("\"{url}\" must be an http:// or https:// URL with a host"));
        }
        Ok(Self { url, client: None })
    }

    /// The URL, for names and details.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The body of a GET, or what went wrong: the connection, the status, the timeout.
    pub fn text(&mut self) -> Result<String, String> {
        if self.client.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting an HTTP runtime: {e}"))?;
            let client = ipw_proto::tls::http_client().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
            self.client = Some((rt, client));
        }
        let (rt, client) = self.client.as_ref().expect("made above");
        let url = self.url.clone();
        let failed = |e: reqwest::Error| format!("GET {url}: {}", causes(&e));
        rt.block_on(async {
            let response = client.get(url.clone()).send().await.map_err(failed)?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("GET {url}: HTTP {status}"));
            }
            response.text().await.map_err(failed)
        })
    }
}

/// An error with its causes ("error sending request: connection refused"): reqwest's own
/// message alone does not say what went wrong.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// Polls a meter over HTTP: a GET, then the meter's own parser.
pub struct HttpPoll<F> {
    /// The endpoint.
    pub get: HttpGet,
    /// Turns the body into a reading.
    pub parse: F,
}

impl<F: FnMut(&str) -> Result<Reading, String> + Send + 'static> Poll for HttpPoll<F> {
    fn poll(&mut self) -> Result<Reading, String> {
        let body = self.get.text()?;
        (self.parse)(&body)
    }
}

/// Which of a meter's two figures to use (`#use=`): its cumulative energy counter (the
/// default: nothing is lost between polls) or its power reading, integrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// The energy counter, where the meter has one.
    Counter,
    /// The power reading.
    Power,
}

impl Prefer {
    /// Reads `use=counter|power` from the spec; counter when not given.
    pub fn from_spec(spec: &mut MeterSpec) -> Result<Self, String> {
        match spec.take("use").as_deref() {
            None | Some("counter") => Ok(Prefer::Counter),
            Some("power") => Ok(Prefer::Power),
            Some(other) => Err(format!("--meter \"{}\": use={other}; expected counter or power", spec.given)),
        }
    }

    /// The reading to keep from a meter's energy (J) and power (W), either possibly absent.
    pub fn pick(self, energy_j: Option<f64>, power_w: Option<f64>) -> Result<Reading, String> {
        let checked = |v: f64, what: &str| {
            if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(format!("the meter's {what} is {v}")) }
        };
        match (self, energy_j, power_w) {
            (Prefer::Counter, Some(e), _) | (Prefer::Power, Some(e), None) => {
                Ok(Reading::EnergyJ(checked(e, "energy")?))
            }
            (_, _, Some(p)) => Ok(Reading::PowerW(checked(p, "power")?)),
            (_, None, None) => Err("the meter's answer holds neither energy nor power".into()),
        }
    }
}

/// Starts polling an HTTP meter whose answers `parse` reads.
pub fn start<F>(about: Described, get: HttpGet, parse: F) -> Result<Polled, String>
where
    F: FnMut(&str) -> Result<Reading, String> + Send + 'static,
{
    Polled::start(about, Box::new(HttpPoll { get, parse }))
}
