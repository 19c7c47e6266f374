//! The pickle virtual machine: opcodes, stack, memo and the limits that bound them.
//!
//! [`unpickle`] interprets protocols 0–5 one opcode at a time. `run` reads an opcode and
//! hands it to the method for its family (stack control, scalars, strings, containers,
//! globals and calls, memo); everything that names or applies a Python global goes through
//! [`torch`](super::torch), which only knows how to build tensor metadata.

use std::collections::HashMap;

use super::torch::{self, ALLOWED_GLOBALS};
use super::{PResult, PickleError, Value, bad, op};
use crate::formats::budget::{BYTES_SLACK, PICKLE_COPIES_PER_BYTE};

/// Deepest nesting of containers accepted (state dicts nest 3 or 4 deep).
const MAX_DEPTH: usize = 64;

/// The restricted unpickler.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
    /// Bytes of values copied so far (`GET`, `DUP`, `PUT`, `MEMOIZE`), by `Value::weight`.
    copied: u64,
    /// The most `copied` may reach: `PICKLE_COPIES_PER_BYTE` per byte of the pickle, plus
    /// `BYTES_SLACK`. It bounds both the work and the memo's memory.
    copy_limit: u64,
}

/// Interprets one pickle; see the module docs for what it accepts.
///
/// The memo keeps a copy of each value as it was when it was stored (Python keeps a
/// reference, so a list stored empty and filled later is read back filled there). State
/// dicts never read a container back after filling it, and copies keep the value a tree,
/// never a graph with cycles; every copy is counted by size against the budget.
pub(crate) fn unpickle(data: &[u8]) -> PResult<Value> {
    let copy_limit = (data.len() as u64)
        .saturating_mul(PICKLE_COPIES_PER_BYTE)
        .saturating_add(BYTES_SLACK);
    Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
        copy_limit,
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

    /// Counts a copy of a value of `weight` bytes (`Value::weight`) against the budget,
    /// before it is made.
    fn charge(&mut self, weight: u64, what: &str) -> PResult<()> {
        match self
            .copied
            .checked_add(weight)
            .filter(|&c| c <= self.copy_limit)
        {
            Some(c) => {
                self.copied = c;
                Ok(())
            }
            None => Err(PickleError::OverBudget {
                what: format!(
                    "{what} of a {weight}-byte value at offset {} would bring the pickle's copies of values past its budget",
                    self.pos.saturating_sub(1)
                ),
                limit: self.copy_limit,
            }),
        }
    }

    fn memo_get(&mut self, key: u64) -> PResult<()> {
        let Some(weight) = self.memo.get(&key).map(Value::weight) else {
            return bad(format!("memo entry {key} is read before it is written"));
        };
        self.charge(weight, "GET")?;
        let v = self.memo.get(&key).cloned().unwrap_or(Value::None);
        self.push(v)
    }

    fn memo_put(&mut self, key: u64) -> PResult<()> {
        let weight = self.top()?.weight();
        self.charge(weight, "PUT")?;
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
                let weight = self.top()?.weight();
                self.charge(weight, "DUP")?;
                let v = self.top()?.clone();
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
                return bad(format!(
                    "opcode EXT{} at offset {} names a global through copyreg's extension registry, which this reader does not resolve",
                    [1, 2, 4][usize::from(op - op::EXT1)],
                    self.pos - 1
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
