//! Recognising a weights file by its first bytes.

use std::io::Read;
use std::path::Path;

use super::WeightFormat;
use crate::error::LoadError;

/// How many bytes [`detect`] reads to recognise a protobuf (ONNX) header.
const SNIFF: usize = 4096;

/// The largest header safetensors allows (100 MB), as in the `safetensors` crate.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// The format of a weights file, recognised by content, never by extension:
///
/// - `PK\x03\x04` is a zip archive: a `<dir>/data.pkl` entry makes it a PyTorch
///   checkpoint, `.npy` entries make it an `.npz`;
/// - `GGUF` is GGUF;
/// - an 8-byte little-endian length at most 100 MB followed by `{` is safetensors — checked before pickles, since a 128-, 384-, 640-byte … header makes
///   the file start with `\x80` and a small byte, as a pickle does;
/// - a pickle `PROTO` opcode (`\x80` then a protocol 0–5), or a protocol-0 `GLOBAL`
///   (`c` then a dotted name and a newline), is a bare pickle;
/// - ONNX has no magic number: a file is taken for an ONNX `ModelProto` when the protobuf
///   fields in its first 4 KiB all carry field numbers and wire types that `ModelProto`
///   defines (1 `ir_version`, 2–6 producer/domain/version/doc strings, 7 `graph`,
///   8 `opset_import`, 14 `metadata_props`, 20 `training_info`, 25 `functions`) and
///   `ir_version` (field 1) is among them with a value from 1 to 100. Exporters write
///   `ir_version` first, so an ONNX file starts with `\x08`.
///
/// Anything else is [`LoadError::UnknownFormat`], naming the file and listing the formats
/// recognised.
pub fn detect(path: &Path) -> Result<WeightFormat, LoadError> {
    let mut file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    let mut head = Vec::with_capacity(SNIFF);
    (&mut file)
        .take(SNIFF as u64)
        .read_to_end(&mut head)
        .map_err(|e| LoadError::io(path, e))?;
    drop(file);

    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        #[cfg(any(feature = "pytorch", feature = "npz"))]
        return super::zipfile::classify(path);
        #[cfg(not(any(feature = "pytorch", feature = "npz")))]
        return super::feature_off(
            path,
            "zip archives (PyTorch checkpoints, NumPy .npz)",
            "pytorch` or `npz",
        );
    }
    if head.starts_with(b"GGUF") {
        return Ok(WeightFormat::Gguf);
    }
    // Safetensors before pickles: a header of 128, 384, 640, … bytes makes a safetensors
    // file start with `\x80` and a small byte, like a pickle's PROTO opcode.
    if is_safetensors(&head) {
        return Ok(WeightFormat::Safetensors);
    }
    if is_pickle(&head) {
        return Ok(WeightFormat::Pickle);
    }
    if looks_like_onnx(&head, len as usize == head.len()) {
        return Ok(WeightFormat::Onnx);
    }
    let what = if head.is_empty() {
        "the file is empty".to_string()
    } else {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("it starts with the bytes {}", shown.join(" "))
    };
    Err(LoadError::UnknownFormat {
        path: path.to_path_buf(),
        what,
    })
}

/// An 8-byte little-endian header length, at most 100 MB, then `{` (a header cut off by
/// the file's end is still safetensors, refused as corrupt when it is read).
fn is_safetensors(head: &[u8]) -> bool {
    let Some((n, rest)) = head.split_first_chunk::<8>() else {
        return false;
    };
    rest.first() == Some(&b'{') && u64::from_le_bytes(*n) <= MAX_SAFETENSORS_HEADER
}

fn is_pickle(head: &[u8]) -> bool {
    match head {
        [0x80, proto, ..] => *proto <= 5,
        [b'c', rest @ ..] => {
            // Protocol 0/1 GLOBAL: `c<module>\n<name>\n`.
            let line = rest.split(|&b| b == b'\n').next().unwrap_or(&[]);
            !line.is_empty()
                && rest.len() > line.len()
                && line
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        }
        _ => false,
    }
}

/// Walks the protobuf fields of `head`; see [`detect`] for the rule. `complete` says
/// whether `head` is the whole file (then every field must end inside it).
fn looks_like_onnx(head: &[u8], complete: bool) -> bool {
    let mut pos = 0;
    let mut ir_version = false;
    let mut fields = 0;
    while pos < head.len() {
        let Some((key, n)) = varint(&head[pos..]) else {
            break;
        };
        pos += n;
        let (field, wire) = (key >> 3, key & 7);
        let expected = match field {
            1 | 5 => 0,
            2 | 3 | 4 | 6 | 7 | 8 | 14 | 20 | 25 => 2,
            _ => return false,
        };
        if wire != expected {
            return false;
        }
        fields += 1;
        if wire == 0 {
            let Some((value, n)) = varint(&head[pos..]) else {
                break;
            };
            pos += n;
            if field == 1 {
                if !(1..=100).contains(&value) {
                    return false;
                }
                ir_version = true;
            }
        } else {
            let Some((size, n)) = varint(&head[pos..]) else {
                break;
            };
            pos = pos.saturating_add(n).saturating_add(size as usize);
        }
    }
    if complete && pos != head.len() {
        return false;
    }
    ir_version && fields > 0
}

/// A protobuf varint at the start of `b`: its value and length, or `None` if it is cut
/// off or longer than 10 bytes.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_header_with_ir_version_first_is_recognised() {
        // ir_version 8, producer_name "x", opset_import {version 17}
        let head = [0x08, 0x08, 0x12, 0x01, b'x', 0x42, 0x02, 0x10, 0x11];
        assert!(looks_like_onnx(&head, true));
        assert!(!looks_like_onnx(&head[..4], true));
        assert!(!looks_like_onnx(b"hello world", false));
        assert!(!looks_like_onnx(&[0x08, 0x00], true));
    }

    #[test]
    fn safetensors_whose_header_length_looks_like_a_pickle_proto_are_safetensors() {
        for n in [128u64, 384, 640] {
            let mut head = n.to_le_bytes().to_vec();
            head.push(b'{');
            assert!(is_pickle(&head), "the case this guards: {n}");
            assert!(is_safetensors(&head), "{n}");
        }
    }

    #[test]
    fn pickle_heads() {
        assert!(is_pickle(b"\x80\x02}q\x00."));
        assert!(is_pickle(b"cposix\nsystem\n"));
        assert!(!is_pickle(b"cat and dog"));
        assert!(!is_pickle(b"\x08\x07"));
    }
}
