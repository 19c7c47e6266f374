//! NumPy `.npz` archives (`np.savez`): one `.npy` array per entry, named by the entry.
//!
//! The `.npy` header is parsed here rather than by candle so that the shape is checked
//! against the bytes actually present before anything is allocated. Little-endian (or
//! byte-order-free) `f2`, `f4`, `f8`, `i2`, `i4`, `i8`, `u1`, `u4` and `b1` (as `u8`) are
//! read, in C or Fortran order. `np.savez_compressed` archives (deflate) are refused with a
//! typed error: re-save with `np.savez`. Entries that share bytes are refused, and the
//! arrays' bytes are counted against the file's budget (`budget`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::budget::{BYTES_PER_FILE_BYTE, Budget};
use super::{WeightFormat, zipfile};
use crate::error::LoadError;

const MAX_ARRAY_BYTES: u64 = 64 << 30;

/// Every array of an `.npz` archive, by entry name without `.npy`.
pub(crate) fn read_npz(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    let format = WeightFormat::Npz;
    let mut archive = zipfile::open_entries(path, format)?;
    let names = zipfile::names(&archive, path, format)?;
    let mut budget = Budget::for_file(path, BYTES_PER_FILE_BYTE)?;
    let mut out = HashMap::new();
    for entry in names {
        let Some(name) = entry.strip_suffix(".npy") else {
            continue;
        };
        let bytes = zipfile::read_entry(&mut archive, &entry, MAX_ARRAY_BYTES, path, format)?;
        let n = bytes.len() as u64;
        budget.spend(n, || format!("array `{entry}` ({n} bytes)"))?;
        let tensor = parse_npy(&bytes, device)
            .map_err(|what| LoadError::corrupt(path, format, format!("array `{entry}`: {what}")))?;
        out.insert(name.to_string(), tensor);
    }
    Ok(out)
}

/// One `.npy` array.
fn parse_npy(b: &[u8], device: &Device) -> Result<Tensor, String> {
    let (header, data) = npy_header(b)?;
    let descr = quoted_value(header, "descr")?;
    let fortran = match value_after(header, "fortran_order")? {
        v if v.starts_with("True") => true,
        v if v.starts_with("False") => false,
        _ => return Err("fortran_order is neither True nor False".into()),
    };
    let shape = npy_shape(header)?;
    let dtype = npy_dtype(descr)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the element count overflows")?;
    let needed = count
        .checked_mul(dtype.size_in_bytes())
        .ok_or("the byte count overflows")?;
    if data.len() != needed {
        return Err(format!(
            "shape {shape:?} of {descr} needs {needed} bytes of data; {} are there",
            data.len()
        ));
    }
    let err = |e: candle_core::Error| e.to_string();
    if fortran && shape.len() > 1 {
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let dims: Vec<usize> = (0..shape.len()).rev().collect();
        Tensor::from_raw_buffer(data, dtype, &reversed, device)
            .and_then(|t| t.permute(dims))
            .and_then(|t| t.contiguous())
            .map_err(err)
    } else {
        Tensor::from_raw_buffer(data, dtype, &shape, device).map_err(err)
    }
}

/// The magic string, version and header length of an `.npy`: its header (a Python dict
/// literal) and the array's bytes after it.
fn npy_header(b: &[u8]) -> Result<(&str, &[u8]), String> {
    if !b.starts_with(b"\x93NUMPY") {
        return Err("no `\\x93NUMPY` magic string".into());
    }
    let (header_len, start) = match b.get(6) {
        Some(1) => (
            b.get(8..10)
                .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize),
            10usize,
        ),
        Some(2 | 3) => (
            b.get(8..12)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize),
            12,
        ),
        Some(v) => return Err(format!("npy format version {v}; versions 1 to 3 are read")),
        None => return Err("cut off inside the magic string".into()),
    };
    let header_len = header_len.ok_or("cut off before the header length")?;
    let header = start
        .checked_add(header_len)
        .and_then(|end| b.get(start..end))
        .ok_or_else(|| format!("the header claims {header_len} bytes but the array ends first"))?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    Ok((header, &b[start + header_len..]))
}

/// The header's `shape` tuple.
fn npy_shape(header: &str) -> Result<Vec<usize>, String> {
    let shape_text = value_after(header, "shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("shape is not a tuple")?;
    shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("shape entry {s:?} is not a size"))
        })
        .collect()
}

/// The dtype a `descr` such as `<f4` names; big-endian ones are refused.
fn npy_dtype(descr: &str) -> Result<DType, String> {
    Ok(match descr.trim_start_matches(['<', '|', '=']) {
        _ if descr.starts_with('>') => {
            return Err(format!(
                "big-endian dtype {descr:?}; only little-endian arrays are read"
            ));
        }
        "f2" | "e" => DType::F16,
        "f4" | "f" => DType::F32,
        "f8" | "d" => DType::F64,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" | "b1" => DType::U8,
        "u4" => DType::U32,
        other => {
            return Err(format!(
                "dtype {other:?}; supported are f2, f4, f8, i2, i4, i8, u1, u4 and b1"
            ));
        }
    })
}

/// The text after `'key':` in a Python dict literal, leading spaces trimmed.
fn value_after<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let pat = format!("'{key}':");
    let at = header
        .find(&pat)
        .ok_or_else(|| format!("the header has no `{key}`"))?;
    Ok(header[at + pat.len()..].trim_start())
}

fn quoted_value<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let v = value_after(header, key)?;
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"');
    let q = q.ok_or_else(|| format!("`{key}` is not a string"))?;
    v[1..]
        .split(q)
        .next()
        .filter(|_| v[1..].contains(q))
        .ok_or_else(|| format!("`{key}` is an unterminated string"))
}
