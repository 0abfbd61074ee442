//! Workload lines: the parser never panics, and whatever it accepts satisfies the `queries`
//! table's constraints, so an import fails on a named line and never on a database error.
#![no_main]

use ipw_coordinator::domain::scoring::Scorer;
use ipw_coordinator::domain::workload::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
            }
            Ok(None) => assert!(text.trim().is_empty()),
            Err(e) => assert_eq!(e.line_no, line_no),
        }
    }
});
