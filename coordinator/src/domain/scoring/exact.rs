//! Normalized exact match.

/// Lowercases, collapses whitespace, and drops surrounding quotes and a trailing period, so
/// "  Paris. " matches "paris".
pub fn normalize(s: &str) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    collapsed.trim_matches(|c: char| c == '"' || c == '\'' || c == '`').trim_end_matches('.').trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use crate::domain::scoring::Scorer;

    #[test]
    fn normalization_ignores_case_space_quotes_and_final_period() {
        assert_eq!(normalize("  Paris. "), "paris");
        assert_eq!(normalize("\"New   York\""), "new york");
        assert_eq!(normalize("Zürich"), "zürich");
    }

    #[test]
    fn exact_scorer_needs_the_whole_answer() {
        assert!(Scorer::Exact.score("Paris.", "paris", None).unwrap().correct);
        assert!(!Scorer::Exact.score("It is Paris", "paris", None).unwrap().correct);
        let empty = Scorer::Exact.score("   ", "", None).unwrap();
        assert!(!empty.correct);
        assert_eq!(empty.extracted, None);
    }
}
