//! Server-side scoring: a client's own verdict is never trusted.
//!
//! The workload chooses a scorer per query; each scorer lives in its own file.

mod exact;
mod mcq;

pub use exact::normalize;
pub use mcq::extract_letter;

/// How a query's response is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scorer {
    /// Multiple choice: extract the letter the way the MMLU-Pro evaluation does.
    Mcq,
    /// Normalized string match against the reference answer.
    Exact,
}

impl Scorer {
    /// The name stored in `queries.scorer` and `scores.scorer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scorer::Mcq => "mcq",
            Scorer::Exact => "exact",
        }
    }

    /// Parses a stored or user-given scorer name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mcq" => Some(Scorer::Mcq),
            "exact" => Some(Scorer::Exact),
            _ => None,
        }
    }

    /// Scores one response against the reference answer.
    pub fn score(self, response: &str, answer: &str) -> Score {
        match self {
            Scorer::Mcq => {
                let extracted = extract_letter(response);
                let correct = extracted.is_some_and(|l| l.to_string() == answer);
                Score {
                    extracted: extracted.map(String::from),
                    correct,
                }
            }
            Scorer::Exact => {
                let got = normalize(response);
                let correct = !got.is_empty() && got == normalize(answer);
                Score {
                    extracted: (!got.is_empty()).then_some(got),
                    correct,
                }
            }
        }
    }
}

/// A scorer's verdict on one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    /// What the scorer read out of the response; `None` when it found nothing (counted wrong).
    pub extracted: Option<String>,
    /// Whether the response is correct.
    pub correct: bool,
}
