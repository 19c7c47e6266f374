//! The resource budget every loader enforces before it allocates.
//!
//! A weights file may describe far more data than it holds: tensors that repeat one storage
//! (stride 0), zip entries or GGUF tensors that all point at the same bytes, pickles that
//! copy a value over and over. Each loader therefore counts what it is about to
//! materialise against a budget sized by the file, and refuses the file with
//! [`LoadError::OverBudget`] (naming the file and the limit) before the allocation is made.
//!
//! - **Bytes materialised** (tensor data produced): at most
//!   `file size ×` [`BYTES_PER_FILE_BYTE`] `+` [`BYTES_SLACK`]. A storage that several
//!   tensors view is counted once: the tensors share it. GGUF tensors dequantised to `f32`
//!   may grow up to [`GGUF_DEQUANT_PER_FILE_BYTE`] times instead (the densest quantisation
//!   candle reads, `Q2_K`, is about 12 times smaller than `f32`).
//! - **Pickle work**: values copied by the pickle machine (`GET`, `DUP`, `PUT`/`MEMOIZE`)
//!   are counted by size (bytes of strings plus [`VALUE_OVERHEAD`] per value), at most
//!   `pickle size ×` [`PICKLE_COPIES_PER_BYTE`] `+` [`BYTES_SLACK`].
//!
//! Overlapping entries (zip entries, GGUF tensors sharing bytes) are malformed structure,
//! refused as [`LoadError::Corrupt`] where they are found.

// Without a format that counts (pytorch, npz, gguf) only the constants are used.
#![cfg_attr(
    not(any(feature = "pytorch", feature = "npz", feature = "gguf")),
    allow(dead_code)
)]

use std::path::{Path, PathBuf};

use crate::error::LoadError;

/// Tensor bytes a loader may materialise per byte of the file.
pub const BYTES_PER_FILE_BYTE: u64 = 2;
/// Tensor bytes a GGUF file may dequantise to, per byte of the file.
pub const GGUF_DEQUANT_PER_FILE_BYTE: u64 = 16;
/// Bytes every budget allows on top of its multiple of the file's size.
pub const BYTES_SLACK: u64 = 1 << 20;
/// Bytes of value copies a pickle may ask for, per byte of the pickle.
pub const PICKLE_COPIES_PER_BYTE: u64 = 4;
/// What one pickle value counts for, on top of the bytes of its text.
pub const VALUE_OVERHEAD: u64 = 32;

/// A running count against a limit, for one file.
#[derive(Debug)]
pub(crate) struct Budget {
    path: PathBuf,
    used: u64,
    limit: u64,
    unit: &'static str,
}

impl Budget {
    /// A budget of `limit` `unit`s for `path`.
    pub(crate) fn new(path: &Path, limit: u64, unit: &'static str) -> Self {
        Budget {
            path: path.to_path_buf(),
            used: 0,
            limit,
            unit,
        }
    }

    /// The tensor-bytes budget of a file of `file_len` bytes, `per_byte` bytes per byte.
    pub(crate) fn tensor_bytes(path: &Path, file_len: u64, per_byte: u64) -> Self {
        let limit = file_len
            .saturating_mul(per_byte)
            .saturating_add(BYTES_SLACK);
        Self::new(path, limit, "bytes of tensor data")
    }

    /// The tensor-bytes budget of the file at `path`, from its length on disk.
    pub(crate) fn for_file(path: &Path, per_byte: u64) -> Result<Self, LoadError> {
        let len = std::fs::metadata(path)
            .map_err(|e| LoadError::io(path, e))?
            .len();
        Ok(Self::tensor_bytes(path, len, per_byte))
    }

    /// Counts `n` more; `what` says what they are for the error if the limit is passed.
    pub(crate) fn spend(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<(), LoadError> {
        match self.used.checked_add(n).filter(|&u| u <= self.limit) {
            Some(u) => {
                self.used = u;
                Ok(())
            }
            None => Err(LoadError::OverBudget {
                path: self.path.clone(),
                what: format!(
                    "{} would bring the total to more than {} {}",
                    what(),
                    self.limit,
                    self.unit
                ),
                limit: self.limit,
                unit: self.unit,
            }),
        }
    }
}

/// Refuses ranges `[start, end)` that overlap, naming the first two that do.
pub(crate) fn disjoint(mut ranges: Vec<(u64, u64, String)>) -> Result<(), String> {
    ranges.retain(|(s, e, _)| e > s);
    ranges.sort_unstable_by_key(|(s, e, _)| (*s, *e));
    for pair in ranges.windows(2) {
        let [(_, end_a, a), (start_b, _, b)] = pair else {
            continue;
        };
        if start_b < end_a {
            return Err(format!(
                "`{a}` and `{b}` overlap in the file (byte {start_b}); each must have bytes of its own"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_past_the_limit_is_refused_naming_the_file_and_limit() {
        let mut b = Budget::tensor_bytes(Path::new("w.pth"), 10, 2);
        assert!(b.spend(BYTES_SLACK, || "a".into()).is_ok());
        assert!(b.spend(20, || "b".into()).is_ok());
        match b.spend(1, || "tensor `c`".into()) {
            Err(LoadError::OverBudget { path, limit, .. }) => {
                assert_eq!(path, Path::new("w.pth"));
                assert_eq!(limit, 20 + BYTES_SLACK);
            }
            other => panic!("{other:?}"),
        }
        assert!(b.spend(u64::MAX, || "x".into()).is_err());
    }

    #[test]
    fn overlapping_ranges_are_named() {
        assert!(disjoint(vec![(0, 4, "a".into()), (4, 8, "b".into())]).is_ok());
        assert!(disjoint(vec![(0, 0, "a".into()), (0, 8, "b".into())]).is_ok());
        let e = disjoint(vec![(4, 8, "b".into()), (0, 5, "a".into())]).unwrap_err();
        assert!(e.contains("`a` and `b`"), "{e}");
    }
}
