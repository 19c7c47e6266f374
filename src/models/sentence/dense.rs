//! sentence-transformers' `Dense` module (`2_Dense/`): a linear layer on the sentence
//! vector and its activation, `activation(W · x + b)` (plus `x`, or a projection of it,
//! with `use_residual`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::LoadError;
use crate::load::{read_json, require};

/// The activation after the linear layer (`activation_function` in the module's
/// `config.json`, a `torch.nn` class path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (sentence-transformers' default).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.GELU` (exact, with erf).
    Gelu,
    /// `torch.nn.SiLU`.
    Silu,
}

impl Activation {
    const SUPPORTED: &'static str = "torch.nn.Identity, Tanh, ReLU, Sigmoid, GELU, SiLU";

    /// The activation a `torch.nn` class path names, e.g.
    /// `torch.nn.modules.activation.Tanh`. Only `torch.nn` classes: sentence-transformers
    /// imports any other path only with `trust_remote_code`.
    fn from_class_path(path: &str) -> Option<Activation> {
        if !path.starts_with("torch.nn.") {
            return None;
        }
        Some(match path.rsplit('.').next()? {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "ReLU" => Activation::Relu,
            "Sigmoid" => Activation::Sigmoid,
            "GELU" => Activation::Gelu,
            "SiLU" => Activation::Silu,
            _ => return None,
        })
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Gelu => {
                let x = f64::from(x);
                (0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2)))
                    as f32
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    activation_function: Option<String>,
    module_input_name: Option<String>,
    module_output_name: Option<String>,
    #[serde(default)]
    use_residual: bool,
}

fn yes() -> bool {
    true
}

/// A loaded `Dense` module. Runs on the CPU in f32 on the pooled vectors: one
/// matrix-vector product per text, small next to the encoder.
pub(super) struct Dense {
    /// `[out, in]`, row-major (`torch.nn.Linear`'s layout).
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Residual,
    in_features: usize,
    out_features: usize,
    activation: Activation,
}

enum Residual {
    None,
    /// `x` itself (`in_features == out_features`).
    Identity,
    /// `residual.weight · x`, `[out, in]`.
    Projection(Vec<f32>),
}

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dense")
            .field("in_features", &self.in_features)
            .field("out_features", &self.out_features)
            .field("bias", &self.bias.is_some())
            .field("activation", &self.activation)
            .finish()
    }
}

impl Dense {
    /// Reads the module in `dir`: `config.json` and the weights (`model.safetensors`, else
    /// `pytorch_model.bin`, ... through the crate's loaders, which bound what a file may
    /// make them allocate). `input_dim` is the width of the vector it receives.
    pub(super) fn load(dir: &Path, input_dim: usize) -> Result<Dense, LoadError> {
        let config_path = require(dir.join("config.json"), "the Dense module's configuration")?;
        let cfg: DenseConfig = read_json(&config_path)?;
        for name in [&cfg.module_input_name, &cfg.module_output_name]
            .into_iter()
            .flatten()
        {
            if name != "sentence_embedding" {
                return Err(LoadError::Unsupported {
                    path: config_path,
                    what: format!(
                        "a Dense module on `{name}`; supported is a Dense module on the sentence embedding (`sentence_embedding`)"
                    ),
                });
            }
        }
        if cfg.in_features != input_dim {
            return Err(LoadError::config(
                &config_path,
                format!(
                    "in_features is {}, but the module before it gives vectors of {input_dim}; in_features must be {input_dim}",
                    cfg.in_features
                ),
            ));
        }
        if cfg.out_features == 0 {
            return Err(LoadError::config(
                &config_path,
                "out_features is 0; it must be at least 1",
            ));
        }
        let activation = match &cfg.activation_function {
            // sentence-transformers' constructor default.
            None => Activation::Tanh,
            Some(path) => {
                Activation::from_class_path(path).ok_or_else(|| LoadError::Unsupported {
                    path: config_path.clone(),
                    what: format!(
                        "activation_function `{path}`; supported are {}",
                        Activation::SUPPORTED
                    ),
                })?
            }
        };
        let weights_path = crate::formats::find_weights(dir)?;
        let mut tensors = crate::formats::load_tensors(&weights_path, &Device::Cpu)?;
        let (n_in, n_out) = (cfg.in_features, cfg.out_features);
        let mut take =
            |name: &str, shape: &[usize]| tensor(&weights_path, tensors.remove(name), name, shape);
        let weight = take("linear.weight", &[n_out, n_in])?;
        let bias = if cfg.bias {
            Some(take("linear.bias", &[n_out])?)
        } else {
            None
        };
        let residual = match (cfg.use_residual, n_in == n_out) {
            (false, _) => Residual::None,
            (true, true) => Residual::Identity,
            (true, false) => Residual::Projection(take("residual.weight", &[n_out, n_in])?),
        };
        Ok(Dense {
            weight,
            bias,
            residual,
            in_features: n_in,
            out_features: n_out,
            activation,
        })
    }

    /// The width of the vectors it gives.
    pub(super) fn out_features(&self) -> usize {
        self.out_features
    }

    /// `activation(W · x + b)` (+ the residual).
    pub(super) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let dot = |w: &[f32]| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        let rows = self.weight.chunks_exact(self.in_features);
        let mut out: Vec<f32> = rows
            .enumerate()
            .map(|(o, w)| {
                let b = self.bias.as_ref().and_then(|b| b.get(o)).copied();
                self.activation.apply(dot(w) + b.unwrap_or(0.0))
            })
            .collect();
        match &self.residual {
            Residual::None => {}
            Residual::Identity => out.iter_mut().zip(x).for_each(|(o, v)| *o += v),
            Residual::Projection(r) => out
                .iter_mut()
                .zip(r.chunks_exact(self.in_features))
                .for_each(|(o, w)| *o += dot(w)),
        }
        out
    }
}

/// Tensor `name` as f32 values, checked to have `shape` before anything is copied.
fn tensor(
    path: &Path,
    t: Option<Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, LoadError> {
    let t = t.ok_or_else(|| {
        LoadError::weights(
            path,
            format!("no tensor `{name}`; a Dense module needs `{name}` of shape {shape:?}"),
        )
    })?;
    if t.dims() != shape {
        return Err(LoadError::WrongShape {
            path: path.to_path_buf(),
            tensor: name.into(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| LoadError::weights(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_read_from_torch_class_paths_only() {
        let a = Activation::from_class_path;
        assert_eq!(
            a("torch.nn.modules.activation.Tanh"),
            Some(Activation::Tanh)
        );
        assert_eq!(
            a("torch.nn.modules.linear.Identity"),
            Some(Activation::Identity)
        );
        assert_eq!(a("torch.nn.GELU"), Some(Activation::Gelu));
        assert_eq!(a("torch.nn.modules.activation.Softmax"), None);
        assert_eq!(a("mypkg.Tanh"), None);
        assert!((Activation::Gelu.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((Activation::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
    }

    #[test]
    fn forward_is_activation_of_weight_times_x_plus_bias() {
        let dense = Dense {
            weight: vec![1.0, 2.0, 0.0, -1.0, 1.0, 1.0], // 2 out × 3 in
            bias: Some(vec![0.5, -0.5]),
            residual: Residual::None,
            in_features: 3,
            out_features: 2,
            activation: Activation::Relu,
        };
        assert_eq!(dense.forward(&[1.0, 1.0, 1.0]), vec![3.5, 0.5]);
        assert_eq!(dense.forward(&[0.0, 0.0, -2.0]), vec![0.5, 0.0]);
    }
}
