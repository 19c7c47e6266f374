//! Tabular models: rows of named features in, a class or a number out.
//!
//! A model directory holds `tabular.json` ([`TabularConfig`]: the feature schema, the task
//! and the network) and `model.safetensors` with the dense layers (`layers.{i}.weight`,
//! `layers.{i}.bias`, as [`Mlp`]). With no hidden layers the network is linear: linear
//! regression for a regression task, multinomial logistic regression for a classification.
//!
//! Every row is validated against the schema before it is queued: unknown and missing
//! features (unless they have a default), wrong types, NaN and infinities, values outside
//! the declared range and unknown categories each get a typed [`InputError`] naming the
//! feature and what is allowed. Numbers are standardised with the schema's mean and
//! standard deviation, booleans become 0/1 and categories one-hot vectors, in schema order.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Classification;
use super::mlp::{Mlp, MlpConfig};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// One feature's value in a [`TabularRow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// `true` or `false`.
    Bool(bool),
    /// A number (integers included).
    Number(f64),
    /// A category.
    Text(String),
}

impl FeatureValue {
    fn describe(&self) -> String {
        match self {
            FeatureValue::Bool(b) => format!("the boolean {b}"),
            FeatureValue::Number(n) => format!("the number {n}"),
            FeatureValue::Text(t) => format!("the text {t:?}"),
        }
    }
}

// Rows are cache keys, so equality and hashing must agree for every value, NaN included:
// numbers compare by their bits, with -0.0 taken as 0.0 (and every NaN as one NaN).
fn number_key(n: f64) -> u64 {
    if n == 0.0 {
        0
    } else if n.is_nan() {
        f64::NAN.to_bits()
    } else {
        n.to_bits()
    }
}

impl PartialEq for FeatureValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FeatureValue::Bool(a), FeatureValue::Bool(b)) => a == b,
            (FeatureValue::Number(a), FeatureValue::Number(b)) => number_key(*a) == number_key(*b),
            (FeatureValue::Text(a), FeatureValue::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for FeatureValue {}

impl std::hash::Hash for FeatureValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            FeatureValue::Bool(b) => b.hash(state),
            FeatureValue::Number(n) => number_key(*n).hash(state),
            FeatureValue::Text(t) => t.hash(state),
        }
    }
}

impl From<f64> for FeatureValue {
    fn from(v: f64) -> Self {
        FeatureValue::Number(v)
    }
}

impl From<f32> for FeatureValue {
    fn from(v: f32) -> Self {
        FeatureValue::Number(f64::from(v))
    }
}

impl From<i64> for FeatureValue {
    fn from(v: i64) -> Self {
        FeatureValue::Number(v as f64)
    }
}

impl From<i32> for FeatureValue {
    fn from(v: i32) -> Self {
        FeatureValue::Number(f64::from(v))
    }
}

impl From<bool> for FeatureValue {
    fn from(v: bool) -> Self {
        FeatureValue::Bool(v)
    }
}

impl From<&str> for FeatureValue {
    fn from(v: &str) -> Self {
        FeatureValue::Text(v.to_string())
    }
}

impl From<String> for FeatureValue {
    fn from(v: String) -> Self {
        FeatureValue::Text(v)
    }
}

/// One row: feature name → value. Deserializes from a JSON object such as
/// `{"alcohol": 13.2, "color": "red", "organic": true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TabularRow(pub BTreeMap<String, FeatureValue>);

impl TabularRow {
    /// An empty row.
    pub fn new() -> Self {
        TabularRow::default()
    }

    /// The row with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<FeatureValue>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<FeatureValue>) {
        self.0.insert(name.into(), value.into());
    }
}

/// A feature of the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// The feature's name, as rows give it.
    pub name: String,
    /// Its type, range and encoding.
    #[serde(flatten)]
    pub kind: FeatureKind,
    /// Used when a row leaves the feature out; `None` makes the feature required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<FeatureValue>,
}

/// A feature's type and how it is encoded for the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureKind {
    /// A real number in `[min, max]`, standardised as `(x - mean) / std`.
    Number {
        /// Smallest allowed value (default: no bound).
        #[serde(default = "neg_inf", skip_serializing_if = "is_neg_inf")]
        min: f64,
        /// Largest allowed value (default: no bound).
        #[serde(default = "pos_inf", skip_serializing_if = "is_pos_inf")]
        max: f64,
        /// The training mean.
        mean: f64,
        /// The training standard deviation (> 0).
        std: f64,
    },
    /// A whole number in `[min, max]`, standardised like a number.
    Integer {
        /// Smallest allowed value (default: no bound).
        #[serde(default = "neg_inf", skip_serializing_if = "is_neg_inf")]
        min: f64,
        /// Largest allowed value (default: no bound).
        #[serde(default = "pos_inf", skip_serializing_if = "is_pos_inf")]
        max: f64,
        /// The training mean.
        mean: f64,
        /// The training standard deviation (> 0).
        std: f64,
    },
    /// `true` or `false`, encoded 1 or 0.
    Boolean,
    /// One of `values`, encoded one-hot in that order.
    Category {
        /// The categories.
        values: Vec<String>,
    },
}

/// A numeric feature's bounds and standardisation: the fields `Number` and `Integer` share.
#[derive(Debug, Clone, Copy)]
struct Numeric {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    integer: bool,
}

impl FeatureKind {
    /// The bounds and standardisation of a `Number` or `Integer` feature.
    fn numeric(&self) -> Option<Numeric> {
        match *self {
            FeatureKind::Number {
                min,
                max,
                mean,
                std,
            }
            | FeatureKind::Integer {
                min,
                max,
                mean,
                std,
            } => Some(Numeric {
                min,
                max,
                mean,
                std,
                integer: matches!(self, FeatureKind::Integer { .. }),
            }),
            FeatureKind::Boolean | FeatureKind::Category { .. } => None,
        }
    }
}

fn neg_inf() -> f64 {
    f64::NEG_INFINITY
}

fn pos_inf() -> f64 {
    f64::INFINITY
}

fn is_neg_inf(v: &f64) -> bool {
    *v == f64::NEG_INFINITY
}

fn is_pos_inf(v: &f64) -> bool {
    *v == f64::INFINITY
}

impl FeatureKind {
    /// Columns the feature takes in the encoded vector.
    fn width(&self) -> usize {
        match self {
            FeatureKind::Category { values } => values.len(),
            _ => 1,
        }
    }
}

/// What the model predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Task {
    /// One of `labels` (softmax over one output per label).
    Classification {
        /// The class labels, in output order.
        labels: Vec<String>,
    },
    /// A number: the network's one output, de-standardised as `y * std + mean`.
    Regression {
        /// The target's name (for the signature).
        target: String,
        /// The training mean of the target.
        #[serde(default)]
        mean: f64,
        /// The training standard deviation of the target.
        #[serde(default = "one")]
        std: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// `tabular.json`: the schema, the task and the network of a [`TabularModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabularConfig {
    /// The features, in the order they are encoded.
    pub features: Vec<Feature>,
    /// What is predicted.
    pub task: Task,
    /// Widths of the hidden layers (ReLU after each); empty for a linear model.
    #[serde(default)]
    pub hidden: Vec<usize>,
}

impl TabularConfig {
    /// The width of the encoded feature vector.
    pub fn encoded_width(&self) -> usize {
        self.features.iter().map(|f| f.kind.width()).sum()
    }

    /// The network's outputs.
    pub fn outputs(&self) -> usize {
        match &self.task {
            Task::Classification { labels } => labels.len(),
            Task::Regression { .. } => 1,
        }
    }

    /// The [`MlpConfig`] of the network (what `Mlp::new` builds and training uses).
    pub fn network(&self) -> MlpConfig {
        let labels = match &self.task {
            Task::Classification { labels } => labels.clone(),
            Task::Regression { target, .. } => vec![target.clone()],
        };
        MlpConfig {
            input_name: "features".into(),
            input_dim: self.encoded_width(),
            input_min: f32::MIN,
            input_max: f32::MAX,
            input_scale: 1.0,
            hidden: self.hidden.clone(),
            labels,
        }
    }

    /// Validates a row against the schema and encodes it for the network: standardised
    /// numbers, 0/1 booleans and one-hot categories, in schema order; a feature the row
    /// leaves out takes its default. Training and serving share this one encoding.
    pub fn encode(&self, row: &TabularRow) -> Result<Vec<f32>, InputError> {
        if let Some(name) = row
            .0
            .keys()
            .find(|k| !self.features.iter().any(|f| &f.name == *k))
        {
            return Err(InputError::Unexpected {
                field: name.clone(),
                allowed: self.features.iter().map(|f| f.name.clone()).collect(),
            });
        }
        let mut out = Vec::with_capacity(self.encoded_width());
        for f in &self.features {
            let value =
                row.0
                    .get(&f.name)
                    .or(f.default.as_ref())
                    .ok_or_else(|| InputError::Missing {
                        field: f.name.clone(),
                    })?;
            encode(f, value, &mut out)?;
        }
        Ok(out)
    }

    /// Checks the schema; the message says what is wrong and what is allowed.
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        if self.features.is_empty() {
            return Err("there are no features; declare at least one".into());
        }
        for f in &self.features {
            if !seen.insert(f.name.as_str()) {
                return Err(format!("feature `{}` is declared twice", f.name));
            }
            if let Some(Numeric {
                min,
                max,
                mean,
                std,
                integer,
            }) = f.kind.numeric()
            {
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(format!("feature `{}`: min must be <= max", f.name));
                }
                if integer && min.ceil() > max.floor() {
                    return Err(format!(
                        "integer feature `{}`: no whole number lies in [{min}, {max}]",
                        f.name
                    ));
                }
                if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                    return Err(format!(
                        "feature `{}`: mean must be finite and std a finite number > 0",
                        f.name
                    ));
                }
            }
            if let FeatureKind::Category { values } = &f.kind {
                let unique: std::collections::HashSet<_> = values.iter().collect();
                if values.is_empty() || unique.len() != values.len() {
                    return Err(format!(
                        "feature `{}`: categories must be a non-empty list without repeats",
                        f.name
                    ));
                }
            }
            if let Some(default) = &f.default {
                let mut out = Vec::new();
                encode(f, default, &mut out)
                    .map_err(|e| format!("the default of feature `{}` is refused: {e}", f.name))?;
            }
        }
        match &self.task {
            Task::Classification { labels } if labels.len() < 2 => Err(
                "a classification task needs at least two labels (softmax over one output is always 1; a binary model has two)".into(),
            ),
            Task::Regression { mean, std, .. }
                if !mean.is_finite() || !std.is_finite() || *std <= 0.0 =>
            {
                Err("the regression target's mean must be finite and std > 0".into())
            }
            _ if self.hidden.contains(&0) => Err("hidden layer widths must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

/// Validates `value` for feature `f` and appends its encoding to `out`.
fn encode(f: &Feature, value: &FeatureValue, out: &mut Vec<f32>) -> Result<(), InputError> {
    let wrong = |expected: &str| InputError::WrongType {
        field: f.name.clone(),
        expected: expected.into(),
        got: value.describe(),
    };
    if let Some(n) = f.kind.numeric() {
        let whole = if n.integer {
            "a whole number"
        } else {
            "a number"
        };
        let FeatureValue::Number(x) = *value else {
            return Err(wrong(whole));
        };
        let out_of_range = || InputError::FeatureOutOfRange {
            field: f.name.clone(),
            value: x,
            min: n.min,
            max: n.max,
        };
        if !x.is_finite() || x < n.min || x > n.max {
            return Err(out_of_range());
        }
        if n.integer && x.fract() != 0.0 {
            return Err(wrong(whole));
        }
        // Without declared bounds a huge value would standardise to infinity in f32.
        let z = ((x - n.mean) / n.std) as f32;
        if !z.is_finite() {
            return Err(out_of_range());
        }
        out.push(z);
        return Ok(());
    }
    match (&f.kind, value) {
        (FeatureKind::Boolean, FeatureValue::Bool(b)) => out.push(f32::from(u8::from(*b))),
        (FeatureKind::Category { values }, FeatureValue::Text(t)) => {
            let Some(at) = values.iter().position(|v| v == t) else {
                return Err(InputError::UnknownCategory {
                    field: f.name.clone(),
                    value: t.clone(),
                    allowed: values.clone(),
                });
            };
            out.extend((0..values.len()).map(|i| f32::from(u8::from(i == at))));
        }
        (FeatureKind::Category { values }, _) => {
            return Err(wrong(&format!("one of the texts {}", values.join(", "))));
        }
        // A boolean feature given anything else (numeric kinds returned above).
        _ => return Err(wrong("true or false")),
    }
    Ok(())
}

/// A tabular model's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum TabularOutput {
    /// For a classification task.
    Class(Classification),
    /// For a regression task.
    Value(f64),
}

impl TabularOutput {
    /// The classification, if the task is one.
    pub fn class(&self) -> Option<&Classification> {
        match self {
            TabularOutput::Class(c) => Some(c),
            TabularOutput::Value(_) => None,
        }
    }

    /// The predicted number, if the task is a regression.
    pub fn value(&self) -> Option<f64> {
        match self {
            TabularOutput::Value(v) => Some(*v),
            TabularOutput::Class(_) => None,
        }
    }
}

impl crate::CacheWeight for TabularOutput {
    fn cache_weight(&self) -> usize {
        match self {
            TabularOutput::Class(c) => c.cache_weight(),
            TabularOutput::Value(_) => std::mem::size_of::<Self>(),
        }
    }
}

/// A tabular model: a validated feature schema, standardisation and a linear model or MLP.
#[derive(Debug)]
pub struct TabularModel {
    name: String,
    config: TabularConfig,
    mlp: Mlp,
    device: Device,
}

impl TabularModel {
    /// Loads `tabular.json` and `model.safetensors` from `dir`, on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// Loads `tabular.json` and `model.safetensors` from `dir` onto `device`.
    pub fn load_on(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let config_path = require(dir.join("tabular.json"), "the tabular model's schema")?;
        let config: TabularConfig = read_json(&config_path)?;
        config
            .check()
            .map_err(|m| LoadError::config(&config_path, m))?;
        let weights = crate::formats::find_weights(dir)?;
        let vb = crate::formats::var_builder(&weights, DType::F32, device)?;
        let mlp = Mlp::new(vb, &config.network()).map_err(|e| LoadError::weights(&weights, e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tabular".into());
        Ok(TabularModel {
            name,
            config,
            mlp,
            device: device.clone(),
        })
    }

    /// The schema, task and network.
    pub fn config(&self) -> &TabularConfig {
        &self.config
    }

    /// Validates a row and encodes it: see [`TabularConfig::encode`].
    pub fn encode(&self, row: &TabularRow) -> Result<Vec<f32>, InputError> {
        self.config.encode(row)
    }

    fn predict_encoded(&self, batch: &[Vec<f32>]) -> candle_core::Result<Vec<TabularOutput>> {
        let width = self.config.encoded_width();
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (batch.len(), width), &self.device)?;
        let logits = self.mlp.forward(&x)?;
        Ok(match &self.config.task {
            Task::Classification { labels } => candle_nn::ops::softmax_last_dim(&logits)?
                .to_vec2::<f32>()?
                .into_iter()
                .map(|scores| TabularOutput::Class(Classification::from_scores(scores, labels)))
                .collect(),
            Task::Regression { mean, std, .. } => logits
                .to_vec2::<f32>()?
                .into_iter()
                .map(|y| TabularOutput::Value(f64::from(y[0]) * std + mean))
                .collect(),
        })
    }
}

impl Model for TabularModel {
    type Input = TabularRow;
    type Prepared = Vec<f32>;
    type Output = TabularOutput;

    fn signature(&self) -> Signature {
        let mut signature = Signature::new(self.name.clone());
        for f in &self.config.features {
            let dtype = match f.kind {
                FeatureKind::Number { .. } => DataType::F64,
                FeatureKind::Integer { .. } => DataType::I64,
                FeatureKind::Boolean => DataType::Bool,
                FeatureKind::Category { .. } => DataType::Bytes,
            };
            signature = signature.input(TensorSpec::new(f.name.clone(), dtype, [1]));
        }
        match &self.config.task {
            Task::Classification { labels } => signature.output(TensorSpec::new(
                "probabilities",
                DataType::F32,
                [labels.len() as i64],
            )),
            Task::Regression { target, .. } => {
                signature.output(TensorSpec::new(target.clone(), DataType::F64, [1]))
            }
        }
    }

    fn warmup_inputs(&self) -> Vec<TabularRow> {
        // A row of defaults, means, `false` and first categories is valid by construction.
        let row = self
            .config
            .features
            .iter()
            .map(|f| {
                let value = f.default.clone().unwrap_or_else(|| {
                    if let Some(n) = f.kind.numeric() {
                        let v = n.mean.clamp(n.min, n.max);
                        FeatureValue::Number(if n.integer {
                            v.round().clamp(n.min.ceil(), n.max.floor())
                        } else {
                            v
                        })
                    } else if let FeatureKind::Category { values } = &f.kind {
                        FeatureValue::Text(values[0].clone())
                    } else {
                        FeatureValue::Bool(false)
                    }
                });
                (f.name.clone(), value)
            })
            .collect();
        vec![TabularRow(row)]
    }

    fn prepare(&self, row: TabularRow) -> Result<Vec<f32>, InputError> {
        self.encode(&row)
    }

    fn run_batch(&self, batch: &[Vec<f32>]) -> Result<BatchOutputs<TabularOutput>, RuntimeError> {
        Ok(self.predict_encoded(batch)?.into_iter().map(Ok).collect())
    }
}
