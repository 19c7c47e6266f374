//! Sentence embeddings from a sentence-transformers directory (BERT family).
//!
//! [`SentenceEmbedder::load`] reads the directory as sentence-transformers writes it:
//!
//! | file | used for |
//! |---|---|
//! | `modules.json` | the pipeline: `Transformer` → `Pooling` → optional `Normalize` |
//! | `config.json` | the BERT configuration |
//! | `model.safetensors` | the weights (memory-mapped); or `pytorch_model.bin`, read by [`formats`](crate::formats) without running its pickle |
//! | `tokenizer.json` | the tokenizer (its own padding and truncation are replaced) |
//! | `sentence_bert_config.json` | `max_seq_length`, `do_lower_case` |
//! | `1_Pooling/config.json` | CLS / mean / max / mean-sqrt-len pooling |
//!
//! A directory without `modules.json` is read as a plain Hugging Face BERT model with mean
//! pooling and no normalisation, as sentence-transformers itself does.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::encoder::{BertShape, PackedBert, PortableBert, Segment};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// A sentence embedding: one vector per text.
#[derive(Debug, Clone, PartialEq)]
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

impl crate::CacheWeight for Embedding {
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

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// The first token's (`[CLS]`) vector.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
    /// The mean over the tokens.
    Mean,
    /// The sum over the tokens divided by the square root of their number.
    MeanSqrtLen,
}

/// A text after tokenization: what the embedder queues and batches. Only
/// [`SentenceEmbedder::tokenize`] makes one, so it always holds between 1 and
/// `max_seq_length` tokens with ids inside the model's vocabulary and one type id each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
}

impl TokenizedText {
    /// Token ids, special tokens included.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Token type (segment) ids, one per token.
    pub fn type_ids(&self) -> &[u32] {
        &self.type_ids
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true for a text the embedder tokenized (it has at least one token).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Options for [`SentenceEmbedder::load_with`].
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Cut texts longer than the maximum sequence length (as sentence-transformers does).
    /// When `false`, such a text is refused with [`InputError::TooLong`]. Default `true`.
    pub truncate: bool,
    /// Override `max_seq_length` from `sentence_bert_config.json`; it is always capped at the
    /// model's `max_position_embeddings`.
    pub max_seq_length: Option<usize>,
    /// The device to run on (default: CPU).
    pub device: Device,
    /// The forward pass (default [`Engine::Auto`]).
    pub engine: Engine,
    /// The dtype of the weights and activations (default f32; f16 and bf16 for GPUs — on
    /// the CPU they run through the portable path and are slower, not faster).
    pub dtype: DType,
    /// Threads for the CPU forward pass. `None`: `RAYON_NUM_THREADS` if set, else one per
    /// core.
    pub threads: Option<usize>,
}

/// Which forward pass computes the embeddings.
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
    /// candle-transformers' stock `BertModel` on padded batches (any device).
    Candle,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            truncate: true,
            max_seq_length: None,
            device: Device::Cpu,
            engine: Engine::Auto,
            dtype: DType::F32,
            threads: None,
        }
    }
}

/// A BERT-family sentence embedder loaded from a sentence-transformers directory.
///
/// `Input` is a `String`, `Output` an [`Embedding`]. Serve it with a
/// [`Predictor`](crate::Predictor) to batch concurrent requests.
pub struct SentenceEmbedder {
    name: String,
    tokenizer: Tokenizer,
    backend: Backend,
    pad_id: u32,
    vocab_size: usize,
    pooling: Vec<Pooling>,
    normalize: bool,
    lowercase: bool,
    max_len: usize,
    truncate: bool,
    dim: usize,
}

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
    Candle {
        bert: BertModel,
        device: Device,
    },
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_len", &self.max_len)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("truncate", &self.truncate)
            .field("engine", &self.engine())
            .finish()
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

/// The pipeline read from `modules.json`.
struct Pipeline {
    transformer_dir: PathBuf,
    pooling: Vec<Pooling>,
    normalize: bool,
}

fn read_pipeline(dir: &Path) -> Result<Pipeline, LoadError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(Pipeline {
            transformer_dir: dir.to_path_buf(),
            pooling: vec![Pooling::Mean],
            normalize: false,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let mut transformer_dir = None;
    let mut pooling = None;
    let mut normalize = false;
    for module in &modules {
        let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
        let module_dir = dir.join(&module.path);
        match kind {
            "Transformer" if transformer_dir.is_none() => transformer_dir = Some(module_dir),
            "Pooling" if pooling.is_none() => pooling = Some(read_pooling(&module_dir)?),
            "Normalize" => normalize = true,
            _ => {
                return Err(LoadError::Unsupported {
                    path: modules_path,
                    what: format!(
                        "module `{}`; supported pipelines are Transformer, Pooling and an optional Normalize",
                        module.kind
                    ),
                });
            }
        }
    }
    let transformer_dir = transformer_dir.ok_or_else(|| {
        LoadError::config(
            &modules_path,
            "no sentence_transformers.models.Transformer module",
        )
    })?;
    Ok(Pipeline {
        transformer_dir,
        pooling: pooling.unwrap_or_else(|| vec![Pooling::Mean]),
        normalize,
    })
}

fn read_pooling(module_dir: &Path) -> Result<Vec<Pooling>, LoadError> {
    let path = require(
        module_dir.join("config.json"),
        "the Pooling module's configuration",
    )?;
    let cfg: PoolingConfig = read_json(&path)?;
    if cfg.pooling_mode_weightedmean_tokens || cfg.pooling_mode_lasttoken {
        return Err(LoadError::Unsupported {
            path,
            what: "weighted-mean and last-token pooling; supported modes are cls, max, mean and mean_sqrt_len".into(),
        });
    }
    // sentence-transformers concatenates the enabled modes in this order.
    let modes: Vec<Pooling> = [
        (cfg.pooling_mode_cls_token, Pooling::Cls),
        (cfg.pooling_mode_max_tokens, Pooling::Max),
        (cfg.pooling_mode_mean_tokens, Pooling::Mean),
        (cfg.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode))
    .collect();
    if modes.is_empty() {
        return Err(LoadError::config(
            &path,
            "no pooling mode is enabled; enable one of pooling_mode_cls_token, pooling_mode_mean_tokens, pooling_mode_max_tokens, pooling_mode_mean_sqrt_len_tokens",
        ));
    }
    Ok(modes)
}

impl SentenceEmbedder {
    /// Loads a sentence-transformers directory with default options (truncation on, CPU).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, EmbedderOptions::default())
    }

    /// Loads a sentence-transformers directory.
    pub fn load_with(dir: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let pipeline = read_pipeline(dir)?;
        let tdir = &pipeline.transformer_dir;

        let config_path = require(tdir.join("config.json"), "the model configuration")?;
        // The shape every engine needs; the candle engine parses its own config below.
        let config: BertShape = read_json(&config_path)?;
        let st_config: SentenceBertConfig = match tdir.join("sentence_bert_config.json") {
            p if p.is_file() => read_json(&p)?,
            _ => SentenceBertConfig::default(),
        };
        let max_len = options
            .max_seq_length
            .or(st_config.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        if max_len < 2 {
            return Err(LoadError::config(
                &config_path,
                format!(
                    "max sequence length {max_len} leaves no room for a token; it must be at least 2"
                ),
            ));
        }

        let tokenizer_path = require(tdir.join("tokenizer.json"), "the tokenizer")?;
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| LoadError::Tokenizer {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        let truncation = options.truncate.then(|| TruncationParams {
            max_length: max_len,
            ..TruncationParams::default()
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| LoadError::Tokenizer {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;

        let weights = crate::formats::find_weights(tdir)?;
        let fast_cpu = options.device.is_cpu() && options.dtype == DType::F32;
        let engine = match options.engine {
            Engine::Auto | Engine::Packed if fast_cpu => Engine::Packed,
            Engine::Auto | Engine::Packed => Engine::PackedPortable,
            other => other,
        };
        let backend = match engine {
            Engine::PackedPortable => {
                let act = crate::encoder::activation(&weights, &config)?;
                Backend::Portable {
                    bert: PortableBert::load(
                        &weights,
                        &config,
                        act,
                        &options.device,
                        options.dtype,
                    )?,
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
                    .map_err(|e| LoadError::config(&config_path, e))?;
                Backend::Packed {
                    bert: PackedBert::load(&weights, &config)?,
                    pool,
                }
            }
            _ => {
                let vb = crate::formats::var_builder(&weights, options.dtype, &options.device)?;
                let candle_config: BertConfig = read_json(&config_path)?;
                Backend::Candle {
                    bert: BertModel::load(vb, &candle_config)
                        .map_err(|e| LoadError::weights(&weights, e))?,
                    device: options.device.clone(),
                }
            }
        };

        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sentence-embedder".into());
        Ok(SentenceEmbedder {
            name,
            tokenizer,
            backend,
            pad_id: config.pad_token_id as u32,
            vocab_size: config.vocab_size,
            dim: config.hidden_size * pipeline.pooling.len(),
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            lowercase: st_config.do_lower_case,
            max_len,
            truncate: options.truncate,
        })
    }

    /// Dimensions of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The most tokens (special tokens included) a text may have.
    pub fn max_seq_length(&self) -> usize {
        self.max_len
    }

    /// The pooling modes, in the order their vectors are concatenated.
    pub fn pooling(&self) -> &[Pooling] {
        &self.pooling
    }

    /// The forward pass in use ([`Engine::Packed`] or [`Engine::Candle`]).
    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Packed { .. } => Engine::Packed,
            Backend::Portable { .. } => Engine::PackedPortable,
            Backend::Candle { .. } => Engine::Candle,
        }
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Tokenizes one text as the embedder will see it.
    pub fn tokenize(&self, text: &str) -> Result<TokenizedText, InputError> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| InputError::Tokenize {
                message: e.to_string(),
            })?;
        let tokens = encoding.len();
        if tokens > self.max_len {
            return Err(InputError::TooLong {
                tokens,
                max: self.max_len,
            });
        }
        if tokens == 0 {
            return Err(InputError::Invalid {
                field: "text".into(),
                reason: "the tokenizer produced no tokens for it (and adds no special tokens); give a non-empty text".into(),
            });
        }
        if let Some(&id) = encoding
            .get_ids()
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(InputError::Invalid {
                field: "text".into(),
                reason: format!(
                    "the tokenizer produced token id {id}, outside the model's vocabulary of {} (tokenizer.json and config.json disagree)",
                    self.vocab_size
                ),
            });
        }
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    /// Embeds a batch of tokenized texts with the loaded engine.
    pub fn embed_batch(&self, batch: &[TokenizedText]) -> Result<Vec<Embedding>, RuntimeError> {
        let h = self.dim / self.pooling.len();
        let mut pooled = Vec::with_capacity(batch.len());
        match &self.backend {
            Backend::Packed { bert, pool } => {
                let segments = segments(batch);
                let (hidden, offsets) =
                    pool.install(|| bert.forward(&segments, pool.current_num_threads()));
                pool_packed(&mut pooled, &hidden, &offsets, h, &self.pooling);
            }
            Backend::Portable { bert } => {
                let (hidden, offsets) = bert.forward(&segments(batch))?;
                pool_packed(&mut pooled, &hidden, &offsets, h, &self.pooling);
            }
            Backend::Candle { bert, device } => {
                let (hidden, len) = self.forward_padded(bert, device, batch)?;
                for (row, text) in batch.iter().enumerate() {
                    let start = row * len * h;
                    let rows = &hidden[start..start + text.ids.len() * h];
                    pooled.push(pool_rows(rows, h, &self.pooling));
                }
            }
        }
        if self.normalize {
            pooled.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok(pooled.into_iter().map(Embedding).collect())
    }

    /// The stock candle forward pass on a batch padded to its longest text; returns the
    /// hidden states flattened `[batch, len, hidden]` and `len`.
    fn forward_padded(
        &self,
        bert: &BertModel,
        device: &Device,
        batch: &[TokenizedText],
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

/// `RAYON_NUM_THREADS` when set to a positive number, else the number of cores.
fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pools each text of a packed `[tokens, hidden]` matrix (rows `offsets[i]..offsets[i+1]`).
fn pool_packed(
    out: &mut Vec<Vec<f32>>,
    hidden: &[f32],
    offsets: &[usize],
    h: usize,
    modes: &[Pooling],
) {
    for w in offsets.windows(2) {
        out.push(pool_rows(&hidden[w[0] * h..w[1] * h], h, modes));
    }
}

/// The token ids of a batch as the packed encoders take them.
fn segments(batch: &[TokenizedText]) -> Vec<Segment<'_>> {
    batch
        .iter()
        .map(|t| Segment {
            ids: &t.ids,
            type_ids: &t.type_ids,
        })
        .collect()
}

/// Pools the token vectors of one text (`rows`: `[tokens, hidden]`) into one vector,
/// concatenating the modes in order, as sentence-transformers' `Pooling` does.
fn pool_rows(rows: &[f32], hidden: usize, modes: &[Pooling]) -> Vec<f32> {
    let tokens = rows.len() / hidden;
    let mut out = Vec::with_capacity(hidden * modes.len());
    let sum = || {
        let mut acc = vec![0f32; hidden];
        for row in rows.chunks_exact(hidden) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
        acc
    };
    // sentence-transformers clamps the token count at 1e-9 before dividing.
    let count = (tokens as f32).max(1e-9);
    for mode in modes {
        match mode {
            Pooling::Cls => out.extend_from_slice(&rows[..hidden.min(rows.len())]),
            Pooling::Max => {
                let mut acc = vec![f32::NEG_INFINITY; hidden];
                for row in rows.chunks_exact(hidden) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(*v));
                }
                out.extend(acc);
            }
            Pooling::Mean => out.extend(sum().into_iter().map(|v| v / count)),
            Pooling::MeanSqrtLen => out.extend(sum().into_iter().map(|v| v / count.sqrt())),
        }
    }
    out
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

impl Model for SentenceEmbedder {
    type Input = String;
    type Prepared = TokenizedText;
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

    fn warmup_inputs(&self) -> Vec<String> {
        vec![
            "warm-up".to_string(),
            "A longer warm-up sentence, so that a batch of two texts of different lengths runs once.".to_string(),
        ]
    }

    fn prepare(&self, text: String) -> Result<TokenizedText, InputError> {
        self.tokenize(&text)
    }

    fn cost(&self, prepared: &TokenizedText) -> usize {
        prepared.ids.len()
    }

    fn run_batch(&self, batch: &[TokenizedText]) -> Result<BatchOutputs<Embedding>, RuntimeError> {
        Ok(self.embed_batch(batch)?.into_iter().map(Ok).collect())
    }
}
