//! The text side shared by every BERT-family model: tokenizer, validation of token ids and
//! lengths, and the forward pass (packed or padded) that yields each text's last hidden
//! states. [`SentenceEmbedder`](super::sentence::SentenceEmbedder) pools those states,
//! [`TextClassifier`](super::classifier::TextClassifier) and
//! [`CrossEncoder`](super::classifier::CrossEncoder) put a classification head on them.

mod input;
mod tokens;

use std::borrow::Borrow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationParams};

pub use crate::encoder::Precision;
use crate::encoder::{Arch, BertShape, PackedBert, PortableBert, Segment, arch};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::BatchCost;
use serde::Deserialize;

pub use self::tokens::{TextTokens, Token};

/// A text (or a pair of texts) after tokenization: what the text models queue and batch.
/// Only the models' `tokenize` functions make one, so it always holds between 1 and
/// `max_seq_length` tokens with ids inside the model's vocabularies and one type id each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub(crate) ids: Vec<u32>,
    pub(crate) type_ids: Vec<u32>,
}

impl TokenizedText {
    /// Token ids, special tokens included.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Token type (segment) ids, one per token: 0 for a single text and the first text of
    /// a pair, 1 for the second.
    pub fn type_ids(&self) -> &[u32] {
        &self.type_ids
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true for a text a model tokenized (it has at least one token).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Options for loading a text model ([`SentenceEmbedder::load_with`],
/// [`TextClassifier::load_with`], [`CrossEncoder::load_with`]).
///
/// [`SentenceEmbedder::load_with`]: super::sentence::SentenceEmbedder::load_with
/// [`TextClassifier::load_with`]: super::classifier::TextClassifier::load_with
/// [`CrossEncoder::load_with`]: super::classifier::CrossEncoder::load_with
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// Cut texts longer than the maximum sequence length (as sentence-transformers and
    /// transformers' pipelines do). When `false`, such a text is refused with
    /// [`InputError::TooLong`]. Default `true`.
    pub truncate: bool,
    /// The most bytes of a text (of each text of a pair) handed to the tokenizer; checked
    /// before tokenizing. Without truncation a longer text is refused with
    /// [`InputError::TooManyBytes`]. With truncation only a prefix of a long text is
    /// tokenized — cut where the tokenizer splits anyway (whitespace; for BERT tokenizers
    /// also punctuation and CJK ideographs, so Chinese and Japanese text can be cut), long
    /// enough that the result is exactly the whole text truncated — and the text is
    /// refused only when that prefix would pass this limit (nowhere to cut before it). Each
    /// text of a pair is refused past this limit; with truncation it is tokenized up to 8
    /// times the maximum length (a prefix cut the same way), enough to tell which text is
    /// longer, as the longest-first cut needs. Default 1 MiB.
    pub max_input_bytes: usize,
    /// Override the maximum sequence length (for an embedder `sentence_bert_config.json`'s
    /// `max_seq_length`, else `tokenizer_config.json`'s `model_max_length`);
    /// it is always capped at the model's `max_position_embeddings`.
    pub max_seq_length: Option<usize>,
    /// The device to run on (default: CPU).
    pub device: Device,
    /// The forward pass (default [`Engine::Auto`]).
    pub engine: Engine,
    /// The dtype of the weights and activations (default f32; f16 and bf16 for GPUs — on
    /// the CPU they run through the portable path and are slower, not faster: on the CPU
    /// use [`precision`](Self::precision)).
    pub dtype: DType,
    /// The arithmetic of the packed CPU engine's matrix products (default
    /// [`Precision::F32`]): [`Precision::Bf16`] halves the weights' memory,
    /// [`Precision::Int8`] quarters it and is the fastest where the CPU has AVX-512 VNNI.
    /// Other engines, devices and dtypes take only `F32` (a typed error otherwise).
    pub precision: Precision,
    /// Threads for the CPU forward pass. `None`: `RAYON_NUM_THREADS` if set, else one per
    /// core.
    pub threads: Option<usize>,
    /// Embedders only (Matryoshka): keep the first this many dimensions of each embedding,
    /// after the whole module pipeline, as sentence-transformers' `truncate_dim` does.
    /// Overrides `truncate_dim` in `config_sentence_transformers.json`; at most the
    /// pipeline's dimension. The classifiers refuse it.
    pub truncate_dim: Option<usize>,
    /// Embedders only: the prompt (a name in `config_sentence_transformers.json`'s
    /// `prompts`) for requests that name none, instead of the model's
    /// `default_prompt_name`. The classifiers refuse it.
    pub prompt_name: Option<String>,
}

/// The options of a sentence embedder: [`TextOptions`].
pub type EmbedderOptions = TextOptions;

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            truncate: true,
            max_input_bytes: 1 << 20,
            max_seq_length: None,
            device: Device::Cpu,
            engine: Engine::Auto,
            dtype: DType::F32,
            precision: Precision::F32,
            threads: None,
            truncate_dim: None,
            prompt_name: None,
        }
    }
}

impl TextOptions {
    /// Refuses the embedder-only options for a classifier: they would be ignored there.
    pub(crate) fn refuse_embedder_options(&self) -> Result<(), LoadError> {
        let refuse = |option, value: String| LoadError::InvalidOption {
            option,
            value,
            allowed: "it applies to sentence embedders only; leave it None for a classifier".into(),
        };
        if let Some(n) = self.truncate_dim {
            return Err(refuse("truncate_dim", n.to_string()));
        }
        if let Some(name) = &self.prompt_name {
            return Err(refuse("prompt_name", format!("{name:?}")));
        }
        Ok(())
    }
}

/// Which forward pass computes the hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// [`Engine::Packed`].
    #[default]
    Auto,
    /// modelhost's padding-free encoder: the tokens of a batch are packed into one matrix
    /// and attention runs per text over its own length, so no padding is computed. On the
    /// CPU in f32 it runs on hand-fused kernels; on other devices or dtypes it is
    /// [`Engine::PackedPortable`].
    Packed,
    /// The padding-free encoder written in candle tensor operations: what runs on CUDA (f32,
    /// f16, bf16). Selectable on the CPU to test it.
    PackedPortable,
    /// candle-transformers' stock `BertModel` on padded batches (any device; BERT only).
    Candle,
    /// modelhost's encoder in candle tensor operations on batches padded to their longest
    /// text, with an attention mask, as transformers computes them (every family, any
    /// device): the reference the padding-free engines are tested against.
    Padded,
}

/// What runs a text model's forward pass ([`SentenceEmbedder::engine_info`] and the
/// classifiers' `engine_info`).
///
/// [`SentenceEmbedder::engine_info`]: crate::models::sentence::SentenceEmbedder::engine_info
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineInfo {
    /// The forward pass.
    pub engine: Engine,
    /// The packed CPU engine's precision (`F32` for the others).
    pub precision: Precision,
    /// The instruction-set level the packed CPU kernels run at (`avx512vnni`, `avx512`,
    /// `avx2`, `portable`, ...: detected at load, capped by `MODELHOST_ISA`); `None` for
    /// the other engines.
    pub isa: Option<&'static str>,
    /// Threads of the packed CPU engine.
    pub threads: Option<usize>,
    /// Bytes the packed CPU engine's dense-layer weights hold (about a quarter of f32's in
    /// int8, half in bf16).
    pub dense_weight_bytes: Option<usize>,
    /// The dtype of the weights of the portable and candle engines (`F32` for the packed
    /// CPU engine: see `precision`).
    pub dtype: DType,
}

/// How far past the maximum length each text of a pair is tokenized to compare their
/// lengths (see `TextEncoder::encode_pair`).
const PAIR_LENGTH_CAP: usize = 8;

/// The loaded forward pass.
enum Backend {
    Packed {
        bert: PackedBert,
        /// The threads of the forward pass.
        pool: rayon::ThreadPool,
    },
    Portable {
        bert: PortableBert,
    },
    Padded {
        bert: PortableBert,
    },
    Candle {
        /// Boxed: with the `cuda` feature `BertModel` (its device handles) is twice the
        /// size of the other variants.
        bert: Box<BertModel>,
        device: Device,
        dtype: DType,
    },
}

/// Tokenizer plus BERT encoder of a Hugging Face model directory.
pub(crate) struct TextEncoder {
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, to count the tokens of a text's prefix.
    probe: Tokenizer,
    /// The same tokenizer cutting at `PAIR_LENGTH_CAP` times the maximum length: what each
    /// text of a pair is tokenized with before the pair is truncated.
    capped: Tokenizer,
    backend: Backend,
    /// The encoder family (`model_type`).
    arch: Arch,
    pad_id: u32,
    vocab_size: usize,
    type_vocab_size: usize,
    hidden: usize,
    lowercase: bool,
    max_len: usize,
    /// What is handed to the tokenizer: `TextOptions::max_input_bytes` and `truncate`.
    bounds: input::Bounds,
    /// The same for each text of a pair: `PAIR_LENGTH_CAP` times the maximum length.
    pair_bounds: input::Bounds,
}

/// The last hidden states of a batch: text `i` is rows `offsets[i]..offsets[i + 1]` of
/// `data` (`[rows, hidden]`, row-major). Rows between texts (padding) are never referenced.
pub(crate) struct HiddenStates {
    data: Vec<f32>,
    /// Start row of each text, and (for the packed layout) one past the last.
    starts: Vec<usize>,
    lens: Vec<usize>,
    hidden: usize,
}

impl HiddenStates {
    /// Text `i`'s token vectors, `[tokens, hidden]` row-major.
    pub(crate) fn text(&self, i: usize) -> &[f32] {
        let h = self.hidden;
        &self.data[self.starts[i] * h..(self.starts[i] + self.lens[i]) * h]
    }

    /// Text `i`'s first (`[CLS]`) token vector.
    pub(crate) fn first_token(&self, i: usize) -> &[f32] {
        let h = self.hidden;
        &self.data[self.starts[i] * h..(self.starts[i] + 1) * h]
    }

    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }
}

/// What a text model reads from its transformer directory besides the encoder.
pub(crate) struct Loaded {
    pub(crate) encoder: TextEncoder,
    /// The path of `config.json`.
    pub(crate) config_path: std::path::PathBuf,
    /// The path of the weights file.
    pub(crate) weights: std::path::PathBuf,
}

impl TextEncoder {
    /// Loads `config.json`, `tokenizer.json` and the weights of `dir`.
    /// `default_max_len` is the model's own limit before `options.max_seq_length`.
    /// `pairs`: the model reads text pairs (it needs two token types and room for three
    /// special tokens and one token of each text).
    pub(crate) fn load(
        dir: &Path,
        options: &TextOptions,
        default_max_len: Option<usize>,
        lowercase: bool,
        pairs: bool,
    ) -> Result<Loaded, LoadError> {
        let config_path = require(dir.join("config.json"), "the model configuration")?;
        // The shape every engine needs; the candle engine parses its own config below.
        let config: BertShape = read_json(&config_path)?;
        let arch = checked_architecture(&config, &config_path)?;
        let default_max_len = default_max_len.or(tokenizer_max_length(dir)?);
        let max_len =
            checked_max_len(&config, arch, &config_path, options, default_max_len, pairs)?;
        let tokenizer = load_tokenizer(dir, options.truncate, max_len)?;
        let mut probe = tokenizer.clone();
        probe
            .with_truncation(None)
            .map_err(|e| LoadError::Tokenizer {
                path: dir.join("tokenizer.json"),
                message: e.to_string(),
            })?;
        let pair_cap = PAIR_LENGTH_CAP * max_len;
        let mut capped = probe.clone();
        capped
            .with_truncation(Some(TruncationParams {
                max_length: pair_cap,
                ..TruncationParams::default()
            }))
            .map_err(|e| LoadError::Tokenizer {
                path: dir.join("tokenizer.json"),
                message: e.to_string(),
            })?;
        let cuts = input::Cuts::of(&tokenizer);
        let weights = crate::formats::find_weights(dir)?;
        let backend = Backend::load(&weights, &config, arch, &config_path, options)?;
        Ok(Loaded {
            encoder: TextEncoder {
                tokenizer,
                probe,
                capped,
                backend,
                arch,
                pad_id: config.pad_token_id as u32,
                vocab_size: config.vocab_size,
                // Only BERT reads token types: the others see zeros (`tokenize`).
                type_vocab_size: if arch.token_types() {
                    config.type_vocab_size
                } else {
                    1
                },
                hidden: config.hidden_size,
                lowercase,
                max_len,
                pair_bounds: input::Bounds {
                    max_bytes: options.max_input_bytes,
                    truncate: options.truncate,
                    max_len: pair_cap,
                    cuts: cuts.clone(),
                },
                bounds: input::Bounds {
                    max_bytes: options.max_input_bytes,
                    truncate: options.truncate,
                    max_len,
                    cuts,
                },
            },
            config_path,
            weights,
        })
    }

    /// Width of the hidden states.
    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    /// The most tokens (special tokens included) a text may have.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// How a batch counts against the token budget: the padded engine computes every
    /// text at the batch's longest length, the packed ones real tokens only.
    pub(crate) fn batch_cost(&self) -> BatchCost {
        match self.backend {
            Backend::Candle { .. } | Backend::Padded { .. } => BatchCost::Padded,
            Backend::Packed { .. } | Backend::Portable { .. } => BatchCost::Sum,
        }
    }

    pub(crate) fn engine(&self) -> Engine {
        match self.backend {
            Backend::Packed { .. } => Engine::Packed,
            Backend::Portable { .. } => Engine::PackedPortable,
            Backend::Padded { .. } => Engine::Padded,
            Backend::Candle { .. } => Engine::Candle,
        }
    }

    /// The encoder family.
    pub(crate) fn arch(&self) -> Arch {
        self.arch
    }

    /// What runs the forward pass.
    pub(crate) fn engine_info(&self) -> EngineInfo {
        match &self.backend {
            Backend::Packed { bert, pool } => EngineInfo {
                engine: Engine::Packed,
                precision: bert.precision(),
                isa: Some(bert.isa().name()),
                threads: Some(pool.current_num_threads()),
                dense_weight_bytes: Some(bert.dense_bytes()),
                dtype: DType::F32,
            },
            Backend::Portable { bert } | Backend::Padded { bert } => EngineInfo {
                engine: self.engine(),
                precision: Precision::F32,
                isa: None,
                threads: None,
                dense_weight_bytes: None,
                dtype: bert.dtype(),
            },
            Backend::Candle { dtype, .. } => EngineInfo {
                engine: Engine::Candle,
                precision: Precision::F32,
                isa: None,
                threads: None,
                dense_weight_bytes: None,
                dtype: *dtype,
            },
        }
    }

    /// Tokenizes one text (`second: None`) or a pair, special tokens included; `field`
    /// names the input in errors.
    pub(crate) fn tokenize(
        &self,
        field: &str,
        first: &str,
        second: Option<&str>,
    ) -> Result<TokenizedText, InputError> {
        let (encoding, _) = self.encode(field, first, second)?;
        if let Some(&id) = encoding
            .get_ids()
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(InputError::Invalid {
                field: field.into(),
                reason: format!(
                    "the tokenizer produced token id {id}, outside the model's vocabulary of {} (tokenizer.json and config.json disagree)",
                    self.vocab_size
                ),
            });
        }
        if let Some(&t) = encoding
            .get_type_ids()
            .iter()
            .find(|&&t| self.arch.token_types() && t as usize >= self.type_vocab_size)
        {
            return Err(InputError::Invalid {
                field: field.into(),
                reason: format!(
                    "the tokenizer produced token type {t}, but the model has {} token types (it cannot take text pairs)",
                    self.type_vocab_size
                ),
            });
        }
        let type_ids = if self.arch.token_types() {
            encoding.get_type_ids().to_vec()
        } else {
            // The model reads no token types (its tokenizer returns none to transformers):
            // a pair's second text must not index a table it does not have.
            vec![0; encoding.len()]
        };
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids,
        })
    }

    /// Each token of one text (`second: None`) or a pair with its text and offsets, as
    /// [`tokenize`](Self::tokenize) reads them.
    pub(crate) fn tokens(
        &self,
        field: &str,
        first: &str,
        second: Option<&str>,
    ) -> Result<TextTokens, InputError> {
        let (encoding, texts) = self.encode(field, first, second)?;
        let [first, second] = &texts;
        Ok(TextTokens::from_encoding(
            &encoding,
            [first.as_deref(), second.as_deref()],
        ))
    }

    /// The tokenizer's encoding of one text or a pair within the byte and token limits,
    /// with the texts it read (lowercased when the model asks for it).
    fn encode(
        &self,
        field: &str,
        first: &str,
        second: Option<&str>,
    ) -> Result<(Encoding, [Option<String>; 2]), InputError> {
        let mut first_longer_in_bytes = false;
        let (first, second) = match second {
            None => (self.bounded(field, first)?, None),
            // Each text of a pair is at most `max_input_bytes`. How the tokenizer splits
            // the budget between two long texts depends on which is longer in tokens: each
            // is tokenized up to `PAIR_LENGTH_CAP` times the limit (a prefix cut where the
            // tokenizer splits anyway) to tell, and past that their bytes tell.
            Some(second) => {
                let max = self.bounds.max_bytes;
                let first = input::whole(field, first, max)?;
                let second = input::whole(field, second, max)?;
                first_longer_in_bytes = first.len() > second.len();
                if self.bounds.truncate {
                    (
                        self.bounded_to(field, first, &self.pair_bounds)?,
                        Some(self.bounded_to(field, second, &self.pair_bounds)?),
                    )
                } else {
                    (first, Some(second))
                }
            }
        };
        let first = self.lower(first);
        let second = second.map(|s| self.lower(s));
        let tokenize_error = |e: tokenizers::Error| InputError::Tokenize {
            message: e.to_string(),
        };
        let encoding = match &second {
            None => self
                .tokenizer
                .encode(first.as_str(), true)
                .map_err(tokenize_error)?,
            Some(second) => self
                .encode_pair(&first, second, first_longer_in_bytes)
                .map_err(tokenize_error)?,
        };
        let tokens = encoding.len();
        if tokens > self.max_len {
            return Err(InputError::TooLong {
                tokens,
                max: self.max_len,
            });
        }
        if tokens == 0 {
            return Err(InputError::Invalid {
                field: field.into(),
                reason: "the tokenizer produced no tokens for it (and adds no special tokens); give a non-empty text".into(),
            });
        }
        Ok((encoding, [Some(first), second]))
    }

    /// A pair, truncated longest-first as Python's tokenizers (0.23.3) and so
    /// sentence-transformers' `CrossEncoder` do, then given its special tokens.
    ///
    /// The rule: when both texts do not fit, the shorter keeps what the longer leaves, or
    /// both get half and the longer the odd token. tokenizers 0.23.2 stops tokenizing each
    /// text at the limit before it compares lengths, so it can give the odd token to the
    /// wrong side. Here each text is tokenized up to [`PAIR_LENGTH_CAP`] times the limit —
    /// its exact length below that, and bounded work and memory above it — and the rule
    /// is applied to those lengths; when both texts pass the cap, the one with more bytes
    /// counts as the longer.
    fn encode_pair(
        &self,
        first: &str,
        second: &str,
        first_longer_in_bytes: bool,
    ) -> tokenizers::Result<Encoding> {
        let Some(params) = self.tokenizer.get_truncation() else {
            // No truncation: the pair is refused when too long (`encode`).
            let a = self.probe.encode(first, false)?;
            let b = self.probe.encode(second, false)?;
            return self.probe.post_process(a, Some(b), true);
        };
        let added = self
            .tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        let budget = params.max_length.saturating_sub(added);
        // What `capped` cuts each text at (and `pair_bounds` prefixes it to).
        let cap = self.pair_bounds.max_len;
        let mut a = self.capped.encode(first, false)?;
        let mut b = self.capped.encode(second, false)?;
        let (la, lb) = (a.len(), b.len());
        if la + lb > budget {
            let first_longer = if la >= cap && lb >= cap {
                first_longer_in_bytes
            } else {
                la > lb
            };
            let (short, long) = if first_longer { (lb, la) } else { (la, lb) };
            let mut keep = (
                short,
                if short > budget {
                    short
                } else {
                    long.min(budget - short).max(short)
                },
            );
            if keep.0 + keep.1 > budget {
                keep = (budget / 2, budget / 2 + budget % 2);
            }
            let (na, nb) = if first_longer { (keep.1, keep.0) } else { keep };
            a.truncate(na, 0, params.direction);
            b.truncate(nb, 0, params.direction);
        }
        // Truncation keeps every cut-off piece as an overflowing encoding, and
        // post-processing a pair merges each piece of one text with each of the other:
        // two 1 MiB texts made ~10^7 encodings and exhausted the memory. One piece per
        // text still marks the pair truncated (`TextTokens`).
        a.get_overflowing_mut().truncate(1);
        b.get_overflowing_mut().truncate(1);
        self.probe.post_process(a, Some(b), true)
    }

    /// `text`, lowercased when the model asks for it.
    fn lower(&self, text: &str) -> String {
        if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_owned()
        }
    }

    /// The part of `text` to tokenize (see `input::bounded_prefix`): all of it, or with
    /// truncation a prefix that yields more than `max_len` tokens on its own.
    fn bounded<'t>(&self, field: &str, text: &'t str) -> Result<&'t str, InputError> {
        self.bounded_to(field, text, &self.bounds)
    }

    /// [`bounded`](Self::bounded) to `bounds.max_len` tokens.
    fn bounded_to<'t>(
        &self,
        field: &str,
        text: &'t str,
        bounds: &input::Bounds,
    ) -> Result<&'t str, InputError> {
        input::bounded_prefix(field, text, bounds, |prefix| {
            let encoding =
                self.probe
                    .encode(self.lower(prefix), false)
                    .map_err(|e| InputError::Tokenize {
                        message: e.to_string(),
                    })?;
            Ok(encoding.len() > bounds.max_len)
        })
    }

    /// The last hidden states of a batch with the loaded engine.
    ///
    /// A `TokenizedText` made by another model (the type is shared) is checked against
    /// this one's limits and vocabularies first, so it can neither read past its rows nor
    /// index outside the embedding tables.
    pub(crate) fn forward<T: Borrow<TokenizedText>>(
        &self,
        batch: &[T],
    ) -> Result<HiddenStates, RuntimeError> {
        let batch: Vec<&TokenizedText> = batch.iter().map(Borrow::borrow).collect();
        let batch = batch.as_slice();
        for (i, t) in batch.iter().enumerate() {
            let fits = !t.ids.is_empty()
                && t.ids.len() <= self.max_len
                && t.type_ids.len() == t.ids.len()
                && t.ids.iter().all(|&id| (id as usize) < self.vocab_size)
                && t.type_ids
                    .iter()
                    .all(|&ty| (ty as usize) < self.type_vocab_size);
            if !fits {
                return Err(RuntimeError::Backend {
                    message: format!(
                        "text {i} of the batch was not tokenized for this model (1 to {} tokens, ids below {}, token types below {}); tokenize it with this model",
                        self.max_len, self.vocab_size, self.type_vocab_size
                    ),
                });
            }
        }
        let mut lens: Vec<usize> = batch.iter().map(|t| t.ids.len()).collect();
        let (data, starts) = match &self.backend {
            Backend::Packed { bert, pool } => {
                let segments = segments(batch);
                pool.install(|| bert.forward(&segments, pool.current_num_threads()))
            }
            Backend::Portable { bert } => bert.forward(&segments(batch))?,
            Backend::Padded { bert } => {
                let (data, len) = bert.forward_padded(&segments(batch), self.pad_id)?;
                (data, (0..batch.len()).map(|row| row * len).collect())
            }
            Backend::Candle { bert, device, .. } => {
                // Padded rows: each text starts at a multiple of the longest length.
                let (data, len) = self.forward_padded(bert, device, batch)?;
                (data, (0..batch.len()).map(|row| row * len).collect())
            }
        };
        if starts.len() == batch.len() + 1 {
            // The packed layout: each text's rows are exactly its offsets.
            lens = starts.windows(2).map(|w| w[1] - w[0]).collect();
        }
        Ok(HiddenStates {
            data,
            starts,
            lens,
            hidden: self.hidden,
        })
    }

    /// The stock candle forward pass on a batch padded to its longest text; returns the
    /// hidden states flattened `[batch, len, hidden]` and `len`.
    fn forward_padded(
        &self,
        bert: &BertModel,
        device: &Device,
        batch: &[&TokenizedText],
    ) -> candle_core::Result<(Vec<f32>, usize)> {
        let n = batch.len();
        let len = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; n * len];
        let mut type_ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, text) in batch.iter().enumerate() {
            let start = row * len;
            ids[start..start + text.ids.len()].copy_from_slice(&text.ids);
            type_ids[start..start + text.type_ids.len()].copy_from_slice(&text.type_ids);
            mask[start..start + text.ids.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), device)?;
        let type_ids = Tensor::from_vec(type_ids, (n, len), device)?;
        let mask = Tensor::from_vec(mask, (n, len), device)?;
        let hidden = bert.forward(&ids, &type_ids, Some(&mask))?;
        Ok((
            hidden
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            len,
        ))
    }
}

/// The family of the `model_type` in `config.json` (a config without one is read as BERT);
/// one this crate does not run is refused by name: another architecture may share BERT's
/// weight names and would load, then answer wrongly.
fn checked_architecture(config: &BertShape, config_path: &Path) -> Result<Arch, LoadError> {
    config
        .arch()
        .ok_or_else(|| crate::encoder::unsupported_model_type(config_path, config))
}

/// `tokenizer_config.json`'s `model_max_length` in `dir`, where it is a real limit (it is
/// often `1e30`-sized: "no limit of the tokenizer's own").
pub(crate) fn tokenizer_max_length(dir: &Path) -> Result<Option<usize>, LoadError> {
    #[derive(Deserialize, Default)]
    struct TokenizerConfig {
        /// A number, often `1e30`-sized: read as a float.
        model_max_length: Option<f64>,
    }
    let path = dir.join("tokenizer_config.json");
    let config: TokenizerConfig = if path.is_file() {
        read_json(&path)?
    } else {
        TokenizerConfig::default()
    };
    Ok(config
        .model_max_length
        .filter(|n| n.is_finite() && *n >= 1.0 && *n < 1e9)
        .map(|n| n as usize))
}

/// The most tokens a text may have: `options.max_seq_length`, else `default_max_len`,
/// capped at the positions the model's table holds (`max_position_embeddings`, less
/// `padding_idx + 1` for RoBERTa and MPNet). It must leave room for the special tokens and
/// the text (of each side, for `pairs`), and a BERT pair model needs two token types.
fn checked_max_len(
    config: &BertShape,
    arch: Arch,
    config_path: &Path,
    options: &TextOptions,
    default_max_len: Option<usize>,
    pairs: bool,
) -> Result<usize, LoadError> {
    let max_len = options
        .max_seq_length
        .or(default_max_len)
        .unwrap_or(usize::MAX)
        .min(arch::max_tokens(config, arch));
    let least = if pairs { 5 } else { 2 };
    if max_len < least {
        return Err(LoadError::config(
            config_path,
            format!(
                "max sequence length {max_len} leaves no room for the special tokens and the text; it must be at least {least}"
            ),
        ));
    }
    if pairs && arch.token_types() && config.type_vocab_size < 2 {
        return Err(LoadError::Unsupported {
            path: config_path.to_path_buf(),
            what: format!(
                "text pairs on a model with {} token type(s); a pair model needs type_vocab_size >= 2",
                config.type_vocab_size
            ),
        });
    }
    Ok(max_len)
}

/// `tokenizer.json` of `dir`, without padding, cutting texts at `max_len` tokens when
/// `truncate` is set.
fn load_tokenizer(dir: &Path, truncate: bool, max_len: usize) -> Result<Tokenizer, LoadError> {
    let tokenizer_path = require(dir.join("tokenizer.json"), "the tokenizer")?;
    let tokenizer_error = |e: tokenizers::Error| LoadError::Tokenizer {
        path: tokenizer_path.clone(),
        message: e.to_string(),
    };
    let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(tokenizer_error)?;
    tokenizer.with_padding(None);
    let truncation = truncate.then(|| TruncationParams {
        max_length: max_len,
        ..TruncationParams::default()
    });
    tokenizer
        .with_truncation(truncation)
        .map_err(tokenizer_error)?;
    Ok(tokenizer)
}

impl Backend {
    /// The forward pass `options.engine` asks for, from `weights`: [`Engine::Auto`] and
    /// [`Engine::Packed`] are the fused kernels on the CPU in f32, the portable encoder
    /// elsewhere.
    fn load(
        weights: &Path,
        config: &BertShape,
        arch: Arch,
        config_path: &Path,
        options: &TextOptions,
    ) -> Result<Self, LoadError> {
        let fast_cpu = options.device.is_cpu() && options.dtype == DType::F32;
        let engine = match options.engine {
            Engine::Auto | Engine::Packed if fast_cpu => Engine::Packed,
            Engine::Auto | Engine::Packed => Engine::PackedPortable,
            other => other,
        };
        if options.precision != Precision::F32 && engine != Engine::Packed {
            return Err(LoadError::config(
                config_path,
                format!(
                    "precision {} runs on the packed CPU engine only (device cpu, dtype f32, engine auto or packed); this model loads on {engine:?} with dtype {:?}",
                    options.precision, options.dtype
                ),
            ));
        }
        if engine == Engine::Candle && arch != Arch::Bert {
            return Err(LoadError::Unsupported {
                path: config_path.to_path_buf(),
                what: format!(
                    "engine Candle (candle-transformers' BertModel) for model_type `{}`; it runs BERT only: use Engine::Padded for padded batches",
                    arch.name()
                ),
            });
        }
        Ok(match engine {
            Engine::PackedPortable | Engine::Padded => {
                let act = crate::encoder::activation(weights, config)?;
                let bert =
                    PortableBert::load(weights, config, act, &options.device, options.dtype)?;
                if engine == Engine::Padded {
                    Backend::Padded { bert }
                } else {
                    Backend::Portable { bert }
                }
            }
            Engine::Packed => {
                let threads = options.threads.unwrap_or_else(default_threads);
                // The whole forward pass runs inside this pool, so its parallel parts fork
                // and join among the pool's threads instead of waking them from outside.
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("modelhost-encoder-{i}"))
                    .build()
                    .map_err(|e| LoadError::config(config_path, e))?;
                let bert = PackedBert::load(weights, config, options.precision)?;
                tracing::info!(
                    weights = %weights.display(),
                    precision = %bert.precision(),
                    isa = %bert.isa(),
                    threads,
                    "packed encoder loaded"
                );
                if let Some(problem) = crate::encoder::isa::env_problem() {
                    tracing::warn!("{problem}");
                }
                Backend::Packed { bert, pool }
            }
            _ => {
                let vb = crate::formats::var_builder(weights, options.dtype, &options.device)?;
                let candle_config: BertConfig = read_json(config_path)?;
                Backend::Candle {
                    bert: Box::new(
                        BertModel::load(vb, &candle_config)
                            .map_err(|e| LoadError::weights(weights, e))?,
                    ),
                    device: options.device.clone(),
                    dtype: options.dtype,
                }
            }
        })
    }
}

/// `RAYON_NUM_THREADS` when set to a positive number, else the number of cores.
fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The token ids of a batch as the packed encoders take them.
fn segments<'t>(batch: &[&'t TokenizedText]) -> Vec<Segment<'t>> {
    batch
        .iter()
        .map(|t| Segment {
            ids: &t.ids,
            type_ids: &t.type_ids,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair rule applied to the whole texts' lengths, as Python's tokenizers does.
    fn whole_then_truncated(encoder: &TextEncoder, first: &str, second: &str) -> Vec<u32> {
        let a = encoder.probe.encode(first, false).unwrap();
        let b = encoder.probe.encode(second, false).unwrap();
        let params = encoder.tokenizer.get_truncation().unwrap();
        let added = encoder
            .tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        let params = TruncationParams {
            max_length: params.max_length - added,
            ..params.clone()
        };
        let (mut a, mut b) = tokenizers::truncate_encodings(a, Some(b), &params).unwrap();
        // Without their cut-off pieces (merged piece by piece, they exhaust the memory).
        a.get_overflowing_mut().clear();
        if let Some(b) = b.as_mut() {
            b.get_overflowing_mut().clear();
        }
        encoder
            .probe
            .post_process(a, b, true)
            .unwrap()
            .get_ids()
            .to_vec()
    }

    #[test]
    fn pairs_are_cut_as_from_their_whole_lengths_below_the_cap() {
        for family in ["roberta", "distilbert", "mpnet", "xlm-roberta"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/arch")
                .join(family)
                .join("rerank");
            let loaded =
                TextEncoder::load(&dir, &TextOptions::default(), None, false, true).unwrap();
            let encoder = loaded.encoder;
            // Lengths around the budget's half, both orders, ties; and both past the cap,
            // where the text with more bytes (here also more tokens) is the longer.
            for (x, y) in [
                (3, 5),
                (20, 40),
                (30, 31),
                (31, 31),
                (40, 90),
                (90, 40),
                (33, 400),
                (900, 2000),
                (20000, 9000),
            ] {
                let first = "alpha ".repeat(x);
                let second = "beta ".repeat(y);
                // Through the request path: each text cut to a prefix first.
                let ours = encoder.tokenize("pair", &first, Some(&second)).unwrap();
                assert_eq!(
                    ours.ids(),
                    whole_then_truncated(&encoder, &first, &second),
                    "{family} {x} {y}"
                );
                assert!(ours.len() <= encoder.max_len());
            }
        }
    }

    #[test]
    fn a_truncated_pair_keeps_one_overflowing_piece_per_text_not_their_product() {
        // Every cut-off piece of each text used to stay, and post-processing merged each
        // piece of one with each of the other: two 1 MiB texts exhausted the memory.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch/roberta/rerank");
        let loaded = TextEncoder::load(&dir, &TextOptions::default(), None, false, true).unwrap();
        let text = "word ".repeat(5000);
        let encoding = loaded.encoder.encode_pair(&text, &text, false).unwrap();
        assert_eq!(encoding.len(), loaded.encoder.max_len());
        let overflowing = encoding.get_overflowing().len();
        assert!(
            (1..=3).contains(&overflowing),
            "{overflowing} overflowing encodings"
        );
    }
}
