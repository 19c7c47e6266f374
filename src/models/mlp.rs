//! A multi-layer perceptron classifier over a fixed-length numeric vector.
//!
//! A model directory holds `model.json` ([`MlpConfig`]) and `model.safetensors` (or any
//! weights file [`find_weights`](crate::formats::find_weights) finds, such as
//! `pytorch_model.bin`) with one `layers.{i}.weight` / `layers.{i}.bias` pair per dense
//! layer. The shipped digits model (`examples/assets/digits/`) is one; `examples/train_digits.rs` trains it with candle-nn
//! through [`Mlp`], so training and serving share one definition of the network.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Classification;
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// The architecture and input contract of an [`MlpClassifier`] (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// The input's name, used in error messages and the signature.
    pub input_name: String,
    /// Number of input values.
    pub input_dim: usize,
    /// Smallest allowed input value.
    pub input_min: f32,
    /// Largest allowed input value.
    pub input_max: f32,
    /// Inputs are multiplied by this before the first layer.
    pub input_scale: f32,
    /// Widths of the hidden layers (ReLU after each).
    pub hidden: Vec<usize>,
    /// Class labels, one per output.
    pub labels: Vec<String>,
}

/// The network: dense layers with ReLU between them, logits out.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds the network from `vb` (weights `layers.{i}.weight`, `layers.{i}.bias`).
    pub fn new(vb: VarBuilder, config: &MlpConfig) -> candle_core::Result<Self> {
        let widths: Vec<usize> = std::iter::once(config.input_dim)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.labels.len()))
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Mlp { layers })
    }

    /// Logits for a `[batch, input_dim]` tensor of already scaled inputs.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// A classifier over `Vec<f32>` inputs that validates length, finiteness and range.
#[derive(Debug)]
pub struct MlpClassifier {
    name: String,
    config: MlpConfig,
    mlp: Mlp,
    device: Device,
}

impl MlpClassifier {
    /// Loads `model.json` and `model.safetensors` from `dir`, on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// Loads `model.json` and `model.safetensors` from `dir` onto `device`.
    pub fn load_on(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let config_path = require(dir.join("model.json"), "the model configuration")?;
        let config: MlpConfig = read_json(&config_path)?;
        if config.input_dim == 0 || config.labels.is_empty() || config.hidden.contains(&0) {
            return Err(LoadError::config(
                &config_path,
                "input_dim, every hidden width and the number of labels must be at least 1",
            ));
        }
        let range_ok = config.input_min.is_finite()
            && config.input_max.is_finite()
            && config.input_min <= config.input_max;
        if !range_ok || !config.input_scale.is_finite() {
            return Err(LoadError::config(
                &config_path,
                "input_min and input_max must be finite with input_min <= input_max, and input_scale must be finite",
            ));
        }
        let weights = crate::formats::find_weights(dir)?;
        let vb = crate::formats::var_builder(&weights, DType::F32, device)?;
        let mlp = Mlp::new(vb, &config).map_err(|e| LoadError::weights(&weights, e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "mlp-classifier".into());
        Ok(MlpClassifier {
            name,
            config,
            mlp,
            device: device.clone(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    fn classify(&self, batch: &[Vec<f32>]) -> candle_core::Result<Vec<Classification>> {
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (batch.len(), self.config.input_dim), &self.device)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.mlp.forward(&x)?)?;
        Ok(probs
            .to_vec2::<f32>()?
            .into_iter()
            .map(|scores| Classification::from_scores(scores, &self.config.labels))
            .collect())
    }
}

impl Model for MlpClassifier {
    type Input = Vec<f32>;
    type Prepared = Vec<f32>;
    type Output = Classification;

    fn signature(&self) -> Signature {
        Signature::new(self.name.clone())
            .input(TensorSpec::new(
                self.config.input_name.clone(),
                DataType::F32,
                [self.config.input_dim as i64],
            ))
            .output(TensorSpec::new(
                "probabilities",
                DataType::F32,
                [self.config.labels.len() as i64],
            ))
    }

    fn warmup_inputs(&self) -> Vec<Vec<f32>> {
        let c = &self.config;
        vec![
            vec![c.input_min; c.input_dim],
            vec![c.input_max; c.input_dim],
        ]
    }

    fn prepare(&self, mut input: Vec<f32>) -> Result<Vec<f32>, InputError> {
        let c = &self.config;
        if input.len() != c.input_dim {
            return Err(InputError::WrongLength {
                field: c.input_name.clone(),
                expected: c.input_dim,
                got: input.len(),
            });
        }
        for (index, value) in input.iter_mut().enumerate() {
            if !value.is_finite() {
                return Err(InputError::NotFinite {
                    field: c.input_name.clone(),
                    index,
                    value: *value,
                });
            }
            if *value < c.input_min || *value > c.input_max {
                return Err(InputError::OutOfRange {
                    field: c.input_name.clone(),
                    index,
                    value: *value,
                    min: c.input_min,
                    max: c.input_max,
                });
            }
            *value *= c.input_scale;
        }
        Ok(input)
    }

    fn run_batch(&self, batch: &[Vec<f32>]) -> Result<BatchOutputs<Classification>, RuntimeError> {
        Ok(self.classify(batch)?.into_iter().map(Ok).collect())
    }
}
