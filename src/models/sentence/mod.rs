//! Sentence embeddings from a sentence-transformers directory (BERT family).
//!
//! [`SentenceEmbedder::load`] reads the directory as sentence-transformers writes it, in
//! the classic layout (2.x–5.x, what Hub models carry) and in the one 6.x's `save()`
//! writes ([`Layout`]):
//!
//! | file | used for |
//! |---|---|
//! | `modules.json` | the pipeline: `Transformer` → `Pooling` → any sequence of `Dense` and `Normalize` |
//! | `config.json` | the BERT configuration |
//! | `model.safetensors` (or `pytorch_model.bin`, ...: [`find_weights`](crate::formats::find_weights)) | the weights (safetensors memory-mapped) |
//! | `tokenizer.json` | the tokenizer (its own padding and truncation are replaced) |
//! | `sentence_bert_config.json` | `max_seq_length`, `do_lower_case` (classic); the module's task and modality (6.x) |
//! | `tokenizer_config.json` | `model_max_length`: the maximum sequence length where `sentence_bert_config.json` gives none (6.x keeps it here) |
//! | `1_Pooling/config.json` | the [`Pooling`] modes (`pooling_mode_*` flags, or 6.x's `pooling_mode`), `include_prompt` |
//! | `2_Dense/config.json` + weights | a linear layer and its activation (`in_features`, `out_features`, `bias`, `activation_function`) |
//! | `config_sentence_transformers.json` | `prompts`, `default_prompt_name`, `truncate_dim` |
//!
//! A directory without `modules.json` is read as a plain Hugging Face BERT model with mean
//! pooling and no normalisation, as sentence-transformers itself does.
//!
//! **Prompts.** A [`SentenceEmbedder`] takes `String`s and embeds each with the default
//! prompt ([`EmbedderOptions::prompt_name`], else the model's `default_prompt_name`, else
//! none). [`SentenceEmbedder::with_requests`] makes one that takes [`EmbedRequest`]s, which
//! may name a prompt or give one; the prompt is prepended to the text before tokenizing,
//! and with `include_prompt: false` its tokens are left out of pooling, as
//! sentence-transformers does.
//!
//! **`truncate_dim`** (Matryoshka models) keeps the first N dimensions of the pipeline's
//! output. As in sentence-transformers (`encode` truncates after the modules have run), a
//! `Normalize` module normalises the full vector *before* truncation, so a truncated
//! embedding is not unit length; cosine similarity is unaffected.
//!
//! ```no_run
//! use modelhost::Predictor;
//! use modelhost::models::sentence::{EmbedRequest, SentenceEmbedder};
//!
//! let embedder = SentenceEmbedder::load("models/multilingual-e5-small")?.with_requests();
//! let predictor = Predictor::builder(embedder).build()?;
//! let query = predictor.predict(EmbedRequest::new("how do cats sleep?").with_prompt_name("query"))?;
//! let doc = predictor.predict("Cats sleep up to 16 hours a day.".into())?; // the default prompt
//! println!("{:.3}", query.cosine(&doc));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dense;
mod pipeline;
mod pooling;
mod prompt;

use std::marker::PhantomData;
use std::path::Path;

use self::dense::Dense;
pub use self::pipeline::Layout;
use self::pipeline::StepKind;
pub use self::pooling::Pooling;
use self::pooling::pool;
use self::prompt::Prompts;
pub use self::prompt::{EmbedRequest, Prompt};
use super::text::{EmbedderOptions, Engine, TextTokens, TokenizedText};
use super::text::{TextEncoder, TextOptions};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::model::{BatchCost, BatchOutputs, DataType, Model, Signature, TensorSpec};

/// A sentence embedding: one vector per text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.0.len()
    }

    /// Cosine similarity with another embedding, in [-1, 1]; 0 when either is all zeros or
    /// the dimensions differ.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        if self.dim() != other.dim() {
            return 0.0;
        }
        let (mut dot, mut a2, mut b2) = (0f64, 0f64, 0f64);
        for (a, b) in self.0.iter().zip(&other.0) {
            let (a, b) = (f64::from(*a), f64::from(*b));
            dot += a * b;
            a2 += a * a;
            b2 += b * b;
        }
        if a2 == 0.0 || b2 == 0.0 {
            0.0
        } else {
            (dot / (a2.sqrt() * b2.sqrt())) as f32
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// The values, owned.
    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }
}

impl crate::cache::CacheWeight for Embedding {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>() + 4 * self.0.len()
    }
}

impl std::ops::Deref for Embedding {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0
    }
}

/// A text tokenized for a [`SentenceEmbedder`]: its tokens (the prompt's first, when the
/// request has one) and where pooling starts (after the `[CLS]` token and the prompt when
/// the model leaves the prompt out of pooling, else 0). What the embedder queues and
/// batches; it reads as its [`TokenizedText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceTokens {
    tokens: TokenizedText,
    pooled_from: usize,
}

impl SentenceTokens {
    /// The tokens, special tokens and the prompt's included.
    pub fn tokens(&self) -> &TokenizedText {
        &self.tokens
    }

    /// The first token pooling reads (masked positions before it: `[CLS]` and the prompt
    /// when the pooling module has `include_prompt: false`).
    pub fn pooled_from(&self) -> usize {
        self.pooled_from
    }
}

impl std::ops::Deref for SentenceTokens {
    type Target = TokenizedText;

    fn deref(&self) -> &TokenizedText {
        &self.tokens
    }
}

impl std::borrow::Borrow<TokenizedText> for SentenceTokens {
    fn borrow(&self) -> &TokenizedText {
        &self.tokens
    }
}

/// A module after pooling.
enum Step {
    Dense(Dense),
    Normalize,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Dense(d) => d.fmt(f),
            Step::Normalize => f.write_str("Normalize"),
        }
    }
}

/// A BERT-family sentence embedder loaded from a sentence-transformers directory.
///
/// `Input` is `I`: a `String` (embedded with the default prompt) for the embedder
/// [`load`](SentenceEmbedder::load) returns, an [`EmbedRequest`] (which may name a
/// prompt) for one made by [`with_requests`](SentenceEmbedder::with_requests). `Output`
/// is an [`Embedding`]. Serve it with a [`Predictor`](crate::Predictor) to batch
/// concurrent requests.
pub struct SentenceEmbedder<I = String> {
    name: String,
    encoder: TextEncoder,
    layout: Layout,
    pooling: Vec<Pooling>,
    include_prompt: bool,
    steps: Vec<Step>,
    prompts: Prompts,
    truncate_dim: Option<usize>,
    truncate: bool,
    dim: usize,
    input: PhantomData<fn(I)>,
}

impl<I> std::fmt::Debug for SentenceEmbedder<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_len", &self.encoder.max_len())
            .field("layout", &self.layout)
            .field("pooling", &self.pooling)
            .field("include_prompt", &self.include_prompt)
            .field("steps", &self.steps)
            .field("prompts", &self.prompts.names())
            .field("truncate_dim", &self.truncate_dim)
            .field("truncate", &self.truncate)
            .field("engine", &self.engine())
            .finish()
    }
}

impl SentenceEmbedder {
    /// Loads a sentence-transformers directory with default options (truncation on, CPU).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, EmbedderOptions::default())
    }

    /// Loads a sentence-transformers directory.
    ///
    /// Besides the files' own errors: [`LoadError::InvalidOption`] for a
    /// [`truncate_dim`](TextOptions::truncate_dim) of 0 or past the pipeline's dimension
    /// and for a [`prompt_name`](TextOptions::prompt_name) the model does not have;
    /// [`LoadError::WrongShape`] for a `Dense` weight that does not match its
    /// configuration.
    pub fn load_with(dir: impl AsRef<Path>, options: TextOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let modules = pipeline::read_modules(dir)?;
        let tdir = &modules.transformer_dir;
        let transformer = pipeline::read_transformer(tdir)?;
        let model_config = pipeline::read_model_config(dir, options.prompt_name.as_deref())?;
        let loaded = TextEncoder::load(
            tdir,
            &options,
            transformer.max_seq_length,
            transformer.do_lower_case,
            false,
        )?;
        let encoder = loaded.encoder;
        let pooling = pipeline::read_pooling(modules.pooling_dir.as_deref(), encoder.hidden())?;
        let mut dim = encoder.hidden() * pooling.modes.len();
        let mut steps = Vec::with_capacity(modules.steps.len());
        for (kind, module_dir) in &modules.steps {
            steps.push(match kind {
                StepKind::Dense => {
                    let dense = Dense::load(module_dir, dim)?;
                    dim = dense.out_features();
                    Step::Dense(dense)
                }
                StepKind::Normalize => Step::Normalize,
            });
        }
        let truncate_dim = match (options.truncate_dim, model_config.truncate_dim) {
            (Some(n), _) if n == 0 || n > dim => {
                return Err(LoadError::InvalidOption {
                    option: "truncate_dim",
                    value: n.to_string(),
                    allowed: format!(
                        "1 to {dim}, the dimension of the model's embeddings (use None to keep them whole)"
                    ),
                });
            }
            (Some(n), _) => Some(n),
            (None, Some((n, path))) if n == 0 || n > dim => {
                return Err(LoadError::config(
                    path,
                    format!(
                        "truncate_dim is {n}; it must lie in 1..={dim}, the dimension of the model's embeddings"
                    ),
                ));
            }
            (None, config) => config.map(|(n, _)| n),
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sentence-embedder".into());
        Ok(SentenceEmbedder {
            name,
            dim: truncate_dim.unwrap_or(dim),
            encoder,
            layout: modules.layout,
            pooling: pooling.modes,
            include_prompt: pooling.include_prompt,
            steps,
            prompts: model_config.prompts,
            truncate_dim,
            truncate: options.truncate,
            input: PhantomData,
        })
    }

    /// Loads a sentence-transformers model by its Hugging Face Hub id (`org/name`),
    /// downloading what the cache lacks (feature `hub`; revision `main`, settings from the
    /// environment: see [`hub`](crate::hub)). The embedder is named after the repository.
    #[cfg(feature = "hub")]
    pub fn from_hub(repo_id: &str) -> Result<Self, LoadError> {
        Self::from_hub_with(
            repo_id,
            &crate::hub::HubOptions::default(),
            TextOptions::default(),
        )
    }

    /// [`from_hub`](Self::from_hub) with a revision, cache, endpoint, token or offline mode
    /// ([`HubOptions`](crate::hub::HubOptions)), and the options of
    /// [`load_with`](Self::load_with).
    #[cfg(feature = "hub")]
    pub fn from_hub_with(
        repo_id: &str,
        hub: &crate::hub::HubOptions,
        options: TextOptions,
    ) -> Result<Self, LoadError> {
        let snapshot = crate::hub::snapshot(repo_id, hub)?;
        let mut embedder = Self::load_with(snapshot.dir(), options)?;
        embedder.name = snapshot.name().to_string();
        Ok(embedder)
    }

    /// The same embedder taking [`EmbedRequest`]s, which can name a prompt per request;
    /// a `String` still converts into one (`predict(text.into())`).
    pub fn with_requests(self) -> SentenceEmbedder<EmbedRequest> {
        SentenceEmbedder {
            name: self.name,
            encoder: self.encoder,
            layout: self.layout,
            pooling: self.pooling,
            include_prompt: self.include_prompt,
            steps: self.steps,
            prompts: self.prompts,
            truncate_dim: self.truncate_dim,
            truncate: self.truncate,
            dim: self.dim,
            input: PhantomData,
        }
    }
}

impl<I> SentenceEmbedder<I> {
    /// Dimensions of the embeddings (after [`truncate_dim`](Self::truncate_dim)).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The most tokens (special tokens and the prompt's included) a text may have.
    pub fn max_seq_length(&self) -> usize {
        self.encoder.max_len()
    }

    /// The pooling modes, in the order their vectors are concatenated.
    pub fn pooling(&self) -> &[Pooling] {
        &self.pooling
    }

    /// Whether the prompt's tokens are pooled (the Pooling module's `include_prompt`).
    pub fn includes_prompt(&self) -> bool {
        self.include_prompt
    }

    /// Which sentence-transformers layout the directory has, and so which version's text
    /// handling applies.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The forward pass in use ([`Engine::Packed`], [`Engine::PackedPortable`] or
    /// [`Engine::Candle`]).
    pub fn engine(&self) -> Engine {
        self.encoder.engine()
    }

    /// What runs the forward pass: engine, precision, instruction-set level (detected at
    /// load, capped by `MODELHOST_ISA`), threads and the dense weights' bytes.
    pub fn engine_info(&self) -> crate::models::text::EngineInfo {
        self.encoder.engine_info()
    }

    /// Whether the module pipeline ends by L2-normalising (a `Normalize` module after the
    /// last `Dense`). With [`truncate_dim`](Self::truncate_dim) the truncated vector is
    /// no longer unit length, as in sentence-transformers.
    pub fn normalizes(&self) -> bool {
        matches!(self.steps.last(), Some(Step::Normalize))
    }

    /// The number of leading dimensions kept (Matryoshka), if any.
    pub fn truncate_dim(&self) -> Option<usize> {
        self.truncate_dim
    }

    /// The model's prompt names (`config_sentence_transformers.json`), sorted.
    pub fn prompt_names(&self) -> Vec<String> {
        self.prompts.names()
    }

    /// The text of the prompt `name`, if the model has it.
    pub fn prompt(&self, name: &str) -> Option<&str> {
        self.prompts.by_name.get(name).map(String::as_str)
    }

    /// The name of the prompt used when a request names none, if any.
    pub fn default_prompt_name(&self) -> Option<&str> {
        self.prompts.default_name.as_deref()
    }

    /// Tokenizes one text with the default prompt, as `predict(String)` does.
    pub fn tokenize(&self, text: &str) -> Result<SentenceTokens, InputError> {
        self.tokenize_with(text, &Prompt::Default)
    }

    /// Tokenizes one text with `prompt`, as the embedder will see it: the prompt is
    /// prepended, the result stripped of surrounding whitespace for a [`Layout::Classic`]
    /// directory, cut to [`max_seq_length`](Self::max_seq_length) (with truncation on).
    /// An unknown prompt name is [`InputError::UnknownPrompt`].
    pub fn tokenize_with(&self, text: &str, prompt: &Prompt) -> Result<SentenceTokens, InputError> {
        let prompt = self.prompts.resolve(prompt)?;
        let joined;
        let text = if prompt.is_empty() {
            text
        } else {
            joined = [prompt, text].concat();
            &joined
        };
        let tokens = self
            .encoder
            .tokenize("text", self.layout.text(text), None)
            .map_err(|e| match e {
                // The size of what the caller sent, not of its stripped form.
                InputError::TooManyBytes { field, max, .. } if prompt.is_empty() => {
                    InputError::TooManyBytes {
                        field,
                        bytes: text.len(),
                        max,
                    }
                }
                other => other,
            })?;
        let pooled_from = if self.include_prompt || prompt.is_empty() {
            0
        } else {
            self.prompt_length(prompt)?
        };
        if pooled_from >= tokens.len() {
            return Err(InputError::Invalid {
                field: "prompt".into(),
                reason: format!(
                    "it takes {pooled_from} of the {} tokens the model reads, and the model leaves the prompt out of pooling, so nothing is left to pool; use a shorter prompt",
                    tokens.len()
                ),
            });
        }
        Ok(SentenceTokens {
            tokens,
            pooled_from,
        })
    }

    /// The tokens sentence-transformers counts as the prompt's: the prompt tokenized
    /// alone (special tokens included, cut to the maximum length) less a trailing special
    /// token (`[SEP]`).
    fn prompt_length(&self, prompt: &str) -> Result<usize, InputError> {
        let tokens = self
            .encoder
            .tokens("prompt", self.layout.text(prompt), None)?;
        let trailing = tokens.tokens.last().is_some_and(|t| t.special);
        Ok(tokens.len() - usize::from(trailing))
    }

    /// Each token of one text as the embedder reads it without a prompt (special tokens
    /// included), with its text and byte offsets, and whether the text was cut to
    /// [`max_seq_length`](Self::max_seq_length): what a tokenize endpoint lists and what
    /// token counts are made of. Refused as [`tokenize`](Self::tokenize) refuses.
    pub fn tokens(&self, text: &str) -> Result<TextTokens, InputError> {
        self.encoder.tokens("text", text, None)
    }

    /// Embeds a batch of tokenized texts with the loaded engine: the encoder, then
    /// pooling, the `Dense` and `Normalize` modules in order, then `truncate_dim`.
    pub fn embed_batch(&self, batch: &[SentenceTokens]) -> Result<Vec<Embedding>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        let h = self.encoder.hidden();
        let cls = self.layout.cls_token();
        Ok(batch
            .iter()
            .enumerate()
            .take(hidden.len())
            .map(|(i, text)| {
                let mut v = pool(hidden.text(i), h, &self.pooling, text.pooled_from, cls);
                for step in &self.steps {
                    match step {
                        Step::Dense(dense) => v = dense.forward(&v),
                        Step::Normalize => l2_normalize(&mut v),
                    }
                }
                if let Some(n) = self.truncate_dim {
                    v.truncate(n);
                }
                Embedding(v)
            })
            .collect())
    }
}

/// Divides by the L2 norm (at least 1e-12, as `torch.nn.functional.normalize`).
fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12) as f32;
    v.iter_mut().for_each(|x| *x /= norm);
}

impl<I> Model for SentenceEmbedder<I>
where
    I: From<String> + Into<EmbedRequest> + Send + 'static,
{
    type Input = I;
    type Prepared = SentenceTokens;
    type Output = Embedding;

    fn signature(&self) -> Signature {
        Signature::new(self.name.clone())
            .input(TensorSpec::new("text", DataType::Bytes, [1]))
            .output(TensorSpec::new(
                "embedding",
                DataType::F32,
                [self.dim as i64],
            ))
    }

    fn warmup_inputs(&self) -> Vec<I> {
        vec![
            I::from("warm-up".to_string()),
            I::from("A longer warm-up sentence, so that a batch of two texts of different lengths runs once.".to_string()),
        ]
    }

    fn prepare(&self, input: I) -> Result<SentenceTokens, InputError> {
        let request: EmbedRequest = input.into();
        self.tokenize_with(&request.text, &request.prompt)
    }

    fn cost(&self, prepared: &SentenceTokens) -> usize {
        prepared.len()
    }

    fn batch_cost(&self) -> BatchCost {
        self.encoder.batch_cost()
    }

    fn run_batch(&self, batch: &[SentenceTokens]) -> Result<BatchOutputs<Embedding>, RuntimeError> {
        let embeddings = self.embed_batch(batch)?;
        if embeddings.len() != batch.len() {
            return Err(RuntimeError::OutputCount {
                got: embeddings.len(),
                expected: batch.len(),
            });
        }
        Ok(embeddings.into_iter().map(Ok).collect())
    }
}
