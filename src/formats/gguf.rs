//! GGUF files (llama.cpp), through candle's reader; tensors are dequantised to `f32` by
//! [`load_tensors`](super::load_tensors), or kept quantised by [`load_quantized`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::WeightFormat;
use crate::error::LoadError;

/// Every tensor of a GGUF file as candle's quantised [`QTensor`], on `device`.
pub fn load_quantized(path: &Path, device: &Device) -> Result<HashMap<String, QTensor>, LoadError> {
    let corrupt = |what: String| LoadError::corrupt(path, WeightFormat::Gguf, what);
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    let mut file = std::io::BufReader::new(file);
    let content = gguf_file::Content::read(&mut file).map_err(|e| corrupt(e.to_string()))?;
    let mut out = HashMap::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        // The tensor's size must be computable and fit in the file before candle
        // computes it (unchecked) and allocates for it.
        let bytes = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(info.ggml_dtype.type_size()))
            .map(|b| b / info.ggml_dtype.block_size().max(1));
        match bytes {
            Some(b) if b as u64 <= file_len => {}
            _ => {
                return Err(corrupt(format!(
                    "tensor `{name}` has shape {:?}, more data than the {file_len}-byte file holds",
                    info.shape.dims()
                )));
            }
        }
        let t = content
            .tensor(&mut file, name, device)
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

pub(crate) fn read_gguf(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, LoadError> {
    load_quantized(path, device)?
        .into_iter()
        .map(|(name, q)| {
            let t = q.dequantize(device).map_err(|e| {
                LoadError::corrupt(path, WeightFormat::Gguf, format!("tensor `{name}`: {e}"))
            })?;
            Ok((name, t))
        })
        .collect()
}
