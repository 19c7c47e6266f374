//! The networks an image model directory can hold — ResNet, ViT or an MLP over the
//! pixels — loaded with their labels and preprocessing, and their forward pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Module, Tensor};
use candle_nn::{Func, VarBuilder};
use candle_transformers::models::{resnet, vit};
use serde::Deserialize;

use super::preprocessor::{TimmPretrained, read_hf_preprocessor, timm_preprocess};
use super::transform::Preprocess;
use crate::error::LoadError;
use crate::load::{read_json, require};
use crate::models::mlp::{Mlp, MlpConfig};

/// The fields of `config.json` an image model needs.
#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    num_classes: Option<usize>,
    #[serde(default)]
    label_names: Option<Vec<String>>,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default)]
    pretrained_cfg: Option<TimmPretrained>,
}

/// The network behind an [`ImageClassifier`](super::ImageClassifier).
pub(super) enum Network {
    Resnet(Func<'static>),
    Vit(Box<vit::Model>),
    Mlp(Mlp),
}

/// What a model directory gives: the network, its labels and its preprocessing.
pub(super) type Loaded = (Network, Vec<String>, Preprocess);

fn labels_from(config: &ImageConfig, n: Option<usize>) -> Vec<String> {
    if let Some(names) = &config.label_names {
        return names.clone();
    }
    let n = n.unwrap_or(config.id2label.len());
    (0..n)
        .map(|i| {
            config
                .id2label
                .get(&i.to_string())
                .cloned()
                .unwrap_or_else(|| i.to_string())
        })
        .collect()
}

/// Reads the network of `dir` (an MLP's `model.json`, else `config.json`) from the
/// weights `vb` (loaded from `weights`), with its labels and preprocessing.
pub(super) fn load_network(
    dir: &Path,
    vb: VarBuilder<'static>,
    weights: &Path,
) -> Result<Loaded, LoadError> {
    let hf_pre = dir.join("preprocessor_config.json");
    if dir.join("model.json").is_file() {
        return load_mlp(&dir.join("model.json"), hf_pre, vb, weights);
    }
    let path = require(dir.join("config.json"), "the model configuration")?;
    let config: ImageConfig = read_json(&path)?;
    match (config.architecture.as_deref(), config.model_type.as_deref()) {
        (Some(arch @ ("resnet18" | "resnet34" | "resnet50")), _) => {
            load_resnet(arch, &config, &path, &hf_pre, vb, weights)
        }
        (_, Some("vit")) => load_vit(&config, &path, hf_pre, vb, weights),
        (arch, kind) => Err(LoadError::Unsupported {
            path,
            what: format!(
                "image architecture {:?}; supported are resnet18, resnet34, resnet50 (timm `architecture`), vit (`model_type`) and an MLP (`model.json`)",
                arch.or(kind).unwrap_or("(none given)")
            ),
        }),
    }
}

/// An MLP over the pixels: `model.json` and the (required) preprocessor, whose output
/// must have as many values as the MLP's input.
fn load_mlp(
    path: &Path,
    hf_pre: PathBuf,
    vb: VarBuilder<'static>,
    weights: &Path,
) -> Result<Loaded, LoadError> {
    let config: MlpConfig = read_json(path)?;
    let pre = read_hf_preprocessor(&require(hf_pre, "the image preprocessing of an MLP")?)?;
    let (c, h, w) = pre.output_shape();
    if c * h * w != config.input_dim {
        return Err(LoadError::config(
            path,
            format!(
                "the preprocessed image has {c}×{h}×{w} = {} values but the MLP takes {}",
                c * h * w,
                config.input_dim
            ),
        ));
    }
    let mlp = Mlp::new(vb, &config).map_err(|e| LoadError::weights(weights, e))?;
    Ok((Network::Mlp(mlp), config.labels, pre))
}

/// A timm ResNet (`arch`), preprocessed by `preprocessor_config.json` if there is one,
/// else by the config's `pretrained_cfg`.
fn load_resnet(
    arch: &str,
    config: &ImageConfig,
    path: &Path,
    hf_pre: &Path,
    vb: VarBuilder<'static>,
    weights: &Path,
) -> Result<Loaded, LoadError> {
    let n = resnet_classes(config, path)?;
    let net = match arch {
        "resnet18" => resnet::resnet18(n, vb),
        "resnet34" => resnet::resnet34(n, vb),
        _ => resnet::resnet50(n, vb),
    }
    .map_err(|e| LoadError::weights(weights, e))?;
    let pre = if hf_pre.is_file() {
        read_hf_preprocessor(hf_pre)?
    } else {
        let cfg = config.pretrained_cfg.as_ref().ok_or_else(|| {
            LoadError::config(path, "no `pretrained_cfg` and no preprocessor_config.json: the input size and normalisation are unknown")
        })?;
        timm_preprocess(path, cfg)?
    };
    if pre.output_shape().0 != 3 {
        return Err(LoadError::config(
            hf_pre,
            "a ResNet reads 3 colour channels; the preprocessing gives 1",
        ));
    }
    Ok((Network::Resnet(net), labels_from(config, Some(n)), pre))
}

/// A ResNet's number of classes: `num_classes`, else the number of `label_names`; at
/// least 1, and equal to the number of `label_names` when both are given.
fn resnet_classes(config: &ImageConfig, path: &Path) -> Result<usize, LoadError> {
    let n = config
        .num_classes
        .or(config.label_names.as_ref().map(Vec::len))
        .ok_or_else(|| LoadError::config(path, "`num_classes` is missing"))?;
    if n == 0 || config.label_names.as_ref().is_some_and(|l| l.len() != n) {
        return Err(LoadError::config(
            path,
            format!(
                "`num_classes` is {n}; it must be at least 1 and equal the number of `label_names`"
            ),
        ));
    }
    Ok(n)
}

/// A Hugging Face ViT: labels from `id2label`, and the (required) preprocessor, whose
/// output must be the ViT's input shape.
fn load_vit(
    config: &ImageConfig,
    path: &Path,
    hf_pre: PathBuf,
    vb: VarBuilder<'static>,
    weights: &Path,
) -> Result<Loaded, LoadError> {
    let vit_config: vit::Config = read_json(path)?;
    let labels = labels_from(config, None);
    if labels.is_empty() {
        return Err(LoadError::config(
            path,
            "`id2label` is missing: the number of classes is unknown",
        ));
    }
    let model = vit::Model::new(&vit_config, labels.len(), vb)
        .map_err(|e| LoadError::weights(weights, e))?;
    let pre = read_hf_preprocessor(&require(hf_pre, "the image preprocessing")?)?;
    let (c, h, w) = pre.output_shape();
    if (c, h, w)
        != (
            vit_config.num_channels,
            vit_config.image_size,
            vit_config.image_size,
        )
    {
        return Err(LoadError::config(
            path,
            format!(
                "the preprocessed image is {c}×{h}×{w} but the ViT takes {}×{}×{}",
                vit_config.num_channels, vit_config.image_size, vit_config.image_size
            ),
        ));
    }
    Ok((Network::Vit(Box::new(model)), labels, pre))
}

impl Network {
    /// The logits of a batch of `n` preprocessed images of shape `(c, h, w)`, flattened
    /// one after the other into `flat`.
    pub(super) fn logits(
        &self,
        flat: Vec<f32>,
        n: usize,
        (c, h, w): (usize, usize, usize),
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self {
            Network::Mlp(mlp) => mlp.forward(&Tensor::from_vec(flat, (n, c * h * w), device)?),
            Network::Resnet(net) => net.forward(&Tensor::from_vec(flat, (n, c, h, w), device)?),
            Network::Vit(model) => model.forward(&Tensor::from_vec(flat, (n, c, h, w), device)?),
        }
    }
}
