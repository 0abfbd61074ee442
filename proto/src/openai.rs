//! The OpenAI-compatible HTTP API, as the fleet speaks it: the agent to its inference engine
//! (llama.cpp `llama-server`, vLLM, SGLang, Ollama, LM Studio, MLX-LM) and the coordinator to
//! its LLM judge.
//!
//! Typed replies for `GET /v1/models`, llama.cpp's `GET /props`, vLLM's `GET /version` and
//! Ollama's `GET /api/version`; chat requests, non-streamed and streamed (server-sent events
//! parsed by [`ChunkDecoder`]); and a [`Client`] whose [`Error`] keeps apart a request that
//! never reached the endpoint (safe to send again) from one that failed after it was sent.
//!
//! Replies are read leniently: servers differ in what they add and omit, so every field that
//! is not essential is optional, and one of the wrong type reads as absent rather than failing
//! the whole reply.

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// How long a `GET` (a model list, a version, llama.cpp's properties) may take: small
/// replies, answered at once by a live server.
pub const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/models`: the models an endpoint serves.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ModelList {
    /// The models, in the server's order (empty when the reply has none).
    #[serde(default)]
    pub data: Vec<Model>,
}

/// One served model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Model {
    /// The name requests use in `model` (llama.cpp: the model file's path or alias); empty
    /// when the server gave none.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub id: String,
    /// Who the server says owns the model (`llamacpp`, `vllm`, `library`, ...).
    #[serde(default, deserialize_with = "lenient")]
    pub owned_by: Option<String>,
    /// llama.cpp's extra details about the model file.
    #[serde(default, deserialize_with = "lenient")]
    pub meta: Option<ModelMeta>,
}

/// llama.cpp's `meta` of a model in `/v1/models`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ModelMeta {
    /// The model file's quantization (`Q4_K_M`, `F16`, ...), when reported.
    #[serde(default, deserialize_with = "lenient")]
    pub ftype: Option<String>,
}

/// llama.cpp's `GET /props`: the server's build and its loaded model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Props {
    /// The build, e.g. `b4567-1a2b3c4d`.
    #[serde(default, deserialize_with = "lenient")]
    pub build_info: Option<String>,
    /// The loaded model file, as given to the server.
    #[serde(default, deserialize_with = "lenient")]
    pub model_path: Option<String>,
    /// The model file's quantization, when reported.
    #[serde(default, deserialize_with = "lenient")]
    pub model_ftype: Option<String>,
}

impl Props {
    /// Whether these look like llama.cpp's: they name a build or a model file.
    pub fn is_llama_cpp(&self) -> bool {
        self.build_info.is_some() || self.model_path.is_some()
    }
}

/// The reply of vLLM's `GET /version` and Ollama's `GET /api/version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Version {
    /// The server's version.
    #[serde(default, deserialize_with = "lenient")]
    pub version: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

impl From<&crate::v1::ChatMessage> for Message {
    fn from(m: &crate::v1::ChatMessage) -> Self {
        Self { role: m.role.clone(), content: m.content.clone() }
    }
}

/// `stream_options` of a streamed chat request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamOptions {
    /// Asks for a last chunk with the request's token counts ([`ChatChunk::usage`]).
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`. Unset options are not sent, so the server's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model to use (see [`Model::id`]).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Whether the reply is streamed as server-sent events; `false` is not sent. Set for
    /// [`Client::chat_stream`], unset for [`Client::chat`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Options of a streamed reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus-sampling probability mass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
}

/// The reply to a chat request that was not streamed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatResponse {
    /// The generated alternatives (one, unless more were asked for).
    pub choices: Vec<ChatChoice>,
}

impl ChatResponse {
    /// The first choice's text, if it has any.
    pub fn content(self) -> Option<String> {
        self.choices.into_iter().next().and_then(|c| c.message.content)
    }
}

/// One alternative of a [`ChatResponse`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatChoice {
    /// The generated message.
    pub message: ResponseMessage,
}

/// The generated message of a [`ChatChoice`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResponseMessage {
    /// Its text (absent, for example, when the model only called a tool).
    pub content: Option<String>,
}

/// One chunk of a streamed chat reply: a `data:` line's JSON.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatChunk {
    /// What each alternative generated since the last chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// The request's token counts: in the last chunk, when `stream_options.include_usage`
    /// was asked for.
    pub usage: Option<Usage>,
    /// What went wrong, when the server gives up mid-stream. [`ChunkDecoder`] turns a chunk
    /// with an error into [`Error::ErrorChunk`].
    pub error: Option<serde_json::Value>,
}

/// One alternative of a [`ChatChunk`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChunkChoice {
    /// The text generated since the last chunk.
    #[serde(default)]
    pub delta: Delta,
    /// Why generation stopped (`stop`, `length`, ...), in the alternative's last chunk.
    pub finish_reason: Option<String>,
}

/// Text generated since the last chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Delta {
    /// Answer text.
    pub content: Option<String>,
    /// Reasoning text, which llama.cpp and vLLM send apart from the answer for reasoning
    /// models.
    pub reasoning_content: Option<String>,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// Why a call failed. Its text names the request (`POST http://host/v1/chat/completions: ...`),
/// except for the streaming failures, which say what broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never reached the endpoint (a refused connection, a request that could not
    /// be sent): safe to send again.
    #[error("{request}: {cause}")]
    NotSent {
        /// `METHOD url`.
        request: String,
        /// What reqwest reported.
        #[source]
        cause: reqwest::Error,
    },
    /// The request was sent, but no answer came (a timeout, a connection dropped).
    #[error("{request}: {cause}")]
    Transport {
        /// `METHOD url`.
        request: String,
        /// What reqwest reported.
        #[source]
        cause: reqwest::Error,
    },
    /// The endpoint answered with a status other than success.
    #[error("{request} answered {status}")]
    Status {
        /// `METHOD url`.
        request: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The reply's body (empty when it could not be read), for the caller to quote.
        body: String,
        /// How long the endpoint asked to wait before trying again (its `Retry-After`, in
        /// seconds or as a date), when it said.
        retry_after: Option<Duration>,
    },
    /// A successful reply's body could not be read, or is not the JSON expected.
    #[error("{request}: {cause}")]
    Decode {
        /// `METHOD url`.
        request: String,
        /// What reqwest reported.
        #[source]
        cause: reqwest::Error,
    },
    /// A streamed reply broke off.
    #[error("stream broke off: {0}")]
    BrokeOff(#[source] reqwest::Error),
    /// A streamed chunk is not JSON, or not a chat chunk.
    #[error("unparseable stream chunk: {0}")]
    BadChunk(#[source] serde_json::Error),
    /// A streamed chunk carried an `error`: the endpoint gave up mid-stream.
    #[error("engine error: {0}")]
    ErrorChunk(serde_json::Value),
}

impl Error {
    /// Whether the same request may succeed if sent again: it never arrived, no answer came,
    /// or the endpoint was overloaded (429) or failing (5xx). Other statuses, unreadable
    /// replies and failures mid-stream are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NotSent { .. } | Error::Transport { .. } => true,
            Error::Status { status, .. } => {
                *status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            _ => false,
        }
    }
}

/// Splits a streamed chat reply (server-sent events) into [`ChatChunk`]s, however its bytes
/// are cut: feed each piece to [`push`](Self::push), then take chunks with
/// [`next_chunk`](Self::next_chunk) until it has none.
///
/// Only complete lines are read: `data:` lines carry the chunks, `data: [DONE]` and every other
/// line (blank, `event:`, `: comments`) are skipped.
#[derive(Debug, Clone, Default)]
pub struct ChunkDecoder {
    buf: Vec<u8>,
    /// Where the unread lines start in `buf`; read lines are dropped once all are read.
    start: usize,
}

impl ChunkDecoder {
    /// Adds a piece of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next chunk of the lines pushed so far; `None` until another complete `data:` line
    /// arrives. A chunk that is not valid JSON is [`Error::BadChunk`], one with an `error` is
    /// [`Error::ErrorChunk`]. Lines are parsed where they lie: a token costs no copy.
    pub fn next_chunk(&mut self) -> Option<Result<ChatChunk, Error>> {
        while let Some(pos) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
            let line = &self.buf[self.start..self.start + pos];
            self.start += pos + 1;
            let Some(data) = line.trim_ascii().strip_prefix(b"data:").map(<[u8]>::trim_ascii) else {
                continue;
            };
            if data == b"[DONE]" {
                continue;
            }
            // Bytes that are not UTF-8 are read as replacement characters, not refused.
            let parsed = serde_json::from_slice::<ChatChunk>(data).or_else(|e| match std::str::from_utf8(data) {
                Ok(_) => Err(e),
                Err(_) => serde_json::from_str(&String::from_utf8_lossy(data)),
            });
            return Some(match parsed {
                Err(e) => Err(Error::BadChunk(e)),
                Ok(ChatChunk { error: Some(err), .. }) => Err(Error::ErrorChunk(err)),
                Ok(chunk) => Ok(chunk),
            });
        }
        self.buf.drain(..self.start);
        self.start = 0;
        None
    }
}

/// An endpoint's API key, sent as `Authorization: Bearer <key>`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// A key from text: its first line, trimmed. `None` when that is empty.
    pub fn new(text: &str) -> Option<Self> {
        let key = text.lines().next().unwrap_or_default().trim();
        (!key.is_empty()).then(|| Self(key.to_owned()))
    }

    /// The key in the file at `path` (its first line). A missing, unreadable or empty file is
    /// an error; the caller names the file.
    pub fn read(path: &std::path::Path) -> std::io::Result<Self> {
        Self::new(&std::fs::read_to_string(path)?)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"))
    }
}

/// A client for one OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key: Option<ApiKey>,
}

impl Client {
    /// A client for the endpoint at `base_url` (e.g. `http://127.0.0.1:8080`, a trailing `/`
    /// ignored); chat requests give up after `timeout`, `GET`s after [`GET_TIMEOUT`].
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        // Idle connections are dropped before llama.cpp's 5 s keep-alive would close them under
        // us (a reused, half-closed connection fails the next request).
        let http = crate::tls::http_client().timeout(timeout).pool_idle_timeout(Duration::from_secs(2)).build()?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), key: None })
    }

    /// This client sending `key` with every request (none when `None`).
    pub fn with_key(mut self, key: Option<ApiKey>) -> Self {
        self.key = key;
        self
    }

    /// `builder` with the key's `Authorization` header (marked sensitive), if there is a key.
    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(ApiKey(key)) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The endpoint's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET path` (e.g. `/v1/models`) as JSON of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let url = format!("{}{path}", self.base_url);
        let request = format!("GET {url}");
        let resp = send(self.authorized(self.http.get(&url).timeout(GET_TIMEOUT)), &request).await?;
        resp.json().await.map_err(|cause| Error::Decode { request, cause })
    }

    /// `GET path` from an endpoint that not every server has: `None` when it is missing, fails,
    /// or answers something else than a `T`.
    pub async fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        self.get(path).await.ok()
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<ModelList, Error> {
        self.get("/v1/models").await
    }

    /// llama.cpp's `GET /props`; `None` from other servers.
    pub async fn props(&self) -> Option<Props> {
        self.get_optional("/props").await
    }

    /// `POST /v1/chat/completions`, not streamed (`request.stream` unset).
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let url = format!("{}/v1/chat/completions", self.base_url);
        let what = format!("POST {url}");
        let resp = send(self.authorized(self.http.post(&url).json(request)), &what).await?;
        resp.json().await.map_err(|cause| Error::Decode { request: what, cause })
    }

    /// `POST /v1/chat/completions`, streamed (`request.stream` set): calls `on_chunk` with each
    /// chunk the moment it is read, so the caller can time them. Stops at the first failure; the
    /// chunks before it have been handed over.
    pub async fn chat_stream(&self, request: &ChatRequest, mut on_chunk: impl FnMut(ChatChunk)) -> Result<(), Error> {
        debug_assert!(request.stream, "chat_stream needs a request with `stream` set");
        let url = format!("{}/v1/chat/completions", self.base_url);
        let resp = send(self.authorized(self.http.post(&url).json(request)), &format!("POST {url}")).await?;
        let mut bytes = resp.bytes_stream();
        let mut decoder = ChunkDecoder::default();
        while let Some(piece) = bytes.next().await {
            decoder.push(&piece.map_err(Error::BrokeOff)?);
            while let Some(chunk) = decoder.next_chunk() {
                on_chunk(chunk?);
            }
        }
        Ok(())
    }
}

/// Sends a request; a reply with a status other than success is an [`Error::Status`].
async fn send(builder: reqwest::RequestBuilder, request: &str) -> Result<reqwest::Response, Error> {
    let resp = builder.send().await.map_err(|cause| {
        let request = request.to_owned();
        // Connect and send errors happen before the endpoint sees the request; a timeout may
        // not have (the request may be running), so it is never resent.
        if (cause.is_connect() || cause.is_request()) && !cause.is_timeout() {
            Error::NotSent { request, cause }
        } else {
            Error::Transport { request, cause }
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::Status { request: request.to_owned(), status, body, retry_after });
    }
    Ok(resp)
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an HTTP-date (one already
/// past is no wait). `None` when it is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads a `T`, or `None` when the value is null or of another shape.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(serde_json::Value::deserialize(d)?).ok())
}

/// Reads a string, or an empty one when the value is not a string.
fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(lenient(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk `stream` holds, fed in pieces cut at `cuts` (byte offsets).
    fn decode(stream: &[u8], cuts: &[usize]) -> Vec<Result<ChatChunk, Error>> {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&stream.len()]) {
            decoder.push(&stream[from..to]);
            from = to;
            while let Some(c) = decoder.next_chunk() {
                out.push(c);
            }
        }
        out
    }

    fn text(chunks: &[Result<ChatChunk, Error>]) -> String {
        chunks
            .iter()
            .flat_map(|c| c.as_ref().expect("a chunk").choices.iter())
            .flat_map(|c| [c.delta.reasoning_content.clone(), c.delta.content.clone()])
            .flatten()
            .collect()
    }

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Bl\"},\"finish_reason\":null}]}\n\n\
        : keep-alive comment\n\
        event: message\n\
        data:{\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm \"}}]}\r\n\r\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"ué\"},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn a_stream_cut_anywhere_gives_the_same_chunks() {
        let stream = STREAM.as_bytes();
        let whole = decode(stream, &[]);
        assert_eq!(whole.len(), 4, "three text chunks and the usage; comments, events and [DONE] skipped");
        assert_eq!(text(&whole), "Blhmm ué");
        // Every single cut, including inside `data:`, inside `\r\n`, and between the two bytes
        // of `é`, and a byte at a time.
        for cut in 1..stream.len() {
            let chunks = decode(stream, &[cut]);
            assert_eq!(chunks.len(), 4, "cut at {cut}");
            assert_eq!(text(&chunks), "Blhmm ué", "cut at {cut}");
        }
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        let chunks = decode(stream, &bytewise);
        assert_eq!(text(&chunks), "Blhmm ué");
        let last = chunks.last().unwrap().as_ref().unwrap();
        assert_eq!(last.usage, Some(Usage { prompt_tokens: 12, completion_tokens: 3 }));
        let stop = chunks[2].as_ref().unwrap();
        assert_eq!(stop.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(chunks[0].as_ref().unwrap().choices[0].finish_reason, None);
    }

    #[test]
    fn a_line_is_read_only_once_complete() {
        let mut d = ChunkDecoder::default();
        d.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}");
        assert!(d.next_chunk().is_none(), "no newline yet");
        d.push(b"\n");
        let chunk = d.next_chunk().unwrap().unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("a"));
        assert!(d.next_chunk().is_none());
    }

    #[test]
    fn done_is_skipped_and_reading_goes_on() {
        let chunks = decode(b"data: [DONE]\n\ndata:  [DONE]  \ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n", &[7]);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ref().unwrap().usage, Some(Usage { prompt_tokens: 1, completion_tokens: 2 }));
    }

    #[test]
    fn an_error_chunk_is_an_error_with_its_json() {
        let chunks = decode(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"error\":{\"code\":500,\"message\":\"out of memory\"}}\n\n",
            &[60],
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(text(&chunks[..1]), "x", "the chunk before the error still arrives");
        let Err(e @ Error::ErrorChunk(v)) = &chunks[1] else { panic!("{:?}", chunks[1]) };
        assert_eq!(v["message"], "out of memory");
        assert_eq!(e.to_string(), r#"engine error: {"code":500,"message":"out of memory"}"#);
        assert!(!e.is_transient());
    }

    #[test]
    fn bytes_that_are_not_utf8_read_as_replacement_characters() {
        let chunks = decode(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\xffb\"}}]}\n\n", &[30]);
        assert_eq!(text(&chunks), "a\u{fffd}b");
    }

    #[test]
    fn an_unparseable_chunk_says_so() {
        let chunks = decode(b"data: {\"choices\": [\n", &[]);
        let Err(e @ Error::BadChunk(_)) = &chunks[0] else { panic!("{:?}", chunks[0]) };
        assert!(e.to_string().starts_with("unparseable stream chunk: "), "{e}");
        let chunks = decode(b"data: {\"usage\": {\"prompt_tokens\": \"many\"}}\n", &[]);
        assert!(matches!(chunks[0], Err(Error::BadChunk(_))), "{:?}", chunks[0]);
    }

    #[test]
    fn model_lists_are_read_from_each_server() {
        let llama: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"/m/SmolLM2-135M-Instruct.Q4_1.gguf","object":"model","owned_by":"llamacpp",
                "meta":{"vocab_type":2,"n_params":134515008,"ftype":"Q4_1"}}]}"#,
        )
        .unwrap();
        assert_eq!(llama.data[0].id, "/m/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(llama.data[0].owned_by.as_deref(), Some("llamacpp"));
        assert_eq!(llama.data[0].meta.as_ref().unwrap().ftype.as_deref(), Some("Q4_1"));
        let ollama: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"qwen2.5:7b","object":"model","created":1,"owned_by":"library"},{"id":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(ollama.data.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["qwen2.5:7b", "b"]);
        assert_eq!((ollama.data[1].owned_by.as_ref(), ollama.data[1].meta.as_ref()), (None, None));
        // Odd fields read as absent instead of failing the list.
        let odd: ModelList =
            serde_json::from_str(r#"{"data":[{"id":7,"owned_by":null,"meta":"x"},{"id":"ok","meta":{"ftype":3}}]}"#)
                .unwrap();
        assert_eq!(odd.data[0], Model::default());
        assert_eq!((odd.data[1].id.as_str(), odd.data[1].meta.as_ref().unwrap().ftype.as_ref()), ("ok", None));
        assert_eq!(serde_json::from_str::<ModelList>("{}").unwrap(), ModelList::default());
    }

    #[test]
    fn props_and_versions_are_read() {
        let props: Props = serde_json::from_str(
            r#"{"default_generation_settings":{"n_ctx":4096},"total_slots":1,"model_path":"/m/a.gguf",
                "build_info":"b4567-1a2b3c4d","chat_template":"..."}"#,
        )
        .unwrap();
        assert_eq!(props.build_info.as_deref(), Some("b4567-1a2b3c4d"));
        assert_eq!(props.model_path.as_deref(), Some("/m/a.gguf"));
        assert_eq!(props.model_ftype, None);
        assert!(props.is_llama_cpp());
        let not: Props = serde_json::from_str(r#"{"detail":"Not Found"}"#).unwrap();
        assert!(!not.is_llama_cpp());
        let v: Version = serde_json::from_str(r#"{"version":"0.6.3.post1"}"#).unwrap();
        assert_eq!(v.version.as_deref(), Some("0.6.3.post1"));
        assert_eq!(serde_json::from_str::<Version>(r#"{"version":1}"#).unwrap().version, None);
    }

    #[test]
    fn chat_requests_send_only_what_is_set() {
        let judge = ChatRequest {
            model: "judge".into(),
            messages: vec![Message::user("same?")],
            temperature: Some(0.0),
            max_tokens: Some(8),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&judge).unwrap(),
            serde_json::json!({"model": "judge", "messages": [{"role": "user", "content": "same?"}],
                               "max_tokens": 8, "temperature": 0.0})
        );
        let streamed = ChatRequest {
            model: "m".into(),
            messages: vec![(&crate::v1::ChatMessage { role: "system".into(), content: "be brief".into() }).into()],
            stream: true,
            stream_options: Some(StreamOptions { include_usage: true }),
            max_tokens: Some(64),
            temperature: Some(0.7),
            top_p: Some(0.95),
        };
        // f32 options are written as the numbers they were given as.
        assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":64,"temperature":0.7,"top_p":0.95}"#
        );
    }

    #[test]
    fn a_chat_response_gives_its_first_content() {
        let r: ChatResponse = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"YES"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.content().as_deref(), Some("YES"));
        let empty: ChatResponse = serde_json::from_str(r#"{"choices":[]}"#).unwrap();
        assert_eq!(empty.content(), None);
        assert!(serde_json::from_str::<ChatResponse>(r#"{"error":"no"}"#).is_err(), "choices are required");
    }

    /// Serves one HTTP request on a local port: answers `head` then each of `pieces`, flushed
    /// apart, and closes. Returns the base URL and the request's head and body.
    async fn serve_once(
        head: &'static str,
        pieces: Vec<&'static [u8]>,
    ) -> (String, tokio::task::JoinHandle<(String, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let body_start = loop {
                let n = socket.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head_text = String::from_utf8_lossy(&req[..body_start]).to_lowercase();
            let len: usize = head_text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while req.len() < body_start + len {
                let n = socket.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            socket.write_all(head.as_bytes()).await.unwrap();
            for p in pieces {
                socket.write_all(p).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (
                String::from_utf8_lossy(&req[..body_start]).into_owned(),
                String::from_utf8_lossy(&req[body_start..]).into_owned(),
            )
        });
        (url, task)
    }

    fn streamed_request() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::user("hi")],
            stream: true,
            stream_options: Some(StreamOptions { include_usage: true }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_streamed_chat_hands_over_each_chunk() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            vec![
                b"data: {\"choices\":[{\"delta\":{\"content\":\"He",
                b"llo\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" there\"},\"finish_reason\":\"length\"}]}\n",
                b"\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
            ],
        )
        .await;
        let client = Client::new(&format!("{url}/"), Duration::from_secs(10)).unwrap();
        assert_eq!(client.base_url(), url);
        let mut chunks = Vec::new();
        client.chat_stream(&streamed_request(), |c| chunks.push(c)).await.unwrap();
        let sent: serde_json::Value = serde_json::from_str(&server.await.unwrap().1).unwrap();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"]["include_usage"], true);
        let chunks: Vec<Result<ChatChunk, Error>> = chunks.into_iter().map(Ok).collect();
        assert_eq!(text(&chunks), "Hello there");
        assert_eq!(chunks.len(), 3);
        let last = chunks[2].as_ref().unwrap();
        assert_eq!(last.usage, Some(Usage { prompt_tokens: 5, completion_tokens: 2 }));
    }

    #[tokio::test]
    async fn an_error_chunk_stops_the_stream() {
        let (url, _server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            vec![b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":\"boom\"}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"],
        )
        .await;
        let client = Client::new(&url, Duration::from_secs(10)).unwrap();
        let mut seen = 0;
        let e = client.chat_stream(&streamed_request(), |_| seen += 1).await.unwrap_err();
        assert_eq!((seen, e.to_string()), (1, "engine error: \"boom\"".to_owned()));
    }

    #[tokio::test]
    async fn statuses_keep_their_body_and_say_whether_to_retry() {
        let (url, _server) = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\nconnection: close\r\n\r\n",
            vec![b"loading"],
        )
        .await;
        let client = Client::new(&url, Duration::from_secs(10)).unwrap();
        let e = client.chat(&ChatRequest { model: "m".into(), ..Default::default() }).await.unwrap_err();
        let Error::Status { status, body, .. } = &e else { panic!("{e:?}") };
        assert_eq!((status.as_u16(), body.as_str()), (503, "loading"));
        assert_eq!(e.to_string(), format!("POST {url}/v1/chat/completions answered 503 Service Unavailable"));
        assert!(e.is_transient());

        let (url, _server) = serve_once(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 9\r\nconnection: close\r\n\r\n",
            vec![b"bad model"],
        )
        .await;
        let e = Client::new(&url, Duration::from_secs(10)).unwrap().models().await.unwrap_err();
        assert!(matches!(&e, Error::Status { body, .. } if body == "bad model"), "{e:?}");
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), format!("GET {url}/v1/models answered 400 Bad Request"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10)).unwrap();
        let e = client.chat_stream(&streamed_request(), |_| {}).await.unwrap_err();
        assert!(matches!(e, Error::NotSent { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("POST http://127.0.0.1:{port}/v1/chat/completions: ")), "{e}");
        assert!(e.is_transient());
        assert!(client.props().await.is_none());
    }

    #[tokio::test]
    async fn a_reply_that_is_not_json_is_a_decode_error() {
        let (url, _server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n",
            vec![b"not json!"],
        )
        .await;
        let e = Client::new(&url, Duration::from_secs(10)).unwrap().models().await.unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("GET {url}/v1/models: ")), "{e}");
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn a_key_is_sent_as_a_bearer_and_a_rate_limit_says_how_long_to_wait() {
        let (url, server) = serve_once(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 4\r\nconnection: close\r\n\r\n",
            vec![b"slow"],
        )
        .await;
        let key = ApiKey::new("s3cret\nignored").unwrap();
        let client = Client::new(&url, Duration::from_secs(10)).unwrap().with_key(Some(key));
        assert!(!format!("{client:?}").contains("s3cret"), "the key is never shown");
        let e = client.chat_stream(&streamed_request(), |_| {}).await.unwrap_err();
        let Error::Status { status, retry_after, .. } = &e else { panic!("{e:?}") };
        assert_eq!((status.as_u16(), *retry_after), (429, Some(Duration::from_secs(7))));
        assert!(e.is_transient());
        let (head, _) = server.await.unwrap();
        assert!(head.lines().any(|l| l == "authorization: Bearer s3cret"), "{head}");
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO), "a date past");
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn an_api_key_is_its_first_line_and_never_empty() {
        assert_eq!(ApiKey::new("  k  \n"), Some(ApiKey("k".into())));
        assert_eq!(ApiKey::new(" \nk"), None);
        assert_eq!(format!("{:?}", ApiKey::new("k").unwrap()), "ApiKey(<redacted>)");
        let dir = std::env::temp_dir().join(format!("ipw-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let e = ApiKey::read(&dir.join("empty")).unwrap_err();
        assert_eq!(e.to_string(), "the file is empty");
        assert_eq!(ApiKey::read(&dir.join("missing")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
