//! Bounding what the tokenizer sees: a text past [`TextOptions::max_input_bytes`] is
//! refused before it is tokenized, and with truncation on only a prefix of a long text is
//! tokenized — one long enough that the truncated result is exactly that of the whole
//! text.
//!
//! [`TextOptions::max_input_bytes`]: super::TextOptions::max_input_bytes

use crate::error::InputError;

/// The size of the first prefix tried, in bytes per token of the maximum sequence length
/// (English averages about 4.5 bytes a token); at least [`FIRST_PREFIX_MIN`].
const BYTES_PER_TOKEN: usize = 16;

/// The smallest first prefix, in bytes.
const FIRST_PREFIX_MIN: usize = 4096;

/// What a text model needs to bound an input before tokenizing it.
pub(super) struct Bounds {
    /// The most bytes handed to the tokenizer.
    pub(super) max_bytes: usize,
    /// Whether texts past the maximum sequence length are truncated.
    pub(super) truncate: bool,
    /// The maximum sequence length, in tokens.
    pub(super) max_len: usize,
}

/// The part of `text` to tokenize, so that tokenizing it and truncating to `max_len`
/// tokens gives exactly what the whole text would.
///
/// Without truncation it is the whole text, refused past `max_bytes`. With truncation a
/// text longer than the first prefix is cut before an ASCII whitespace byte (a token
/// boundary for every pre-tokenizer that splits on whitespace, and never inside a UTF-8
/// sequence); the prefix doubles until `more_than_max_len` says it yields more than
/// `max_len` tokens (without special tokens) or it covers the whole text. A prefix that
/// would pass `max_bytes` (a text with no whitespace to cut at) is refused.
pub(super) fn bounded_prefix<'t>(
    field: &str,
    text: &'t str,
    bounds: &Bounds,
    mut more_than_max_len: impl FnMut(&str) -> Result<bool, InputError>,
) -> Result<&'t str, InputError> {
    if !bounds.truncate {
        return whole(field, text, bounds.max_bytes);
    }
    let too_many = || too_many_bytes(field, text, bounds.max_bytes);
    let mut limit = bounds
        .max_len
        .saturating_mul(BYTES_PER_TOKEN)
        .max(FIRST_PREFIX_MIN);
    // The longest prefix probed so far (it held too few tokens).
    let mut probed = 0;
    loop {
        let mut end = cut_at_whitespace(text, limit);
        if end > bounds.max_bytes {
            // No whitespace between `limit` and the byte limit: the last whitespace before
            // the byte limit is the longest prefix left to try, if it is longer than the
            // last one probed.
            match last_whitespace_before(text, bounds.max_bytes) {
                Some(back) if back > probed => end = back,
                _ => return Err(too_many()),
            }
            let prefix = &text[..end];
            return if more_than_max_len(prefix)? {
                Ok(prefix)
            } else {
                Err(too_many())
            };
        }
        let prefix = &text[..end];
        if end == text.len() || more_than_max_len(prefix)? {
            return Ok(prefix);
        }
        probed = end;
        limit = end.saturating_mul(2);
    }
}

/// `text` whole, refused past `max_bytes`.
pub(super) fn whole<'t>(
    field: &str,
    text: &'t str,
    max_bytes: usize,
) -> Result<&'t str, InputError> {
    if text.len() > max_bytes {
        return Err(too_many_bytes(field, text, max_bytes));
    }
    Ok(text)
}

fn too_many_bytes(field: &str, text: &str, max_bytes: usize) -> InputError {
    InputError::TooManyBytes {
        field: field.into(),
        bytes: text.len(),
        max: max_bytes,
    }
}

/// Whitespace that every pre-tokenizer of the BERT family splits on. Not vertical tab
/// and form feed: BERT's normalizer deletes them as control characters, so the words on
/// either side join.
fn is_split(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first whitespace byte of `text` at or after `limit`, or its length
/// when there is none.
fn cut_at_whitespace(text: &str, limit: usize) -> usize {
    let bytes = text.as_bytes();
    if limit >= bytes.len() {
        return bytes.len();
    }
    bytes[limit..]
        .iter()
        .position(is_split)
        .map_or(bytes.len(), |i| limit + i)
}

/// The index of the last whitespace byte of `text` before `end`, if any.
fn last_whitespace_before(text: &str, end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    bytes[..end.min(bytes.len())].iter().rposition(is_split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_bytes: usize, truncate: bool) -> Bounds {
        Bounds {
            max_bytes,
            truncate,
            max_len: 4,
        }
    }

    #[test]
    fn short_texts_are_whole_and_long_ones_cut_before_whitespace() {
        let never = |_: &str| Ok(false);
        assert_eq!(
            bounded_prefix("t", "a b", &bounds(10, true), never),
            Ok("a b")
        );
        let text = format!("{} tail", "w ".repeat(4000));
        // The probe says the first prefix holds enough tokens: it ends before a space.
        let p = bounded_prefix("t", &text, &bounds(1 << 20, true), |_| Ok(true)).unwrap();
        assert_eq!(p.len(), FIRST_PREFIX_MIN + 1);
        assert!(text[p.len()..].starts_with(' '));
        // It never does: the prefix grows to the whole text.
        let p = bounded_prefix("t", &text, &bounds(1 << 20, true), never).unwrap();
        assert_eq!(p, text);
    }

    #[test]
    fn texts_past_the_byte_limit_are_refused() {
        let never = |_: &str| Ok(false);
        let e = bounded_prefix("t", "abcdef", &bounds(5, false), never).unwrap_err();
        assert_eq!(
            e,
            InputError::TooManyBytes {
                field: "t".into(),
                bytes: 6,
                max: 5
            }
        );
        // No whitespace to cut at: the prefix would be the whole 10,000 bytes.
        let word = "x".repeat(10_000);
        let e = bounded_prefix("t", &word, &bounds(8_000, true), |_| Ok(true)).unwrap_err();
        assert!(matches!(e, InputError::TooManyBytes { bytes: 10_000, .. }));
    }

    #[test]
    fn words_then_a_blob_past_the_byte_limit_cut_before_the_blob() {
        // 6,000 bytes of words, then 20,000 bytes without whitespace: the forward cut
        // would pass the 10,000-byte limit, so the prefix ends at the last space before it.
        let words = "w ".repeat(3000);
        let text = format!("{words}{}", "x".repeat(20_000));
        let p = bounded_prefix("t", &text, &bounds(10_000, true), |p| Ok(p.len() > 5000));
        assert_eq!(p, Ok(&text[..words.len() - 1]));
        // Too few tokens even there: refused.
        let e = bounded_prefix("t", &text, &bounds(10_000, true), |_| Ok(false));
        assert!(matches!(e, Err(InputError::TooManyBytes { .. })));
    }

    #[test]
    fn vertical_tab_and_form_feed_are_not_cut_at() {
        // BERT's normalizer deletes them, joining the words around them.
        assert_eq!(cut_at_whitespace("abc\x0bdef\x0cgh ij", 1), 10);
        assert_eq!(last_whitespace_before("ab cd\x0bef", 8), Some(2));
    }
}
