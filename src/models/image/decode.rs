//! Decoding and validation: encoded PNG or JPEG bytes to an upright image, guarded
//! against oversized inputs and decompression bombs.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::{ImageOptions, Preprocess};
use crate::error::InputError;

/// An `image` input refused for `reason`.
fn invalid(reason: String) -> InputError {
    InputError::Invalid {
        field: "image".into(),
        reason,
    }
}

/// Decodes `bytes` (PNG or JPEG) within `options`' limits and turns the image upright
/// by its EXIF orientation.
///
/// The encoded size is checked first, then the format, then the dimensions the header
/// declares, then the memory that decoding it and `preprocess` would take (from the
/// header's size, colour type and EXIF orientation), all before any pixel is decoded;
/// the decoder itself runs under allocation limits that match the declared size.
pub(super) fn decode(
    bytes: &[u8],
    options: &ImageOptions,
    preprocess: &Preprocess,
) -> Result<DynamicImage, InputError> {
    if bytes.len() > options.max_bytes {
        return Err(invalid(format!(
            "it is {} bytes; at most {} are allowed",
            bytes.len(),
            options.max_bytes
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(e.to_string()))?;
    let format = match reader.format() {
        Some(format @ (image::ImageFormat::Png | image::ImageFormat::Jpeg)) => format,
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
    };
    let (width, height) = checked_dimensions(bytes, options)?;
    check_density(format, width, height, bytes.len())?;
    let pixels = u64::from(width) * u64::from(height);
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
    check_memory(&decoder, orientation, options, preprocess)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(cannot)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The `(width, height)` the header of `bytes` declares, refused when it is empty or
/// has more than `options.max_pixels` pixels.
fn checked_dimensions(bytes: &[u8], options: &ImageOptions) -> Result<(u32, u32), InputError> {
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
    if pixels > options.max_pixels {
        return Err(InputError::ImageTooLarge {
            width,
            height,
            max_pixels: options.max_pixels,
        });
    }
    Ok((width, height))
}

/// The most pixels a complete file of each format can encode per byte, with a margin of
/// 2× or more. A JPEG codes every 8×8 block of its first component with at least a bit
/// (its DC difference): ≤ 512 pixels per byte. A PNG's deflate stream expands at most
/// ~1032:1, and a 1-bit image packs 8 pixels into each byte: ≤ ~8,300 pixels per byte.
const JPEG_PIXELS_PER_BYTE: u64 = 1024;
const PNG_PIXELS_PER_BYTE: u64 = 16 * 1024;

/// Refuses a header that declares more pixels than a file of `len` bytes can encode: the
/// file is truncated or crafted, and decoders fill what is missing, so a few hundred
/// bytes would otherwise cost seconds of decoding (a progressive JPEG of 16 million
/// pixels in 538 bytes took 1.4 s).
fn check_density(
    format: image::ImageFormat,
    width: u32,
    height: u32,
    len: usize,
) -> Result<(), InputError> {
    let per_byte = match format {
        image::ImageFormat::Jpeg => JPEG_PIXELS_PER_BYTE,
        _ => PNG_PIXELS_PER_BYTE,
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > per_byte.saturating_mul(len as u64) {
        return Err(invalid(format!(
            "its header declares {width}×{height} pixels, more than a complete {format:?} \
             file of {len} bytes can hold (at most {per_byte} pixels per byte): it is \
             truncated or crafted; send the whole file"
        )));
    }
    Ok(())
}

/// Refuses an image whose decoding and preprocessing would hold more than
/// `options.max_memory_bytes`, from its header: the upright size (after the EXIF
/// `orientation`; a rotated tall image is a wide one to the resize) and bytes per pixel.
fn check_memory(
    decoder: &impl ImageDecoder,
    orientation: Orientation,
    options: &ImageOptions,
    preprocess: &Preprocess,
) -> Result<(), InputError> {
    let (width, height) = decoder.dimensions();
    let (width, height) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    let bytes_per_pixel = decoder.color_type().bytes_per_pixel();
    let needed = preprocess.memory_needed(width, height, bytes_per_pixel)?;
    if needed > options.max_memory_bytes {
        return Err(InputError::ImageOverBudget {
            width,
            height,
            needed,
            max_bytes: options.max_memory_bytes,
        });
    }
    Ok(())
}
