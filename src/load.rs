//! Reading model artifacts: configuration files and required files of a model directory.

use std::path::{Path, PathBuf};

use crate::error::LoadError;

/// The largest configuration file read: real ones are a few KB (a `config.json` with a
/// large `id2label` a few hundred).
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads and parses a JSON configuration file, naming the file in any error. A file over
/// [`MAX_CONFIG_BYTES`] is refused before it is read.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let size = std::fs::metadata(path)
        .map_err(|e| LoadError::io(path, e))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(LoadError::OverBudget {
            path: path.to_path_buf(),
            what: format!("the configuration file is {size} bytes"),
            limit: MAX_CONFIG_BYTES,
            unit: "bytes",
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LoadError::config(path, e))
}

/// `path` if it is a file, else [`LoadError::MissingFile`] saying what it is for.
pub(crate) fn require(path: PathBuf, what: &'static str) -> Result<PathBuf, LoadError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(LoadError::MissingFile { path, what })
    }
}
