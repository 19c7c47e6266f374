//! Image classification: encoded PNG or JPEG bytes in, a [`Classification`] out.
//!
//! [`ImageClassifier::load`] reads one of three kinds of directory:
//!
//! | files | network |
//! |---|---|
//! | `config.json` with `"architecture": "resnet18"` (or 34, 50; timm's layout) and `model.safetensors` | ResNet (torchvision / timm weight names) |
//! | `config.json` with `"model_type": "vit"` (Hugging Face) and `model.safetensors` | ViT for image classification |
//! | `model.json` ([`MlpConfig`](super::mlp::MlpConfig)) and `model.safetensors` | an MLP over the pixels (the shipped digits model) |
//!
//! Preprocessing follows the directory's own description: Hugging Face's
//! `preprocessor_config.json` (resize, center crop, rescale, normalise; modelhost adds
//! `"channels": "gray"` and `"invert": true` for ink-on-paper models), else timm's
//! `pretrained_cfg` in `config.json` (`input_size`, `crop_pct`, `interpolation`, `mean`,
//! `std`).
//!
//! Decoding runs in the caller's thread, before the request is queued, and is guarded
//! against decompression bombs: the header's dimensions are checked against
//! [`ImageOptions::max_pixels`] before any pixel is decoded, and the decoder itself runs
//! under matching allocation limits.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Func;
use candle_transformers::models::{resnet, vit};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use serde::Deserialize;

use super::Classification;
use super::mlp::{Mlp, MlpConfig};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::load::{read_json, require};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// Limits and device for [`ImageClassifier::load_with`].
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The most pixels (width × height) an input may declare; larger images are refused
    /// from their header, before decoding. Default 40 million (e.g. 8000 × 5000).
    pub max_pixels: u64,
    /// The most bytes an encoded input may have. Default 32 MiB.
    pub max_bytes: usize,
    /// The device to run on (default: CPU).
    pub device: Device,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            max_pixels: 40_000_000,
            max_bytes: 32 << 20,
            device: Device::Cpu,
        }
    }
}

/// Colour channels the network reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Red, green, blue.
    Rgb,
    /// One grey channel.
    Gray,
}

/// The most elongated image a shortest-edge resize accepts (long side : short side).
pub const MAX_ASPECT: u64 = 32;

/// How an image is turned into the network's input, read from the model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Resize so the shorter side has this length (aspect kept), or to exactly
    /// `(height, width)`.
    pub resize: Resize,
    /// Then cut `(height, width)` from the center, if set.
    pub crop: Option<(u32, u32)>,
    /// The resampling filter.
    pub filter: FilterType,
    /// Channels the network reads.
    pub channels: Channels,
    /// Replace each value `v` by `255 - v` first (dark ink on light paper → bright ink).
    pub invert: bool,
    /// Multiplies the 0..=255 values (usually 1/255).
    pub rescale: f32,
    /// Subtracted per channel after rescaling.
    pub mean: Vec<f32>,
    /// Divides per channel after subtracting the mean.
    pub std: Vec<f32>,
}

/// The resize step of [`Preprocess`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side becomes this long; the aspect ratio is kept.
    ShortestEdge(u32),
    /// Exactly `(height, width)`.
    Exact(u32, u32),
}

impl Preprocess {
    /// `(channels, height, width)` of the network's input.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        let c = match self.channels {
            Channels::Rgb => 3,
            Channels::Gray => 1,
        };
        let (h, w) = match (self.crop, self.resize) {
            (Some(hw), _) => hw,
            (None, Resize::Exact(h, w)) => (h, w),
            // Without a crop the width depends on the image: such configs are refused.
            (None, Resize::ShortestEdge(s)) => (s, s),
        };
        (c, h as usize, w as usize)
    }

    /// Resizes, crops, converts and normalises a decoded image into `[C, H, W]` values.
    ///
    /// A shortest-edge resize keeps the aspect ratio, so an image more than
    /// [`MAX_ASPECT`]:1 would be resized into a huge strip before the crop: it is refused.
    pub fn apply(&self, image: &DynamicImage) -> Result<Vec<f32>, InputError> {
        let (w0, h0) = (image.width().max(1), image.height().max(1));
        let (rw, rh) = match self.resize {
            Resize::Exact(h, w) => (w, h),
            Resize::ShortestEdge(s) => {
                let (short, long) = (w0.min(h0), w0.max(h0));
                if u64::from(long) > MAX_ASPECT * u64::from(short) {
                    return Err(InputError::Invalid {
                        field: "image".into(),
                        reason: format!(
                            "it is {w0}×{h0}; the aspect ratio may be at most {MAX_ASPECT}:1"
                        ),
                    });
                }
                // At most MAX_ASPECT × s, so it fits a u32 for any u32 `s` below 2^26.
                let scaled = (u64::from(s) * u64::from(long) / u64::from(short)).max(1);
                let scaled = u32::try_from(scaled).unwrap_or(u32::MAX);
                if w0 <= h0 { (s, scaled) } else { (scaled, s) }
            }
        };
        let (c, _, _) = self.output_shape();
        if self.mean.len() != c || self.std.len() != c {
            return Err(InputError::Invalid {
                field: "image".into(),
                reason: format!(
                    "the model's preprocessing has {} means and {} stds for {c} channels",
                    self.mean.len(),
                    self.std.len()
                ),
            });
        }
        let mut resized = if (rw, rh) == (w0, h0) {
            image.clone()
        } else {
            image.resize_exact(rw, rh, self.filter)
        };
        if let Some((ch, cw)) = self.crop {
            let (w, h) = (resized.width(), resized.height());
            if w < cw || h < ch {
                // As torchvision and transformers do: pad with black to the crop's size.
                let mut canvas = image::RgbImage::new(cw.max(w), ch.max(h));
                let (x, y) = ((cw.max(w) - w) / 2, (ch.max(h) - h) / 2);
                image::imageops::overlay(&mut canvas, &resized.to_rgb8(), x.into(), y.into());
                resized = DynamicImage::ImageRgb8(canvas);
            }
            let left = (resized.width() - cw) / 2;
            let top = (resized.height() - ch) / 2;
            resized = resized.crop_imm(left, top, cw, ch);
        }
        let (h, w) = (resized.height() as usize, resized.width() as usize);
        let raw: Vec<u8> = match self.channels {
            Channels::Rgb => resized.to_rgb8().into_raw(),
            Channels::Gray => luma_like_pil(&resized),
        };
        let mut out = vec![0f32; c * h * w];
        for (i, px) in raw.chunks_exact(c).enumerate() {
            for (k, &v) in px.iter().enumerate() {
                let v = if self.invert { 255 - v } else { v };
                out[k * h * w + i] = (f32::from(v) * self.rescale - self.mean[k]) / self.std[k];
            }
        }
        Ok(out)
    }
}

/// Grey levels as PIL's `convert("L")` computes them (ITU-R 601-2 luma, rounded), which is
/// what a Python pipeline fed the model in training; a grey image is taken as it is.
fn luma_like_pil(image: &DynamicImage) -> Vec<u8> {
    if let DynamicImage::ImageLuma8(gray) = image {
        return gray.as_raw().clone();
    }
    image
        .to_rgb8()
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

/// Hugging Face `preprocessor_config.json`, with modelhost's two additions.
#[derive(Deserialize)]
struct HfPreprocessor {
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<SizeSpec>,
    #[serde(default)]
    resample: Option<u32>,
    #[serde(default)]
    do_center_crop: bool,
    #[serde(default)]
    crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "inv255")]
    rescale_factor: f32,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default)]
    image_mean: Option<Vec<f32>>,
    #[serde(default)]
    image_std: Option<Vec<f32>>,
    #[serde(default)]
    channels: Option<Channels>,
    #[serde(default)]
    invert: bool,
    #[serde(default)]
    image_processor_type: Option<String>,
    #[serde(default)]
    crop_pct: Option<f64>,
}

fn yes() -> bool {
    true
}

fn inv255() -> f32 {
    1.0 / 255.0
}

/// `size` / `crop_size`: `{"height", "width"}`, `{"shortest_edge"}` or one number.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    HeightWidth { height: u32, width: u32 },
    Shortest { shortest_edge: u32 },
    Square(u32),
}

/// timm's `pretrained_cfg`.
#[derive(Deserialize)]
struct TimmPretrained {
    input_size: Vec<u32>,
    #[serde(default)]
    interpolation: Option<String>,
    #[serde(default)]
    crop_pct: Option<f64>,
    #[serde(default)]
    crop_mode: Option<String>,
    mean: Vec<f32>,
    std: Vec<f32>,
}

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

fn filter_named(name: &str) -> Option<FilterType> {
    Some(match name {
        "nearest" => FilterType::Nearest,
        "bilinear" | "linear" | "triangle" => FilterType::Triangle,
        "bicubic" | "cubic" => FilterType::CatmullRom,
        "lanczos" => FilterType::Lanczos3,
        _ => return None,
    })
}

fn read_hf_preprocessor(path: &Path) -> Result<Preprocess, LoadError> {
    let cfg: HfPreprocessor = read_json(path)?;
    let bad = |m: &str| LoadError::config(path, m);
    let channels = cfg.channels.unwrap_or(Channels::Rgb);
    let n = if channels == Channels::Rgb { 3 } else { 1 };
    let size = |s: &SizeSpec| match *s {
        SizeSpec::HeightWidth { height, width } => Resize::Exact(height, width),
        SizeSpec::Shortest { shortest_edge } => Resize::ShortestEdge(shortest_edge),
        SizeSpec::Square(s) => Resize::Exact(s, s),
    };
    // A bare number is a square for ViT-style processors but the shortest edge for the
    // CLIP / ConvNeXT / BiT family (transformers' `default_to_square`).
    let shortest_by_default = cfg.image_processor_type.as_deref().is_some_and(|t| {
        [
            "CLIP",
            "ConvNext",
            "Bit",
            "MobileNet",
            "EfficientNet",
            "LevitImage",
            "Poolformer",
        ]
        .iter()
        .any(|family| t.starts_with(family))
    });
    let resize = match (&cfg.size, cfg.do_resize) {
        (Some(SizeSpec::Square(s)), true) if shortest_by_default => Resize::ShortestEdge(*s),
        (Some(s), true) => size(s),
        _ => {
            return Err(bad(
                "modelhost needs `do_resize` with a `size`: a network takes one input shape",
            ));
        }
    };
    let crop = match (&cfg.crop_size, cfg.do_center_crop) {
        (Some(s), true) => match size(s) {
            Resize::Exact(h, w) => Some((h, w)),
            Resize::ShortestEdge(_) => {
                return Err(bad(
                    "`crop_size` must be {\"height\", \"width\"} or a number",
                ));
            }
        },
        (None, true) => return Err(bad("`do_center_crop` is set but `crop_size` is missing")),
        _ => None,
    };
    // ConvNeXT: resize the shortest edge to size / crop_pct, then crop size × size.
    let (resize, crop) = match (resize, crop, cfg.crop_pct) {
        (Resize::ShortestEdge(s), None, Some(pct)) if pct > 0.0 && pct <= 1.0 && s < 384 => (
            Resize::ShortestEdge((f64::from(s) / pct).floor() as u32),
            Some((s, s)),
        ),
        (_, _, Some(pct)) if !(pct > 0.0 && pct <= 1.0) => {
            return Err(bad("`crop_pct` must lie in (0, 1]"));
        }
        other => (other.0, other.1),
    };
    if crop.is_none() && matches!(resize, Resize::ShortestEdge(_)) {
        return Err(bad(
            "a `shortest_edge` resize without a center crop gives inputs of varying shape; add `crop_size` or give `size` as {\"height\", \"width\"}",
        ));
    }
    // PIL's resampling codes, as transformers stores them.
    let filter = match cfg.resample.unwrap_or(2) {
        0 => FilterType::Nearest,
        1 => FilterType::Lanczos3,
        2 => FilterType::Triangle,
        3 => FilterType::CatmullRom,
        other => {
            return Err(bad(&format!(
                "resample {other}; supported are 0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic)"
            )));
        }
    };
    let (mean, std) = if cfg.do_normalize {
        (
            cfg.image_mean.unwrap_or_else(|| vec![0.5; n]),
            cfg.image_std.unwrap_or_else(|| vec![0.5; n]),
        )
    } else {
        (vec![0.0; n], vec![1.0; n])
    };
    let preprocess = Preprocess {
        resize,
        crop,
        filter,
        channels,
        invert: cfg.invert,
        rescale: if cfg.do_rescale {
            cfg.rescale_factor
        } else {
            1.0
        },
        mean,
        std,
    };
    check_normalisation(path, &preprocess, n)?;
    Ok(preprocess)
}

fn check_normalisation(path: &Path, p: &Preprocess, n: usize) -> Result<(), LoadError> {
    let sizes = match p.resize {
        Resize::ShortestEdge(s) => vec![s],
        Resize::Exact(h, w) => vec![h, w],
    };
    let crop = p.crop.map_or(vec![], |(h, w)| vec![h, w]);
    if sizes.iter().chain(&crop).any(|&d| d == 0 || d > 4096) {
        return Err(LoadError::config(
            path,
            "resize and crop sizes must lie in 1..=4096 pixels",
        ));
    }
    if p.mean.len() != n
        || p.std.len() != n
        || p.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || p.mean.iter().any(|m| !m.is_finite())
        || !p.rescale.is_finite()
    {
        return Err(LoadError::config(
            path,
            format!(
                "`mean` and `std` need one finite value per channel ({n}), every std > 0, and a finite rescale factor"
            ),
        ));
    }
    Ok(())
}

fn timm_preprocess(path: &Path, cfg: &TimmPretrained) -> Result<Preprocess, LoadError> {
    let &[3, h, w] = cfg.input_size.as_slice() else {
        return Err(LoadError::config(
            path,
            "`pretrained_cfg.input_size` must be [3, height, width]",
        ));
    };
    let filter = match cfg.interpolation.as_deref() {
        None => FilterType::Triangle,
        Some(name) => filter_named(name).ok_or_else(|| {
            LoadError::config(
                path,
                format!(
                    "interpolation `{name}`; supported are nearest, bilinear, bicubic, lanczos"
                ),
            )
        })?,
    };
    let crop_pct = cfg.crop_pct.unwrap_or(0.875);
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(LoadError::config(path, "`crop_pct` must lie in (0, 1]"));
    }
    if let Some(mode) = cfg.crop_mode.as_deref().filter(|m| *m != "center") {
        return Err(LoadError::config(
            path,
            format!("`crop_mode` {mode:?}; modelhost implements timm's \"center\" crop"),
        ));
    }
    // timm's eval transform: a square input resizes the shortest edge, another shape
    // resizes to exactly (h, w) / crop_pct; then the center crop.
    let scaled = |d: u32| (f64::from(d) / crop_pct).floor() as u32;
    let preprocess = Preprocess {
        resize: if h == w {
            Resize::ShortestEdge(scaled(h))
        } else {
            Resize::Exact(scaled(h), scaled(w))
        },
        crop: Some((h, w)),
        filter,
        channels: Channels::Rgb,
        invert: false,
        rescale: 1.0 / 255.0,
        mean: cfg.mean.clone(),
        std: cfg.std.clone(),
    };
    check_normalisation(path, &preprocess, 3)?;
    Ok(preprocess)
}

/// The network behind an [`ImageClassifier`].
enum Network {
    Resnet(Func<'static>),
    Vit(Box<vit::Model>),
    Mlp(Mlp),
}

/// An image classifier: decodes, validates and preprocesses PNG or JPEG bytes in the
/// caller's thread, and runs batches of images through a ResNet, a ViT or an MLP.
pub struct ImageClassifier {
    name: String,
    network: Network,
    preprocess: Preprocess,
    labels: Vec<String>,
    options: ImageOptions,
}

impl std::fmt::Debug for ImageClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageClassifier")
            .field("name", &self.name)
            .field("preprocess", &self.preprocess)
            .field("labels", &self.labels.len())
            .finish_non_exhaustive()
    }
}

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

impl ImageClassifier {
    /// Loads an image model directory with default limits, on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, ImageOptions::default())
    }

    /// Loads an image model directory.
    pub fn load_with(dir: impl AsRef<Path>, options: ImageOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let device = &options.device;
        let weights = crate::formats::find_weights(dir)?;
        let vb = crate::formats::var_builder(&weights, DType::F32, device)?;
        let werr = |e: candle_core::Error| LoadError::weights(&weights, e);
        let hf_pre = dir.join("preprocessor_config.json");
        let (network, labels, preprocess) = if dir.join("model.json").is_file() {
            let path = dir.join("model.json");
            let config: MlpConfig = read_json(&path)?;
            let pre = read_hf_preprocessor(&require(hf_pre, "the image preprocessing of an MLP")?)?;
            let (c, h, w) = pre.output_shape();
            if c * h * w != config.input_dim {
                return Err(LoadError::config(
                    &path,
                    format!(
                        "the preprocessed image has {c}×{h}×{w} = {} values but the MLP takes {}",
                        c * h * w,
                        config.input_dim
                    ),
                ));
            }
            let mlp = Mlp::new(vb, &config).map_err(werr)?;
            (Network::Mlp(mlp), config.labels, pre)
        } else {
            let path = require(dir.join("config.json"), "the model configuration")?;
            let config: ImageConfig = read_json(&path)?;
            match (config.architecture.as_deref(), config.model_type.as_deref()) {
                (Some(arch @ ("resnet18" | "resnet34" | "resnet50")), _) => {
                    let n = config
                        .num_classes
                        .or(config.label_names.as_ref().map(Vec::len))
                        .ok_or_else(|| LoadError::config(&path, "`num_classes` is missing"))?;
                    if n == 0 || config.label_names.as_ref().is_some_and(|l| l.len() != n) {
                        return Err(LoadError::config(
                            &path,
                            format!(
                                "`num_classes` is {n}; it must be at least 1 and equal the number of `label_names`"
                            ),
                        ));
                    }
                    let net = match arch {
                        "resnet18" => resnet::resnet18(n, vb),
                        "resnet34" => resnet::resnet34(n, vb),
                        _ => resnet::resnet50(n, vb),
                    }
                    .map_err(werr)?;
                    let pre = if hf_pre.is_file() {
                        read_hf_preprocessor(&hf_pre)?
                    } else {
                        let cfg = config.pretrained_cfg.as_ref().ok_or_else(|| {
                            LoadError::config(&path, "no `pretrained_cfg` and no preprocessor_config.json: the input size and normalisation are unknown")
                        })?;
                        timm_preprocess(&path, cfg)?
                    };
                    if pre.output_shape().0 != 3 {
                        return Err(LoadError::config(
                            &hf_pre,
                            "a ResNet reads 3 colour channels; the preprocessing gives 1",
                        ));
                    }
                    (Network::Resnet(net), labels_from(&config, Some(n)), pre)
                }
                (_, Some("vit")) => {
                    let vit_config: vit::Config = read_json(&path)?;
                    let labels = labels_from(&config, None);
                    if labels.is_empty() {
                        return Err(LoadError::config(
                            &path,
                            "`id2label` is missing: the number of classes is unknown",
                        ));
                    }
                    let model = vit::Model::new(&vit_config, labels.len(), vb).map_err(werr)?;
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
                            &path,
                            format!(
                                "the preprocessed image is {c}×{h}×{w} but the ViT takes {}×{}×{}",
                                vit_config.num_channels,
                                vit_config.image_size,
                                vit_config.image_size
                            ),
                        ));
                    }
                    (Network::Vit(Box::new(model)), labels, pre)
                }
                (arch, kind) => {
                    return Err(LoadError::Unsupported {
                        path,
                        what: format!(
                            "image architecture {:?}; supported are resnet18, resnet34, resnet50 (timm `architecture`), vit (`model_type`) and an MLP (`model.json`)",
                            arch.or(kind).unwrap_or("(none given)")
                        ),
                    });
                }
            }
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image-classifier".into());
        Ok(ImageClassifier {
            name,
            network,
            preprocess,
            labels,
            options,
        })
    }

    /// The class labels, in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The preprocessing read from the directory.
    pub fn preprocessing(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Decodes `bytes` (PNG or JPEG) within the limits and preprocesses the image into the
    /// network's `[C, H, W]` input.
    pub fn preprocess(&self, bytes: &[u8]) -> Result<Vec<f32>, InputError> {
        let invalid = |reason: String| InputError::Invalid {
            field: "image".into(),
            reason,
        };
        if bytes.len() > self.options.max_bytes {
            return Err(invalid(format!(
                "it is {} bytes; at most {} are allowed",
                bytes.len(),
                self.options.max_bytes
            )));
        }
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| invalid(e.to_string()))?;
        match reader.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "it is a {other:?} image, not a PNG or JPEG; convert it to one of those"
                )));
            }
            None => {
                return Err(invalid(
                    "it is not a PNG or JPEG image (its first bytes match neither); send the encoded file".into(),
                ));
            }
        }
        // The header alone says how large the decoded image would be.
        let (width, height) = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .and_then(|r| r.into_dimensions().map_err(std::io::Error::other))
            .map_err(|e| invalid(format!("its header cannot be read: {e}")))?;
        if width == 0 || height == 0 {
            return Err(invalid(format!(
                "its header declares {width}×{height} pixels; an image needs at least one"
            )));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.options.max_pixels {
            return Err(InputError::ImageTooLarge {
                width,
                height,
                max_pixels: self.options.max_pixels,
            });
        }
        let mut reader = reader;
        let mut limits = Limits::default();
        limits.max_image_width = Some(width);
        limits.max_image_height = Some(height);
        // RGBA at 16 bits per channel is the most a decoder needs per pixel.
        limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(1 << 20));
        reader.limits(limits);
        let cannot = |e: image::ImageError| invalid(format!("it cannot be decoded: {e}"));
        let mut decoder = reader.into_decoder().map_err(cannot)?;
        // Phone cameras store the rotation in EXIF; Python's loaders (PIL's exif_transpose
        // in transformers' load_image) apply it, so the model saw upright images.
        let orientation = decoder.orientation().map_err(cannot)?;
        let mut image = DynamicImage::from_decoder(decoder).map_err(cannot)?;
        image.apply_orientation(orientation);
        self.preprocess.apply(&image)
    }

    fn classify(&self, batch: &[Vec<f32>]) -> candle_core::Result<Vec<Classification>> {
        let (c, h, w) = self.preprocess.output_shape();
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let device = &self.options.device;
        let logits = match &self.network {
            Network::Mlp(mlp) => {
                mlp.forward(&Tensor::from_vec(flat, (batch.len(), c * h * w), device)?)?
            }
            Network::Resnet(net) => {
                net.forward(&Tensor::from_vec(flat, (batch.len(), c, h, w), device)?)?
            }
            Network::Vit(model) => {
                model.forward(&Tensor::from_vec(flat, (batch.len(), c, h, w), device)?)?
            }
        };
        Ok(candle_nn::ops::softmax_last_dim(&logits)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|scores| Classification::from_scores(scores, &self.labels))
            .collect())
    }
}

impl Model for ImageClassifier {
    type Input = Vec<u8>;
    type Prepared = Vec<f32>;
    type Output = Classification;

    fn signature(&self) -> Signature {
        Signature::new(self.name.clone())
            .input(TensorSpec::new("image", DataType::Bytes, [1]))
            .output(TensorSpec::new(
                "probabilities",
                DataType::F32,
                [self.labels.len() as i64],
            ))
    }

    fn warmup_inputs(&self) -> Vec<Vec<u8>> {
        let (_, h, w) = self.preprocess.output_shape();
        let image = DynamicImage::new_rgb8(w as u32, h as u32);
        let mut png = Vec::new();
        match image.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png) {
            Ok(()) => vec![png],
            Err(_) => Vec::new(),
        }
    }

    fn prepare(&self, bytes: Vec<u8>) -> Result<Vec<f32>, InputError> {
        self.preprocess(&bytes)
    }

    fn run_batch(&self, batch: &[Vec<f32>]) -> Result<BatchOutputs<Classification>, RuntimeError> {
        Ok(self.classify(batch)?.into_iter().map(Ok).collect())
    }
}
