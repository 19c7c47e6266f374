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

mod row;
mod schema;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use self::row::{FeatureValue, TabularRow};
pub use self::schema::{Feature, FeatureKind, TabularConfig, Task};
use super::Classification;
use super::mlp::Mlp;
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// A tabular model's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
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

impl crate::cache::CacheWeight for TabularOutput {
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
