//! Shared by the fuzz targets: bytes → a temp file → the loaders, which must return
//! (a tensor map or a typed error), never panic or exhaust memory.

use std::io::Write;
use std::path::PathBuf;

use modelhost::Device;
use modelhost::formats;

/// A file of this process's own, rewritten for each input.
pub fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("modelhost-fuzz-{tag}-{}", std::process::id()))
}

/// Writes `bytes` to the scratch file and runs detect + load_tensors on it.
pub fn load(tag: &str, bytes: &[u8]) {
    let path = scratch(tag);
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let _ = formats::detect(&path);
    let _ = formats::load_tensors(&path, &Device::Cpu);
}

/// A zip archive of stored entries (used by the `pickle` and `npz` targets).
#[allow(dead_code)]
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            if z.start_file(*name, opts).is_err() || z.write_all(data).is_err() {
                return Vec::new();
            }
        }
        if z.finish().is_err() {
            return Vec::new();
        }
    }
    out.into_inner()
}
