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
    let mut file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?);
    let content = gguf_file::Content::read(&mut file).map_err(|e| corrupt(e.to_string()))?;
    let mut out = HashMap::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        // The element count must not overflow before candle computes it.
        if info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(corrupt(format!(
                "tensor `{name}` has shape {:?}, whose element count overflows",
                info.shape.dims()
            )));
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
