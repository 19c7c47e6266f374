//! Sentence embeddings from a sentence-transformers directory (BERT family).
//!
//! [`SentenceEmbedder::load`] reads the directory as sentence-transformers writes it:
//!
//! | file | used for |
//! |---|---|
//! | `modules.json` | the pipeline: `Transformer` → `Pooling` → optional `Normalize` |
//! | `config.json` | the BERT configuration |
//! | `model.safetensors` (or `pytorch_model.bin`, ...: [`find_weights`](crate::formats::find_weights)) | the weights (safetensors memory-mapped) |
//! | `tokenizer.json` | the tokenizer (its own padding and truncation are replaced) |
//! | `sentence_bert_config.json` | `max_seq_length`, `do_lower_case` |
//! | `1_Pooling/config.json` | CLS / mean / max / mean-sqrt-len pooling |
//!
//! A directory without `modules.json` is read as a plain Hugging Face BERT model with mean
//! pooling and no normalisation, as sentence-transformers itself does.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::text::{EmbedderOptions, Engine, TextTokens, TokenizedText};
use super::text::{TextEncoder, TextOptions};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
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

/// A BERT-family sentence embedder loaded from a sentence-transformers directory.
///
/// `Input` is a `String`, `Output` an [`Embedding`]. Serve it with a
/// [`Predictor`](crate::Predictor) to batch concurrent requests.
pub struct SentenceEmbedder {
    name: String,
    encoder: TextEncoder,
    pooling: Vec<Pooling>,
    normalize: bool,
    truncate: bool,
    dim: usize,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_len", &self.encoder.max_len())
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

/// The directory of a module whose `modules.json` entry has `path`: refused unless it is
/// a relative path inside the model directory `dir` — no `..`, no absolute path, and no
/// symbolic link leading out of it (checked on the resolved paths when it exists).
fn module_dir(dir: &Path, modules_path: &Path, path: &str) -> Result<PathBuf, LoadError> {
    use std::path::Component;
    let refuse = |why: &str| {
        LoadError::config(
            modules_path,
            format!(
                "module path `{path}` {why}; a module path must be a relative path inside the model directory"
            ),
        )
    };
    let relative = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !relative {
        return Err(refuse("is absolute or climbs out with `..`"));
    }
    let module_dir = dir.join(path);
    if let Ok(resolved) = module_dir.canonicalize() {
        let root = dir.canonicalize().map_err(|e| LoadError::io(dir, e))?;
        if !resolved.starts_with(&root) {
            return Err(refuse(&format!(
                "resolves to {}, outside the model directory {}",
                resolved.display(),
                root.display()
            )));
        }
    }
    Ok(module_dir)
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
        let module_dir = module_dir(dir, &modules_path, &module.path)?;
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
    pub fn load_with(dir: impl AsRef<Path>, options: TextOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let pipeline = read_pipeline(dir)?;
        let tdir = &pipeline.transformer_dir;

        let st_config: SentenceBertConfig = match tdir.join("sentence_bert_config.json") {
            p if p.is_file() => read_json(&p)?,
            _ => SentenceBertConfig::default(),
        };
        let loaded = TextEncoder::load(
            tdir,
            &options,
            st_config.max_seq_length,
            st_config.do_lower_case,
            false,
        )?;
        let encoder = loaded.encoder;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sentence-embedder".into());
        Ok(SentenceEmbedder {
            name,
            dim: encoder.hidden() * pipeline.pooling.len(),
            encoder,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            truncate: options.truncate,
        })
    }

    /// Dimensions of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The most tokens (special tokens included) a text may have.
    pub fn max_seq_length(&self) -> usize {
        self.encoder.max_len()
    }

    /// The pooling modes, in the order their vectors are concatenated.
    pub fn pooling(&self) -> &[Pooling] {
        &self.pooling
    }

    /// The forward pass in use ([`Engine::Packed`], [`Engine::PackedPortable`] or
    /// [`Engine::Candle`]).
    pub fn engine(&self) -> Engine {
        self.encoder.engine()
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Tokenizes one text as the embedder will see it.
    pub fn tokenize(&self, text: &str) -> Result<TokenizedText, InputError> {
        self.encoder.tokenize("text", text, None)
    }

    /// Each token of one text as the embedder reads it (special tokens included), with
    /// its text and byte offsets, and whether the text was cut to
    /// [`max_seq_length`](Self::max_seq_length): what a tokenize endpoint lists and what
    /// token counts are made of. Refused as [`tokenize`](Self::tokenize) refuses.
    pub fn tokens(&self, text: &str) -> Result<TextTokens, InputError> {
        self.encoder.tokens("text", text, None)
    }

    /// Embeds a batch of tokenized texts with the loaded engine.
    pub fn embed_batch(&self, batch: &[TokenizedText]) -> Result<Vec<Embedding>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        let h = self.encoder.hidden();
        Ok((0..hidden.len())
            .map(|i| {
                let mut v = pool_rows(hidden.text(i), h, &self.pooling);
                if self.normalize {
                    l2_normalize(&mut v);
                }
                Embedding(v)
            })
            .collect())
    }
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
        prepared.len()
    }

    fn batch_cost(&self) -> BatchCost {
        self.encoder.batch_cost()
    }

    fn run_batch(&self, batch: &[TokenizedText]) -> Result<BatchOutputs<Embedding>, RuntimeError> {
        Ok(self.embed_batch(batch)?.into_iter().map(Ok).collect())
    }
}
