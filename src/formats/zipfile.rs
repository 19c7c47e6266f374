//! The zip containers of PyTorch checkpoints and `.npz` archives.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::WeightFormat;
use crate::error::LoadError;

pub(crate) type Archive = zip::ZipArchive<BufReader<File>>;

/// Opens a zip archive, naming the file and `format` in any error.
pub(crate) fn open(path: &Path, format: WeightFormat) -> Result<Archive, LoadError> {
    let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| LoadError::corrupt(path, format, format!("unreadable zip archive: {e}")))
}

/// Opens a zip archive to read its entries, refusing one whose entries share bytes: a
/// central directory whose records all point at one entry would make a small file read as
/// many times its size.
pub(crate) fn open_entries(path: &Path, format: WeightFormat) -> Result<Archive, LoadError> {
    let mut archive = open(path, format)?;
    let corrupt = |what: String| LoadError::corrupt(path, format, what);
    match archive.has_overlapping_entries() {
        Ok(false) => Ok(archive),
        Ok(true) => Err(corrupt(format!(
            "its {} entries overlap (two central-directory records point at the same bytes, or an entry runs into the directory); each entry must have bytes of its own",
            archive.len()
        ))),
        Err(e) => Err(corrupt(format!("unreadable entry header: {e}"))),
    }
}

/// The names of an archive's entries.
pub(crate) fn names(
    archive: &Archive,
    path: &Path,
    format: WeightFormat,
) -> Result<Vec<String>, LoadError> {
    archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::corrupt(path, format, format!("unreadable entry name: {e}")))
}

/// A zip archive is a PyTorch checkpoint when it holds a `<dir>/data.pkl` entry and an
/// `.npz` when it holds `.npy` entries.
pub(crate) fn classify(path: &Path) -> Result<WeightFormat, LoadError> {
    let archive = match open(path, WeightFormat::PyTorchZip) {
        Ok(a) => a,
        Err(LoadError::Corrupt { what, .. }) => {
            return Err(LoadError::UnknownFormat {
                path: path.to_path_buf(),
                what: format!(
                    "it starts like a zip archive (a PyTorch checkpoint or .npz) but {what}"
                ),
            });
        }
        Err(e) => return Err(e),
    };
    let names = names(&archive, path, WeightFormat::PyTorchZip)?;
    let torch_entry = |n: &String| {
        is_data_pkl(n)
            || n.split_once('/')
                .is_some_and(|(_, rest)| rest.starts_with("data/") || rest == "version")
    };
    if names.iter().any(torch_entry) {
        Ok(WeightFormat::PyTorchZip)
    } else if names.iter().any(|n| n.ends_with(".npy")) {
        Ok(WeightFormat::Npz)
    } else {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        Err(LoadError::UnknownFormat {
            path: path.to_path_buf(),
            what: format!(
                "a zip archive with neither a `<dir>/data.pkl` entry (PyTorch) nor `.npy` entries (npz); its entries begin [{}]",
                shown.join(", ")
            ),
        })
    }
}

/// `archive/data.pkl`: a `data.pkl` one directory deep, where `torch.save` writes it.
pub(crate) fn is_data_pkl(name: &str) -> bool {
    name.strip_suffix("/data.pkl")
        .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
}

/// Reads one entry whole, refusing one whose declared size is over `limit` or whose
/// content does not match its declared size and checksum.
pub(crate) fn read_entry(
    archive: &mut Archive,
    name: &str,
    limit: u64,
    path: &Path,
    format: WeightFormat,
) -> Result<Vec<u8>, LoadError> {
    let corrupt = |what: String| LoadError::corrupt(path, format, what);
    let file_len = std::fs::metadata(path)
        .map_err(|e| LoadError::io(path, e))?
        .len();
    let mut entry = archive
        .by_name(name)
        .map_err(|e| corrupt(format!("cannot open entry `{name}`: {e}")))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(corrupt(format!(
            "entry `{name}` is compressed ({}); only stored (uncompressed) entries are read, as torch.save and np.savez write them (re-save without np.savez_compressed)",
            entry.compression()
        )));
    }
    let size = entry.size();
    if size > limit || size > file_len {
        return Err(corrupt(format!(
            "entry `{name}` declares {size} bytes, more than the {} allowed",
            limit.min(file_len)
        )));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(size as usize)
        .map_err(|_| corrupt(format!("no memory for the {size} bytes of entry `{name}`")))?;
    (&mut entry)
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| corrupt(format!("cannot read entry `{name}`: {e}")))?;
    if data.len() as u64 != size {
        return Err(corrupt(format!(
            "entry `{name}` is cut off: {} of its {size} bytes are there",
            data.len()
        )));
    }
    // Reading past the declared size lets the zip reader verify the CRC-32.
    let mut rest = [0u8; 1];
    match entry.read(&mut rest) {
        Ok(0) => Ok(data),
        Ok(_) => Err(corrupt(format!(
            "entry `{name}` holds more than the {size} bytes it declares"
        ))),
        Err(e) => Err(corrupt(format!("entry `{name}` is damaged: {e}"))),
    }
}
