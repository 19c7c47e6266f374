//! GGUF files (llama.cpp), through candle's reader; tensors are dequantised to `f32` by
//! [`load_tensors`](super::load_tensors), or kept quantised by [`load_quantized`].
//!
//! Before candle reads the file its metadata is walked here once, to refuse
//! `general.alignment = 0` (candle would divide by it). After candle has read the tensor
//! infos, each tensor must fit in the bytes left after its offset and no two may share
//! bytes; dequantised output is counted against the file's budget (`budget`).

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::WeightFormat;
use super::budget::{self, Budget, GGUF_DEQUANT_PER_FILE_BYTE};
use crate::error::LoadError;

/// Deepest nesting of metadata arrays walked.
const MAX_ARRAY_DEPTH: usize = 8;

/// Every tensor of a GGUF file as candle's quantised [`QTensor`], on `device`.
///
/// Refused before anything is allocated for it: `general.alignment = 0`, a tensor larger
/// than what the file holds after its offset, tensors that overlap. The tensors read
/// therefore add up to at most the file's size.
pub fn load_quantized(path: &Path, device: &Device) -> Result<HashMap<String, QTensor>, LoadError> {
    let corrupt = |what: String| LoadError::corrupt(path, WeightFormat::Gguf, what);
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    let mut file = BufReader::new(file);
    check_metadata(&mut file, file_len).map_err(corrupt)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| LoadError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| corrupt(e.to_string()))?;
    check_tensor_ranges(&content, file_len).map_err(corrupt)?;
    let mut out = HashMap::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let t = content
            .tensor(&mut file, name, device)
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Each tensor's bytes must be computable, lie inside the file after its offset, and not
/// overlap another tensor's.
fn check_tensor_ranges(content: &gguf_file::Content, file_len: u64) -> Result<(), String> {
    let mut ranges = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let block = info.ggml_dtype.block_size().max(1);
        let bytes = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(info.ggml_dtype.type_size()))
            .map(|b| b as u64);
        let start = content.tensor_data_offset.checked_add(info.offset);
        let left = start.map(|s| file_len.saturating_sub(s));
        match (bytes, start, left) {
            (Some(b), Some(s), Some(left)) if b <= left => ranges.push((s, s + b, name.clone())),
            _ => {
                return Err(format!(
                    "tensor `{name}` has shape {:?} at offset {}, more data than the {file_len}-byte file holds after that offset",
                    info.shape.dims(),
                    info.offset
                ));
            }
        }
    }
    budget::disjoint(ranges).map_err(|e| format!("tensors {e}"))
}

/// Walks the header and metadata, refusing `general.alignment = 0`. Every length is
/// checked against the bytes left in the file before it is skipped.
fn check_metadata<R: Read + Seek>(r: &mut R, file_len: u64) -> Result<(), String> {
    let mut w = Walker { r, file_len };
    let mut head = [0u8; 8];
    w.r.read_exact(&mut head).map_err(|e| e.to_string())?;
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let wide = match version {
        1 => false,
        2 | 3 => true,
        v => return Err(format!("GGUF version {v}; versions 1 to 3 are read")),
    };
    let _tensors = w.len(wide)?;
    let kvs = w.len(wide)?;
    for _ in 0..kvs {
        let key_len = w.len(wide)?;
        let key = w.bytes(key_len)?;
        let ty = w.u32()?;
        if key == b"general.alignment" && matches!(ty, 0..=5) {
            let size = [1, 1, 2, 2, 4, 4][ty as usize];
            let v = w.bytes(size)?;
            if v.iter().all(|&b| b == 0) {
                return Err(
                    "general.alignment is 0; tensor data cannot be aligned to 0 bytes".into(),
                );
            }
        } else {
            w.skip_value(ty, wide, 0)?;
        }
    }
    Ok(())
}

struct Walker<'a, R> {
    r: &'a mut R,
    file_len: u64,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn left(&mut self) -> Result<u64, String> {
        let pos = self.r.stream_position().map_err(|e| e.to_string())?;
        Ok(self.file_len.saturating_sub(pos))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("cut off in the metadata: {e}"))?;
        Ok(u32::from_le_bytes(b))
    }

    /// A length or count: `u64` from version 2, `u32` in version 1.
    fn len(&mut self, wide: bool) -> Result<u64, String> {
        if !wide {
            return self.u32().map(u64::from);
        }
        let mut b = [0u8; 8];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("cut off in the metadata: {e}"))?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `n` bytes, after checking the file holds them (metadata keys are short).
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.left()? || n > 1 << 20 {
            return Err(format!(
                "a metadata string of {n} bytes runs past the end of the file"
            ));
        }
        let mut v = vec![0u8; n as usize];
        self.r.read_exact(&mut v).map_err(|e| e.to_string())?;
        Ok(v)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.left()? {
            return Err(format!(
                "a metadata value of {n} bytes runs past the end of the file"
            ));
        }
        let n = i64::try_from(n).map_err(|e| e.to_string())?;
        self.r
            .seek(SeekFrom::Current(n))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn skip_value(&mut self, ty: u32, wide: bool, depth: usize) -> Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.len(wide)?;
                self.skip(n)
            }
            9 if depth < MAX_ARRAY_DEPTH => {
                let elem = self.u32()?;
                let count = self.len(wide)?;
                // Every element takes at least one byte.
                if count > self.left()? {
                    return Err(format!(
                        "a metadata array of {count} elements runs past the end of the file"
                    ));
                }
                for _ in 0..count {
                    self.skip_value(elem, wide, depth + 1)?;
                }
                Ok(())
            }
            9 => Err(format!(
                "metadata arrays nest deeper than {MAX_ARRAY_DEPTH} levels"
            )),
            other => Err(format!("metadata value type {other} is not a GGUF type")),
        }
    }
}

pub(crate) fn read_gguf(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, LoadError> {
    let mut budget = Budget::for_file(path, GGUF_DEQUANT_PER_FILE_BYTE)?;
    let quantized = load_quantized(path, device)?;
    let mut out = HashMap::with_capacity(quantized.len());
    for (name, q) in quantized {
        let n = (q.shape().elem_count() as u64).saturating_mul(4);
        budget.spend(n, || {
            format!("tensor `{name}` dequantises to {n} bytes of f32")
        })?;
        let t = q.dequantize(device).map_err(|e| {
            LoadError::corrupt(path, WeightFormat::Gguf, format!("tensor `{name}`: {e}"))
        })?;
        out.insert(name, t);
    }
    Ok(out)
}
