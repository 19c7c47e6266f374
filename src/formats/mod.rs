//! Weight files, recognised by their content (magic bytes), never by their extension.
//!
//! | format | recognised by | read as |
//! |---|---|---|
//! | safetensors | an 8-byte header length, then `{` | memory-mapped |
//! | PyTorch checkpoint (`.pt`, `.pth`, `.bin`) | a zip holding `*/data.pkl` | tensor data only: every pickle is scanned first, and one that asks for anything outside tensor reconstruction is refused ([`LoadError::UnsafePickle`]) |
//! | a bare pickle (PyTorch before 1.6) | the pickle protocol byte `0x80` | scanned the same way; a clean one is refused as a legacy format (re-save with `torch.save`) |
//! | NumPy `.npz` | a zip of `*.npy` | every array, named by its file stem |
//! | NumPy `.npy` | `\x93NUMPY` | one array, named `array` |
//! | GGUF | `GGUF` | every tensor, dequantised to f32 |
//! | ONNX | a protobuf starting with `ir_version` (byte `0x08`) | its initializers (feature `onnx`); [`onnx::OnnxModel`] runs the graph |
//!
//! Nothing in a checkpoint ever runs: the pickle reader (candle's) interprets opcodes into
//! plain values, and the scan here refuses what is not a state dict before it is read.
//! A truncated or corrupt file gives [`LoadError::Format`] naming the file and what is wrong.

#[cfg(feature = "onnx")]
pub mod onnx;
mod pickle;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::LoadError;
use pickle::ScanError;

/// A weights format, as [`detect`] recognises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightFormat {
    /// safetensors.
    Safetensors,
    /// PyTorch's zip checkpoint (`torch.save` since 1.6).
    PyTorch,
    /// A bare pickle: PyTorch's legacy format, or any other pickle.
    Pickle,
    /// A zip of NumPy arrays.
    Npz,
    /// One NumPy array.
    Npy,
    /// GGUF (llama.cpp's format).
    Gguf,
    /// An ONNX model (its initializers are the tensors; feature `onnx`).
    Onnx,
}

/// The largest pickle (`data.pkl`) read for the safety scan: state dicts are a few MB.
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// Recognises the format of `path` from its first bytes (and, for a zip, its entries).
pub fn detect(path: &Path) -> Result<WeightFormat, LoadError> {
    let mut head = [0u8; 16];
    let n = {
        let mut file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(LoadError::io(path, e)),
            }
        }
        n
    };
    let head = &head[..n];
    let len = std::fs::metadata(path)
        .map_err(|e| LoadError::io(path, e))?
        .len();
    if head.starts_with(b"PK\x03\x04") {
        let names = zip_names(path)?;
        if names.iter().any(|n| n.ends_with("data.pkl")) {
            return Ok(WeightFormat::PyTorch);
        }
        if !names.is_empty() && names.iter().all(|n| n.ends_with(".npy")) {
            return Ok(WeightFormat::Npz);
        }
        return Err(LoadError::format(
            path,
            "a zip that is neither a PyTorch checkpoint (no data.pkl) nor an .npz (entries other than .npy)",
        ));
    }
    if head.starts_with(b"GGUF") {
        return Ok(WeightFormat::Gguf);
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(WeightFormat::Npy);
    }
    if head.first() == Some(&0x80) && head.get(1).is_some_and(|&p| (2..=5).contains(&p)) {
        return Ok(WeightFormat::Pickle);
    }
    // An ONNX ModelProto opens with field 1, `ir_version`, a small varint.
    if head.first() == Some(&0x08) && head.get(1).is_some_and(|&v| (1..=32).contains(&v)) {
        return Ok(WeightFormat::Onnx);
    }
    if n >= 9 {
        let header = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        if head[8] == b'{' && header.checked_add(8).is_some_and(|end| end <= len) {
            return Ok(WeightFormat::Safetensors);
        }
        if head[8] == b'{' {
            return Err(LoadError::format(
                path,
                format!(
                    "a safetensors header of {header} bytes in a file of {len}: the file is truncated"
                ),
            ));
        }
    }
    Err(LoadError::format(
        path,
        "not a weights format modelhost reads (by content: safetensors, PyTorch zip checkpoint, .npz, .npy, GGUF, ONNX)",
    ))
}

fn zip_archive(
    path: &Path,
) -> Result<zip::ZipArchive<std::io::BufReader<std::fs::File>>, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| LoadError::format(path, format!("a corrupt or truncated zip: {e}")))
}

fn zip_names(path: &Path) -> Result<Vec<String>, LoadError> {
    zip_archive(path)?
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::format(path, format!("a corrupt zip directory: {e}")))
}

/// Scans every pickle of a PyTorch zip checkpoint and checks each tensor's storage.
fn check_pytorch(path: &Path) -> Result<(), LoadError> {
    let pickles: Vec<String> = zip_names(path)?
        .into_iter()
        .filter(|n| n.ends_with(".pkl"))
        .collect();
    let mut archive = zip_archive(path)?;
    for name in pickles {
        let mut entry = archive
            .by_name(&name)
            .map_err(|e| LoadError::format(path, format!("{name}: {e}")))?;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(LoadError::format(
                path,
                format!(
                    "{name} is {} bytes; a state dict's pickle is far smaller",
                    entry.size()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| LoadError::format(path, format!("{name} cannot be read: {e}")))?;
        scan_bytes(path, &bytes)?;
    }
    Ok(())
}

fn scan_bytes(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    pickle::scan(bytes).map_err(|e| match e {
        ScanError::Unsafe(global) => LoadError::UnsafePickle {
            path: path.to_path_buf(),
            global,
        },
        ScanError::Malformed(m) => LoadError::format(path, format!("a malformed pickle: {m}")),
    })
}

/// Runs a third-party parser, turning a panic on a corrupt file into a typed error.
fn guarded<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> Result<T, LoadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LoadError::format(path, format!("{what}: {e}"))),
        Err(_) => Err(LoadError::format(
            path,
            format!("{what}: the file is corrupt (the reader gave up on it)"),
        )),
    }
}

/// Reads every tensor of a PyTorch zip checkpoint after the safety scan; a storage too
/// small for the tensors said to live in it is an error, not an allocation.
fn read_pytorch(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    check_pytorch(path)?;
    let infos = guarded(path, "reading the checkpoint's tensor index", || {
        candle_core::pickle::read_pth_tensor_info(path, false, None)
    })?;
    let mut archive = zip_archive(path)?;
    for info in &infos {
        // candle's layout offset is in bytes already.
        let needed = (info.layout.shape().elem_count() as u64)
            .saturating_mul(info.dtype.size_in_bytes() as u64)
            .saturating_add(info.layout.start_offset() as u64);
        let stored = archive.by_name(&info.path).map(|e| e.size()).map_err(|e| {
            LoadError::format(
                path,
                format!(
                    "tensor `{}`: its storage {} is missing: {e}",
                    info.name, info.path
                ),
            )
        })?;
        if needed > stored {
            return Err(LoadError::format(
                path,
                format!(
                    "tensor `{}` needs {needed} bytes but its storage {} holds {stored}: the file is truncated or corrupt",
                    info.name, info.path
                ),
            ));
        }
    }
    let tensors = guarded(path, "reading the checkpoint's tensors", || {
        let pth = candle_core::pickle::PthTensors::new(path, None)?;
        let mut out = HashMap::new();
        for name in pth.tensor_infos().keys() {
            if let Some(t) = pth.get(name)? {
                out.insert(name.clone(), t.to_device(device)?);
            }
        }
        Ok(out)
    })?;
    if tensors.is_empty() {
        return Err(LoadError::format(
            path,
            "a PyTorch checkpoint without tensors at its top level (modelhost reads a state dict, as `torch.save(model.state_dict(), ...)` writes it)",
        ));
    }
    Ok(tensors)
}

/// Reads every tensor of a GGUF file, dequantised, after checking that each lies inside
/// the file.
fn read_gguf(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    use candle_core::quantized::gguf_file;
    let mut file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    let content = guarded(path, "reading the GGUF header", || {
        gguf_file::Content::read(&mut file)
    })?;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = elems
            .div_ceil(block)
            .saturating_mul(info.ggml_dtype.type_size() as u64);
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > len {
            return Err(LoadError::format(
                path,
                format!(
                    "tensor `{name}` ends at byte {end} of a {len}-byte file: the file is truncated"
                ),
            ));
        }
    }
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    let mut out = HashMap::new();
    for name in names {
        let t = guarded(path, &format!("reading tensor `{name}`"), || {
            content.tensor(&mut file, &name, device)?.dequantize(device)
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Every tensor of a weights file, by name, on `device` in its stored dtype (GGUF:
/// dequantised to f32).
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    match detect(path)? {
        WeightFormat::Safetensors => guarded(path, "reading safetensors", || {
            candle_core::safetensors::load(path, device)
        }),
        WeightFormat::PyTorch => read_pytorch(path, device),
        WeightFormat::Pickle => {
            let bytes = std::fs::read(path).map_err(|e| LoadError::io(path, e))?;
            scan_bytes(path, &bytes)?;
            Err(LoadError::format(
                path,
                "a bare pickle (PyTorch's format before 1.6); re-save it with torch.save(state_dict, path), or as safetensors",
            ))
        }
        WeightFormat::Npz => {
            // Check every entry's declared size against the archive before reading.
            let tensors = guarded(path, "reading .npz", || Tensor::read_npz(path))?;
            tensors
                .into_iter()
                .map(|(name, t)| {
                    let name = name.strip_suffix(".npy").unwrap_or(&name).to_string();
                    let t = t
                        .to_device(device)
                        .map_err(|e| LoadError::weights(path, e))?;
                    Ok((name, t))
                })
                .collect()
        }
        WeightFormat::Npy => {
            let t = guarded(path, "reading .npy", || {
                Tensor::read_npy(path)?.to_device(device)
            })?;
            Ok(HashMap::from([("array".to_string(), t)]))
        }
        WeightFormat::Gguf => read_gguf(path, device),
        #[cfg(feature = "onnx")]
        WeightFormat::Onnx => onnx::OnnxModel::load(path)?
            .initializers()?
            .into_iter()
            .map(|(name, t)| {
                let t = t
                    .to_device(device)
                    .map_err(|e| LoadError::weights(path, e))?;
                Ok((name, t))
            })
            .collect(),
        #[cfg(not(feature = "onnx"))]
        WeightFormat::Onnx => Err(LoadError::format(
            path,
            "an ONNX model; modelhost reads ONNX when built with the `onnx` feature",
        )),
    }
}

/// A [`VarBuilder`] over a weights file of any format: safetensors are memory-mapped, the
/// others read into memory (after the safety scan for pickles).
pub fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, LoadError> {
    match detect(path)? {
        // SAFETY: the file is memory-mapped read-only; candle copies what it needs into its
        // own tensors, and a file changed underneath us is the caller's to avoid.
        WeightFormat::Safetensors => {
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
                .map_err(|e| LoadError::format(path, e))
        }
        _ => Ok(VarBuilder::from_tensors(
            load_tensors(path, device)?,
            dtype,
            device,
        )),
    }
}

/// The names a Hugging Face style directory gives its weights, in the order they are tried.
pub const WEIGHT_FILES: [&str; 6] = [
    "model.safetensors",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.npz",
    "model.gguf",
];

/// The weights file of a model directory: the first of [`WEIGHT_FILES`] that exists.
pub fn find_weights(dir: &Path) -> Result<PathBuf, LoadError> {
    WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| LoadError::MissingFile {
            path: dir.join(WEIGHT_FILES[0]),
            what: "the model weights (also looked for pytorch_model.bin, model.pt, model.pth, model.npz, model.gguf)",
        })
}
