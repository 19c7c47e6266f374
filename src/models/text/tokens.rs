//! A text's tokens as a model reads them, each with its id, its text and where it came
//! from: what a tokenize endpoint lists and what token counts (usage) are made of.

use tokenizers::Encoding;

/// One token of a tokenized text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Token {
    /// The token id in the model's vocabulary.
    pub id: u32,
    /// The token type (segment): 0 for a single text and the first text of a pair, 1 for
    /// the second.
    pub type_id: u32,
    /// For a special token (`[CLS]`, `[SEP]`, ...) the token itself; otherwise the part of
    /// the text it was read from (of the lowercased text, for a model that lowercases
    /// before tokenizing).
    pub text: String,
    /// Whether the tokenizer added it (`[CLS]`, `[SEP]`, ...) rather than read it.
    pub special: bool,
    /// Byte offset of [`text`](Self::text) in the text it was read from (the first or
    /// second of a pair, as [`type_id`](Self::type_id) says); `None` for special tokens.
    pub start: Option<usize>,
    /// Byte offset one past its end; `None` for special tokens.
    pub stop: Option<usize>,
}

/// A text's tokens as the model reads them, special tokens included.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextTokens {
    /// The tokens, in order: at most the model's maximum sequence length.
    pub tokens: Vec<Token>,
    /// Whether the text had more tokens than the model reads and was cut to fit (with
    /// truncation on; without it such a text is refused).
    pub truncated: bool,
}

impl TextTokens {
    /// Number of tokens, special tokens included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true for a text a model tokenized (it has at least one token).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens of `encoding`, read from `texts` (the first text and the second of a
    /// pair, as they were handed to the tokenizer).
    pub(super) fn from_encoding(encoding: &Encoding, texts: [Option<&str>; 2]) -> Self {
        let sequences = encoding.get_sequence_ids();
        let tokens = encoding
            .get_ids()
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let special = encoding.get_special_tokens_mask().get(i) == Some(&1);
                let type_id = encoding.get_type_ids().get(i).copied().unwrap_or(0);
                let token = encoding.get_tokens().get(i).cloned().unwrap_or_default();
                let (start, stop) = encoding.get_offsets().get(i).copied().unwrap_or((0, 0));
                let source = sequences
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|s| texts.get(s).copied().flatten());
                match source.and_then(|text| text.get(start..stop)) {
                    Some(text) if !special => Token {
                        id,
                        type_id,
                        text: text.to_string(),
                        special,
                        start: Some(start),
                        stop: Some(stop),
                    },
                    _ => Token {
                        id,
                        type_id,
                        text: token,
                        special,
                        start: None,
                        stop: None,
                    },
                }
            })
            .collect();
        TextTokens {
            tokens,
            truncated: !encoding.get_overflowing().is_empty(),
        }
    }
}
