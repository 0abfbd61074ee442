//! What the coordinator accepts in a result, shared so the agent keeps within it: a result the
//! coordinator refuses is set aside for ever, and its shard never completes.

/// Longest response text accepted, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Longest error, reason or label text accepted, in bytes.
pub const MAX_SHORT_TEXT_BYTES: usize = 4096;
/// Most results accepted in one batch.
pub const MAX_BATCH_RESULTS: usize = 10_000;

/// `text` cut to at most `max` bytes at a character boundary, with a marker saying how much
/// was cut; unchanged when it fits.
pub fn clamp(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    // The marker's length is bounded: 40 bytes leave room for it and its count.
    let mut cut = max.saturating_sub(40);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(" [truncated {} bytes]", total - cut));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary_with_a_marker() {
        assert_eq!(clamp("short".into(), 10), "short");
        let long = "é".repeat(5000); // 10,000 bytes
        let cut = clamp(long, MAX_SHORT_TEXT_BYTES);
        assert!(cut.len() <= MAX_SHORT_TEXT_BYTES, "{}", cut.len());
        assert!(cut.ends_with("bytes]") && cut.contains("[truncated "), "{}", &cut[cut.len() - 40..]);
    }
}
