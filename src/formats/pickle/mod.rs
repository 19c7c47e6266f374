//! PyTorch checkpoints read as tensor data only: a restricted unpickler.
//!
//! `torch.save` writes a zip archive: `<dir>/data.pkl` is a pickle of the state dict whose
//! tensors point, through pickle "persistent ids", at raw little-endian storages in
//! `<dir>/data/<key>`. Python's unpickler would import and call whatever globals the
//! pickle names — `posix.system` as readily as `torch._utils._rebuild_tensor_v2` — which is
//! how a checkpoint runs code on the machine that loads it.
//!
//! This module never imports or calls anything. It interprets the pickle opcodes itself
//! (protocols 0–5), and every global the stream asks for (`GLOBAL`, `STACK_GLOBAL`,
//! `INST`; `REDUCE`, `NEWOBJ`, `OBJ` and `BUILD` can only apply globals that were already
//! let through) must be one of [`ALLOWED_GLOBALS`]; any other is refused with
//! [`LoadError::UnsafePickle`] naming `module.name` the moment its opcode is read.
//! Extension codes (`EXT1/2/4`, which name globals through Python's copyreg registry) are
//! refused as malformed (they name a global only through Python's registry). "Calling" an
//! allowed global only assembles tensor metadata (storage, offset, shape, strides); each
//! storage is then read once, tensors that view it contiguously share it, strided views
//! are copied, every offset is checked against the storage's length and every byte
//! produced is counted against the file's budget (`formats::budget`) first.
//!
//! The state dict may be the pickle's top-level dict or nested in one (a training
//! checkpoint's `{"model": {...}, "epoch": 3}`): tensors of nested dicts are named with
//! their keys joined by `.`. Non-tensor values are skipped. TorchScript archives
//! (`torch.jit.save`) ask for `__torch__` globals and are refused.
//!
//! A bare pickle (the legacy pre-1.6 PyTorch format, joblib) has no storages to read
//! tensors from: its opcodes are walked once, without building values, so a malicious one
//! is refused as unsafe naming its global, and otherwise refused as unsupported.
//!
//! The interpreter (opcodes, stack, memo and their limits) is in `vm`; what the allowed
//! globals build, and the copy of tensors out of their storages, is in `torch`.

mod op;
mod scan;
mod torch;
mod vm;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::WeightFormat;
use crate::error::LoadError;

pub use torch::ALLOWED_GLOBALS;
pub(crate) use torch::read_pth;
use torch::{StorageRef, TensorRef};
#[cfg(test)]
use vm::unpickle;

/// Largest `data.pkl` (or bare pickle) read: state-dict pickles are kilobytes.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Why a pickle was not read.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// It asked for a global outside [`ALLOWED_GLOBALS`] (`module.name`).
    Unsafe(String),
    /// It is malformed, cut off, or uses something this reader does not support.
    Malformed(String),
    /// Its copies of values would pass the budget: what, and the limit in bytes.
    OverBudget { what: String, limit: u64 },
}

type PResult<T> = Result<T, PickleError>;

fn bad<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Malformed(msg.into()))
}

/// A value the restricted unpickler can build.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An allowed global, by its `module.name`.
    Global(&'static str),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(v) => {
                1 + v
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// What a copy of the value costs: the bytes of its strings plus
    /// [`VALUE_OVERHEAD`](crate::formats::budget::VALUE_OVERHEAD) per value, nested values
    /// included.
    fn weight(&self) -> u64 {
        use crate::formats::budget::VALUE_OVERHEAD;
        let own = match self {
            Value::Str(s) => s.len() as u64,
            Value::Bytes(b) => b.len() as u64,
            Value::Storage(s) => s.key.len() as u64,
            Value::Tensor(t) => (t.storage.key.len() + 8 * (t.size.len() + t.stride.len())) as u64,
            _ => 0,
        };
        let inner = match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::weight).sum::<u64>(),
            Value::Dict(v) => v.iter().map(|(k, v)| k.weight() + v.weight()).sum::<u64>(),
            _ => 0,
        };
        VALUE_OVERHEAD + own + inner
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::Mark => "a mark",
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

fn pickle_error(path: &Path, format: WeightFormat, e: PickleError) -> LoadError {
    match e {
        PickleError::Unsafe(global) => LoadError::UnsafePickle {
            path: path.to_path_buf(),
            global,
            allowed: ALLOWED_GLOBALS,
        },
        PickleError::Malformed(what) => LoadError::corrupt(path, format, what),
        PickleError::OverBudget { what, limit } => LoadError::OverBudget {
            path: path.to_path_buf(),
            what,
            limit,
            unit: "bytes of pickle value copies",
        },
    }
}

/// A bare pickle: refused, since it carries no tensor storages this crate can read. Its
/// opcodes are first walked (not interpreted: one pass, constant memory) so that a
/// malicious one is named by the global it asks for.
pub(crate) fn refuse_bare_pickle(path: &Path) -> Result<HashMap<String, Tensor>, LoadError> {
    use std::io::Read;
    let format = WeightFormat::Pickle;
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut data = Vec::new();
    file.take(MAX_PICKLE_BYTES)
        .read_to_end(&mut data)
        .map_err(|e| LoadError::io(path, e))?;
    match scan::scan_globals(&data) {
        Err(e) => Err(pickle_error(path, format, e)),
        Ok(_) => Err(LoadError::Unsupported {
            path: path.to_path_buf(),
            what: "a bare pickle (the PyTorch format before 1.6, joblib or pickle.dump); re-save it with a current torch.save (zip) or as safetensors".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::torch::collect_tensors;
    use super::*;

    fn unsafe_global(data: &[u8]) -> String {
        match unpickle(data) {
            Err(PickleError::Unsafe(g)) => g,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn globals_outside_the_allow_list_are_refused_by_name() {
        assert_eq!(unsafe_global(b"cposix\nsystem\n(S'x'\ntR."), "posix.system");
        // Protocol 4: STACK_GLOBAL from two short strings.
        let p4 = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert_eq!(unsafe_global(p4), "builtins.eval");
        assert_eq!(unsafe_global(b"(ios\nsystem\nS'x'\n."), "os.system");
    }

    #[test]
    fn allowed_globals_build_tensor_metadata() {
        // {'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())}
        let mut p =
            b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQ");
        p.extend_from_slice(
            b"K\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.",
        );
        let v = unpickle(&p).unwrap();
        let tensors = collect_tensors(v);
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].0, "w");
        assert_eq!(tensors[0].1.size, vec![2, 3]);
        assert_eq!(tensors[0].1.storage.numel, 6);
    }

    #[test]
    fn truncated_and_hostile_streams_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\xff",
            b"\x8a\xff",
            b"h\x05",
            b"t",
            b"\x85",
            b"a",
            b"0",
            b"1",
            b"R",
        ] {
            assert!(
                matches!(unpickle(bad), Err(PickleError::Malformed(_))),
                "{bad:?}"
            );
        }
        // Nesting past the limit.
        let mut deep = b"]".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 100));
        deep.push(b'.');
        assert!(matches!(unpickle(&deep), Err(PickleError::Malformed(_))));
        // Doubling through the memo.
        let mut laughs = b"]q\x00".to_vec();
        for i in 0..60u8 {
            laughs.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        laughs.push(b'.');
        assert!(matches!(
            unpickle(&laughs),
            Err(PickleError::OverBudget { .. })
        ));
    }

    /// A 1 MiB string copied by BINPUT/BINGET, MEMOIZE and DUP: each copy counts its
    /// bytes, so a pickle of a few MB cannot ask for gigabytes.
    #[test]
    fn copies_are_counted_by_size_including_puts() {
        let big = 1usize << 20;
        let mut s = b"\x80\x04B".to_vec();
        s.extend((big as u32).to_le_bytes());
        s.extend(std::iter::repeat_n(b'a', big));
        for tail in [&b"q\x00"[..], b"\x94", b"2", b"q\x00h\x00"] {
            let mut p = s.clone();
            for _ in 0..3000 {
                p.extend(tail);
            }
            p.push(b'.');
            match unpickle(&p) {
                Err(PickleError::OverBudget { limit, .. }) => {
                    assert!(limit < 8 * p.len() as u64, "{tail:?}: {limit}")
                }
                other => panic!("{tail:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn extension_codes_are_refused_as_malformed_not_as_a_sentence_in_global() {
        for p in [
            &b"\x80\x02\x82\x01."[..],
            b"\x80\x02\x83\x01\x00.",
            b"\x80\x02\x84\x01\x00\x00\x00.",
        ] {
            match unpickle(p) {
                Err(PickleError::Malformed(m)) => assert!(m.contains("extension registry"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
