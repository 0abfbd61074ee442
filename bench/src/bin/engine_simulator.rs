//! `ipw-engine-simulator`: a fake OpenAI-compatible engine for benchmarks of the fleet's OWN
//! cost (CPU per request, requests per second, how well a client holds a concurrency). It
//! does no inference and streams canned text, so it is never used in tests that claim
//! accuracy or energy.
//!
//! Serves `GET /v1/models`, `/health`, `/props`, `POST /v1/chat/completions` (streamed as
//! SSE, or plain JSON) and records every chat request's start and end for `GET /sim/load`
//! (statistics of the load it saw) and `POST /sim/reset`.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ABOUT: &str = "A fake OpenAI-compatible engine for benchmarks of the fleet's own cost. \
    BENCHMARK TOOL ONLY: it does no inference and streams canned text (\"The answer is (A).\"), \
    so it is never used in tests that claim accuracy or energy.";

#[derive(Parser)]
#[command(name = "ipw-engine-simulator", version, about = ABOUT)]
struct Args {
    /// Address to listen on (port 0: any free port). The bound address is printed as one
    /// line, `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The model id `/v1/models` lists.
    #[arg(long, default_value = "engine-simulator")]
    model: String,
    /// Completion tokens per answer: the words of "The answer is (A)." over and over, so 4
    /// or more make a scorable answer. The request's max_tokens is ignored.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Sleep before each streamed token, in milliseconds (a request lasts about
    /// tokens x interval); 0 sends the whole answer at once.
    #[arg(long, default_value_t = 0)]
    token_interval_ms: u64,
    /// Tokio worker threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const ANSWER_WORDS: [&str; 4] = ["The", "answer", "is", "(A)."];

struct Sim {
    model: String,
    tokens: usize,
    interval: Duration,
    text: String,
    /// Each token's SSE event, rendered once: only the usage depends on the request.
    token_events: Vec<Bytes>,
    stop_event: Bytes,
    /// Every token event then the stop event, sent in one piece when there is no interval.
    all_events: Bytes,
    epoch: Instant,
    /// (start, end) of each finished chat request, seconds since `epoch`. Pushing under a
    /// mutex is tens of nanoseconds, far below the cost of the request itself.
    record: Mutex<Vec<(f64, f64)>>,
}

impl Sim {
    fn new(args: &Args) -> Self {
        let words: Vec<String> = (0..args.tokens).map(|i| format!("{} ", ANSWER_WORDS[i % 4])).collect();
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let c = serde_json::json!({"id": "sim", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            Bytes::from(format!("data: {c}\n\n"))
        };
        let token_events: Vec<Bytes> = words.iter().map(|w| chunk(serde_json::json!({"content": w}), None)).collect();
        let stop_event = chunk(serde_json::json!({}), Some("stop"));
        let all_events =
            Bytes::from(token_events.iter().chain([&stop_event]).flat_map(|b| b.to_vec()).collect::<Vec<u8>>());
        Self {
            model: args.model.clone(),
            tokens: args.tokens,
            interval: Duration::from_millis(args.token_interval_ms),
            text: words.concat(),
            token_events,
            stop_event,
            all_events,
            epoch: Instant::now(),
            record: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }
}

/// Records a request's end when dropped: for a stream, when hyper drops the body after the
/// last byte (or when the client goes away).
struct InFlight {
    sim: Arc<Sim>,
    start: f64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let end = self.sim.now();
        self.sim.record.lock().unwrap_or_else(|e| e.into_inner()).push((self.start, end));
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Prompt tokens, approximated by words: content is a string or a list of `{text}` parts.
fn prompt_words(messages: &[Message]) -> usize {
    let words = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.split_whitespace().count());
    messages
        .iter()
        .map(|m| match &m.content {
            serde_json::Value::Array(parts) => parts.iter().map(|p| words(&p["text"])).sum(),
            other => words(other),
        })
        .sum()
}

fn json(status: StatusCode, value: impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(&value).expect("serializable");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn chat(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let guard = InFlight { start: sim.now(), sim: sim.clone() };
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": {"message": e.to_string()}})),
    };
    let (prompt, completion) = (prompt_words(&request.messages), sim.tokens);
    let usage = serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion});
    if !request.stream {
        return json(
            StatusCode::OK,
            serde_json::json!({"id": "sim", "object": "chat.completion", "model": sim.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": sim.text},
                    "finish_reason": "stop"}],
                "usage": usage}),
        );
    }
    let mut tail = String::new();
    if request.stream_options.is_some_and(|o| o.include_usage) {
        tail = format!(
            "data: {{\"id\":\"sim\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{usage}}}\n\n"
        );
    }
    tail.push_str("data: [DONE]\n\n");
    let events: BoxStream<'static, Bytes> = if sim.interval.is_zero() {
        // One write for the whole answer: the cheapest a server can be.
        let mut all = Vec::with_capacity(sim.all_events.len() + tail.len());
        all.extend_from_slice(&sim.all_events);
        all.extend_from_slice(tail.as_bytes());
        futures::stream::once(async move { Bytes::from(all) }).boxed()
    } else {
        let interval = sim.interval;
        futures::stream::iter(sim.token_events.clone())
            .then(move |event| async move {
                tokio::time::sleep(interval).await;
                event
            })
            .chain(futures::stream::iter([sim.stop_event.clone(), Bytes::from(tail)]))
            .boxed()
    };
    // The closure owns the guard, so the request ends when the body is dropped.
    let body = Body::from_stream(events.map(move |event| {
        let _keep = &guard;
        Ok::<_, Infallible>(event)
    }));
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn load(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery) -> Response {
    let (mut target, mut trim_s) = (1usize, 1.0f64);
    for (key, value) in query.as_deref().unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
        let bad = |e: &dyn std::fmt::Display| {
            json(StatusCode::BAD_REQUEST, serde_json::json!({"error": format!("{key}={value}: {e}")}))
        };
        match key {
            "target" => match value.parse() {
                Ok(v) => target = v,
                Err(e) => return bad(&e),
            },
            "trim_s" => match value.parse() {
                Ok(v) => trim_s = v,
                Err(e) => return bad(&e),
            },
            _ => {}
        }
    }
    // Copy out so requests are not held up while the statistics are computed.
    let records = sim.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
    json(StatusCode::OK, ipw_bench::load::stats(&records, target, trim_s))
}

async fn reset(State(sim): State<Arc<Sim>>) -> Response {
    let cleared = std::mem::take(&mut *sim.record.lock().unwrap_or_else(|e| e.into_inner())).len();
    json(StatusCode::OK, serde_json::json!({"cleared": cleared}))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let sim = Arc::new(Sim::new(&args));
    let models = serde_json::json!({"object": "list", "data": [{"id": sim.model, "object": "model"}]});
    let app = axum::Router::new()
        .route("/v1/models", get(move || std::future::ready(json(StatusCode::OK, &models))))
        .route("/health", get(|| async { json(StatusCode::OK, serde_json::json!({"status": "ok"})) }))
        .route("/props", get(|| async { json(StatusCode::OK, serde_json::json!({})) }))
        .route("/v1/chat/completions", post(chat))
        .route("/sim/load", get(load))
        .route("/sim/reset", post(reset))
        .with_state(sim);
    // Streamed tokens are small writes: without NODELAY, Nagle would hold them back.
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ipw_bench::runtime(args.threads)?.block_on(serve(args))
}
