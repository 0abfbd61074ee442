//! LLM-as-judge through any OpenAI-compatible endpoint.
//!
//! The judge sees the question and two answers and says whether they give the same final
//! answer. It is asked twice, with the reference first and then the response first, because
//! judges favour one position; `strict` needs both verdicts to agree the answers match,
//! `lenient` one. Transient failures (connection errors, 429, 5xx) are retried with backoff;
//! a judgement that still fails stays unscored and is reported, never counted as wrong.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The judge prompt. Its SHA-256 is recorded with every scoring, so a change is visible.
pub const PROMPT: &str = "You are grading an answer to a question.\n\n\
Question:\n{question}\n\n\
Answer 1:\n{first}\n\n\
Answer 2:\n{second}\n\n\
Do Answer 1 and Answer 2 give the same final answer? Ignore wording, working and formatting. \
Reply with exactly one word: YES or NO.";

/// How many of the two orders must say the answers match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Both orders.
    Strict,
    /// Either order.
    Lenient,
}

impl Strictness {
    /// The name recorded with the scoring.
    pub fn as_str(self) -> &'static str {
        match self {
            Strictness::Strict => "strict",
            Strictness::Lenient => "lenient",
        }
    }

    /// Parses `strict` or `lenient`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Strictness::Strict),
            "lenient" => Ok(Strictness::Lenient),
            _ => Err(format!("unknown strictness \"{s}\"; expected strict or lenient")),
        }
    }
}

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
    http: reqwest::Client,
    config: JudgeConfig,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<ChatChoice>,
}

#[derive(Deserialize)]
struct ChatChoice {
    message: ChatMessage,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: Option<String>,
}

/// The SHA-256 of [`PROMPT`], hex.
pub fn prompt_hash() -> String {
    hex::encode(Sha256::digest(PROMPT.as_bytes()))
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
    pub fn new(config: JudgeConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(config.timeout).build().map_err(|e| e.to_string())?;
        Ok(Self { http, config })
    }

    /// The configuration.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    fn base(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    /// What the endpoint says it is: its model ids from `/v1/models`, and llama.cpp's build
    /// from `/props` when there is one. Fails when the endpoint does not answer.
    pub async fn endpoint_version(&self) -> Result<String, String> {
        let models_url = format!("{}/v1/models", self.base());
        let models: serde_json::Value = self
            .http
            .get(&models_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the judge endpoint does not answer GET {models_url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {models_url}: {e}"))?;
        let ids: Vec<String> = models["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let mut version = format!("models: {}", ids.join(", "));
        if let Ok(r) = self.http.get(format!("{}/props", self.base())).send().await
            && let Ok(props) = r.json::<serde_json::Value>().await
            && let Some(build) = props["build_info"].as_str()
        {
            version.push_str(&format!("; build: {build}"));
        }
        Ok(version)
    }

    /// Judges one response against the reference, asking in both orders.
    pub async fn judge(&self, question: &str, reference: &str, response: &str) -> Result<Verdict, String> {
        let reference_first = self.ask(question, reference, response).await?;
        let response_first = self.ask(question, response, reference).await?;
        let raw = format!("reference-first: {} | response-first: {}", reference_first.trim(), response_first.trim());
        let (Some(a), Some(b)) = (parse_verdict(&reference_first), parse_verdict(&response_first)) else {
            return Err(format!("the judge did not answer YES or NO ({raw})"));
        };
        let correct = match self.config.strictness {
            Strictness::Strict => a && b,
            Strictness::Lenient => a || b,
        };
        Ok(Verdict { correct, raw })
    }

    /// One call, retried with backoff on transient failures.
    async fn ask(&self, question: &str, first: &str, second: &str) -> Result<String, String> {
        let content = PROMPT.replace("{question}", question).replace("{first}", first).replace("{second}", second);
        let body = serde_json::json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": 8,
        });
        let url = format!("{}/v1/chat/completions", self.base());
        let mut last_error = String::new();
        for attempt in 0..self.config.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(ipw_proto::retry::backoff(attempt - 1)).await;
            }
            let resp = match self.http.post(&url).json(&body).send().await {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!("POST {url}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            if status.as_u16() == 429 || status.is_server_error() {
                last_error = format!("judge answered {status}");
                continue;
            }
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(format!("judge answered {status}: {}", text.chars().take(300).collect::<String>()));
            }
            let parsed: ChatResponse =
                resp.json().await.map_err(|e| format!("judge reply is not a chat completion: {e}"))?;
            return parsed
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.message.content)
                .ok_or_else(|| "judge reply has no message".to_owned());
        }
        Err(format!("{last_error} (after {} attempts)", self.config.max_attempts.max(1)))
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
