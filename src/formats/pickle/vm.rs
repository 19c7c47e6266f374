//! The pickle virtual machine: opcodes, stack, memo and the limits that bound them.
//!
//! [`unpickle`] interprets protocols 0–5 one opcode at a time. `run` reads an opcode and
//! hands it to the method for its family (stack control, scalars, strings, containers,
//! globals and calls, memo); everything that names or applies a Python global goes through
//! [`torch`](super::torch), which only knows how to build tensor metadata.

use std::collections::HashMap;

use super::torch::{self, ALLOWED_GLOBALS};
use super::{PResult, PickleError, Value, bad};

/// Deepest nesting of containers accepted (state dicts nest 3 or 4 deep).
const MAX_DEPTH: usize = 64;
/// Most values copied out of the memo in all: bounds the work a pickle of repeated
/// references (a "billion laughs") can ask for.
const MAX_MEMO_COPIES: usize = 1 << 24;

/// The opcodes read, by their names in Python's `pickletools`.
mod op {
    // Stack control and framing.
    pub(super) const STOP: u8 = b'.';
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const MARK: u8 = b'(';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    // Scalars.
    pub(super) const NONE: u8 = b'N';
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    pub(super) const INT: u8 = b'I';
    pub(super) const LONG: u8 = b'L';
    pub(super) const BINFLOAT: u8 = b'G';
    // Strings and bytes.
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINSTRING: u8 = b'T';
    pub(super) const SHORT_BINSTRING: u8 = b'U';
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const BINBYTES8: u8 = 0x8e;
    // Containers.
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const LIST: u8 = b'l';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const DICT: u8 = b'd';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const SETITEMS: u8 = b'u';
    // Globals, calls and persistent ids.
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const INST: u8 = b'i';
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const EXT1: u8 = 0x82;
    pub(super) const EXT4: u8 = 0x84;
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const OBJ: u8 = b'o';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const BINPERSID: u8 = b'Q';
    pub(super) const PERSID: u8 = b'P';
    // Memo.
    pub(super) const BINGET: u8 = b'h';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const GET: u8 = b'g';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const PUT: u8 = b'p';
    pub(super) const MEMOIZE: u8 = 0x94;
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

    /// Runs opcodes until `STOP`, which returns the value on top of the stack.
    fn run(mut self) -> PResult<Value> {
        loop {
            match self.u8()? {
                op::STOP => return self.pop(),
                op => self.step(op)?,
            }
        }
    }

    /// One opcode other than `STOP`, handed to the method for its family.
    fn step(&mut self, op: u8) -> PResult<()> {
        use op::*;
        match op {
            PROTO | FRAME | MARK | POP | POP_MARK | DUP => self.control(op),
            NONE | NEWTRUE | NEWFALSE | BININT | BININT1 | BININT2 | LONG1 | LONG4 | INT | LONG
            | BINFLOAT => self.scalar(op),
            BINUNICODE | SHORT_BINUNICODE | BINUNICODE8 | BINSTRING | SHORT_BINSTRING
            | BINBYTES | SHORT_BINBYTES | BINBYTES8 => self.text(op),
            EMPTY_TUPLE
            | TUPLE
            | TUPLE1..=TUPLE3
            | EMPTY_LIST
            | LIST
            | APPEND
            | APPENDS
            | EMPTY_DICT
            | DICT
            | SETITEM
            | SETITEMS => self.container(op),
            GLOBAL
            | INST
            | STACK_GLOBAL
            | EXT1..=EXT4
            | REDUCE
            | NEWOBJ
            | NEWOBJ_EX
            | OBJ
            | BUILD
            | BINPERSID
            | PERSID => self.object(op),
            BINGET | LONG_BINGET | GET | BINPUT | LONG_BINPUT | PUT | MEMOIZE => self.memo(op),
            other => self.not_accepted(other),
        }
    }

    /// An opcode this reader does not accept (it was read just before `pos`).
    fn not_accepted(&self, op: u8) -> PResult<()> {
        bad(format!(
            "opcode 0x{op:02x} at offset {} is not one this reader accepts",
            self.pos - 1
        ))
    }

    /// PROTO, FRAME, MARK, POP, POP_MARK, DUP.
    fn control(&mut self, op: u8) -> PResult<()> {
        match op {
            op::PROTO => {
                let p = self.u8()?;
                if p > 5 {
                    return bad(format!("pickle protocol {p}; protocols 0 to 5 are read"));
                }
            }
            op::FRAME => {
                // A length hint only.
                self.take(8)?;
            }
            op::MARK => self.stack.push(Value::Mark),
            op::POP => {
                self.stack
                    .pop()
                    .map(drop)
                    .ok_or(PickleError::Malformed("POP on an empty stack".into()))?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let v = self.top()?.clone();
                self.memo_copies = self.memo_copies.saturating_add(v.count());
                if self.memo_copies > MAX_MEMO_COPIES {
                    return bad("the pickle copies too many values");
                }
                self.push(v)?;
            }
            other => return self.not_accepted(other),
        }
        Ok(())
    }

    /// None, bools, ints and floats.
    fn scalar(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            op::NONE => Value::None,
            op::NEWTRUE => Value::Bool(true),
            op::NEWFALSE => Value::Bool(false),
            op::BININT => Value::Int(i32::from_le_bytes(self.le()?).into()),
            op::BININT1 => Value::Int(self.u8()?.into()),
            op::BININT2 => Value::Int(u16::from_le_bytes(self.le()?).into()),
            op::LONG1 | op::LONG4 => self.binary_long(op)?,
            op::INT | op::LONG => {
                // Protocol 0: a decimal line; `I01\n` is True.
                let line = self.line()?;
                match line.trim_end_matches('L') {
                    "01" if op == op::INT => Value::Bool(true),
                    "00" if op == op::INT => Value::Bool(false),
                    s => Value::Int(s.parse().or_else(|_| bad(format!("bad integer {s:?}")))?),
                }
            }
            // BINFLOAT is big-endian.
            op::BINFLOAT => Value::Float(f64::from_be_bytes(self.le()?)),
            other => return self.not_accepted(other),
        };
        self.push(v)
    }

    /// LONG1 / LONG4: a length, then a little-endian two's complement integer of at most
    /// 8 bytes.
    fn binary_long(&mut self, op: u8) -> PResult<Value> {
        let n = if op == op::LONG1 {
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
        Ok(Value::Int(i64::from_le_bytes(buf)))
    }

    /// Unicode strings, byte strings and bytes.
    fn text(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            op::BINUNICODE => {
                let n = u32::from_le_bytes(self.le()?);
                self.string(n.into())?
            }
            op::SHORT_BINUNICODE => {
                let n = self.u8()?;
                self.string(n.into())?
            }
            op::BINUNICODE8 => {
                let n = u64::from_le_bytes(self.le()?);
                self.string(n)?
            }
            op::BINSTRING
            | op::SHORT_BINSTRING
            | op::BINBYTES
            | op::SHORT_BINBYTES
            | op::BINBYTES8 => {
                let n = match op {
                    op::SHORT_BINSTRING | op::SHORT_BINBYTES => u64::from(self.u8()?),
                    op::BINBYTES8 => u64::from_le_bytes(self.le()?),
                    _ => u64::from(u32::from_le_bytes(self.le()?)),
                };
                let b = self.sized(n)?;
                match (op, std::str::from_utf8(b)) {
                    (op::BINSTRING | op::SHORT_BINSTRING, Ok(s)) => Value::Str(s.to_owned()),
                    _ => Value::Bytes(b.to_vec()),
                }
            }
            other => return self.not_accepted(other),
        };
        self.push(v)
    }

    /// Tuples, lists and dicts: building them and adding to them.
    fn container(&mut self, op: u8) -> PResult<()> {
        match op {
            op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))
            }
            op::TUPLE1..=op::TUPLE3 => {
                let n = usize::from(op - op::TUPLE1 + 1);
                if self.stack.len() < n || self.stack[self.stack.len() - n..].contains(&Value::Mark)
                {
                    return bad("TUPLE1/2/3 without enough values on the stack");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items))
            }
            op::EMPTY_LIST => self.push(Value::List(Vec::new())),
            op::LIST => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))
            }
            op::APPEND => {
                let v = self.pop()?;
                self.append(vec![v])
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)
            }
            op::EMPTY_DICT => self.push(Value::Dict(Vec::new())),
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.push(Value::Dict(pairs))
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![(k, v)])
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.set_items(pairs)
            }
            other => self.not_accepted(other),
        }
    }

    /// Globals, their application and persistent ids: each checked against the allow-list
    /// and handed to [`torch`].
    fn object(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            op::GLOBAL | op::INST => {
                // `module\nname\n` inline.
                let module = self.line()?;
                let name = self.line()?;
                let global = Self::global(module, name)?;
                if op == op::GLOBAL {
                    global
                } else {
                    let args = self.pop_mark()?;
                    torch::reduce(global, Value::Tuple(args))?
                }
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => Self::global(&m, &n)?,
                    _ => return bad("STACK_GLOBAL needs two strings"),
                }
            }
            op::EXT1..=op::EXT4 => {
                return Err(PickleError::Unsafe(
                    "an extension-registry code (EXT1/EXT2/EXT4), which names a global indirectly"
                        .into(),
                ));
            }
            op::REDUCE | op::NEWOBJ | op::NEWOBJ_EX | op::OBJ => self.call(op)?,
            op::BUILD => {
                // Object state (a tensor's or a state dict's attributes) is not needed for
                // the tensors; the object is kept as it is.
                let _state = self.pop()?;
                self.top()?;
                return Ok(());
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                torch::persistent_load(pid)?
            }
            op::PERSID => return bad("text persistent ids (PERSID); torch uses BINPERSID"),
            other => return self.not_accepted(other),
        };
        self.push(v)
    }

    /// REDUCE, NEWOBJ, NEWOBJ_EX and OBJ: pops a global and its arguments and "calls" it.
    fn call(&mut self, op: u8) -> PResult<Value> {
        match op {
            op::OBJ => {
                // mark, class, args...
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return bad("OBJ without a class");
                }
                let class = items.remove(0);
                torch::reduce(class, Value::Tuple(items))
            }
            _ => {
                // REDUCE / NEWOBJ: callable, args; NEWOBJ_EX: cls, args, kwargs.
                if op == op::NEWOBJ_EX {
                    let _kwargs = self.pop()?;
                }
                let args = self.pop()?;
                let callable = self.pop()?;
                torch::reduce(callable, args)
            }
        }
    }

    /// GET and PUT in their binary, long binary and text forms, and MEMOIZE.
    fn memo(&mut self, op: u8) -> PResult<()> {
        match op {
            op::BINGET => {
                let k = self.u8()?;
                self.memo_get(k.into())
            }
            op::LONG_BINGET => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_get(k.into())
            }
            op::GET => {
                let k = self.line_memo_key()?;
                self.memo_get(k)
            }
            op::BINPUT => {
                let k = self.u8()?;
                self.memo_put(k.into())
            }
            op::LONG_BINPUT => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_put(k.into())
            }
            op::PUT => {
                let k = self.line_memo_key()?;
                self.memo_put(k)
            }
            op::MEMOIZE => {
                let k = self.memo.len() as u64;
                self.memo_put(k)
            }
            other => self.not_accepted(other),
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
