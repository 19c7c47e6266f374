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
//! under matching allocation limits. The memory decoding and resizing would take is
//! bounded the same way, from the header and the EXIF orientation, by
//! [`ImageOptions::max_memory_bytes`].

mod decode;
mod network;
mod preprocessor;
mod transform;

use std::io::Cursor;
use std::path::Path;

use candle_core::{DType, Device};
use image::DynamicImage;

use self::network::Network;
pub use self::transform::{Channels, MAX_ASPECT, Preprocess, Resize};
use super::Classification;
use crate::error::{InputError, LoadError, RuntimeError};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// Limits and device for [`ImageClassifier::load_with`].
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The most pixels (width × height) an input may declare; larger images are refused
    /// from their header, before decoding. Default 40 million (e.g. 8000 × 5000).
    pub max_pixels: u64,
    /// The most bytes an encoded input may have. Default 32 MiB.
    pub max_bytes: usize,
    /// The most memory, in bytes, that decoding one input and preprocessing it into the
    /// network's input may hold at once, estimated from the header (size, colour type,
    /// EXIF orientation) before any pixel is decoded; larger images are refused with
    /// [`InputError::ImageOverBudget`]. Very elongated images cost the most: the resize
    /// works on a buffer as wide as the (upright) input and as tall as the network's
    /// input. The bound holds across concurrent requests too: decodes in progress share
    /// it, and one that does not fit beside the others waits for them. Default 512 MiB.
    pub max_memory_bytes: u64,
    /// The device to run on (default: CPU).
    pub device: Device,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            max_pixels: 40_000_000,
            max_bytes: 32 << 20,
            max_memory_bytes: 512 << 20,
            device: Device::Cpu,
        }
    }
}

/// An image classifier: decodes, validates and preprocesses PNG or JPEG bytes in the
/// caller's thread, and runs batches of images through a ResNet, a ViT or an MLP.
pub struct ImageClassifier {
    name: String,
    network: Network,
    preprocess: Preprocess,
    labels: Vec<String>,
    options: ImageOptions,
    /// `options.max_memory_bytes`, shared by the decodes in progress.
    budget: decode::MemoryBudget,
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

impl ImageClassifier {
    /// Loads an image model directory with default limits, on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, ImageOptions::default())
    }

    /// Loads an image model directory.
    pub fn load_with(dir: impl AsRef<Path>, options: ImageOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let weights = crate::formats::find_weights(dir)?;
        let vb = crate::formats::var_builder(&weights, DType::F32, &options.device)?;
        let (network, labels, preprocess) = network::load_network(dir, vb, &weights)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image-classifier".into());
        Ok(ImageClassifier {
            name,
            network,
            preprocess,
            labels,
            budget: decode::MemoryBudget::new(options.max_memory_bytes),
            options,
        })
    }

    /// Loads an image model (a timm or Hugging Face image-classification repository) by its
    /// Hub id, downloading what the cache lacks (feature `hub`; see [`hub`](crate::hub)).
    #[cfg(feature = "hub")]
    pub fn from_hub(repo_id: &str) -> Result<Self, LoadError> {
        Self::from_hub_with(
            repo_id,
            &crate::hub::HubOptions::default(),
            ImageOptions::default(),
        )
    }

    /// [`from_hub`](Self::from_hub) with [`HubOptions`](crate::hub::HubOptions) and the
    /// options of [`load_with`](Self::load_with).
    #[cfg(feature = "hub")]
    pub fn from_hub_with(
        repo_id: &str,
        hub: &crate::hub::HubOptions,
        options: ImageOptions,
    ) -> Result<Self, LoadError> {
        let snapshot = crate::hub::snapshot(repo_id, hub)?;
        let mut model = Self::load_with(snapshot.dir(), options)?;
        model.name = snapshot.name().to_string();
        Ok(model)
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
        let (image, _held) = decode::decode(bytes, &self.options, &self.preprocess, &self.budget)?;
        self.preprocess.apply(&image)
    }

    fn classify(&self, batch: &[Vec<f32>]) -> candle_core::Result<Vec<Classification>> {
        let shape = self.preprocess.output_shape();
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let logits = self
            .network
            .logits(flat, batch.len(), shape, &self.options.device)?;
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
