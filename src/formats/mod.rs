//! Weight files in the formats teams deploy, recognised by content and loaded without
//! running code from them.
//!
//! | format | recognised by | read with |
//! |---|---|---|
//! | safetensors | 8-byte little-endian header length, then `{` | a read-only memory map |
//! | PyTorch checkpoint (`.pt`, `.pth`, `.bin`, torch ≥ 1.6 zip) | `PK\x03\x04` and a `<dir>/data.pkl` entry | a restricted unpickler (`pickle`, feature `pytorch`) that builds tensors and nothing else |
//! | NumPy `.npz` (`np.savez`) | `PK\x03\x04` and `.npy` entries | a bounds-checked `.npy` reader |
//! | GGUF | `GGUF` | candle's GGUF reader, dequantised to `f32` |
//! | ONNX | a protobuf `ModelProto` whose fields are all known, `ir_version` among them | `candle-onnx` (cargo feature `onnx`), see `OnnxModel` |
//! | bare pickle (legacy PyTorch before 1.6, joblib) | pickle `PROTO` opcode or a protocol-0 `GLOBAL` first | refused: scanned for unsafe globals, then [`LoadError::Unsupported`] |
//!
//! The file name's extension is never consulted: `pytorch_model.bin`, `model.pt` and a
//! checkpoint renamed to `weights.safetensors` are all read by what they hold.
//!
//! **Pickles never run.** A PyTorch checkpoint's `data.pkl` is interpreted by a small
//! unpickler of our own that knows the handful of globals tensor reconstruction needs
//! (`pickle::ALLOWED_GLOBALS`). Any other global — `posix.system`, `builtins.eval`,
//! `__torch__.*` from TorchScript — is refused with [`LoadError::UnsafePickle`] naming it,
//! the moment its opcode is read. Nothing is imported or called: "reducing" an allowed
//! global only assembles tensor metadata.
//!
//! Every malformed input is a typed error naming the file ([`LoadError::Corrupt`],
//! [`LoadError::UnknownFormat`]); lengths and offsets read from a file are checked against
//! the file before anything is allocated or sliced.
//!
//! **Every load is bounded by the file's size** ([`budget`]): the tensor bytes a loader
//! materialises are counted before they are allocated and may be at most
//! `file size × 2 + 1 MiB` (GGUF dequantised to `f32`: `× 16 + 1 MiB`), a storage shared
//! by several tensors counting once; a pickle's copies of values are counted by size; zip
//! entries or GGUF tensors that share bytes are refused. A file over its budget is
//! [`LoadError::OverBudget`], naming the file and the limit.
//!
//! ```
//! use modelhost::error::WeightFormat;
//! use modelhost::formats;
//! use modelhost::{DType, Device};
//!
//! let path = std::path::Path::new("examples/assets/digits/model.safetensors");
//! assert_eq!(formats::detect(path)?, WeightFormat::Safetensors);
//! let tensors = formats::load_tensors(path, &Device::Cpu)?;
//! assert_eq!(tensors["layers.0.weight"].dims(), &[64, 64]);
//! let vb = formats::var_builder(path, DType::F32, &Device::Cpu)?;
//! assert!(vb.contains_tensor("layers.0.bias"));
//! # Ok::<(), modelhost::error::LoadError>(())
//! ```

pub mod budget;
mod detect;
#[cfg(feature = "gguf")]
mod gguf;
#[cfg(feature = "npz")]
mod npz;
#[cfg(feature = "onnx")]
mod onnx;
#[cfg(feature = "pytorch")]
pub mod pickle;
#[cfg(any(feature = "pytorch", feature = "npz"))]
mod zipfile;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::LoadError;

use crate::error::WeightFormat;
pub use detect::detect;
#[cfg(feature = "gguf")]
pub use gguf::load_quantized;
#[cfg(feature = "onnx")]
pub use onnx::{OnnxModel, OnnxValueInfo};

/// The file names [`find_weights`] looks for in a model directory, in order.
pub const WEIGHT_FILE_NAMES: &[&str] = &[
    "model.safetensors",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.npz",
    "model.gguf",
];

/// The weights file of a Hugging Face style model directory: the first of
/// [`WEIGHT_FILE_NAMES`] that exists (`model.safetensors`, then `pytorch_model.bin`, …).
///
/// The name only picks the file; [`load_tensors`] and [`var_builder`] read it by content.
/// When none exists the error names the first candidate and lists them all.
pub fn find_weights(dir: &Path) -> Result<PathBuf, LoadError> {
    WEIGHT_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| LoadError::MissingFile {
            path: dir.join(WEIGHT_FILE_NAMES[0]),
            what: "the model weights (looked for model.safetensors, pytorch_model.bin, model.pt, model.pth, model.npz, model.gguf)",
        })
}

/// Every tensor in a weights file, by name, on `device`, in the dtype it was stored in
/// (GGUF tensors are dequantised to `f32`; an ONNX file yields its initializers).
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    match detect(path)? {
        WeightFormat::Safetensors => {
            let st = mmap_safetensors(path)?;
            let mut out = HashMap::new();
            for (name, _) in st.tensors() {
                let t = st
                    .load(&name, device)
                    .map_err(|e| LoadError::corrupt(path, WeightFormat::Safetensors, e))?;
                out.insert(name, t);
            }
            Ok(out)
        }
        #[cfg(feature = "pytorch")]
        WeightFormat::PyTorchZip => pickle::read_pth(path, device),
        #[cfg(feature = "pytorch")]
        WeightFormat::Pickle => pickle::refuse_bare_pickle(path),
        #[cfg(not(feature = "pytorch"))]
        WeightFormat::PyTorchZip | WeightFormat::Pickle => {
            feature_off(path, "PyTorch checkpoints and pickles", "pytorch")
        }
        #[cfg(feature = "npz")]
        WeightFormat::Npz => npz::read_npz(path, device),
        #[cfg(not(feature = "npz"))]
        WeightFormat::Npz => feature_off(path, "NumPy .npz archives", "npz"),
        #[cfg(feature = "gguf")]
        WeightFormat::Gguf => gguf::read_gguf(path, device),
        #[cfg(not(feature = "gguf"))]
        WeightFormat::Gguf => feature_off(path, "GGUF files", "gguf"),
        WeightFormat::Onnx => onnx_initializers(path, device),
    }
}

/// A [`VarBuilder`] over a weights file in any format: safetensors are memory-mapped, the
/// other formats are read into memory with [`load_tensors`]. Tensors come out in `dtype`.
pub fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, LoadError> {
    match detect(path)? {
        WeightFormat::Safetensors => {
            // SAFETY: a read-only memory map; candle copies the tensors it loads, and a
            // file changed underneath us is the caller's to avoid.
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
                .map_err(|e| LoadError::corrupt(path, WeightFormat::Safetensors, e))
        }
        _ => Ok(VarBuilder::from_tensors(
            load_tensors(path, device)?,
            dtype,
            device,
        )),
    }
}

fn mmap_safetensors(path: &Path) -> Result<candle_core::safetensors::MmapedSafetensors, LoadError> {
    // SAFETY: as in `var_builder`.
    unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| LoadError::corrupt(path, WeightFormat::Safetensors, e))
}

#[cfg(feature = "onnx")]
fn onnx_initializers(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    onnx::initializers(path, device)
}

#[cfg(not(feature = "onnx"))]
fn onnx_initializers(path: &Path, _device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    feature_off(path, "ONNX graphs", "onnx")
}

/// Refuses a file whose format this build cannot read, naming the cargo feature that
/// reads it.
#[allow(dead_code)] // unused when every format's feature is on
pub(crate) fn feature_off<T>(path: &Path, what: &str, feature: &str) -> Result<T, LoadError> {
    Err(LoadError::Unsupported {
        path: path.to_path_buf(),
        what: format!("{what}: this build of modelhost lacks the `{feature}` cargo feature"),
    })
}

/// The ONNX operators `OnnxModel` (cargo feature `onnx`) runs (those `candle-onnx` 0.11.1
/// implements). A graph with any other operator is refused at load time with
/// [`LoadError::UnsupportedOperator`].
pub const ONNX_OPERATORS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "CumSum",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "HardSwish",
    "Identity",
    "If",
    "LSTM",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "RNN",
    "Range",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "ScatterND",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
    "Xor",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture loads when its format's feature is on, and is refused with the
    /// feature's name when it is off (run with `--no-default-features` to see the latter).
    #[test]
    fn a_format_loads_with_its_feature_and_is_refused_naming_it_without() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
        let cases = [
            ("model.pth", "pytorch", cfg!(feature = "pytorch")),
            ("model.npz", "npz", cfg!(feature = "npz")),
            ("model.gguf", "gguf", cfg!(feature = "gguf")),
            ("model.onnx", "onnx", cfg!(feature = "onnx")),
        ];
        for (file, feature, on) in cases {
            let result = load_tensors(&dir.join(file), &Device::Cpu);
            match (on, result) {
                (true, Ok(tensors)) => assert!(!tensors.is_empty(), "{file}"),
                (false, Err(LoadError::Unsupported { what, .. })) => {
                    let named = what.contains(&format!("`{feature}`"));
                    assert!(named && what.contains("cargo feature"), "{what}")
                }
                (on, other) => panic!("{file} with `{feature}` {on}: {other:?}"),
            }
        }
        // safetensors needs no feature.
        assert!(load_tensors(&dir.join("model.safetensors"), &Device::Cpu).is_ok());
    }
}
