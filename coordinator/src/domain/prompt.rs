//! Turning a stored query into the chat messages sent to the engine.
//!
//! Rendering happens on the coordinator so every agent sends byte-identical prompts.

use ipw_proto::v1::ChatMessage;

/// Letters for multiple-choice options; MMLU-Pro has up to ten (A-J).
pub const CHOICE_LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The chat messages for one query.
///
/// Multiple-choice questions use MMLU-Pro's zero-shot chain-of-thought form, which asks the
/// model to finish with "The answer is (X)"; open questions are sent as they are.
pub fn render(prompt: &str, choices: Option<&[String]>, category: Option<&str>) -> Vec<ChatMessage> {
    let content = match choices {
        Some(choices) => mmlu_pro_cot(prompt, choices, category),
        None => prompt.to_owned(),
    };
    vec![ChatMessage { role: "user".into(), content }]
}

fn mmlu_pro_cot(question: &str, choices: &[String], category: Option<&str>) -> String {
    let subject = category.map(|c| format!(" about {}", c.replace('_', " "))).unwrap_or_default();
    let mut s = format!(
        "The following is a multiple choice question{subject}. Think step by step and then finish \
         your answer with \"The answer is (X)\" where X is the correct letter choice.\n\n\
         Question: {question}\nOptions:\n"
    );
    for (letter, choice) in CHOICE_LETTERS.iter().zip(choices) {
        s.push_str(&format!("{}. {choice}\n", *letter as char));
    }
    s.push_str("Answer: Let's think step by step.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_choice_lists_lettered_options_and_asks_for_the_answer_form() {
        let m = render("2+2?", Some(&["3".into(), "4".into()]), Some("math"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].role, "user");
        let c = &m[0].content;
        assert!(c.contains("about math"));
        assert!(c.contains("Question: 2+2?\nOptions:\nA. 3\nB. 4\n"));
        assert!(c.contains("\"The answer is (X)\""));
        assert!(c.ends_with("Answer: Let's think step by step."));
    }

    #[test]
    fn open_questions_pass_through() {
        assert_eq!(render("Say hi", None, None)[0].content, "Say hi");
    }
}
