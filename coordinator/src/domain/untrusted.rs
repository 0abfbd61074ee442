//! What must hold for any input from outside, checked by the fuzz targets
//! (`coordinator/fuzz`, run by `scripts/fuzz`) and replayed over the committed corpora
//! (`coordinator/fuzz/corpus/`) by the test suite: one set of checks for both.

use super::results::{MAX_RESPONSE_BYTES, MAX_SHORT_TEXT_BYTES, validate};
use super::scoring::Scorer;
use super::workload::Parser;
use ipw_proto::kinds::PowerKind;
use ipw_proto::v1::ResultBatch;
use prost::Message;

/// A result batch as it arrives from an agent: decoding and validation never panic, and a
/// result that passes validation satisfies the `results` table's constraints, so a batch is
/// either refused with a named field or written, never failed by the database.
pub fn result_batch(data: &[u8]) {
    let Ok(batch) = ResultBatch::decode(data) else { return };
    for r in &batch.results {
        let Ok(v) = validate(r) else { continue };
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        assert!(nonneg(v.latency_s) && nonneg(v.sample_hz));
        assert!(v.ttft_s.is_none_or(|t| nonneg(t) && t <= v.latency_s));
        assert!(v.mean_itl_s.is_none_or(nonneg));
        assert!(v.energy_j.is_none_or(nonneg));
        assert!(v.dynamic_energy_j.is_none_or(f64::is_finite));
        assert!(v.tokens_in >= 0 && v.tokens_out >= 0 && v.repetition >= 0);
        assert!(v.response.len() <= MAX_RESPONSE_BYTES);
        assert!(v.energy_j.is_some() || v.energy_null_reason.as_deref().is_some_and(|s| !s.trim().is_empty()));
        assert!(v.energy_j.is_none() || v.power_source != "none");
        assert!(v.power_source == "none" || v.power_source.split('+').all(|k| k.parse::<PowerKind>().is_ok()));
        let texts = [Some(&v.response), Some(&v.finish_reason), v.error.as_ref(), Some(&v.power_scope)];
        for t in texts.into_iter().flatten().chain(v.energy_null_reason.iter()) {
            assert!(!t.contains('\0'), "PostgreSQL text cannot hold NUL: {t:?}");
        }
        for t in [&v.finish_reason, &v.power_scope] {
            assert!(t.len() <= MAX_SHORT_TEXT_BYTES);
        }
    }
}

/// Workload lines: the parser never panics, and whatever it accepts satisfies the `queries`
/// table's constraints, so an import fails on a named line and never on a database error.
pub fn workload_lines(data: &[u8]) {
    let mut parser = Parser::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        // The CLI refuses non-UTF-8 lines before sending; the server receives strings.
        let Ok(text) = std::str::from_utf8(line) else { continue };
        let line_no = i as u64 + 1;
        match parser.parse_line(line_no, text) {
            Ok(Some(q)) => {
                assert_eq!(q.line_no, line_no);
                assert!(!q.prompt.trim().is_empty() && !q.external_id.trim().is_empty());
                let texts = [Some(&q.external_id), Some(&q.prompt), Some(&q.answer), q.category.as_ref()];
                for t in texts.into_iter().flatten().chain(q.choices.iter().flatten()) {
                    assert!(!t.contains('\0'), "PostgreSQL text cannot hold NUL: {t:?}");
                }
                if q.scorer == Scorer::Mcq {
                    let choices = q.choices.as_ref().expect("mcq has choices");
                    let letter = q.answer.as_bytes();
                    assert!(letter.len() == 1 && letter[0].is_ascii_uppercase());
                    assert!(((letter[0] - b'A') as usize) < choices.len());
                }
                assert!(q.tolerance.is_none_or(|t| t.is_finite() && t >= 0.0));
                assert!(q.max_tokens.is_none_or(|n| n > 0));
                if let Some(turns) = &q.messages {
                    assert_eq!(turns.last().map(|t| (t.role.as_str(), &t.content)), Some(("user", &q.prompt)));
                    for t in turns {
                        assert!(!t.role.contains('\0') && !t.content.contains('\0'));
                    }
                }
            }
            Ok(None) => assert!(text.trim().is_empty()),
            Err(e) => assert_eq!(e.line_no, line_no),
        }
    }
}
