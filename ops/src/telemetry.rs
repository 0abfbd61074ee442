//! Logging and trace export: one call at start, one at exit.

use crate::json_log::JsonLogLayer;
use crate::status_line::StderrWriter;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written on standard error.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the trace and span ids while tracing.
    Json,
}

/// The logging and tracing flags both binaries take.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TelemetryArgs {
    /// Log lines as text or as JSON objects (which carry the trace and span ids).
    #[arg(long, env = "IPW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://otel-collector:4317). The
    /// other OTEL_* variables (service name, resource attributes, sampler, batching) are
    /// honoured. Without an endpoint, nothing is traced or exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    /// The endpoint to export to: the flag, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; none
    /// when OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none says so.
    fn endpoint(&self) -> Option<String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if disabled {
            return None;
        }
        self.otlp_endpoint
            .clone()
            .filter(|e| !e.trim().is_empty())
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    }
}

/// What this process is, for the traces' resource: `service.name` (unless OTEL_SERVICE_NAME
/// says otherwise) and attributes such as the agent's id and hardware class.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    /// `service.name`.
    pub name: &'static str,
    /// More resource attributes.
    pub attributes: Vec<(&'static str, String)>,
}

/// Holds the trace exporter; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Debug)]
#[must_use = "keep it until exit, then call shutdown so buffered spans are sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: the log lines (filtered by RUST_LOG, `info` by default)
/// and, with an endpoint, the span exporter (spans filtered by IPW_TRACE_FILTER, `info` by
/// default). Call it inside the Tokio runtime: the exporter's
/// gRPC client lives on it.
pub fn init(args: &TelemetryArgs, identity: ServiceIdentity) -> anyhow::Result<Telemetry> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let provider = match args.endpoint() {
        Some(endpoint) => Some(tracer_provider(&endpoint, &identity)?),
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ipw-fleet"))
            // The logs say where; spans need not carry file and line.
            .with_location(false)
            // Spans are chosen apart from log lines: a quiet RUST_LOG=warn still traces.
            .with_filter(EnvFilter::try_from_env("IPW_TRACE_FILTER").unwrap_or_else(|_| "info".into()))
    });
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(StderrWriter)
            // Colours for a person at a terminal, not for a journal or a file.
            .with_ansi(crate::status_line::available())
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => JsonLogLayer::new(StderrWriter).with_filter(filter()).boxed(),
    };
    tracing_subscriber::registry().with(traces).with(logs).try_init()?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str, identity: &ServiceIdentity) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("the OTLP endpoint {endpoint} cannot be used: {e}"))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over ours, as the specification
    // says; the SDK's detectors read them, and name an unnamed service `unknown_service`.
    let detected = Resource::builder().build();
    let from_env = detected
        .iter()
        .filter(|(k, v)| k.as_str() != "service.name" || !v.as_str().starts_with("unknown_service"))
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    let ours = identity.attributes.iter().map(|(k, v)| KeyValue::new(*k, v.clone()));
    let resource =
        Resource::builder_empty().with_service_name(identity.name).with_attributes(ours).with_attributes(from_env);
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still buffered and stops the exporter (waiting at most 5 s). Runs on a
    /// blocking thread: the exporter's batch thread needs this runtime to make progress.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(std::time::Duration::from_secs(5)));
        if let Ok(Err(e)) = done.await {
            eprintln!("warning: not every span could be exported at exit: {e}");
        }
    }
}
