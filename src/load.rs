//! Reading model artifacts: configuration files and required files of a model directory.

use std::path::{Path, PathBuf};

use crate::error::LoadError;

/// Reads and parses a JSON configuration file, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
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
