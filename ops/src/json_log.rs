//! Log lines as JSON objects, one per line, with the trace and span ids of the span they were
//! logged in (when traces are exported), so a log search leads to the trace and back.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes each event as `{"timestamp", "level", "target", "message", "fields", "spans",
/// "trace_id", "span_id"}`.
pub struct JsonLogLayer<W> {
    make_writer: W,
    // The dispatch this layer is part of: the OpenTelemetry layer keeps each span's context
    // there, and an event's callback cannot look it up through the thread's default.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLogLayer<W> {
    /// A layer writing to what `make_writer` returns (e.g. `std::io::stderr`).
    pub fn new(make_writer: W) -> Self {
        Self { make_writer, dispatch: OnceLock::new() }
    }
}

/// A span's own fields, kept on it for the events inside it.
struct SpanFields(Map<String, Value>);

/// Collects an event's or a span's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        // `otel.*` fields steer the exporter; they are not the span's data.
        fields.retain(|k, _| !k.starts_with("otel."));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let mut line = Map::new();
        line.insert("timestamp".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let mut leaf = None;
        if let Some(scope) = ctx.event_scope(event) {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut entry = span.extensions().get::<SpanFields>().map(|f| f.0.clone()).unwrap_or_default();
                    entry.insert("name".into(), span.name().into());
                    leaf = Some(span.id());
                    Value::Object(entry)
                })
                .collect();
            line.insert("spans".into(), Value::Array(spans));
        }
        if let (Some(id), Some(dispatch)) = (leaf, self.dispatch.get().and_then(WeakDispatch::upgrade))
            && let Some(cx) = tracing_opentelemetry::get_otel_context(&id, &dispatch)
        {
            let span = cx.span();
            let ids = span.span_context();
            if ids.is_valid() {
                line.insert("trace_id".into(), ids.trace_id().to_string().into());
                line.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        let mut out = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        out.push(b'\n');
        // One write per line, so lines from several threads never interleave.
        let _ = self.make_writer.make_writer_for(meta).write_all(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use std::sync::{Arc, Mutex};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_in_a_traced_span_carries_its_trace_and_span_ids_and_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(JsonLogLayer::new(move || writer.clone()));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("upload", run = "r1", otel.kind = "client");
            let _entered = span.enter();
            tracing::info!(results = 3, "uploaded");
            let cx = span.context();
            let ids = cx.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["message"], "uploaded");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["results"], 3);
        assert_eq!(line["spans"][0]["name"], "upload");
        assert_eq!(line["spans"][0]["run"], "r1");
        assert!(line["spans"][0].get("otel.kind").is_none());
        assert_eq!(trace_id.len(), 32);
        assert_eq!(line["trace_id"], trace_id.as_str());
        assert_eq!(line["span_id"], span_id.as_str());
    }

    #[test]
    fn a_line_outside_any_span_has_no_trace_ids() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLogLayer::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::warn!(code = "x", "plain"));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "WARN");
        assert!(line.get("trace_id").is_none() && line.get("spans").is_none());
    }
}
