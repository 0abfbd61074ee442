//! Workload files: one JSON object per line, in one of two formats.
//!
//! - **mmlu-pro**: `{question_id, question, options, answer, answer_index?, category?, src?}`
//!   as in the MMLU-Pro test split; scored by letter extraction.
//! - **generic**: `{id, prompt, answer, choices?, category?, scorer?, tolerance?}`; scored by
//!   exact match by default, by letter extraction when `choices` is given, or by the named
//!   `scorer` (`mcq`, `numeric` with an optional relative `tolerance`, `exact`, `judge`).
//!
//! The first record fixes the format; every later line must match it. Parsing is pure so it
//! can be tested and fuzzed without a database.

use crate::domain::Invalid;
use crate::domain::prompt::CHOICE_LETTERS;
use crate::domain::scoring::Scorer;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The two accepted record formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The MMLU-Pro evaluation files.
    MmluPro,
    /// `{id, prompt, answer}` records.
    Generic,
}

impl Format {
    /// The name stored in `workloads.format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MmluPro => "mmlu-pro",
            Format::Generic => "generic",
        }
    }
}

/// One query, validated and ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQuery {
    /// The id the file gave the query.
    pub external_id: String,
    /// 1-based line number in the file.
    pub line_no: u64,
    /// The question text.
    pub prompt: String,
    /// Multiple-choice options in letter order.
    pub choices: Option<Vec<String>>,
    /// The reference answer (a letter for multiple choice).
    pub answer: String,
    /// Subject or category, when given.
    pub category: Option<String>,
    /// How responses to this query are scored.
    pub scorer: Scorer,
    /// Relative tolerance for numeric answers.
    pub tolerance: Option<f64>,
}

/// Why a line was rejected. Always names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_no}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line_no: u64,
    /// What was wrong with it.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MmluProRecord {
    question_id: IdValue,
    question: String,
    options: Vec<String>,
    answer: String,
    // `answer` is authoritative, as in MMLU-Pro's own evaluation: the published test split
    // has a record (question 3983) whose answer_index disagrees with its answer.
    #[allow(dead_code)]
    answer_index: Option<i64>,
    category: Option<String>,
    #[allow(dead_code)]
    src: Option<String>,
    #[allow(dead_code)]
    cot_content: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericRecord {
    id: IdValue,
    prompt: String,
    answer: String,
    choices: Option<Vec<String>>,
    category: Option<String>,
    scorer: Option<String>,
    tolerance: Option<f64>,
}

/// Ids may be strings or integers in the wild.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Int(i64),
    Str(String),
}

impl fmt::Display for IdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdValue::Int(i) => write!(f, "{i}"),
            IdValue::Str(s) => f.write_str(s),
        }
    }
}

/// Parses a workload line by line, keeping what it needs to check the whole file: the format
/// of the first record and the ids seen so far.
#[derive(Debug, Default)]
pub struct Parser {
    format: Option<Format>,
    seen: HashMap<String, u64>,
}

impl Parser {
    /// A parser that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The format fixed by the first record, once there is one.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// How many queries were accepted so far.
    pub fn count(&self) -> usize {
        self.seen.len()
    }

    /// Parses one line. Blank lines yield `Ok(None)`.
    pub fn parse_line(&mut self, line_no: u64, text: &str) -> Result<Option<NewQuery>, LineError> {
        let err = |message: String| LineError { line_no, message };
        if text.len() > MAX_LINE_BYTES {
            return Err(err(format!("line is {} bytes; the limit is {MAX_LINE_BYTES}", text.len())));
        }
        if line_no == 0 {
            return Err(err("line numbers start at 1".into()));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Once the format is known, a good line parses straight into its record; anything
        // else takes the slow path below, which says what is wrong.
        let query = match self.format.and_then(|f| typed_query(f, text, line_no)) {
            Some(query) => query,
            None => self.first_look(line_no, text)?,
        };
        self.check(line_no, query).map(Some)
    }

    /// Parses a line as JSON, finds its format, and checks it matches the file's.
    fn first_look(&mut self, line_no: u64, text: &str) -> Result<NewQuery, LineError> {
        let err = |message: String| LineError { line_no, message };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
        let format = if object.contains_key("question_id") {
            Format::MmluPro
        } else if object.contains_key("prompt") {
            Format::Generic
        } else {
            return Err(err("neither an MMLU-Pro record (question_id, question, options, answer) nor a generic \
                 one (id, prompt, answer)"
                .into()));
        };
        match self.format {
            None => self.format = Some(format),
            Some(f) if f != format => {
                return Err(err(format!(
                    "this is a {} record but the file started with {} records",
                    format.as_str(),
                    f.as_str()
                )));
            }
            Some(_) => {}
        }
        match format {
            Format::MmluPro => {
                serde_json::from_value(value).map_err(|e| e.to_string().into()).and_then(|r| mmlu_pro_query(r, line_no))
            }
            Format::Generic => {
                serde_json::from_value(value).map_err(|e| e.to_string().into()).and_then(|r| generic_query(r, line_no))
            }
        }
        .map_err(|e: Invalid| err(e.0))
    }

    /// What every query must be, whichever way it was parsed.
    fn check(&mut self, line_no: u64, query: NewQuery) -> Result<NewQuery, LineError> {
        let err = |message: String| LineError { line_no, message };
        // JSON may spell NUL as \u0000; PostgreSQL text cannot hold it.
        let texts = [Some(&query.external_id), Some(&query.prompt), Some(&query.answer), query.category.as_ref()];
        if texts.into_iter().flatten().chain(query.choices.iter().flatten()).any(|t| t.contains('\0')) {
            return Err(err("a field contains a NUL character (\\u0000), which cannot be stored".into()));
        }
        if query.external_id.trim().is_empty() {
            return Err(err("empty id".into()));
        }
        if query.prompt.trim().is_empty() {
            return Err(err("empty question/prompt".into()));
        }
        if let Some(first) = self.seen.insert(query.external_id.clone(), line_no) {
            return Err(err(format!("id \"{}\" already appeared on line {first}", query.external_id)));
        }
        Ok(query)
    }
}

/// A line of a known format parsed straight into its record, if it is a good one.
fn typed_query(format: Format, text: &str, line_no: u64) -> Option<NewQuery> {
    match format {
        Format::MmluPro => mmlu_pro_query(serde_json::from_str(text).ok()?, line_no).ok(),
        Format::Generic => generic_query(serde_json::from_str(text).ok()?, line_no).ok(),
    }
}

/// An MMLU-Pro record as a query; the error says what is wrong with it.
fn mmlu_pro_query(r: MmluProRecord, line_no: u64) -> Result<NewQuery, Invalid> {
    check_choices(&r.options, &r.answer)?;
    Ok(NewQuery {
        external_id: r.question_id.to_string(),
        line_no,
        prompt: r.question,
        choices: Some(r.options),
        answer: r.answer,
        category: r.category,
        scorer: Scorer::Mcq,
        tolerance: None,
    })
}

/// A generic record as a query: its scorer (given, or mcq with choices, else exact) and what
/// that scorer needs.
fn generic_query(r: GenericRecord, line_no: u64) -> Result<NewQuery, Invalid> {
    let scorer = match r.scorer.as_deref() {
        None if r.choices.is_some() => Scorer::Mcq,
        None => Scorer::Exact,
        Some(s) => {
            Scorer::parse(s).ok_or_else(|| format!("unknown scorer \"{s}\"; expected mcq, numeric, exact or judge"))?
        }
    };
    if r.tolerance.is_some_and(|t| !(t.is_finite() && t >= 0.0)) || (r.tolerance.is_some() && scorer != Scorer::Numeric)
    {
        return Err("`tolerance` must be a number >= 0, and only goes with scorer numeric".into());
    }
    if scorer == Scorer::Numeric && crate::domain::scoring::numeric::parse_reference(&r.answer).is_none() {
        return Err(format!("scorer numeric needs a numeric answer, got \"{}\"", r.answer).into());
    }
    if scorer == Scorer::Mcq {
        let choices = r.choices.as_deref().ok_or_else(|| "scorer mcq needs `choices`".to_owned())?;
        check_choices(choices, &r.answer)?;
    }
    Ok(NewQuery {
        external_id: r.id.to_string(),
        line_no,
        prompt: r.prompt,
        choices: r.choices,
        answer: r.answer,
        category: r.category,
        scorer,
        tolerance: r.tolerance,
    })
}

/// The 0-based index of an answer letter.
fn letter_index(answer: &str) -> Option<i64> {
    match answer.as_bytes() {
        [b] => CHOICE_LETTERS.iter().position(|l| l == b).map(|i| i as i64),
        _ => None,
    }
}

fn check_choices(choices: &[String], answer: &str) -> Result<(), Invalid> {
    if choices.len() < 2 {
        return Err(format!("{} options; a multiple-choice question needs at least 2", choices.len()).into());
    }
    if choices.len() > CHOICE_LETTERS.len() {
        return Err(format!("{} options; at most {} are supported", choices.len(), CHOICE_LETTERS.len()).into());
    }
    match letter_index(answer) {
        Some(i) if (i as usize) < choices.len() => Ok(()),
        _ => Err(Invalid(format!(
            "answer \"{answer}\" is not one of the option letters A-{}",
            CHOICE_LETTERS[choices.len() - 1] as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMLU: &str = r#"{"question_id": 70, "question": "Q?", "options": ["a", "b", "c"], "answer": "C", "answer_index": 2, "category": "business", "src": "x"}"#;

    #[test]
    fn mmlu_pro_records_parse_as_multiple_choice() {
        let mut p = Parser::new();
        let q = p.parse_line(1, MMLU).unwrap().unwrap();
        assert_eq!(q.external_id, "70");
        assert_eq!(q.choices.as_deref().unwrap().len(), 3);
        assert_eq!(q.scorer, Scorer::Mcq);
        assert_eq!(p.format(), Some(Format::MmluPro));
    }

    #[test]
    fn generic_records_default_to_exact_match() {
        let mut p = Parser::new();
        let q = p.parse_line(1, r#"{"id": "q1", "prompt": "Capital of France?", "answer": "Paris"}"#);
        assert_eq!(q.unwrap().unwrap().scorer, Scorer::Exact);
        let q = p.parse_line(2, r#"{"id": 2, "prompt": "p", "answer": "B", "choices": ["x", "y"]}"#);
        assert_eq!(q.unwrap().unwrap().scorer, Scorer::Mcq);
    }

    #[test]
    fn bad_lines_are_named() {
        let mut p = Parser::new();
        p.parse_line(1, MMLU).unwrap();
        let cases = [
            ("{not json", "not valid JSON"),
            ("[1,2]", "expected a JSON object"),
            (r#"{"id": "x", "prompt": "p", "answer": "a"}"#, "generic record but the file started with mmlu-pro"),
            (
                r#"{"question_id": 71, "question": "Q", "options": ["a","b"], "answer": "C"}"#,
                "not one of the option letters A-B",
            ),
            (r#"{"question_id": 73, "options": ["a","b"], "answer": "A"}"#, "missing field `question`"),
            (
                r#"{"question_id": 70, "question": "Q", "options": ["a","b"], "answer": "A"}"#,
                "already appeared on line 1",
            ),
            (r#"{"question_id": 74, "question": "  ", "options": ["a","b"], "answer": "A"}"#, "empty question"),
            (r#"{"question_id": 75, "question": "a\u0000b", "options": ["a","b"], "answer": "A"}"#, "NUL character"),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            let e = p.parse_line(i as u64 + 2, line).unwrap_err();
            assert_eq!(e.line_no, i as u64 + 2);
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
        assert_eq!(p.count(), 1);
    }

    #[test]
    fn numeric_and_judge_scorers_are_named_by_the_record() {
        let mut p = Parser::new();
        let q =
            p.parse_line(1, r#"{"id": "n", "prompt": "2+2?", "answer": "4", "scorer": "numeric", "tolerance": 0.01}"#);
        let q = q.unwrap().unwrap();
        assert_eq!((q.scorer, q.tolerance), (Scorer::Numeric, Some(0.01)));
        let q = p.parse_line(2, r#"{"id": "j", "prompt": "Why?", "answer": "Because.", "scorer": "judge"}"#);
        assert_eq!(q.unwrap().unwrap().scorer, Scorer::Judge);
        let e = p.parse_line(3, r#"{"id": "x", "prompt": "p", "answer": "many", "scorer": "numeric"}"#).unwrap_err();
        assert!(e.message.contains("needs a numeric answer"), "{e}");
        let e = p.parse_line(4, r#"{"id": "y", "prompt": "p", "answer": "a", "tolerance": 0.1}"#).unwrap_err();
        assert!(e.message.contains("only goes with scorer numeric"), "{e}");
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(Parser::new().parse_line(1, "   ").unwrap(), None);
    }

    #[test]
    fn the_shared_mmlu_pro_split_parses_whole() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mmlu-pro-test.jsonl");
        let Ok(text) = std::fs::read_to_string(path) else {
            panic!("{path} is missing: the shared data folder must sit beside the clone")
        };
        let mut p = Parser::new();
        for (i, line) in text.lines().enumerate() {
            p.parse_line(i as u64 + 1, line).unwrap();
        }
        assert_eq!(p.count(), 12_032);
    }
}
