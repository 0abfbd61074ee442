//! Server-side scoring: a client's own verdict is never trusted.
//!
//! The workload chooses a scorer per query; each scorer lives in its own file.

mod exact;
pub mod judge;
mod mcq;
pub mod numeric;

pub use exact::normalize;
pub use mcq::extract_letter;

/// How a query's response is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scorer {
    /// Multiple choice: extract the letter the way the MMLU-Pro evaluation does.
    Mcq,
    /// The final number, within a relative tolerance, units ignored.
    Numeric,
    /// Normalized string match against the reference answer.
    Exact,
    /// An LLM judge compares the response with the reference (`ipw score --judge-...`).
    Judge,
}

impl Scorer {
    /// The name stored in `queries.scorer` and `scores.scorer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scorer::Mcq => "mcq",
            Scorer::Numeric => "numeric",
            Scorer::Exact => "exact",
            Scorer::Judge => "judge",
        }
    }

    /// Parses a stored or user-given scorer name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mcq" => Some(Scorer::Mcq),
            "numeric" => Some(Scorer::Numeric),
            "exact" => Some(Scorer::Exact),
            "judge" => Some(Scorer::Judge),
            _ => None,
        }
    }

    /// Scores one response against the reference answer without outside help; `None` for
    /// the judge, which needs an endpoint (see [`judge`]). `tolerance` applies to numeric.
    pub fn score(self, response: &str, answer: &str, tolerance: Option<f64>) -> Option<Score> {
        Some(match self {
            Scorer::Mcq => {
                let extracted = extract_letter(response);
                let correct = extracted.is_some_and(|l| l.to_string() == answer);
                Score { extracted: extracted.map(String::from), correct }
            }
            Scorer::Numeric => {
                let got = numeric::extract_number(response);
                let want = numeric::parse_reference(answer);
                let tolerance = tolerance.unwrap_or(numeric::DEFAULT_TOLERANCE);
                let correct = matches!((got, want), (Some(g), Some(w)) if numeric::matches(g, w, tolerance));
                Score { extracted: got.map(|g| g.to_string()), correct }
            }
            Scorer::Exact => {
                let got = normalize(response);
                let correct = !got.is_empty() && got == normalize(answer);
                Score { extracted: (!got.is_empty()).then_some(got), correct }
            }
            Scorer::Judge => return None,
        })
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
