//! Numeric answers: the final number of a response against the reference, unit-free and
//! within a relative tolerance.

use regex::Regex;
use std::sync::LazyLock;

/// Relative tolerance when a query sets none.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// A number as people write it: sign, thousands separators, decimals, exponent, a fraction,
/// and a trailing percent sign (dropped: the comparison is unit-free).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-+−]?\.\d+")
        .expect("valid regex")
});
/// Where a final answer is announced: "answer is", "Answer:", GSM8K's "####", LaTeX \boxed{}.
static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)answer(?:\s+is)?\s*[:=]?|####|\\boxed\{").expect("valid regex"));

/// Parses one number token: "1,234.5", "−3", "3/4", "2.5e3".
fn parse_token(token: &str) -> Option<f64> {
    let t = token.replace(',', "").replace('−', "-").replace(' ', "");
    match t.split_once('/') {
        Some((n, d)) => {
            let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
            (d != 0.0).then(|| n / d)
        }
        None => t.parse().ok(),
    }
}

/// The number a response gives as its answer: the first number after the last answer
/// marker, else the last number in the text.
pub fn extract_number(response: &str) -> Option<f64> {
    if let Some(m) = MARKER.find_iter(response).last()
        && let Some(n) = NUMBER.find(&response[m.end()..])
    {
        return parse_token(n.as_str());
    }
    NUMBER.find_iter(response).last().and_then(|m| parse_token(m.as_str()))
}

/// The reference answer as a number ("$1,200", "50%", "3/4"), ignoring units around it.
pub fn parse_reference(answer: &str) -> Option<f64> {
    NUMBER.find(answer).and_then(|m| parse_token(m.as_str()))
}

/// Whether `got` matches `want` within `tolerance`, relative to `want` (absolute near zero).
pub fn matches(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance * want.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_answer_wins_over_later_numbers() {
        assert_eq!(extract_number("First 3 apples, then 4. The answer is 7. (Checked in 2 steps)"), Some(7.0));
        assert_eq!(extract_number("Natalia sold 48/2 = 24 clips in May.\n#### 72"), Some(72.0));
        assert_eq!(extract_number("So we get \\boxed{1,024} as the total"), Some(1024.0));
        assert_eq!(extract_number("Answer: −12.5 degrees"), Some(-12.5));
    }

    #[test]
    fn without_a_marker_the_last_number_counts() {
        assert_eq!(extract_number("We have 3 boxes of 12, so 36 eggs"), Some(36.0));
        assert_eq!(extract_number("about 2.5e3 meters"), Some(2500.0));
        assert_eq!(extract_number("half, i.e. 1/2"), Some(0.5));
        assert_eq!(extract_number("no idea"), None);
        assert_eq!(extract_number("ответ: 42 ✓"), Some(42.0));
    }

    #[test]
    fn references_are_unit_free_and_tolerance_is_relative() {
        assert_eq!(parse_reference("$1,200"), Some(1200.0));
        assert_eq!(parse_reference("50%"), Some(50.0));
        assert!(matches(1200.04, 1200.0, DEFAULT_TOLERANCE));
        assert!(!matches(1201.0, 1200.0, DEFAULT_TOLERANCE));
        assert!(matches(0.00001, 0.0, DEFAULT_TOLERANCE));
        assert!(matches(0.333, 1.0 / 3.0, 0.01));
    }
}
