//! Bounding what the tokenizer sees: a text past [`TextOptions::max_input_bytes`] is
//! refused before it is tokenized, and with truncation on only a prefix of a long text is
//! tokenized — one long enough that the truncated result is exactly that of the whole
//! text.
//!
//! A prefix is exact when it ends where the tokenizer's pre-tokenizer splits anyway:
//! tokens never span such a cut, so the prefix's tokens are the first tokens of the whole
//! text. Every pre-tokenizer of the family splits at ASCII whitespace; BERT's
//! (`BertNormalizer` + `BertPreTokenizer`) also splits before every punctuation mark and,
//! with `handle_chinese_chars`, around every CJK ideograph, which is what lets a long text
//! in Chinese or Japanese (no spaces) be cut too.
//!
//! [`TextOptions::max_input_bytes`]: super::TextOptions::max_input_bytes

use crate::error::InputError;
use tokenizers::Tokenizer;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use unicode_categories::UnicodeCategories;

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
    /// Where a prefix may end.
    pub(super) cuts: Cuts,
}

/// Where a text may be cut so that its prefix tokenizes as the start of the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cuts {
    /// Before ASCII whitespace (space, tab, line feed, carriage return) only: what every
    /// pre-tokenizer of the family splits at.
    Whitespace,
    /// BERT's splits as well: before whitespace, punctuation and (`chinese`) CJK
    /// ideographs, but never inside one of the tokenizer's added tokens (`[MASK]` is
    /// one token; a cut before its `]` would make it three).
    Bert {
        /// `handle_chinese_chars`: the normalizer puts spaces around CJK ideographs.
        chinese: bool,
        /// The added tokens' texts (at most [`MAX_ADDED`]).
        added: Vec<String>,
    },
}

/// Tokenizers with more added tokens than this are cut at whitespace only: checking each
/// cut against every added token must stay cheap.
const MAX_ADDED: usize = 64;

impl Cuts {
    /// The cuts `tokenizer` allows: BERT's when its normalizer is `BertNormalizer` (or
    /// none) and its pre-tokenizer is `BertPreTokenizer`, whitespace otherwise.
    pub(super) fn of(tokenizer: &Tokenizer) -> Cuts {
        let chinese = match tokenizer.get_normalizer() {
            None => false,
            Some(NormalizerWrapper::BertNormalizer(n)) => n.handle_chinese_chars,
            Some(_) => return Cuts::Whitespace,
        };
        if !matches!(
            tokenizer.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        ) {
            return Cuts::Whitespace;
        }
        let added = tokenizer.get_added_tokens_decoder();
        if added.len() > MAX_ADDED {
            return Cuts::Whitespace;
        }
        let added = added
            .into_values()
            .map(|t| t.content)
            .filter(|t| !t.is_empty())
            .collect();
        Cuts::Bert { chinese, added }
    }

    /// Whether `text` may be cut at byte `at` (a char boundary before its end).
    fn allows(&self, text: &str, at: usize) -> bool {
        let Some(c) = text[at..].chars().next() else {
            return false;
        };
        match self {
            Cuts::Whitespace => c.is_ascii() && is_split(&(c as u8)),
            Cuts::Bert { chinese, added } => {
                let splits = if c.is_ascii() {
                    // The common case, without the Unicode tables.
                    is_split(&(c as u8)) || c.is_ascii_punctuation()
                } else {
                    // BERT's normalizer deletes control characters (U+0085, ...), joining
                    // the words around them: never a split.
                    (c.is_whitespace() || c.is_punctuation() || (*chinese && is_chinese_char(c)))
                        && !c.is_other()
                };
                splits && !inside_added(text, at, added)
            }
        }
    }
}

/// Whether an occurrence of one of `added` spans byte `at` of `text` (starts before it and
/// ends after it). Compared ignoring ASCII case: an added token may match the normalized
/// (lowercased) text.
fn inside_added(text: &str, at: usize, added: &[String]) -> bool {
    let bytes = text.as_bytes();
    added.iter().any(|token| {
        let token = token.as_bytes();
        (at.saturating_sub(token.len() - 1)..at).any(|start| {
            bytes
                .get(start..start + token.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(token))
        })
    })
}

/// The CJK ideographs BERT's normalizer isolates (`tokenizers`' `is_chinese_char`).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// The part of `text` to tokenize, so that tokenizing it and truncating to `max_len`
/// tokens gives exactly what the whole text would.
///
/// Without truncation it is the whole text, refused past `max_bytes`. With truncation a
/// text longer than the first prefix is cut where `bounds.cuts` allows (a token boundary
/// for the tokenizer, never inside a UTF-8 sequence); the prefix doubles until
/// `more_than_max_len` says it yields more than `max_len` tokens (without special tokens)
/// or it covers the whole text. A prefix that would pass `max_bytes` (a text with nowhere
/// to cut before it) is refused.
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
        let mut end = next_cut(text, limit, &bounds.cuts);
        if end > bounds.max_bytes {
            // No cut between `limit` and the byte limit: the last cut before the byte
            // limit is the longest prefix left to try, if it is longer than the last one
            // probed.
            match last_cut_before(text, bounds.max_bytes, &bounds.cuts) {
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

/// The first cut of `text` at or after byte `limit`, or its length when there is none.
fn next_cut(text: &str, limit: usize, cuts: &Cuts) -> usize {
    let bytes = text.as_bytes();
    if limit >= bytes.len() {
        return bytes.len();
    }
    if *cuts == Cuts::Whitespace {
        return bytes[limit..]
            .iter()
            .position(is_split)
            .map_or(bytes.len(), |i| limit + i);
    }
    let start = (limit..=bytes.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(bytes.len());
    text[start..]
        .char_indices()
        .map(|(i, _)| start + i)
        .find(|&at| cuts.allows(text, at))
        .unwrap_or(bytes.len())
}

/// The last cut of `text` before byte `end`, if any.
fn last_cut_before(text: &str, end: usize, cuts: &Cuts) -> Option<usize> {
    let bytes = text.as_bytes();
    let end = end.min(bytes.len());
    if *cuts == Cuts::Whitespace {
        return bytes[..end].iter().rposition(is_split);
    }
    let end = (0..=end).rev().find(|&i| text.is_char_boundary(i))?;
    text[..end]
        .char_indices()
        .rev()
        .map(|(i, _)| i)
        .find(|&at| cuts.allows(text, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_bytes: usize, truncate: bool) -> Bounds {
        Bounds {
            max_bytes,
            truncate,
            max_len: 4,
            cuts: Cuts::Whitespace,
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
        let ws = Cuts::Whitespace;
        assert_eq!(next_cut("abc\x0bdef\x0cgh ij", 1, &ws), 10);
        assert_eq!(last_cut_before("ab cd\x0bef", 8, &ws), Some(2));
        let bert = Cuts::Bert {
            chinese: true,
            added: vec![],
        };
        assert_eq!(next_cut("abc\x0bdef\x0cgh ij", 1, &bert), 10);
        assert_eq!(last_cut_before("ab cd\x0bef", 8, &bert), Some(2));
    }

    #[test]
    fn bert_cuts_before_punctuation_and_ideographs_but_not_inside_added_tokens() {
        let bert = Cuts::Bert {
            chinese: true,
            added: vec!["[MASK]".into(), "[CLS]".into()],
        };
        // Ideographs (3 bytes each) and the ideographic full stop are splits; kana are not.
        let text = "東京は晴れ。明日";
        assert_eq!(next_cut(text, 1, &bert), 3); // before 京
        assert_eq!(next_cut(text, 7, &bert), 9); // は is not a split; 晴 is
        assert_eq!(last_cut_before(text, text.len(), &bert), Some(21)); // before 日
        // Without handle_chinese_chars only the punctuation is.
        let plain = Cuts::Bert {
            chinese: false,
            added: vec![],
        };
        assert_eq!(next_cut(text, 1, &plain), 15);
        // Never inside [MASK] (any case), but before and after it.
        let text = "ab[mask]cd[MASK]";
        assert!(!bert.allows(text, 7)); // the `]` of [mask]
        assert_eq!(next_cut(text, 3, &bert), 10); // before the next [
        assert!(bert.allows(text, 2));
        assert_eq!(last_cut_before(text, 15, &bert), Some(10));
        // Whitespace cuts see ASCII whitespace only.
        assert_eq!(next_cut(text, 1, &Cuts::Whitespace), text.len());
    }
}
