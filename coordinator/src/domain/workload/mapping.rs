//! Reading records whose fields have other names: `--map prompt=question,answer=gold`.

use crate::domain::Invalid;
use serde_json::{Map, Value};

/// The fields a record is read into, in the order they are looked up.
pub const TARGETS: &[&str] =
    &["prompt", "messages", "answer", "choices", "category", "id", "max_tokens", "scorer", "tolerance"];

/// Targets a record cannot do without: a null in the field mapped to one is an error of its own.
const REQUIRED: &[&str] = &["prompt", "messages", "answer"];

/// Targets held as text: a number or a boolean in their field is read as its JSON text, since
/// columns of answers and ids are often numeric.
const TEXT: &[&str] = &["prompt", "answer", "category", "id", "scorer"];

/// Where each target is read from: the field named for it, else the field of its own name.
/// Fields that are neither are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    pairs: Vec<(&'static str, String)>,
}

impl FieldMap {
    /// Parses `target=field,target=field,...`, as `ipw workload import --map` takes it.
    pub fn parse(spec: &str) -> Result<Self, Invalid> {
        let pairs = spec.split(',').filter(|p| !p.trim().is_empty()).map(|pair| {
            pair.split_once('=')
                .map(|(t, f)| (t.trim().to_owned(), f.trim().to_owned()))
                .ok_or_else(|| Invalid(format!("\"{}\" in the field map is not TARGET=FIELD", pair.trim())))
        });
        Self::from_pairs(pairs.collect::<Result<Vec<_>, _>>()?)
    }

    /// A map from (target, field) pairs, checked: known targets, each at most once, a field
    /// for each, and not both `prompt` and `messages`.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, Invalid> {
        let mut map = Self::default();
        for (target, field) in pairs {
            let Some(known) = TARGETS.iter().find(|t| **t == target) else {
                return Err(format!(
                    "unknown target \"{target}\" in the field map; targets are {}",
                    TARGETS.join(", ")
                )
                .into());
            };
            if field.is_empty() {
                return Err(format!("the field map names no field for {target}").into());
            }
            if map.field(known).is_some() {
                return Err(format!("the field map names {target} twice").into());
            }
            map.pairs.push((known, field));
        }
        if map.field("prompt").is_some() && map.field("messages").is_some() {
            return Err("the field map names both prompt and messages; a query has one or the other".into());
        }
        Ok(map)
    }

    /// The (target, field) pairs, in the order given.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(t, f)| (*t, f.as_str()))
    }

    /// Whether the map names no field.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn field(&self, target: &str) -> Option<&str> {
        self.pairs.iter().find(|(t, _)| *t == target).map(|(_, f)| f.as_str())
    }

    /// The record with its targets read out under their own names; nulls count as absent. A
    /// field the map names that the record lacks is an error naming both.
    pub fn apply(&self, record: Value) -> Result<Value, Invalid> {
        let Value::Object(fields) = record else { return Err("expected a JSON object".into()) };
        let mut out = Map::new();
        for target in TARGETS {
            let value = match self.field(target) {
                Some(field) => match fields.get(field) {
                    None => return Err(format!("no field \"{field}\" (mapped to {target})").into()),
                    Some(Value::Null) if REQUIRED.contains(target) => {
                        return Err(format!("field \"{field}\" (mapped to {target}) is null").into());
                    }
                    Some(v) => v,
                },
                // A record holds prompt or messages: the one not mapped is not looked for.
                None if self.field(alternative(target)).is_some() => continue,
                None => match fields.get(*target) {
                    Some(v) => v,
                    None => continue,
                },
            };
            let value = match value {
                Value::Null => continue,
                Value::Number(_) | Value::Bool(_) if TEXT.contains(target) => Value::String(value.to_string()),
                v => v.clone(),
            };
            out.insert((*target).to_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

/// The target a record has instead of this one: prompt for messages and back.
fn alternative(target: &str) -> &'static str {
    match target {
        "prompt" => "messages",
        "messages" => "prompt",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_are_read_from_their_mapped_fields_and_others_are_dropped() {
        let map = FieldMap::parse("prompt=question, answer=gold,category=subject,choices=options,id=qid,max_tokens=mt")
            .unwrap();
        let record = json!({"question": "Q?", "gold": "B", "subject": "math", "options": ["x", "y"], "qid": 7,
                            "mt": 16, "extra": "ignored", "prompt": "not this one"});
        let out = map.apply(record).unwrap();
        assert_eq!(
            out,
            json!({"prompt": "Q?", "answer": "B", "category": "math", "choices": ["x", "y"], "id": "7", "max_tokens": 16})
        );
    }

    #[test]
    fn unmapped_targets_fall_back_to_their_own_names_and_nulls_are_absent() {
        let map = FieldMap::parse("messages=conversation").unwrap();
        let record = json!({"conversation": [{"role": "user", "content": "hi"}], "answer": 42, "prompt": "p",
                            "category": null});
        let out = map.apply(record).unwrap();
        assert_eq!(out, json!({"messages": [{"role": "user", "content": "hi"}], "answer": "42"}));
    }

    #[test]
    fn a_bad_map_or_a_missing_field_is_named() {
        let cases = [
            ("prompt=q,foo=bar", "unknown target \"foo\""),
            ("prompt", "\"prompt\" in the field map is not TARGET=FIELD"),
            ("prompt=a,prompt=b", "names prompt twice"),
            ("answer=", "names no field for answer"),
            ("prompt=a,messages=b", "both prompt and messages"),
        ];
        for (spec, want) in cases {
            let e = FieldMap::parse(spec).unwrap_err();
            assert!(e.0.contains(want), "{spec}: {e} should mention {want}");
        }
        let map = FieldMap::parse("prompt=question,answer=gold").unwrap();
        let e = map.apply(json!({"question": "Q"})).unwrap_err();
        assert_eq!(e.0, "no field \"gold\" (mapped to answer)");
        let e = map.apply(json!({"question": null, "gold": "a"})).unwrap_err();
        assert_eq!(e.0, "field \"question\" (mapped to prompt) is null");
        assert!(FieldMap::parse("").unwrap().is_empty());
    }
}
