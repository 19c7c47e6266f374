//! Text classification heads on a BERT-family encoder: [`TextClassifier`] (one text → a
//! class) and [`CrossEncoder`] (a query and a passage → a relevance score).
//!
//! Both load a Hugging Face `*ForSequenceClassification` directory (BERT, RoBERTa,
//! XLM-RoBERTa, DistilBERT, MPNet) as `transformers` and sentence-transformers save it:
//!
//! | file | used for |
//! |---|---|
//! | `config.json` | the BERT configuration, `id2label`, `problem_type` and, for a cross-encoder saved by sentence-transformers, `sentence_transformers.activation_fn` |
//! | `model.safetensors` | encoder weights (with or without the `bert.`/`roberta.`/`distilbert.`/`mpnet.` prefix) and the head |
//! | `tokenizer.json` | the tokenizer; BERT pairs are `[CLS] query [SEP] passage [SEP]` with token types 0 and 1, RoBERTa's `<s> query </s></s> passage </s>` |
//! | `tokenizer_config.json` | `model_max_length`, the default maximum sequence length |
//!
//! The head reads the first token's vector: BERT's `classifier(tanh(pooler.dense(h)))`,
//! RoBERTa's and MPNet's `out_proj(tanh(dense(h)))` under `classifier.`, DistilBERT's
//! `classifier(relu(pre_classifier(h)))`; computed on the padding-free encoder's output
//! like the embedder's pooling.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::Classification;
use super::text::{TextEncoder, TextOptions, TextTokens, TokenizedText};
use crate::cache::CacheWeight;
use crate::encoder::Arch;
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::read_json;
use crate::model::{BatchCost, BatchOutputs, DataType, Model, Signature, TensorSpec};

/// The parts of `config.json` the head needs.
#[derive(Deserialize)]
struct HeadConfig {
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    problem_type: Option<String>,
}

#[derive(Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    activation_fn: Option<String>,
}

/// sentence-transformers' keys for a cross-encoder's activation in `config.json` (v4 moved
/// it from `sbert_ce_default_activation_function` into `sentence_transformers`; 6.x keeps
/// it in `config_sentence_transformers.json`, which is read first).
#[derive(Deserialize)]
struct CrossEncoderConfig {
    #[serde(default)]
    sentence_transformers: Option<SentenceTransformersConfig>,
    #[serde(default)]
    sbert_ce_default_activation_function: Option<String>,
}

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Softmax,
    Sigmoid,
    Identity,
}

/// A sequence-classification head on the first token's vector: a dense layer and its
/// activation (BERT's pooler, RoBERTa's and MPNet's `classifier.dense`, DistilBERT's
/// `pre_classifier`), then the output layer.
struct Head {
    pooler_weight: Vec<f32>,
    pooler_bias: Vec<f32>,
    /// ReLU (DistilBERT) instead of tanh.
    relu: bool,
    weight: Vec<f32>,
    bias: Vec<f32>,
    labels: Vec<String>,
}

/// `W · x + b` for a row-major `W` of `[b.len(), x.len()]`.
fn affine(weight: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
    bias.iter()
        .zip(weight.chunks_exact(x.len()))
        .map(|(b, row)| b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>())
        .collect()
}

/// Where a family's head lives: the dense layer, the output layer, whether the dense
/// layer's activation is ReLU (else tanh), and the names for error messages.
fn head_names(arch: Arch, vb: &VarBuilder) -> (String, &'static str, bool, &'static str) {
    match arch {
        Arch::Bert => {
            let pooler = if vb.contains_tensor("bert.pooler.dense.weight") {
                "bert.pooler.dense"
            } else {
                "pooler.dense"
            };
            (
                pooler.into(),
                "classifier",
                false,
                "`pooler.dense` and `classifier` (BERT's head)",
            )
        }
        Arch::Roberta | Arch::MpNet => (
            "classifier.dense".into(),
            "classifier.out_proj",
            false,
            "`classifier.dense` and `classifier.out_proj` (RoBERTa's and MPNet's head)",
        ),
        Arch::DistilBert => (
            "pre_classifier".into(),
            "classifier",
            true,
            "`pre_classifier` and `classifier` (DistilBERT's head)",
        ),
    }
}

impl Head {
    /// Reads `arch`'s head from the weights file and its labels from `config.json`.
    fn load(
        config_path: &Path,
        weights: &Path,
        arch: Arch,
        h: usize,
    ) -> Result<(Head, HeadConfig), LoadError> {
        let config: HeadConfig = read_json(config_path)?;
        let vb = crate::formats::var_builder(weights, DType::F32, &Device::Cpu)?;
        let (pooler, output, relu, needs) = head_names(arch, &vb);
        let missing = |e: candle_core::Error| {
            LoadError::weights(
                weights,
                format!("{e} (a sequence-classification model needs {needs} weights)"),
            )
        };
        let outputs = vb
            .pp(output)
            .get_unchecked("weight")
            .map(|w| w.dims().first().copied().unwrap_or(0))
            .map_err(missing)?;
        let labels = labels(config_path, &config, outputs)?;
        let get = |vb: &VarBuilder, dims: &[usize], name: &str| -> candle_core::Result<Vec<f32>> {
            vb.get(dims, name)?.flatten_all()?.to_vec1::<f32>()
        };
        let n = labels.len();
        let read = || -> candle_core::Result<Head> {
            let (pooler, output) = (vb.pp(&pooler), vb.pp(output));
            Ok(Head {
                pooler_weight: get(&pooler, &[h, h], "weight")?,
                pooler_bias: get(&pooler, &[h], "bias")?,
                relu,
                weight: get(&output, &[n, h], "weight")?,
                bias: get(&output, &[n], "bias")?,
                labels,
            })
        };
        let head = read().map_err(missing)?;
        Ok((head, config))
    }

    /// The pooled first-token vector the output layer reads.
    fn features(&self, cls: &[f32]) -> Vec<f32> {
        let mut pooled = affine(&self.pooler_weight, &self.pooler_bias, cls);
        if self.relu {
            pooled.iter_mut().for_each(|v| *v = v.max(0.0));
        } else {
            pooled.iter_mut().for_each(|v| *v = v.tanh());
        }
        pooled
    }

    fn logits(&self, cls: &[f32]) -> Vec<f32> {
        affine(&self.weight, &self.bias, &self.features(cls))
    }
}

/// Labels in id order from `id2label` (`num_labels` generic names when it is absent),
/// refused before any is made when there would be more than the classifier weight's
/// `outputs` (rows).
fn labels(
    config_path: &Path,
    config: &HeadConfig,
    outputs: usize,
) -> Result<Vec<String>, LoadError> {
    // transformers' PretrainedConfig defaults to two labels.
    let n = config
        .num_labels
        .unwrap_or(if config.id2label.is_empty() {
            2
        } else {
            config.id2label.len()
        })
        .max(config.id2label.len());
    if n == 0 {
        return Err(LoadError::config(
            config_path,
            "no labels: set `id2label` (or `num_labels`) to the classifier's outputs",
        ));
    }
    if n > outputs {
        return Err(LoadError::config(
            config_path,
            format!(
                "{n} labels (`num_labels` {:?}, {} in `id2label`), but the classifier weight has {outputs} outputs; at most {outputs} labels are allowed",
                config.num_labels,
                config.id2label.len()
            ),
        ));
    }
    let mut labels: Vec<String> = (0..n).map(|i| format!("LABEL_{i}")).collect();
    for (id, label) in &config.id2label {
        match id.parse::<usize>() {
            Ok(i) if i < n => labels[i] = label.clone(),
            _ => {
                return Err(LoadError::config(
                    config_path,
                    format!("`id2label` key `{id}` is not a class index in 0..{n}"),
                ));
            }
        }
    }
    Ok(labels)
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn model_name(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.into())
}

/// A BERT-family text classifier (`BertForSequenceClassification`): a text in, a
/// [`Classification`] out. Single-label models (`problem_type` absent or
/// `single_label_classification`) give softmax probabilities; multi-label models
/// (`multi_label_classification`) give an independent sigmoid probability per label, and
/// `label` is the most likely one.
pub struct TextClassifier {
    name: String,
    encoder: TextEncoder,
    head: Head,
    activation: Activation,
}

impl std::fmt::Debug for TextClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextClassifier")
            .field("name", &self.name)
            .field("labels", &self.head.labels)
            .field("activation", &self.activation)
            .field("max_len", &self.encoder.max_len())
            .finish_non_exhaustive()
    }
}

impl TextClassifier {
    /// Loads a sequence-classification model by its Hugging Face Hub id (`org/name`), downloading what the
    /// cache lacks (feature `hub`; see [`hub`](crate::hub)). Named after the repository.
    #[cfg(feature = "hub")]
    pub fn from_hub(repo_id: &str) -> Result<Self, LoadError> {
        Self::from_hub_with(
            repo_id,
            &crate::hub::HubOptions::default(),
            TextOptions::default(),
        )
    }

    /// [`from_hub`](Self::from_hub) with [`HubOptions`](crate::hub::HubOptions) and the
    /// options of [`load_with`](Self::load_with).
    #[cfg(feature = "hub")]
    pub fn from_hub_with(
        repo_id: &str,
        hub: &crate::hub::HubOptions,
        options: TextOptions,
    ) -> Result<Self, LoadError> {
        let snapshot = crate::hub::snapshot(repo_id, hub)?;
        let mut model = Self::load_with(snapshot.dir(), options)?;
        model.name = snapshot.name().to_string();
        Ok(model)
    }

    /// Loads a sequence-classification directory with default options (CPU, truncation).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, TextOptions::default())
    }

    /// Loads a sequence-classification directory.
    pub fn load_with(dir: impl AsRef<Path>, options: TextOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        options.refuse_embedder_options()?;
        let loaded = TextEncoder::load(dir, &options, None, false, false)?;
        let (head, config) = Head::load(
            &loaded.config_path,
            &loaded.weights,
            loaded.encoder.arch(),
            loaded.encoder.hidden(),
        )?;
        let activation = match config.problem_type.as_deref() {
            None | Some("single_label_classification") if head.labels.len() > 1 => {
                Activation::Softmax
            }
            Some("multi_label_classification") => Activation::Sigmoid,
            other => {
                return Err(LoadError::Unsupported {
                    path: loaded.config_path,
                    what: format!(
                        "a {}-output head with problem_type {other:?}; a text classifier needs single_label_classification with 2 or more labels or multi_label_classification (load a one-output relevance head with CrossEncoder)",
                        head.labels.len()
                    ),
                });
            }
        };
        Ok(TextClassifier {
            name: model_name(dir, "text-classifier"),
            encoder: loaded.encoder,
            head,
            activation,
        })
    }

    /// The class labels, in output order.
    pub fn labels(&self) -> &[String] {
        &self.head.labels
    }

    /// What runs the forward pass: engine, precision, instruction-set level, threads.
    pub fn engine_info(&self) -> crate::models::text::EngineInfo {
        self.encoder.engine_info()
    }

    /// The most tokens (special tokens included) a text may have.
    pub fn max_seq_length(&self) -> usize {
        self.encoder.max_len()
    }

    /// Tokenizes one text as the classifier will see it.
    pub fn tokenize(&self, text: &str) -> Result<TokenizedText, InputError> {
        self.encoder.tokenize("text", text, None)
    }

    /// Each token of one text as the classifier reads it (special tokens included), with
    /// its text and byte offsets, and whether the text was cut to
    /// [`max_seq_length`](Self::max_seq_length). Refused as [`tokenize`](Self::tokenize)
    /// refuses.
    pub fn tokens(&self, text: &str) -> Result<TextTokens, InputError> {
        self.encoder.tokens("text", text, None)
    }

    /// The pooled `[CLS]` vectors the classification layer reads, one per text: what to
    /// train a new head on.
    pub fn features(&self, batch: &[TokenizedText]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        Ok((0..hidden.len())
            .map(|i| self.head.features(hidden.first_token(i)))
            .collect())
    }

    /// Classifies a batch of tokenized texts.
    pub fn classify_batch(
        &self,
        batch: &[TokenizedText],
    ) -> Result<Vec<Classification>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        Ok((0..hidden.len())
            .map(|i| {
                let logits = self.head.logits(hidden.first_token(i));
                let scores = match self.activation {
                    Activation::Softmax => softmax(&logits),
                    _ => logits.into_iter().map(sigmoid).collect(),
                };
                Classification::from_scores(scores, &self.head.labels)
            })
            .collect())
    }
}

impl Model for TextClassifier {
    type Input = String;
    type Prepared = TokenizedText;
    type Output = Classification;

    fn signature(&self) -> Signature {
        Signature::new(self.name.clone())
            .input(TensorSpec::new("text", DataType::Bytes, [1]))
            .output(TensorSpec::new(
                "probabilities",
                DataType::F32,
                [self.head.labels.len() as i64],
            ))
    }

    fn warmup_inputs(&self) -> Vec<String> {
        vec![
            "warm-up".into(),
            "A second, somewhat longer warm-up text.".into(),
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

    fn run_batch(
        &self,
        batch: &[TokenizedText],
    ) -> Result<BatchOutputs<Classification>, RuntimeError> {
        Ok(self.classify_batch(batch)?.into_iter().map(Ok).collect())
    }
}

/// A query and a passage, scored together by a [`CrossEncoder`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextPair {
    /// The query (first segment).
    pub query: String,
    /// The passage (second segment).
    pub passage: String,
}

/// A pair used as a cache key counts both texts against the cache's byte bound.
impl CacheWeight for TextPair {
    fn cache_weight(&self) -> usize {
        self.query.cache_weight() + self.passage.cache_weight()
    }
}

impl TextPair {
    /// A pair.
    pub fn new(query: impl Into<String>, passage: impl Into<String>) -> Self {
        TextPair {
            query: query.into(),
            passage: passage.into(),
        }
    }
}

/// Refuses a pair with an empty (or all-whitespace) text, naming it.
fn check_pair(pair: &TextPair) -> Result<(), InputError> {
    for (field, text) in [("query", &pair.query), ("passage", &pair.passage)] {
        if text.trim().is_empty() {
            return Err(InputError::Invalid {
                field: field.into(),
                reason: "it is empty; give a non-empty text".into(),
            });
        }
    }
    Ok(())
}

/// A cross-encoder's answer for one pair.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Relevance {
    /// The score after the model's activation (sigmoid unless its config says otherwise):
    /// higher means more relevant.
    pub score: f32,
    /// The raw output of the classification layer.
    pub logit: f32,
}

impl crate::cache::CacheWeight for Relevance {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// A cross-encoder (re-ranker): reads a query and a passage together and gives one
/// relevance score, as sentence-transformers' `CrossEncoder.predict` does for a model with
/// one output (sigmoid of the logit unless `config.json` names another activation).
/// Pairs longer than the limit are truncated longest-first, as in transformers.
pub struct CrossEncoder {
    name: String,
    encoder: TextEncoder,
    head: Head,
    activation: Activation,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("name", &self.name)
            .field("activation", &self.activation)
            .field("max_len", &self.encoder.max_len())
            .finish_non_exhaustive()
    }
}

impl CrossEncoder {
    /// Loads a cross-encoder by its Hugging Face Hub id (`org/name`), downloading what the
    /// cache lacks (feature `hub`; see [`hub`](crate::hub)). Named after the repository.
    #[cfg(feature = "hub")]
    pub fn from_hub(repo_id: &str) -> Result<Self, LoadError> {
        Self::from_hub_with(
            repo_id,
            &crate::hub::HubOptions::default(),
            TextOptions::default(),
        )
    }

    /// [`from_hub`](Self::from_hub) with [`HubOptions`](crate::hub::HubOptions) and the
    /// options of [`load_with`](Self::load_with).
    #[cfg(feature = "hub")]
    pub fn from_hub_with(
        repo_id: &str,
        hub: &crate::hub::HubOptions,
        options: TextOptions,
    ) -> Result<Self, LoadError> {
        let snapshot = crate::hub::snapshot(repo_id, hub)?;
        let mut model = Self::load_with(snapshot.dir(), options)?;
        model.name = snapshot.name().to_string();
        Ok(model)
    }

    /// Loads a cross-encoder directory with default options (CPU, truncation).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, TextOptions::default())
    }

    /// Loads a cross-encoder directory.
    pub fn load_with(dir: impl AsRef<Path>, options: TextOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        options.refuse_embedder_options()?;
        let loaded = TextEncoder::load(dir, &options, None, false, true)?;
        let (head, _) = Head::load(
            &loaded.config_path,
            &loaded.weights,
            loaded.encoder.arch(),
            loaded.encoder.hidden(),
        )?;
        if head.labels.len() != 1 {
            return Err(LoadError::Unsupported {
                path: loaded.config_path,
                what: format!(
                    "a {}-output head; a cross-encoder scores with exactly one output (load a pair classifier's labels with TextClassifier)",
                    head.labels.len()
                ),
            });
        }
        let ce: CrossEncoderConfig = read_json(&loaded.config_path)?;
        // sentence-transformers 6.x keeps it in config_sentence_transformers.json.
        let st6_path = dir.join("config_sentence_transformers.json");
        let st6: SentenceTransformersConfig = if st6_path.is_file() {
            read_json(&st6_path)?
        } else {
            SentenceTransformersConfig {
                activation_fn: None,
            }
        };
        let named = st6
            .activation_fn
            .or(ce.sentence_transformers.and_then(|st| st.activation_fn))
            .or(ce.sbert_ce_default_activation_function)
            .unwrap_or_default();
        let activation = match named.rsplit('.').next().unwrap_or("") {
            "" | "Sigmoid" => Activation::Sigmoid,
            "Identity" => Activation::Identity,
            other => {
                return Err(LoadError::Unsupported {
                    path: loaded.config_path,
                    what: format!(
                        "activation function `{other}`; supported are torch.nn.Sigmoid and torch.nn.Identity"
                    ),
                });
            }
        };
        Ok(CrossEncoder {
            name: model_name(dir, "cross-encoder"),
            encoder: loaded.encoder,
            head,
            activation,
        })
    }

    /// What runs the forward pass: engine, precision, instruction-set level, threads.
    pub fn engine_info(&self) -> crate::models::text::EngineInfo {
        self.encoder.engine_info()
    }

    /// The most tokens (special tokens included) a pair may have.
    pub fn max_seq_length(&self) -> usize {
        self.encoder.max_len()
    }

    /// Tokenizes a pair as the model will see it.
    pub fn tokenize(&self, pair: &TextPair) -> Result<TokenizedText, InputError> {
        check_pair(pair)?;
        self.encoder
            .tokenize("pair", &pair.query, Some(&pair.passage))
    }

    /// Each token of a pair as the model reads it (special tokens included; the
    /// passage's have `type_id` 1), with its text and byte offsets in its own text, and
    /// whether the pair was cut to [`max_seq_length`](Self::max_seq_length). Refused as
    /// [`tokenize`](Self::tokenize) refuses.
    pub fn tokens(&self, pair: &TextPair) -> Result<TextTokens, InputError> {
        check_pair(pair)?;
        self.encoder
            .tokens("pair", &pair.query, Some(&pair.passage))
    }

    /// The pooled `[CLS]` vectors the scoring layer reads, one per pair: what to train a
    /// new head on.
    pub fn features(&self, batch: &[TokenizedText]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        Ok((0..hidden.len())
            .map(|i| self.head.features(hidden.first_token(i)))
            .collect())
    }

    /// Scores a batch of tokenized pairs.
    pub fn score_batch(&self, batch: &[TokenizedText]) -> Result<Vec<Relevance>, RuntimeError> {
        let hidden = self.encoder.forward(batch)?;
        Ok((0..hidden.len())
            .map(|i| {
                let logit = self.head.logits(hidden.first_token(i))[0];
                let score = match self.activation {
                    Activation::Identity => logit,
                    _ => sigmoid(logit),
                };
                Relevance { score, logit }
            })
            .collect())
    }
}

impl Model for CrossEncoder {
    type Input = TextPair;
    type Prepared = TokenizedText;
    type Output = Relevance;

    fn signature(&self) -> Signature {
        Signature::new(self.name.clone())
            .input(TensorSpec::new("query", DataType::Bytes, [1]))
            .input(TensorSpec::new("passage", DataType::Bytes, [1]))
            .output(TensorSpec::new("score", DataType::F32, [1]))
    }

    fn warmup_inputs(&self) -> Vec<TextPair> {
        vec![TextPair::new(
            "warm-up",
            "A passage to warm the model up with.",
        )]
    }

    fn prepare(&self, pair: TextPair) -> Result<TokenizedText, InputError> {
        self.tokenize(&pair)
    }

    fn cost(&self, prepared: &TokenizedText) -> usize {
        prepared.len()
    }

    fn batch_cost(&self) -> BatchCost {
        self.encoder.batch_cost()
    }

    fn run_batch(&self, batch: &[TokenizedText]) -> Result<BatchOutputs<Relevance>, RuntimeError> {
        Ok(self.score_batch(batch)?.into_iter().map(Ok).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
        assert!((p[1] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn affine_is_w_times_x_plus_b() {
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            affine(&w, &[0.5, -1.0], &[1.0, 0.0, -1.0]),
            vec![-1.5, -3.0]
        );
    }
}
