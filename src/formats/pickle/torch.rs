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
use crate::formats::budget::{BYTES_PER_FILE_BYTE, Budget};
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

/// Reads every tensor of a PyTorch zip checkpoint. Each storage is read once and the
/// tensors that view it contiguously share it (tied weights stay one allocation); only a
/// strided view (a transpose saved as is, a stride-0 expansion) is copied, and every byte
/// produced is counted against the file's [`Budget`] before it is allocated.
pub(crate) fn read_pth(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    let format = WeightFormat::PyTorchZip;
    let corrupt = |what: String| LoadError::corrupt(path, format, what);
    let mut archive = zipfile::open_entries(path, format)?;
    let names = zipfile::names(&archive, path, format)?;
    let pkl = the_data_pkl(&names).map_err(corrupt)?;
    let dir = pkl
        .strip_suffix("data.pkl")
        .ok_or_else(|| corrupt(format!("`{pkl}` is not a data.pkl entry")))?
        .to_string();
    check_byteorder(&mut archive, &names, &dir, path)?;
    let data = zipfile::read_entry(&mut archive, &pkl, MAX_PICKLE_BYTES, path, format)?;
    let root = unpickle(&data).map_err(|e| pickle_error(path, format, e))?;
    let refs = collect_tensors(root);
    if refs.is_empty() {
        return Err(corrupt(format!("`{pkl}` holds no tensors")));
    }
    let mut budget = Budget::for_file(path, BYTES_PER_FILE_BYTE)?;
    let mut storages: HashMap<String, Storage> = HashMap::new();
    let mut out = HashMap::with_capacity(refs.len());
    for (name, t) in refs {
        let key = &t.storage.key;
        if !storages.contains_key(key) {
            let entry = format!("{dir}data/{key}");
            let bytes = zipfile::read_entry(&mut archive, &entry, MAX_STORAGE_BYTES, path, format)?;
            let storage = Storage::new(&t.storage, bytes)
                .map_err(|what| corrupt(format!("tensor `{name}`: {what}")))?;
            storages.insert(key.clone(), storage);
        }
        let Some(storage) = storages.get_mut(key) else {
            return Err(corrupt(format!("storage `{key}` vanished")));
        };
        let tensor = storage.view(&t, &name, &mut budget, device, path)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// The one `<dir>/data.pkl` entry of a checkpoint.
fn the_data_pkl(names: &[String]) -> Result<String, String> {
    let pkls: Vec<&String> = names.iter().filter(|n| zipfile::is_data_pkl(n)).collect();
    match pkls.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err("no `<dir>/data.pkl` entry: the archive holds no PyTorch state dict".into()),
        many => Err(format!(
            "{} `data.pkl` entries; a checkpoint has one",
            many.len()
        )),
    }
}

/// Refuses a checkpoint whose `byteorder` entry says anything but `little`.
fn check_byteorder(
    archive: &mut zipfile::Archive,
    names: &[String],
    dir: &str,
    path: &Path,
) -> Result<(), LoadError> {
    let byteorder = format!("{dir}byteorder");
    if !names.contains(&byteorder) {
        return Ok(());
    }
    let order = zipfile::read_entry(archive, &byteorder, 16, path, WeightFormat::PyTorchZip)?;
    if order.trim_ascii() == b"little" {
        return Ok(());
    }
    Err(LoadError::Unsupported {
        path: path.to_path_buf(),
        what: format!(
            "byte order {:?}; only little-endian checkpoints are read",
            String::from_utf8_lossy(&order)
        ),
    })
}

/// One storage of a checkpoint: its bytes, and the tensor its contiguous views share
/// (made on first use).
struct Storage {
    meta: StorageRef,
    bytes: Vec<u8>,
    shared: Option<Tensor>,
}

impl Storage {
    /// Checks that `bytes` hold the `numel` elements the pickle declares.
    fn new(meta: &StorageRef, mut bytes: Vec<u8>) -> Result<Self, String> {
        let es = meta.dtype.size_in_bytes();
        let needed = meta
            .numel
            .checked_mul(es)
            .ok_or_else(|| format!("storage `{}` size overflows", meta.key))?;
        if bytes.len() < needed {
            return Err(format!(
                "storage `{}` holds {} bytes; {} {:?} elements need {needed}",
                meta.key,
                bytes.len(),
                meta.numel,
                meta.dtype
            ));
        }
        bytes.truncate(needed);
        Ok(Storage {
            meta: meta.clone(),
            bytes,
            shared: None,
        })
    }

    /// The tensor `t` views: a view of the shared storage tensor when `t` is contiguous,
    /// else a copy of its elements. Every new byte is counted against `budget` first.
    fn view(
        &mut self,
        t: &TensorRef,
        name: &str,
        budget: &mut Budget,
        device: &Device,
        path: &Path,
    ) -> Result<Tensor, LoadError> {
        let corrupt = |what: String| {
            LoadError::corrupt(
                path,
                WeightFormat::PyTorchZip,
                format!("tensor `{name}`: {what}"),
            )
        };
        if t.storage != self.meta {
            return Err(corrupt(format!(
                "storage `{}` is declared twice with different types or sizes",
                self.meta.key
            )));
        }
        let count = check_extent(t).map_err(corrupt)?;
        let es = t.storage.dtype.size_in_bytes() as u64;
        let err = |e: candle_core::Error| corrupt(e.to_string());
        if count == 0 {
            return Tensor::from_raw_buffer(&[], t.storage.dtype, &t.size, device).map_err(err);
        }
        if is_contiguous(t) {
            if self.shared.is_none() {
                let n = self.bytes.len() as u64;
                budget.spend(n, || format!("storage `{}` ({n} bytes)", self.meta.key))?;
                let whole = [self.meta.numel];
                let s = Tensor::from_raw_buffer(&self.bytes, t.storage.dtype, &whole, device);
                self.shared = Some(s.map_err(err)?);
            }
            let Some(shared) = &self.shared else {
                return Err(corrupt("its storage could not be made".into()));
            };
            return shared
                .narrow(0, t.offset, count)
                .and_then(|v| v.reshape(t.size.as_slice()))
                .map_err(err);
        }
        let total = (count as u64).saturating_mul(es);
        budget.spend(total, || {
            format!(
                "tensor `{name}` (shape {:?}, strides {:?}) expands to {total} bytes",
                t.size, t.stride
            )
        })?;
        let bytes = strided_copy(t, &self.bytes).map_err(corrupt)?;
        Tensor::from_raw_buffer(&bytes, t.storage.dtype, &t.size, device).map_err(err)
    }
}

/// The element count of `t`, after checking that its last element lies in its storage.
fn check_extent(t: &TensorRef) -> Result<usize, String> {
    let count = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("its element count overflows")?;
    if count == 0 {
        return Ok(0);
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
        })
        .ok_or("its extent overflows")?;
    if last >= t.storage.numel {
        return Err(format!(
            "shape {:?} with strides {:?} at offset {} reaches element {last} of a storage of {}",
            t.size, t.stride, t.offset, t.storage.numel
        ));
    }
    Ok(count)
}

/// Whether `t`'s strides are the row-major ones for its shape (size-1 dimensions aside).
fn is_contiguous(t: &TensorRef) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// Copies `t`'s elements out of `storage` one by one, following its strides. The caller
/// has checked the extent and counted the bytes against the budget.
fn strided_copy(t: &TensorRef, storage: &[u8]) -> Result<Vec<u8>, String> {
    let es = t.storage.dtype.size_in_bytes();
    let count = check_extent(t)?;
    let total = count.checked_mul(es).ok_or("its byte count overflows")?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(total)
        .map_err(|_| format!("no memory for its {total} bytes"))?;
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..count {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        let element = storage
            .get(at * es..(at + 1) * es)
            .ok_or_else(|| format!("element {at} lies outside its storage"))?;
        bytes.extend_from_slice(element);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(bytes)
}
