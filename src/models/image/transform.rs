//! The transforms from a decoded image to the network's input: resize, center crop,
//! channel conversion, rescale and normalisation into a `[C, H, W]` tensor.

use image::DynamicImage;
use image::imageops::FilterType;
use serde::Deserialize;

use crate::error::InputError;

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

    /// The `(width, height)` the resize step gives an upright `w0` × `h0` image.
    ///
    /// A shortest-edge resize keeps the aspect ratio, so an image more than
    /// [`MAX_ASPECT`]:1 would be resized into a huge strip before the crop: it is refused.
    fn resized_size(&self, w0: u32, h0: u32) -> Result<(u32, u32), InputError> {
        let (w0, h0) = (w0.max(1), h0.max(1));
        Ok(match self.resize {
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
        })
    }

    /// An upper bound, in bytes, of the memory that decoding an image of `width` ×
    /// `height` pixels (upright, after its EXIF orientation) at `bytes_per_pixel` and
    /// running [`Preprocess::apply`] on it hold at once. Computed from the header alone.
    ///
    /// It counts the decoded image twice (the decoder's or the rotation's copy), the
    /// resize's intermediate — the `image` crate resamples vertically first, into a
    /// buffer as wide as the input at 16 bytes a pixel — the resized image with its
    /// conversions and padding, and the network's input.
    pub fn memory_needed(
        &self,
        width: u32,
        height: u32,
        bytes_per_pixel: u8,
    ) -> Result<u64, InputError> {
        let (rw, rh) = self.resized_size(width, height)?;
        let (w0, h0) = (u64::from(width.max(1)), u64::from(height.max(1)));
        let bpp = u64::from(bytes_per_pixel.max(1));
        let decoded = w0.saturating_mul(h0).saturating_mul(bpp);
        let intermediate = w0.saturating_mul(u64::from(rh)).saturating_mul(16);
        let (ch, cw) = self.crop.unwrap_or((rh, rw));
        // The resized image, its RGB copy and the padded canvas (at least the crop).
        let resized = u64::from(rw.max(cw))
            .saturating_mul(u64::from(rh.max(ch)))
            .saturating_mul(bpp + 6);
        let (c, h, w) = self.output_shape();
        // The crop's copy, its RGB or grey conversion and the f32 input.
        let input = (h as u64)
            .saturating_mul(w as u64)
            .saturating_mul(bpp + 3 + 4 * c as u64);
        Ok(decoded
            .saturating_mul(2)
            .saturating_add(intermediate)
            .saturating_add(resized)
            .saturating_add(input))
    }

    /// Resizes, crops, converts and normalises a decoded image into `[C, H, W]` values.
    ///
    /// A shortest-edge resize keeps the aspect ratio, so an image more than
    /// [`MAX_ASPECT`]:1 would be resized into a huge strip before the crop: it is refused.
    /// The caller bounds the memory first with [`Preprocess::memory_needed`].
    pub fn apply(&self, image: &DynamicImage) -> Result<Vec<f32>, InputError> {
        let (w0, h0) = (image.width().max(1), image.height().max(1));
        let (rw, rh) = self.resized_size(w0, h0)?;
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
