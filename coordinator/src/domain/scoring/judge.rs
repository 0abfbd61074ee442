//! LLM-as-judge through any OpenAI-compatible endpoint.
//!
//! The judge sees the question and two answers and says whether they give the same final
//! answer. It is asked twice, with the reference first and then the response first, because
//! judges favour one position; `strict` needs both verdicts to agree the answers match,
//! `lenient` one. Transient failures (connection errors, 429, 5xx) are retried with backoff;
//! a judgement that still fails stays unscored and is reported, never counted as wrong.

use ipw_proto::openai::{self, ChatRequest, Client, Message};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The judge prompt. Its SHA-256 is recorded with every scoring, so a change is visible.
pub const PROMPT: &str = "You are grading an answer to a question.\n\n\
Question:\n{question}\n\n\
Answer 1:\n{first}\n\n\
Answer 2:\n{second}\n\n\
Do Answer 1 and Answer 2 give the same final answer? Ignore wording, working and formatting. \
Reply with exactly one word: YES or NO.";

pub use ipw_proto::kinds::Strictness;

/// Where the judge is and how to use it.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// Base URL of the OpenAI-compatible endpoint.
    pub url: String,
    /// Model name sent in `model`.
    pub model: String,
    /// How the two verdicts combine.
    pub strictness: Strictness,
    /// Judge calls in flight at once.
    pub concurrency: usize,
    /// Attempts per call before the judgement counts as failed.
    pub max_attempts: u32,
    /// Per-call timeout.
    pub timeout: Duration,
}

/// One judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the response matches the reference under the strictness.
    pub correct: bool,
    /// Both raw replies, for the record: `reference-first: ... | response-first: ...`.
    pub raw: String,
}

/// A client for the judge endpoint.
#[derive(Debug, Clone)]
pub struct Judge {
    client: Client,
    config: JudgeConfig,
}

/// The SHA-256 of [`PROMPT`], hex.
pub fn prompt_hash() -> String {
    hex::encode(Sha256::digest(PROMPT.as_bytes()))
}

/// Why the judge could not be used, or gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError {
    /// The endpoint could not be used: unreachable, refusing, or answering something else.
    #[error("{0}")]
    Endpoint(String),
    /// The judge answered, but not YES or NO (both raw replies).
    #[error("the judge did not answer YES or NO ({0})")]
    NoVerdict(String),
}

/// Reads a one-word verdict: YES or NO, any case, punctuation around it ignored.
pub fn parse_verdict(reply: &str) -> Option<bool> {
    let word: String = reply.trim().chars().take_while(|c| c.is_alphabetic()).collect::<String>().to_lowercase();
    match word.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

impl Judge {
    /// A judge client for `config`.
    pub fn new(config: JudgeConfig) -> Result<Self, JudgeError> {
        let client = Client::new(&config.url, config.timeout).map_err(|e| JudgeError::Endpoint(e.to_string()))?;
        Ok(Self { client, config })
    }

    /// The configuration.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// What the endpoint says it is: its model ids from `/v1/models`, and llama.cpp's build
    /// from `/props` when there is one. Fails when the endpoint does not answer.
    pub async fn endpoint_version(&self) -> Result<String, JudgeError> {
        let models = self.client.models().await.map_err(|e| {
            JudgeError::Endpoint(match e {
                openai::Error::Decode { .. } => e.to_string(),
                openai::Error::Status { request, status, .. } => {
                    format!("the judge endpoint does not answer {request}: it answered {status}")
                }
                e => format!("the judge endpoint does not answer {e}"),
            })
        })?;
        let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).filter(|id| !id.is_empty()).collect();
        let mut version = format!("models: {}", ids.join(", "));
        if let Some(build) = self.client.props().await.and_then(|p| p.build_info) {
            version.push_str(&format!("; build: {build}"));
        }
        Ok(version)
    }

    /// Judges one response against the reference, asking in both orders.
    pub async fn judge(&self, question: &str, reference: &str, response: &str) -> Result<Verdict, JudgeError> {
        let reference_first = self.ask(question, reference, response).await?;
        let response_first = self.ask(question, response, reference).await?;
        let raw = format!("reference-first: {} | response-first: {}", reference_first.trim(), response_first.trim());
        let (Some(a), Some(b)) = (parse_verdict(&reference_first), parse_verdict(&response_first)) else {
            return Err(JudgeError::NoVerdict(raw));
        };
        let correct = match self.config.strictness {
            Strictness::Strict => a && b,
            Strictness::Lenient => a || b,
        };
        Ok(Verdict { correct, raw })
    }

    /// One call, retried with backoff on transient failures.
    async fn ask(&self, question: &str, first: &str, second: &str) -> Result<String, JudgeError> {
        let fail = |m: String| Err::<String, _>(JudgeError::Endpoint(m));
        let content = PROMPT.replace("{question}", question).replace("{first}", first).replace("{second}", second);
        let request = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![Message::user(content)],
            temperature: Some(0.0),
            max_tokens: Some(8),
            ..ChatRequest::default()
        };
        let mut last_error = String::new();
        for attempt in 0..self.config.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(ipw_proto::retry::backoff(attempt - 1)).await;
            }
            match self.client.chat(&request).await {
                Ok(reply) => {
                    return reply.content().ok_or_else(|| JudgeError::Endpoint("judge reply has no message".into()));
                }
                // Connection errors, timeouts, 429 and 5xx pass: tried again.
                Err(e) if e.is_transient() => {
                    last_error = match e {
                        openai::Error::Status { status, .. } => format!("judge answered {status}"),
                        e => e.to_string(),
                    };
                }
                Err(openai::Error::Status { status, body, .. }) => {
                    return fail(format!("judge answered {status}: {}", body.chars().take(300).collect::<String>()));
                }
                Err(openai::Error::Decode { cause, .. }) => {
                    return fail(format!("judge reply is not a chat completion: {cause}"));
                }
                Err(e) => return fail(e.to_string()),
            }
        }
        fail(format!("{last_error} (after {} attempts)", self.config.max_attempts.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_one_word_yes_or_no() {
        assert_eq!(parse_verdict("YES"), Some(true));
        assert_eq!(parse_verdict(" no."), Some(false));
        assert_eq!(parse_verdict("Yes, they match"), Some(true));
        assert_eq!(parse_verdict("Maybe"), None);
        assert_eq!(parse_verdict(""), None);
        assert_eq!(parse_verdict("Yesterday"), None);
    }

    #[test]
    fn the_prompt_hash_is_stable_hex() {
        assert_eq!(prompt_hash().len(), 64);
        assert_eq!(prompt_hash(), prompt_hash());
        assert!(PROMPT.contains("{question}") && PROMPT.contains("{first}") && PROMPT.contains("{second}"));
    }
}
