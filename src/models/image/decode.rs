//! Decoding and validation: encoded PNG or JPEG bytes to an upright image, guarded
//! against oversized inputs and decompression bombs.

use std::io::Cursor;
use std::sync::{Condvar, Mutex, PoisonError};

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
pub(super) fn decode<'b>(
    bytes: &[u8],
    options: &ImageOptions,
    preprocess: &Preprocess,
    budget: &'b MemoryBudget,
) -> Result<(DynamicImage, Reservation<'b>), InputError> {
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
    let needed = check_memory(&decoder, orientation, options, preprocess)?;
    // Held until the caller has preprocessed the image: concurrent decodes share one budget.
    let held = budget.reserve(needed);
    let mut image = DynamicImage::from_decoder(decoder).map_err(cannot)?;
    image.apply_orientation(orientation);
    Ok((image, held))
}

/// The memory that decodes in progress hold, shared by every decode of one classifier:
/// concurrent requests wait for room instead of each taking the whole budget.
#[derive(Debug)]
pub(super) struct MemoryBudget {
    used: Mutex<u64>,
    freed: Condvar,
    total: u64,
}

impl MemoryBudget {
    pub(super) fn new(total: u64) -> Self {
        MemoryBudget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            total,
        }
    }

    /// Waits until `bytes` fit beside what other decodes hold (a decode always runs when
    /// none other does), then holds them until the reservation is dropped.
    pub(super) fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.total {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += bytes;
        Reservation {
            budget: self,
            bytes,
        }
    }
}

/// Memory held from a [`MemoryBudget`] until dropped.
#[derive(Debug)]
pub(super) struct Reservation<'b> {
    budget: &'b MemoryBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = (self.budget.used.lock()).unwrap_or_else(PoisonError::into_inner);
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
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

/// The memory decoding and preprocessing it will hold, from its header; refuses an image
/// whose decoding and preprocessing would hold more than
/// `options.max_memory_bytes`, from its header: the upright size (after the EXIF
/// `orientation`; a rotated tall image is a wide one to the resize) and bytes per pixel.
fn check_memory(
    decoder: &impl ImageDecoder,
    orientation: Orientation,
    options: &ImageOptions,
    preprocess: &Preprocess,
) -> Result<u64, InputError> {
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
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_reservations_wait_for_room_and_never_exceed_the_total() {
        let budget = std::sync::Arc::new(MemoryBudget::new(100));
        let first = budget.reserve(60);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let held = budget.reserve(60);
                tx.send(*budget.used.lock().unwrap()).unwrap();
                drop(held);
            })
        };
        // 60 + 60 > 100: the second waits while the first is held.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(first);
        assert_eq!(
            rx.recv().unwrap(),
            60,
            "it ran alone once the first was released"
        );
        waiter.join().unwrap();
        assert_eq!(*budget.used.lock().unwrap(), 0);
        // Alone, a reservation always runs (a decode is never larger than the total).
        let alone = budget.reserve(100);
        drop(alone);
    }
}
