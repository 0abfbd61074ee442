//! Workload files: one JSON object per line (or one Parquet row, sent on as one), in one of
//! three formats.
//!
//! - **mmlu-pro**: `{question_id, question, options, answer, answer_index?, category?, src?}`
//!   as in the MMLU-Pro test split; scored by letter extraction.
//! - **generic**: `{id?, prompt, answer, choices?, category?, scorer?, tolerance?, max_tokens?}`;
//!   scored by exact match by default, by letter extraction when `choices` is given, or by the
//!   named `scorer` (`mcq`, `numeric` with an optional relative `tolerance`, `exact`, `judge`).
//! - **chat**: the generic record with `messages: [{role, content}, ...]` (roles system, user,
//!   assistant; the last one the user's) in place of `prompt`. The engine is sent exactly these
//!   messages; the last user message is kept as the query's prompt, for display and export.
//!
//! `id` defaults to the line number and `max_tokens` (a positive integer) to the run's budget.
//! A [`FieldMap`] reads the fields of any other shape under other names. The first record
//! fixes the format; every later line must match it. Parsing is pure so it can be tested and
//! fuzzed without a database.

mod mapping;

pub use mapping::{FieldMap, TARGETS};

use crate::domain::Invalid;
use crate::domain::prompt::CHOICE_LETTERS;
use crate::domain::scoring::Scorer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The accepted record formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The MMLU-Pro evaluation files.
    MmluPro,
    /// `{id, prompt, answer}` records.
    Generic,
    /// `{id, messages, answer}` records: conversations sent as they are.
    Chat,
}

impl Format {
    /// The name stored in `workloads.format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MmluPro => "mmlu-pro",
            Format::Generic => "generic",
            Format::Chat => "chat",
        }
    }
}

/// What a record's number counts: lines of a JSONL file, or rows of a Parquet file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unit {
    /// JSONL lines, from 1.
    #[default]
    Line,
    /// Parquet rows, from 1.
    Row,
}

impl Unit {
    /// The unit's name, as an import request gives it and errors print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Line => "line",
            Unit::Row => "row",
        }
    }

    /// Parses the unit an import request names; empty means lines.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "" | "line" => Ok(Unit::Line),
            "row" => Ok(Unit::Row),
            other => Err(format!("unknown record unit \"{other}\"; expected line or row").into()),
        }
    }
}

/// The roles a chat message may have.
pub const CHAT_ROLES: &[&str] = &["system", "user", "assistant"];

/// One message of a chat query, as imported and as sent to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTurn {
    /// system, user or assistant.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// One query, validated and ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQuery {
    /// The id the file gave the query (its line or row number when it gave none).
    pub external_id: String,
    /// 1-based line (or row) number in the file.
    pub line_no: u64,
    /// The question text; for a chat query, its last user message.
    pub prompt: String,
    /// A chat query's conversation, sent to the engine as it is.
    pub messages: Option<Vec<ChatTurn>>,
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
    /// The query's own completion budget; `None`: the run's.
    pub max_tokens: Option<i32>,
}

/// Why a line (or row) was rejected. Always names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {line_no}: {message}", unit.as_str())]
pub struct LineError {
    /// Whether `line_no` counts lines or rows.
    pub unit: Unit,
    /// 1-based line (or row) number.
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

/// A generic record (`prompt`) or a chat one (`messages`): the rest is shared, and so are its
/// rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRecord {
    id: Option<IdValue>,
    prompt: Option<String>,
    messages: Option<Vec<ChatTurn>>,
    answer: String,
    choices: Option<Vec<String>>,
    category: Option<String>,
    scorer: Option<String>,
    tolerance: Option<f64>,
    // Checked by hand, so a fraction or a negative number gets a message of its own.
    max_tokens: Option<serde_json::Value>,
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
    map: Option<FieldMap>,
    unit: Unit,
}

impl Parser {
    /// A parser of JSONL lines in one of the formats, that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser of records counted in `unit`, whose fields `map` names (none: the formats'
    /// own names).
    pub fn with(map: Option<FieldMap>, unit: Unit) -> Self {
        Self { map, unit, ..Self::default() }
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
        let unit = self.unit;
        let err = |message: String| LineError { unit, line_no, message };
        if text.len() > MAX_LINE_BYTES {
            return Err(err(format!("{} is {} bytes; the limit is {MAX_LINE_BYTES}", unit.as_str(), text.len())));
        }
        if line_no == 0 {
            return Err(err(format!("{} numbers start at 1", unit.as_str())));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Once the format is known, a good line parses straight into its record; anything
        // else takes the slow path below, which says what is wrong.
        let fast = if self.map.is_none() { self.format.and_then(|f| typed_query(f, text, line_no)) } else { None };
        let query = match fast {
            Some(query) => query,
            None => self.first_look(line_no, text).map_err(|e| err(e.0))?,
        };
        self.check(line_no, query).map(Some)
    }

    /// Parses a line as JSON, renames its fields by the map if there is one, finds its format,
    /// and checks it matches the file's.
    fn first_look(&mut self, line_no: u64, text: &str) -> Result<NewQuery, Invalid> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let value = match &self.map {
            Some(map) => map.apply(value)?,
            None => value,
        };
        let object = value.as_object().ok_or("expected a JSON object")?;
        let format = if object.contains_key("question_id") {
            Format::MmluPro
        } else if object.contains_key("messages") {
            Format::Chat
        } else if object.contains_key("prompt") {
            Format::Generic
        } else {
            return Err("neither an MMLU-Pro record (question_id, question, options, answer), a generic one \
                 (prompt, answer) nor a chat one (messages, answer)"
                .into());
        };
        match self.format {
            None => self.format = Some(format),
            Some(f) if f != format => {
                return Err(format!(
                    "this is a {} record but the file started with {} records",
                    format.as_str(),
                    f.as_str()
                )
                .into());
            }
            Some(_) => {}
        }
        let parsed = |e: serde_json::Error| Invalid(e.to_string());
        match format {
            Format::MmluPro => mmlu_pro_query(serde_json::from_value(value).map_err(parsed)?, line_no),
            Format::Generic | Format::Chat => {
                open_query(serde_json::from_value(value).map_err(parsed)?, line_no).map(|(_, q)| q)
            }
        }
    }

    /// What every query must be, whichever way it was parsed.
    fn check(&mut self, line_no: u64, query: NewQuery) -> Result<NewQuery, LineError> {
        let unit = self.unit;
        let err = |message: String| LineError { unit, line_no, message };
        // JSON may spell NUL as \u0000; PostgreSQL text cannot hold it.
        let texts = [Some(&query.external_id), Some(&query.prompt), Some(&query.answer), query.category.as_ref()];
        let turns = query.messages.iter().flatten().flat_map(|t| [&t.role, &t.content]);
        if texts.into_iter().flatten().chain(query.choices.iter().flatten()).chain(turns).any(|t| t.contains('\0')) {
            return Err(err("a field contains a NUL character (\\u0000), which cannot be stored".into()));
        }
        if query.external_id.trim().is_empty() {
            return Err(err("empty id".into()));
        }
        if query.prompt.trim().is_empty() {
            return Err(err("empty question/prompt".into()));
        }
        if let Some(first) = self.seen.insert(query.external_id.clone(), line_no) {
            let unit = unit.as_str();
            return Err(err(format!("id \"{}\" already appeared on {unit} {first}", query.external_id)));
        }
        Ok(query)
    }
}

/// A line of a known format parsed straight into its record, if it is a good one.
fn typed_query(format: Format, text: &str, line_no: u64) -> Option<NewQuery> {
    match format {
        Format::MmluPro => mmlu_pro_query(serde_json::from_str(text).ok()?, line_no).ok(),
        Format::Generic | Format::Chat => {
            open_query(serde_json::from_str(text).ok()?, line_no).ok().filter(|(f, _)| *f == format).map(|(_, q)| q)
        }
    }
}

/// An MMLU-Pro record as a query; the error says what is wrong with it.
fn mmlu_pro_query(r: MmluProRecord, line_no: u64) -> Result<NewQuery, Invalid> {
    check_choices(&r.options, &r.answer)?;
    Ok(NewQuery {
        external_id: r.question_id.to_string(),
        line_no,
        prompt: r.question,
        messages: None,
        choices: Some(r.options),
        answer: r.answer,
        category: r.category,
        scorer: Scorer::Mcq,
        tolerance: None,
        max_tokens: None,
    })
}

/// A generic or chat record as a query: its text (the prompt, or the conversation), its
/// scorer (given, or mcq with choices, else exact) and what that scorer needs.
fn open_query(r: OpenRecord, line_no: u64) -> Result<(Format, NewQuery), Invalid> {
    let (format, prompt, messages) = match (r.prompt, r.messages) {
        (Some(prompt), None) => (Format::Generic, prompt, None),
        (None, Some(messages)) => (Format::Chat, last_user_message(&messages)?, Some(messages)),
        (Some(_), Some(_)) => return Err("a record has `prompt` or `messages`, not both".into()),
        (None, None) => return Err("missing field `prompt` (or `messages`)".into()),
    };
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
    let query = NewQuery {
        external_id: r.id.map_or_else(|| line_no.to_string(), |id| id.to_string()),
        line_no,
        prompt,
        messages,
        choices: r.choices,
        answer: r.answer,
        category: r.category,
        scorer,
        tolerance: r.tolerance,
        max_tokens: max_tokens(r.max_tokens.as_ref())?,
    };
    Ok((format, query))
}

/// Checks a conversation (known roles, no empty message, ending with the user's) and returns
/// its last message, the one the reply answers.
fn last_user_message(messages: &[ChatTurn]) -> Result<String, Invalid> {
    for (i, turn) in messages.iter().enumerate() {
        if !CHAT_ROLES.contains(&turn.role.as_str()) {
            let n = i + 1;
            return Err(format!("message {n}: role \"{}\" is not system, user or assistant", turn.role).into());
        }
        if turn.content.trim().is_empty() {
            return Err(format!("message {} ({}) is empty", i + 1, turn.role).into());
        }
    }
    match messages.last() {
        None => Err("`messages` is empty; a chat query needs at least one user message".into()),
        Some(last) if last.role != "user" => {
            Err(format!("the last message is the {}'s; it must be the user's, for the model to answer", last.role)
                .into())
        }
        Some(last) => Ok(last.content.clone()),
    }
}

/// A query's own completion budget: a positive integer that fits the column, or none.
fn max_tokens(value: Option<&serde_json::Value>) -> Result<Option<i32>, Invalid> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_i64().filter(|n| *n > 0).and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(format!("`max_tokens` must be a positive integer (at most {}), got {v}", i32::MAX).into()),
        },
    }
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

    const CHAT: &str = r#"{"id": "c1", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}], "answer": "Paris", "max_tokens": 8}"#;

    #[test]
    fn chat_records_keep_their_messages_and_prompt_the_last_user_message() {
        let mut p = Parser::new();
        let q = p.parse_line(1, CHAT).unwrap().unwrap();
        assert_eq!(p.format(), Some(Format::Chat));
        let turns = q.messages.as_deref().unwrap();
        assert_eq!(turns.iter().map(|t| t.role.as_str()).collect::<Vec<_>>(), ["system", "user", "assistant", "user"]);
        assert_eq!((q.prompt.as_str(), q.scorer, q.max_tokens), ("Capital of France?", Scorer::Exact, Some(8)));
        // Without an id, the line number is the id; with choices, the scorer is mcq.
        let line = r#"{"messages": [{"role": "user", "content": "Pick"}], "answer": "B", "choices": ["x", "y"]}"#;
        let q = p.parse_line(2, line).unwrap().unwrap();
        assert_eq!((q.external_id.as_str(), q.scorer, q.max_tokens), ("2", Scorer::Mcq, None));
        // The fast path takes the same record as the slow one.
        let mut fresh = Parser::new();
        assert_eq!(fresh.parse_line(2, line).unwrap(), Some(q));
    }

    #[test]
    fn bad_chat_records_and_budgets_are_named() {
        let user = |content: &str| format!(r#"{{"role": "user", "content": "{content}"}}"#);
        let cases = [
            (r#"{"messages": [], "answer": "a"}"#.to_owned(), "`messages` is empty"),
            (r#"{"messages": [{"role": "bot", "content": "x"}], "answer": "a"}"#.to_owned(), "message 1: role \"bot\""),
            (
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"}"#
                    .to_owned(),
                "the last message is the assistant's",
            ),
            (format!(r#"{{"messages": [{}], "answer": "a"}}"#, user(" ")), "message 1 (user) is empty"),
            (format!(r#"{{"messages": [{}]}}"#, user("q")), "missing field `answer`"),
            (format!(r#"{{"messages": [{}], "prompt": "p", "answer": "a"}}"#, user("q")), "not both"),
            (
                r#"{"messages": [{"role": "user", "content": "q", "name": "n"}], "answer": "a"}"#.to_owned(),
                "unknown field `name`",
            ),
            (format!(r#"{{"messages": [{}], "answer": "a", "max_tokens": 0}}"#, user("q")), "positive integer"),
            (format!(r#"{{"messages": [{}], "answer": "a", "max_tokens": 2.5}}"#, user("q")), "got 2.5"),
            (format!(r#"{{"messages": [{}], "answer": "a", "max_tokens": "4"}}"#, user("q")), "positive integer"),
            (format!(r#"{{"messages": [{}], "answer": "a", "max_tokens": 3000000000}}"#, user("q")), "at most"),
            (format!(r#"{{"messages": [{}], "answer": "a"}}"#, user("a\\u0000b")), "NUL character"),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            let e = Parser::new().parse_line(i as u64 + 1, line).unwrap_err();
            assert!(e.to_string().starts_with(&format!("line {}: ", i + 1)), "{e}");
            assert!(e.message.contains(want), "{e} should mention {want}");
        }
        // Generic records take a budget by the same rule.
        let e =
            Parser::new().parse_line(1, r#"{"id": 1, "prompt": "p", "answer": "a", "max_tokens": -3}"#).unwrap_err();
        assert!(e.message.contains("positive integer (at most 2147483647), got -3"), "{e}");
        let mut p = Parser::new();
        p.parse_line(1, CHAT).unwrap();
        let e = p.parse_line(2, r#"{"id": "g", "prompt": "p", "answer": "a"}"#).unwrap_err();
        assert!(e.message.contains("generic record but the file started with chat"), "{e}");
    }

    #[test]
    fn mapped_rows_are_read_through_the_map_and_named_as_rows() {
        let map = FieldMap::parse("prompt=question,answer=gold,max_tokens=budget").unwrap();
        let mut p = Parser::with(Some(map), Unit::Row);
        let q = p.parse_line(1, r#"{"question": "2+2?", "gold": 4, "budget": 4, "other": [1]}"#).unwrap().unwrap();
        assert_eq!((q.external_id.as_str(), q.prompt.as_str(), q.answer.as_str()), ("1", "2+2?", "4"));
        assert_eq!((q.max_tokens, p.format()), (Some(4), Some(Format::Generic)));
        let e = p.parse_line(2, r#"{"question": "3+3?", "budget": 4}"#).unwrap_err();
        assert_eq!(e.to_string(), "row 2: no field \"gold\" (mapped to answer)");
        let e = p.parse_line(3, r#"{"question": "3+3?", "gold": "6", "budget": -1}"#).unwrap_err();
        assert_eq!(e.to_string(), "row 3: `max_tokens` must be a positive integer (at most 2147483647), got -1");
        let e = p.parse_line(4, r#"{"question": "again", "gold": "6", "id": 1, "budget": 2}"#).unwrap_err();
        assert_eq!(e.to_string(), "row 4: id \"1\" already appeared on row 1");
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
