//! Reading a model directory's description of its preprocessing — Hugging Face's
//! `preprocessor_config.json` or timm's `pretrained_cfg` — into a [`Preprocess`].

use std::path::Path;

use image::imageops::FilterType;
use serde::Deserialize;

use super::transform::{Channels, Preprocess, Resize};
use crate::error::LoadError;
use crate::load::read_json;

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

impl SizeSpec {
    /// The resize this size asks for, a bare number taken as a square.
    fn resize(&self) -> Resize {
        match *self {
            SizeSpec::HeightWidth { height, width } => Resize::Exact(height, width),
            SizeSpec::Shortest { shortest_edge } => Resize::ShortestEdge(shortest_edge),
            SizeSpec::Square(s) => Resize::Exact(s, s),
        }
    }
}

/// timm's `pretrained_cfg`.
#[derive(Deserialize)]
pub(super) struct TimmPretrained {
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

fn filter_named(name: &str) -> Option<FilterType> {
    Some(match name {
        "nearest" => FilterType::Nearest,
        "bilinear" | "linear" | "triangle" => FilterType::Triangle,
        "bicubic" | "cubic" => FilterType::CatmullRom,
        "lanczos" => FilterType::Lanczos3,
        _ => return None,
    })
}

/// Reads a Hugging Face `preprocessor_config.json` (with modelhost's `channels` and
/// `invert`) and checks that it gives one input shape and a sound normalisation.
pub(super) fn read_hf_preprocessor(path: &Path) -> Result<Preprocess, LoadError> {
    let cfg: HfPreprocessor = read_json(path)?;
    let bad = |m: String| LoadError::config(path, m);
    let channels = cfg.channels.unwrap_or(Channels::Rgb);
    let n = if channels == Channels::Rgb { 3 } else { 1 };
    let resize = cfg.resize().map_err(bad)?;
    let crop = cfg.crop().map_err(bad)?;
    let (resize, crop) = with_crop_pct(resize, crop, cfg.crop_pct).map_err(bad)?;
    if crop.is_none() && matches!(resize, Resize::ShortestEdge(_)) {
        return Err(bad(
            "a `shortest_edge` resize without a center crop gives inputs of varying shape; add `crop_size` or give `size` as {\"height\", \"width\"}".into(),
        ));
    }
    let filter = pil_filter(cfg.resample.unwrap_or(2)).map_err(bad)?;
    let invert = cfg.invert;
    let rescale = if cfg.do_rescale {
        cfg.rescale_factor
    } else {
        1.0
    };
    let (mean, std) = cfg.normalisation(n);
    let preprocess = Preprocess {
        resize,
        crop,
        filter,
        channels,
        invert,
        rescale,
        mean,
        std,
    };
    check_normalisation(path, &preprocess, n)?;
    Ok(preprocess)
}

impl HfPreprocessor {
    /// Whether a bare number as `size` is the shortest edge: it is a square for
    /// ViT-style processors but the shortest edge for the CLIP / ConvNeXT / BiT family
    /// (transformers' `default_to_square`).
    fn shortest_by_default(&self) -> bool {
        self.image_processor_type.as_deref().is_some_and(|t| {
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
        })
    }

    /// The resize step; a network takes one input shape, so it is required.
    fn resize(&self) -> Result<Resize, String> {
        match (&self.size, self.do_resize) {
            (Some(SizeSpec::Square(s)), true) if self.shortest_by_default() => {
                Ok(Resize::ShortestEdge(*s))
            }
            (Some(s), true) => Ok(s.resize()),
            _ => Err(
                "modelhost needs `do_resize` with a `size`: a network takes one input shape".into(),
            ),
        }
    }

    /// The center crop's `(height, width)`, if one is asked for.
    fn crop(&self) -> Result<Option<(u32, u32)>, String> {
        match (&self.crop_size, self.do_center_crop) {
            (Some(s), true) => match s.resize() {
                Resize::Exact(h, w) => Ok(Some((h, w))),
                Resize::ShortestEdge(_) => {
                    Err("`crop_size` must be {\"height\", \"width\"} or a number".into())
                }
            },
            (None, true) => Err("`do_center_crop` is set but `crop_size` is missing".into()),
            _ => Ok(None),
        }
    }

    /// The per-channel mean and std for `n` channels (identity when `do_normalize` is
    /// off; transformers' 0.5 when a value is not given).
    fn normalisation(self, n: usize) -> (Vec<f32>, Vec<f32>) {
        if self.do_normalize {
            (
                self.image_mean.unwrap_or_else(|| vec![0.5; n]),
                self.image_std.unwrap_or_else(|| vec![0.5; n]),
            )
        } else {
            (vec![0.0; n], vec![1.0; n])
        }
    }
}

/// Applies a `crop_pct`. ConvNeXT: resize the shortest edge to size / crop_pct, then
/// crop size × size.
fn with_crop_pct(
    resize: Resize,
    crop: Option<(u32, u32)>,
    crop_pct: Option<f64>,
) -> Result<(Resize, Option<(u32, u32)>), String> {
    match (resize, crop, crop_pct) {
        (Resize::ShortestEdge(s), None, Some(pct)) if pct > 0.0 && pct <= 1.0 && s < 384 => Ok((
            Resize::ShortestEdge((f64::from(s) / pct).floor() as u32),
            Some((s, s)),
        )),
        (_, _, Some(pct)) if !(pct > 0.0 && pct <= 1.0) => {
            Err("`crop_pct` must lie in (0, 1]".into())
        }
        other => Ok((other.0, other.1)),
    }
}

/// The filter of one of PIL's resampling codes, as transformers stores them.
fn pil_filter(code: u32) -> Result<FilterType, String> {
    match code {
        0 => Ok(FilterType::Nearest),
        1 => Ok(FilterType::Lanczos3),
        2 => Ok(FilterType::Triangle),
        3 => Ok(FilterType::CatmullRom),
        other => Err(format!(
            "resample {other}; supported are 0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic)"
        )),
    }
}

/// Refuses sizes outside 1..=4096 pixels and a normalisation that is not one finite
/// mean and positive std per channel of `n`, with a finite rescale factor.
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

/// The preprocessing of timm's `pretrained_cfg`: its eval transform, 3 channels.
pub(super) fn timm_preprocess(path: &Path, cfg: &TimmPretrained) -> Result<Preprocess, LoadError> {
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
