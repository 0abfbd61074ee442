//! How the fleet's services are operated, shared by the coordinator and the agent:
//!
//! - [`telemetry`]: logs (text or JSON) and OpenTelemetry traces exported over OTLP/gRPC;
//! - [`json_log`]: the JSON log lines, which carry the trace and span ids;
//! - [`propagation`]: W3C trace context across gRPC calls, on both sides;
//! - [`http`]: the listener for `/metrics`, `/healthz` and `/readyz`;
//! - [`status_line`]: a live progress line on a terminal, kept apart from the log lines.

pub mod http;
pub mod json_log;
pub mod propagation;
pub mod status_line;
pub mod telemetry;
