//! Multiple-choice letter extraction, following the MMLU-Pro evaluation script
//! (`extract_answer`, then `extract_again`, then `extract_final`), except that no answer
//! counts as wrong instead of being replaced by a random guess.

use regex::Regex;
use std::sync::LazyLock;

static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"answer is \(?([A-J])\)?").expect("valid regex"));
static ANSWER_COLON: LazyLock<Regex> = LazyLock::new(|| Regex::new(r".*[aA]nswer:\s*([A-J])").expect("valid regex"));
static LONE_LETTER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b([A-J])\b").expect("valid regex"));

/// The answer letter in a model's response, or `None` when there is none.
///
/// 1. the first "answer is (X)" / "answer is X";
/// 2. else "Answer: X" (the last one on the first line that has one);
/// 3. else the last standalone capital letter A-J anywhere.
pub fn extract_letter(response: &str) -> Option<char> {
    let first_group = |re: &Regex| re.captures(response).and_then(|c| c[1].chars().next());
    first_group(&ANSWER_IS)
        .or_else(|| first_group(&ANSWER_COLON))
        .or_else(|| LONE_LETTER.find_iter(response).last().and_then(|m| m.as_str().chars().next()))
}

#[cfg(test)]
mod tests {
    use super::extract_letter;

    #[test]
    fn the_answer_is_form_wins() {
        assert_eq!(extract_letter("Step 1... B looks good. The answer is (C)."), Some('C'));
        assert_eq!(extract_letter("so the answer is D"), Some('D'));
        // The first "answer is" counts, as in MMLU-Pro's re.search.
        assert_eq!(extract_letter("the answer is (A). Wait, the answer is (B)"), Some('A'));
    }

    #[test]
    fn answer_colon_is_the_first_fallback() {
        assert_eq!(extract_letter("Reasoning.\nAnswer: E\nMore text with F"), Some('E'));
        assert_eq!(extract_letter("answer: G"), Some('G'));
    }

    #[test]
    fn last_lone_letter_is_the_final_fallback() {
        assert_eq!(extract_letter("Between A and B, I pick J."), Some('J'));
        // Letters inside words do not count.
        assert_eq!(extract_letter("Absolutely Certain"), None);
    }

    #[test]
    fn no_letter_is_none_and_letters_beyond_j_are_ignored() {
        assert_eq!(extract_letter("We cannot decide."), None);
        // As in MMLU-Pro, a lone capital "I" (the pronoun) is read as option I: the fallback
        // is faithful, not clever.
        assert_eq!(extract_letter("I cannot decide."), Some('I'));
        assert_eq!(extract_letter("The answer is (K)"), None);
        assert_eq!(extract_letter(""), None);
    }

    #[test]
    fn unicode_around_the_answer_is_fine() {
        assert_eq!(extract_letter("Ответ — the answer is (H) ✅"), Some('H'));
        assert_eq!(extract_letter("é A é"), Some('A'));
    }

    /// Tails of SmolLM2-135M-Instruct's answers to MMLU-Pro questions from a real test run.
    #[test]
    fn real_smollm2_answers() {
        let cases = [
            // Two different letters: the first "answer is" counts, as in MMLU-Pro.
            (
                "exactly 20 atm E. cannot be determined without additional information F. greater than 20 atm \
              G. greater than 1 atm\n\nThe answer is (A).\n\nThe correct answer is (B).",
                Some('A'),
            ),
            ("Step 5: Confirm the answer.\n\nThe correct answer is E. An insertion is a deletion.", Some('E')),
            ("6. 7% = 0.07\n7. 7% = 0.07\n\nThe answer is D. 700.", Some('D')),
            // Cut off by max_tokens while listing options: only the last lone letter is left.
            ("B. 3.18 cm and 3.18 mm\nC. 0.335 cm and 3.35 mm\nG. 2.12 cm and 2.12 mm\nH. 6.70 cm and 6.70", Some('H')),
            ("The answer is (E).\n\nThe answer is (E).\n\nThe answer is (E).", Some('E')),
        ];
        for (response, want) in cases {
            assert_eq!(extract_letter(response), want, "{response}");
        }
    }
}
