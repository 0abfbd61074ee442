//! An OpenAI-compatible chat endpoint (llama.cpp `llama-server`, vLLM, SGLang, Ollama, LM
//! Studio, MLX-LM), always streamed so time to first token and inter-token latency are
//! measured here, on the client, the way a user would feel them.

use ipw_proto::openai::{self, ApiKey, ChatRequest, Client, Message, StreamOptions};
use ipw_proto::v1::{ChatMessage, GenerationParams};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One completed (or failed) request, with its client-side timings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Wall-clock time the request was sent.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Monotonic time the request was sent.
    pub started: Option<Instant>,
    /// Send to last byte, in seconds.
    pub latency_s: f64,
    /// Send to the first generated text, in seconds.
    pub ttft_s: Option<f64>,
    /// Mean gap between successive generated chunks, in seconds.
    pub mean_itl_s: Option<f64>,
    /// Median and 95th percentile gap between successive generated chunks, in seconds.
    pub itl_p50_s: Option<f64>,
    /// See `itl_p50_s`.
    pub itl_p95_s: Option<f64>,
    /// Time per output token after the first: (latency - ttft) / (tokens_out - 1).
    pub tpot_s: Option<f64>,
    /// Monotonic time of the first generated text.
    pub first_token: Option<Instant>,
    /// Prompt tokens, from the server's `usage`.
    pub tokens_in: u32,
    /// Completion tokens, from the server's `usage`.
    pub tokens_out: u32,
    /// The generated text.
    pub text: String,
    /// Why generation stopped (`stop`, `length`, ...).
    pub finish_reason: String,
    /// What went wrong, if the request failed.
    pub error: Option<String>,
    /// Whose failure it was, if the request failed.
    pub failed_by: Option<FailedBy>,
    /// How many 429 (rate limited) answers the request waited out before this outcome.
    pub rate_limited: u32,
}

/// Whose failure a failed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedBy {
    /// The engine's, not the query's: a refused or reset connection, a 5xx, a timeout
    /// before the first token, the stream cut off (the engine process gone). The query is not
    /// answered: it goes back to the queue, to be measured once the engine is back.
    Engine,
    /// The request's: a 4xx for this prompt (the context too long, say), an error the engine
    /// streamed, a reply that breaks the protocol, a generation that outlasted the timeout, a
    /// rate limit (429) still in force after the request's retries. It stays a result, with
    /// its error.
    Request,
}

/// The names a served model id answers to (see [`Engine::model_names`]).
pub fn names_for(id: &str) -> Vec<String> {
    let mut names = vec![id.to_owned()];
    let file = id.rsplit('/').next().unwrap_or(id);
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    names.extend([file.to_owned(), stem.to_owned()]);
    if let Some(q) = crate::provenance::quantization_in_name(stem)
        && let Some(base) = stem.strip_suffix(&q).or_else(|| stem.strip_suffix(&q.to_lowercase()))
    {
        names.push(base.trim_end_matches(['.', '-', '_']).to_owned());
    }
    names.dedup();
    names
}

/// Attempts for a request that could not be sent (a refused or stale connection).
const SEND_ATTEMPTS: u32 = 3;

/// How many 429 answers a request waits out, by default, before it is recorded as an error.
pub const DEFAULT_RATE_LIMIT_RETRIES: u32 = 5;

/// How the agent reaches its engine, beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineAccess {
    /// The engine is a remote endpoint (`--engine-remote`, never guessed from the URL): no
    /// local power is read for its queries, and the run's provenance says so.
    pub remote: bool,
    /// Sent as `Authorization: Bearer` with every request, remote or local.
    pub key: Option<ApiKey>,
    /// How many 429 answers one request waits out before it is recorded as an error.
    pub rate_limit_retries: u32,
}

impl Default for EngineAccess {
    fn default() -> Self {
        Self { remote: false, key: None, rate_limit_retries: DEFAULT_RATE_LIMIT_RETRIES }
    }
}

/// Why a request failed.
enum Failure {
    /// Before the engine received it: safe to send again.
    NotSent(String),
    /// The engine answered 429: rate limited, to be sent again after `retry_after` (or the
    /// backoff) while the request's retries last.
    RateLimited(Option<Duration>, String),
    /// After: whose failure it was, and what happened.
    Failed(FailedBy, String),
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::Failed(FailedBy::Request, e.to_owned())
    }
}

impl Failure {
    /// Classifies a client error; `streaming` says whether text had arrived already.
    fn of(e: openai::Error, streaming: bool) -> Self {
        let timed_out = |cause: &reqwest::Error| cause.is_timeout();
        match e {
            openai::Error::NotSent { .. } => Failure::NotSent(e.to_string()),
            openai::Error::Status { status, body, retry_after, .. } => {
                let what = format!("engine answered {status}: {}", body.chars().take(500).collect::<String>());
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Failure::RateLimited(retry_after, what);
                }
                let by = if status.is_server_error() { FailedBy::Engine } else { FailedBy::Request };
                Failure::Failed(by, what)
            }
            // A generation that outlasts the timeout is this request's; anything else that cuts
            // the connection is the engine's.
            openai::Error::Transport { ref cause, .. } | openai::Error::BrokeOff(ref cause)
                if streaming && timed_out(cause) =>
            {
                Failure::Failed(FailedBy::Request, e.to_string())
            }
            openai::Error::Transport { .. } | openai::Error::BrokeOff(_) => {
                Failure::Failed(FailedBy::Engine, e.to_string())
            }
            // An error streamed by the engine: a server error (vLLM's dead engine, a 5xx code)
            // is the engine's; anything else is about this request.
            openai::Error::ErrorChunk(ref v) if server_side(v) => Failure::Failed(FailedBy::Engine, e.to_string()),
            e => Failure::Failed(FailedBy::Request, e.to_string()),
        }
    }
}

/// Whether an error the engine streamed is its own (a 5xx code, a server or unavailable
/// type), not the request's.
fn server_side(error: &serde_json::Value) -> bool {
    let code = error.get("code").and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok())));
    let kind = error.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_lowercase();
    code.is_some_and(|c| c >= 500) || kind.contains("server") || kind.contains("unavailable") || kind.contains("dead")
}

/// A client for one engine.
#[derive(Debug, Clone)]
pub struct Engine {
    client: Client,
    rate_limit_retries: u32,
}

impl Engine {
    /// An engine at `base_url` (e.g. `http://127.0.0.1:8080`), reached as `access` says;
    /// requests give up after `timeout`.
    pub fn new(base_url: &str, timeout: Duration, access: &EngineAccess) -> anyhow::Result<Self> {
        let client = Client::new(base_url, timeout)?.with_key(access.key.clone());
        Ok(Self { client, rate_limit_retries: access.rate_limit_retries })
    }

    /// The endpoint's base URL.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// The OpenAI-compatible client underneath, for what the engine says about itself.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The model names this engine answers to: each `/v1/models` id, and for a file path its
    /// file name, stem and stem without a quantization suffix (llama.cpp names its model by
    /// path: `/m/SmolLM2-135M-Instruct.Q4_1.gguf` also answers to `SmolLM2-135M-Instruct`).
    pub async fn model_names(&self) -> Vec<String> {
        let models = self.client.models().await.map(|m| m.data).unwrap_or_default();
        let mut names = Vec::new();
        for id in models.iter().map(|m| m.id.as_str()).filter(|id| !id.is_empty()) {
            for name in names_for(id) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Checks that the engine answers `GET /v1/models`, so work is not leased to an agent
    /// whose engine is down. The error says what was tried.
    pub async fn check(&self) -> Result<(), String> {
        self.client.models().await.map(drop).map_err(|e| e.to_string())
    }

    /// Sends one chat request and measures it. Failures are recorded in the result, not
    /// returned: a failed query is still a measured outcome.
    pub async fn chat(&self, model: &str, messages: &[ChatMessage], params: &GenerationParams) -> Completion {
        self.chat_observed(model, messages, params, &OnceLock::new()).await
    }

    /// [`Engine::chat`], also setting `first_token` the moment the first text arrives, so the
    /// energy ledger can split a query still in flight at its first token.
    pub async fn chat_observed(
        &self,
        model: &str,
        messages: &[ChatMessage],
        params: &GenerationParams,
        first_token: &OnceLock<Instant>,
    ) -> Completion {
        let request = ChatRequest {
            model: model.to_owned(),
            messages: messages.iter().map(Message::from).collect(),
            stream: true,
            stream_options: Some(StreamOptions { include_usage: true }),
            max_tokens: Some(params.max_tokens),
            temperature: Some(params.temperature),
            top_p: Some(params.top_p),
        };
        let mut c = self.send_with_retries(&request, first_token).await;
        if let Some(ttft) = c.ttft_s.filter(|_| c.tokens_out > 1) {
            c.tpot_s = Some((c.latency_s - ttft).max(0.0) / f64::from(c.tokens_out - 1));
        }
        if c.error.is_none() && c.tokens_out > 0 && c.ttft_s.is_none() {
            c.error = Some("the engine reported completion tokens but streamed no text".into());
            c.failed_by = Some(FailedBy::Request);
        }
        c
    }

    /// Sends `request` until it is answered or fails for good: a request that never reached
    /// the engine is sent again (up to [`SEND_ATTEMPTS`]), one rate limited (429) after its
    /// `Retry-After` (up to the engine's rate-limit retries, then it is an error). Each attempt
    /// is timed afresh: the waits between them are not the engine's latency.
    async fn send_with_retries(&self, request: &ChatRequest, first_token: &OnceLock<Instant>) -> Completion {
        let (mut not_sent, mut rate_limited) = (0, 0);
        loop {
            let started_at = chrono::Utc::now();
            let started = Instant::now();
            let mut c = Completion { started_at, started: Some(started), ..Default::default() };
            let wait = match self.stream_into(request, started, &mut c, first_token).await {
                Ok(()) => None,
                // Nothing was measured: try again.
                Err(Failure::NotSent(e)) if not_sent + 1 < SEND_ATTEMPTS => {
                    tracing::debug!(attempt = not_sent + 1, error = %e, "engine request not sent; retrying");
                    not_sent += 1;
                    Some(ipw_proto::retry::backoff(not_sent - 1))
                }
                Err(Failure::RateLimited(retry_after, e)) if rate_limited < self.rate_limit_retries => {
                    let wait = ipw_proto::retry::after_rate_limit(retry_after, rate_limited);
                    tracing::info!(rate_limited = rate_limited + 1, wait_ms = wait.as_millis() as u64, error = %e, "engine rate limited the request; waiting");
                    rate_limited += 1;
                    Some(wait)
                }
                Err(Failure::NotSent(e)) => {
                    (c.error, c.failed_by) = (Some(e), Some(FailedBy::Engine));
                    None
                }
                Err(Failure::RateLimited(_, e)) => {
                    rate_limited += 1;
                    let e = format!("rate limited {rate_limited} times, retries exhausted; last: {e}");
                    (c.error, c.failed_by) = (Some(e), Some(FailedBy::Request));
                    None
                }
                Err(Failure::Failed(by, e)) => {
                    (c.error, c.failed_by) = (Some(e), Some(by));
                    None
                }
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
                continue;
            }
            c.latency_s = started.elapsed().as_secs_f64();
            c.rate_limited = rate_limited;
            return c;
        }
    }

    /// Streams one request into `c`, timing each chunk of text as it arrives.
    async fn stream_into(
        &self,
        request: &ChatRequest,
        started: Instant,
        c: &mut Completion,
        first_token: &OnceLock<Instant>,
    ) -> Result<(), Failure> {
        let mut chunk_times: Vec<Instant> = Vec::new();
        let mut usage_seen = false;
        let streamed = self
            .client
            .chat_stream(request, |chunk| {
                for choice in chunk.choices {
                    let text: String =
                        [choice.delta.reasoning_content, choice.delta.content].into_iter().flatten().collect();
                    if !text.is_empty() {
                        let now = Instant::now();
                        if c.ttft_s.is_none() {
                            let _ = first_token.set(now);
                            c.first_token = Some(now);
                            c.ttft_s = Some((now - started).as_secs_f64());
                        }
                        chunk_times.push(now);
                        c.text.push_str(&text);
                    }
                    if let Some(r) = choice.finish_reason {
                        c.finish_reason = r;
                    }
                }
                if let Some(u) = chunk.usage {
                    c.tokens_in = u.prompt_tokens;
                    c.tokens_out = u.completion_tokens;
                    usage_seen = true;
                }
            })
            .await;
        streamed.map_err(|e| Failure::of(e, !chunk_times.is_empty()))?;
        if chunk_times.len() >= 2 {
            let span = (*chunk_times.last().expect("non-empty") - chunk_times[0]).as_secs_f64();
            c.mean_itl_s = Some(span / (chunk_times.len() - 1) as f64);
            let mut gaps: Vec<f64> = chunk_times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
            gaps.sort_by(f64::total_cmp);
            (c.itl_p50_s, c.itl_p95_s) = (Some(percentile(&gaps, 0.5)), Some(percentile(&gaps, 0.95)));
        }
        if !usage_seen {
            return Err("the engine sent no `usage` (stream_options.include_usage unsupported?)".into());
        }
        Ok(())
    }
}

/// The `p` quantile of sorted values, interpolated linearly as PostgreSQL's
/// `percentile_cont` does, so agent and database agree.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len().saturating_sub(1)) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::{names_for, percentile, server_side};

    #[test]
    fn percentiles_interpolate_like_postgres() {
        // SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY x) FROM unnest('{1,2,3,4,10}') x → 8.8
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 10.0], 0.95) - 8.8).abs() < 1e-12);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn streamed_server_errors_are_the_engines() {
        assert!(server_side(&serde_json::json!({"code": 500, "message": "EngineDeadError"})));
        assert!(server_side(&serde_json::json!({"type": "server_error", "message": "x"})));
        assert!(server_side(&serde_json::json!({"code": "503"})));
        let too_long = serde_json::json!({"code": 400, "type": "exceed_context_size_error"});
        assert!(!server_side(&too_long));
    }

    #[test]
    fn a_gguf_path_answers_to_its_file_names() {
        assert_eq!(
            names_for("/m/SmolLM2-135M-Instruct.Q4_1.gguf"),
            [
                "/m/SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1",
                "SmolLM2-135M-Instruct"
            ]
        );
        assert_eq!(names_for("llama-3-8b-instruct-q4_k_m.gguf").last().unwrap(), "llama-3-8b-instruct");
        assert_eq!(
            names_for("meta-llama/Llama-3.1-8B-Instruct"),
            ["meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct"]
        );
    }
}
