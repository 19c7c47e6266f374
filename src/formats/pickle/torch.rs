//! Tensor reconstruction: the globals a PyTorch checkpoint may name, what "calling" them
//! builds (storages, tensor views, state dicts), and the copy of each tensor's elements out
//! of its storage in the zip archive.
//!
//! Nothing here runs Python: [`reduce`] maps an allowed global and its arguments to the
//! [`Value`] it would have built, and [`materialize`] copies bytes with every offset
//! checked against the storage's length.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::vm::unpickle;
use super::{MAX_PICKLE_BYTES, PResult, Value, bad, pickle_error};
use crate::error::LoadError;
use crate::formats::{WeightFormat, zipfile};

/// The Python globals a PyTorch checkpoint may ask for: what tensor reconstruction needs
/// and nothing else.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.ShortStorage",
    "torch.IntStorage",
    "torch.LongStorage",
];

/// Largest tensor storage read.
const MAX_STORAGE_BYTES: u64 = 64 << 30;

/// Which storage class a persistent id names.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StorageKind {
    dtype: DType,
}

fn storage_kind(global: &str) -> Option<StorageKind> {
    let dtype = match global {
        "torch.FloatStorage" => DType::F32,
        "torch.DoubleStorage" => DType::F64,
        "torch.HalfStorage" => DType::F16,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.ByteStorage" | "torch.BoolStorage" => DType::U8,
        "torch.ShortStorage" => DType::I16,
        "torch.IntStorage" => DType::I32,
        "torch.LongStorage" => DType::I64,
        _ => return None,
    };
    Some(StorageKind { dtype })
}

/// A storage a tensor points at: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub(crate) key: String,
    pub(crate) dtype: DType,
    pub(crate) numel: usize,
}

/// A tensor's metadata: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    pub(crate) offset: usize,
    pub(crate) size: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// "Calls" an allowed global: assembles what it would build, without running anything.
pub(super) fn reduce(callable: Value, args: Value) -> PResult<Value> {
    let Value::Global(g) = callable else {
        return bad(format!(
            "REDUCE applies {}, not a global",
            callable.describe()
        ));
    };
    let args = tuple(args, g)?;
    match g {
        "collections.OrderedDict" => ordered_dict(args),
        "torch._utils._rebuild_tensor_v2" => rebuild_tensor_v2(args),
        "torch._utils._rebuild_parameter"
        | "torch._utils._rebuild_parameter_with_state"
        | "torch.nn.parameter.Parameter" => {
            // (data, requires_grad, backward_hooks) / Parameter(data, requires_grad)
            match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => bad(format!("{g} expects a tensor")),
            }
        }
        "torch._tensor._rebuild_from_type_v2" => rebuild_from_type_v2(args),
        other => bad(format!(
            "`{other}` is allowed as a name but cannot be called"
        )),
    }
}

/// `OrderedDict()` or `OrderedDict([(key, value), ...])`.
fn ordered_dict(mut args: Vec<Value>) -> PResult<Value> {
    let g = "collections.OrderedDict";
    match args.len() {
        0 => Ok(Value::Dict(Vec::new())),
        _ => {
            let mut d = Vec::new();
            for item in tuple(args.swap_remove(0), g)? {
                let mut kv = tuple(item, g)?;
                if kv.len() != 2 {
                    return bad("OrderedDict items must be pairs");
                }
                let v = kv.swap_remove(1);
                let k = kv.swap_remove(0);
                d.push((k, v));
            }
            Ok(Value::Dict(d))
        }
    }
}

/// `(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`:
/// a tensor's metadata, a view of the storage.
fn rebuild_tensor_v2(mut args: Vec<Value>) -> PResult<Value> {
    if args.len() < 4 {
        return bad("_rebuild_tensor_v2 needs storage, offset, size and stride");
    }
    args.truncate(4);
    let stride = usizes(args.pop().unwrap_or(Value::None), "stride")?;
    let size = usizes(args.pop().unwrap_or(Value::None), "size")?;
    let offset = usize_of(&args.pop().unwrap_or(Value::None), "storage offset")?;
    let storage = match args.pop() {
        Some(Value::Storage(s)) => s,
        Some(other) => {
            return bad(format!(
                "_rebuild_tensor_v2 expects a storage, got {}",
                other.describe()
            ));
        }
        None => return bad("_rebuild_tensor_v2 without a storage"),
    };
    if size.len() != stride.len() {
        return bad(format!(
            "a tensor has {} dimensions but {} strides",
            size.len(),
            stride.len()
        ));
    }
    Ok(Value::Tensor(TensorRef {
        storage,
        offset,
        size,
        stride,
    }))
}

/// `(func, new_type, args, state)`: `func(*args)`, the type and state dropped.
fn rebuild_from_type_v2(mut args: Vec<Value>) -> PResult<Value> {
    if args.len() < 3 {
        return bad("_rebuild_from_type_v2 needs func, type and args");
    }
    args.truncate(3);
    let inner_args = args.pop().unwrap_or(Value::None);
    let _new_type = args.pop();
    let func = args.pop().unwrap_or(Value::None);
    reduce(func, inner_args)
}

/// `('storage', torch.FloatStorage, key, location, numel)`.
pub(super) fn persistent_load(pid: Value) -> PResult<Value> {
    let items = tuple(pid, "persistent id")?;
    match items.as_slice() {
        [
            Value::Str(tag),
            Value::Global(kind),
            Value::Str(key),
            _location,
            numel,
        ] if tag == "storage" => {
            let Some(kind) = storage_kind(kind) else {
                return bad(format!("`{kind}` is not a storage type"));
            };
            Ok(Value::Storage(StorageRef {
                key: key.clone(),
                dtype: kind.dtype,
                numel: usize_of(numel, "storage size")?,
            }))
        }
        _ => bad("a persistent id other than ('storage', type, key, location, numel)"),
    }
}

/// The tensors of an unpickled state dict, with nested dicts' keys joined by `.`.
pub(crate) fn collect_tensors(root: Value) -> Vec<(String, TensorRef)> {
    fn walk(v: Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) {
        match v {
            Value::Dict(items) => {
                for (k, v) in items {
                    let key = match k {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        _ => continue,
                    };
                    let name = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(v, &name, out);
                }
            }
            Value::Tensor(t) if !prefix.is_empty() => out.push((prefix.to_string(), t)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

fn tuple(v: Value, what: &str) -> PResult<Vec<Value>> {
    match v {
        Value::Tuple(t) | Value::List(t) => Ok(t),
        other => bad(format!(
            "{what}: expected a tuple, got {}",
            other.describe()
        )),
    }
}

fn usize_of(v: &Value, what: &str) -> PResult<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).or_else(|_| bad(format!("{what} is negative: {i}"))),
        other => bad(format!("{what}: expected an int, got {}", other.describe())),
    }
}

fn usizes(v: Value, what: &str) -> PResult<Vec<usize>> {
    tuple(v, what)?.iter().map(|x| usize_of(x, what)).collect()
}

/// Reads every tensor of a PyTorch zip checkpoint.
pub(crate) fn read_pth(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    let format = WeightFormat::PyTorchZip;
    let corrupt = |what: String| LoadError::corrupt(path, format, what);
    let mut archive = zipfile::open(path, format)?;
    let names = zipfile::names(&archive, path, format)?;
    let pkls: Vec<&String> = names.iter().filter(|n| zipfile::is_data_pkl(n)).collect();
    let pkl = match pkls.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(corrupt(
                "no `<dir>/data.pkl` entry: the archive holds no PyTorch state dict".into(),
            ));
        }
        many => {
            return Err(corrupt(format!(
                "{} `data.pkl` entries; a checkpoint has one",
                many.len()
            )));
        }
    };
    let dir = pkl.trim_end_matches("data.pkl").to_string();
    let byteorder = format!("{dir}byteorder");
    if names.contains(&byteorder) {
        let order = zipfile::read_entry(&mut archive, &byteorder, 16, path, format)?;
        if order.trim_ascii() != b"little" {
            return Err(LoadError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "byte order {:?}; only little-endian checkpoints are read",
                    String::from_utf8_lossy(&order)
                ),
            });
        }
    }
    let data = zipfile::read_entry(&mut archive, &pkl, MAX_PICKLE_BYTES, path, format)?;
    let root = unpickle(&data).map_err(|e| pickle_error(path, format, e))?;
    let refs = collect_tensors(root);
    if refs.is_empty() {
        return Err(corrupt(format!("`{pkl}` holds no tensors")));
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = HashMap::with_capacity(refs.len());
    for (name, t) in refs {
        let key = &t.storage.key;
        if !storages.contains_key(key) {
            let entry = format!("{dir}data/{key}");
            let bytes = zipfile::read_entry(&mut archive, &entry, MAX_STORAGE_BYTES, path, format)?;
            storages.insert(key.clone(), bytes);
        }
        let bytes = storages.get(key).map(Vec::as_slice).unwrap_or_default();
        let tensor = materialize(&t, bytes, device)
            .map_err(|what| corrupt(format!("tensor `{name}`: {what}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Copies a tensor's elements out of its storage, following its offset and strides.
fn materialize(t: &TensorRef, storage: &[u8], device: &Device) -> Result<Tensor, String> {
    let es = t.storage.dtype.size_in_bytes();
    let numel = t.storage.numel;
    let needed = numel
        .checked_mul(es)
        .ok_or_else(|| format!("storage `{}` size overflows", t.storage.key))?;
    if storage.len() < needed {
        return Err(format!(
            "storage `{}` holds {} bytes; {numel} {:?} elements need {needed}",
            t.storage.key,
            storage.len(),
            t.storage.dtype
        ));
    }
    let count = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("its element count overflows")?;
    let mut bytes = Vec::new();
    if count > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            })
            .ok_or("its extent overflows")?;
        if last >= numel {
            return Err(format!(
                "shape {:?} with strides {:?} at offset {} reaches element {last} of a storage of {numel}",
                t.size, t.stride, t.offset
            ));
        }
        let total = count.checked_mul(es).ok_or("its byte count overflows")?;
        bytes
            .try_reserve_exact(total)
            .map_err(|_| format!("no memory for its {total} bytes"))?;
        let contiguous = {
            let mut expect = 1usize;
            let mut ok = true;
            for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
                if d != 1 && s != expect {
                    ok = false;
                }
                expect = expect.saturating_mul(d);
            }
            ok
        };
        if contiguous {
            bytes.extend_from_slice(&storage[t.offset * es..(t.offset + count) * es]);
        } else {
            let mut index = vec![0usize; t.size.len()];
            for _ in 0..count {
                let at = t.offset
                    + index
                        .iter()
                        .zip(&t.stride)
                        .map(|(&i, &s)| i * s)
                        .sum::<usize>();
                bytes.extend_from_slice(&storage[at * es..(at + 1) * es]);
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < t.size[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
    }
    Tensor::from_raw_buffer(&bytes, t.storage.dtype, &t.size, device).map_err(|e| e.to_string())
}
