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
//! refused too. "Calling" an allowed global only assembles tensor metadata (storage, offset,
//! shape, strides); the data is then copied out of the storages, strided and shared
//! storages included, with every offset checked against the storage's length.
//!
//! The state dict may be the pickle's top-level dict or nested in one (a training
//! checkpoint's `{"model": {...}, "epoch": 3}`): tensors of nested dicts are named with
//! their keys joined by `.`. Non-tensor values are skipped. TorchScript archives
//! (`torch.jit.save`) ask for `__torch__` globals and are refused.
//!
//! A bare pickle (the legacy pre-1.6 PyTorch format, joblib) has no storages to read
//! tensors from: it is interpreted under the same rules, so a malicious one is refused as
//! unsafe, and otherwise refused as unsupported.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{WeightFormat, zipfile};
use crate::error::LoadError;

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

/// Largest `data.pkl` (or bare pickle) read: state-dict pickles are kilobytes.
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Largest tensor storage read.
const MAX_STORAGE_BYTES: u64 = 64 << 30;
/// Deepest nesting of containers accepted (state dicts nest 3 or 4 deep).
const MAX_DEPTH: usize = 64;
/// Most values copied out of the memo in all: bounds the work a pickle of repeated
/// references (a "billion laughs") can ask for.
const MAX_MEMO_COPIES: usize = 1 << 24;

/// Why a pickle was not read.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// It asked for a global outside [`ALLOWED_GLOBALS`] (`module.name`).
    Unsafe(String),
    /// It is malformed, cut off, or uses something this reader does not support.
    Malformed(String),
}

type PResult<T> = Result<T, PickleError>;

fn bad<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Malformed(msg.into()))
}

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

    fn count(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::count).sum::<usize>(),
            Value::Dict(v) => 1 + v.iter().map(|(k, v)| k.count() + v.count()).sum::<usize>(),
            _ => 1,
        }
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

/// The restricted unpickler.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
    memo_copies: usize,
}

/// Interprets one pickle; see the module docs for what it accepts.
pub(crate) fn unpickle(data: &[u8]) -> PResult<Value> {
    Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        memo_copies: 0,
    }
    .run()
}

impl<'a> Unpickler<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bad(format!(
                "cut off: {n} more bytes needed at offset {} of {}",
                self.pos,
                self.data.len()
            )),
        }
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return bad(format!("cut off: unterminated line at offset {}", self.pos));
        };
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).or_else(|_| bad("a text line is not UTF-8"))
    }

    /// The memo key of a text opcode (GET, PUT): a decimal number on its own line.
    fn line_memo_key(&mut self) -> PResult<u64> {
        let line = self.line()?;
        line.parse()
            .or_else(|_| bad(format!("bad memo key {line:?}")))
    }

    fn sized(&mut self, n: u64) -> PResult<&'a [u8]> {
        let n = usize::try_from(n).or_else(|_| bad("a length does not fit in memory"))?;
        self.take(n)
    }

    fn string(&mut self, n: u64) -> PResult<Value> {
        let b = self.sized(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(_) => bad("a unicode string is not valid UTF-8"),
        }
    }

    fn push(&mut self, v: Value) -> PResult<()> {
        if v.depth() > MAX_DEPTH {
            return bad(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> PResult<Value> {
        match self.stack.pop() {
            Some(Value::Mark) => bad("a value was expected but the stack held a mark"),
            Some(v) => Ok(v),
            None => bad("stack underflow"),
        }
    }

    fn top(&mut self) -> PResult<&mut Value> {
        match self.stack.last_mut() {
            Some(Value::Mark) | None => bad("a value was expected on the stack"),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(i) = self.stack.iter().rposition(|v| *v == Value::Mark) else {
            return bad("no mark on the stack");
        };
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    fn memo_get(&mut self, key: u64) -> PResult<()> {
        let Some(v) = self.memo.get(&key) else {
            return bad(format!("memo entry {key} is read before it is written"));
        };
        self.memo_copies = self.memo_copies.saturating_add(v.count());
        if self.memo_copies > MAX_MEMO_COPIES {
            return bad("the pickle copies too many values out of its memo");
        }
        let v = v.clone();
        self.push(v)
    }

    fn memo_put(&mut self, key: u64) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    /// Looks `module.name` up in the allow-list.
    fn global(module: &str, name: &str) -> PResult<Value> {
        let full = format!("{module}.{name}");
        match ALLOWED_GLOBALS.iter().find(|g| **g == full) {
            Some(g) => Ok(Value::Global(g)),
            None => Err(PickleError::Unsafe(full)),
        }
    }

    fn run(mut self) -> PResult<Value> {
        loop {
            let op = self.u8()?;
            match op {
                b'.' => {
                    // STOP
                    let v = self.pop()?;
                    return Ok(v);
                }
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return bad(format!("pickle protocol {p}; protocols 0 to 5 are read"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.take(8)?;
                }
                b'(' => self.stack.push(Value::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .map(drop)
                        .ok_or(PickleError::Malformed("POP on an empty stack".into()))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.memo_copies = self.memo_copies.saturating_add(v.count());
                    if self.memo_copies > MAX_MEMO_COPIES {
                        return bad("the pickle copies too many values");
                    }
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()))?
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement.
                    let n = if op == 0x8a {
                        u64::from(self.u8()?)
                    } else {
                        u64::from(u32::from_le_bytes(self.le()?))
                    };
                    let b = self.sized(n)?;
                    if b.len() > 8 {
                        return bad(format!(
                            "an integer of {} bytes; at most 8 are read",
                            b.len()
                        ));
                    }
                    let mut buf = [0u8; 8];
                    buf[..b.len()].copy_from_slice(b);
                    if b.last().is_some_and(|&last| last & 0x80 != 0) {
                        buf[b.len()..].fill(0xff);
                    }
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'I' | b'L' => {
                    // INT / LONG (protocol 0), `I01\n` is True.
                    let line = self.line()?;
                    let v = match line.trim_end_matches('L') {
                        "01" if op == b'I' => Value::Bool(true),
                        "00" if op == b'I' => Value::Bool(false),
                        s => Value::Int(s.parse().or_else(|_| bad(format!("bad integer {s:?}")))?),
                    };
                    self.push(v)?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?);
                    let v = self.string(n.into())?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()?;
                    let v = self.string(n.into())?;
                    self.push(v)?
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?);
                    let v = self.string(n)?;
                    self.push(v)?
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    // BINSTRING / SHORT_BINSTRING / BINBYTES / SHORT_BINBYTES / BINBYTES8
                    let n = match op {
                        b'U' | b'C' => u64::from(self.u8()?),
                        0x8e => u64::from_le_bytes(self.le()?),
                        _ => u64::from(u32::from_le_bytes(self.le()?)),
                    };
                    let b = self.sized(n)?;
                    let v = match (op, std::str::from_utf8(b)) {
                        (b'T' | b'U', Ok(s)) => Value::Str(s.to_owned()),
                        _ => Value::Bytes(b.to_vec()),
                    };
                    self.push(v)?
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n
                        || self.stack[self.stack.len() - n..].contains(&Value::Mark)
                    {
                        return bad("TUPLE1/2/3 without enough values on the stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items))?
                }
                b']' => self.push(Value::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.push(Value::Dict(pairs))?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.set_items(pairs)?
                }
                b'c' | b'i' => {
                    // GLOBAL / INST: `module\nname\n` inline.
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = Self::global(module, name)?;
                    if op == b'c' {
                        self.push(global)?
                    } else {
                        let args = self.pop_mark()?;
                        let v = reduce(global, Value::Tuple(args))?;
                        self.push(v)?
                    }
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = Self::global(&m, &n)?;
                            self.push(g)?
                        }
                        _ => return bad("STACK_GLOBAL needs two strings"),
                    }
                }
                0x82..=0x84 => {
                    return Err(PickleError::Unsafe(
                        "an extension-registry code (EXT1/EXT2/EXT4), which names a global indirectly"
                            .into(),
                    ));
                }
                b'R' | 0x81 => {
                    // REDUCE / NEWOBJ
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.push(v)?
                }
                0x92 => {
                    // NEWOBJ_EX: cls, args, kwargs
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.push(v)?
                }
                b'o' => {
                    // OBJ: mark, class, args...
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return bad("OBJ without a class");
                    }
                    let class = items.remove(0);
                    let v = reduce(class, Value::Tuple(items))?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: object state (a tensor's or a state dict's attributes) is
                    // not needed for the tensors; the object is kept as it is.
                    let _state = self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.push(v)?
                }
                b'P' => return bad("text persistent ids (PERSID); torch uses BINPERSID"),
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_get(k.into())?
                }
                b'g' => {
                    let k = self.line_memo_key()?;
                    self.memo_get(k)?
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(k.into())?
                }
                b'p' => {
                    let k = self.line_memo_key()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                other => {
                    return bad(format!(
                        "opcode 0x{other:02x} at offset {} is not one this reader accepts",
                        self.pos - 1
                    ));
                }
            }
        }
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        let depth = items.iter().map(Value::depth).max().unwrap_or(0);
        if depth >= MAX_DEPTH {
            return bad(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => bad(format!("APPEND(S) onto {}", other.describe())),
        }
    }

    fn set_items(&mut self, items: Vec<(Value, Value)>) -> PResult<()> {
        let depth = items
            .iter()
            .map(|(k, v)| k.depth().max(v.depth()))
            .max()
            .unwrap_or(0);
        if depth >= MAX_DEPTH {
            return bad(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        match self.top()? {
            Value::Dict(d) => {
                d.extend(items);
                Ok(())
            }
            other => bad(format!("SETITEM(S) onto {}", other.describe())),
        }
    }
}

fn pairs(items: Vec<Value>) -> PResult<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return bad("a dict with an odd number of keys and values");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
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

/// "Calls" an allowed global: assembles what it would build, without running anything.
fn reduce(callable: Value, args: Value) -> PResult<Value> {
    let Value::Global(g) = callable else {
        return bad(format!(
            "REDUCE applies {}, not a global",
            callable.describe()
        ));
    };
    let mut args = tuple(args, g)?;
    match g {
        "collections.OrderedDict" => match args.len() {
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
        },
        "torch._utils._rebuild_tensor_v2" => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
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
        "torch._utils._rebuild_parameter"
        | "torch._utils._rebuild_parameter_with_state"
        | "torch.nn.parameter.Parameter" => {
            // (data, requires_grad, backward_hooks) / Parameter(data, requires_grad)
            match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => bad(format!("{g} expects a tensor")),
            }
        }
        "torch._tensor._rebuild_from_type_v2" => {
            // (func, new_type, args, state)
            if args.len() < 3 {
                return bad("_rebuild_from_type_v2 needs func, type and args");
            }
            args.truncate(3);
            let inner_args = args.pop().unwrap_or(Value::None);
            let _new_type = args.pop();
            let func = args.pop().unwrap_or(Value::None);
            reduce(func, inner_args)
        }
        other => bad(format!(
            "`{other}` is allowed as a name but cannot be called"
        )),
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)`.
fn persistent_load(pid: Value) -> PResult<Value> {
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

fn pickle_error(path: &Path, format: WeightFormat, e: PickleError) -> LoadError {
    match e {
        PickleError::Unsafe(global) => LoadError::UnsafePickle {
            path: path.to_path_buf(),
            global,
            allowed: ALLOWED_GLOBALS,
        },
        PickleError::Malformed(what) => LoadError::corrupt(path, format, what),
    }
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

/// A bare pickle: interpreted under the same rules (so a malicious one is named), then
/// refused, since it carries no tensor storages this crate can read.
pub(crate) fn refuse_bare_pickle(path: &Path) -> Result<HashMap<String, Tensor>, LoadError> {
    use std::io::Read;
    let format = WeightFormat::Pickle;
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut data = Vec::new();
    file.take(MAX_PICKLE_BYTES)
        .read_to_end(&mut data)
        .map_err(|e| LoadError::io(path, e))?;
    match unpickle(&data) {
        Err(PickleError::Unsafe(global)) => Err(LoadError::UnsafePickle {
            path: path.to_path_buf(),
            global,
            allowed: ALLOWED_GLOBALS,
        }),
        Err(PickleError::Malformed(what)) => Err(LoadError::corrupt(path, format, what)),
        Ok(_) => Err(LoadError::Unsupported {
            path: path.to_path_buf(),
            what: "a bare pickle (the PyTorch format before 1.6, joblib or pickle.dump); re-save it with a current torch.save (zip) or as safetensors".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
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
        assert!(matches!(unpickle(&laughs), Err(PickleError::Malformed(_))));
    }
}
