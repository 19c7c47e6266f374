//! A safety scan of a pickle, run before any reader looks at it.
//!
//! Nothing in a pickle is ever executed here (candle's reader interprets the opcodes into
//! plain values), but a checkpoint that asks for `os.system` is not a set of tensors and is
//! refused, naming what it asked for, so that the same file is never handed to Python
//! either. The scan walks every opcode with a small model of the pickle machine's stack and
//! memo: every callable a pickle can reach comes from `GLOBAL`, `STACK_GLOBAL` or `INST`
//! (the extension registry, `EXT*`, is refused outright), so checking those names against
//! an allow-list of tensor reconstruction covers `REDUCE`, `BUILD`, `NEWOBJ` and `OBJ` too.
//! The walk also checks every length against what is left of the file, so a reader never
//! allocates for data that is not there.

use std::collections::HashMap;

/// What the scan found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// A global outside the allow-list, as `module.name`.
    Unsafe(String),
    /// The pickle is malformed; the message says where.
    Malformed(String),
}

/// The globals a PyTorch state dict needs to be rebuilt.
fn allowed(module: &str, name: &str) -> bool {
    const STORAGES: [&str; 13] = [
        "FloatStorage",
        "DoubleStorage",
        "HalfStorage",
        "BFloat16Storage",
        "LongStorage",
        "IntStorage",
        "ShortStorage",
        "CharStorage",
        "ByteStorage",
        "BoolStorage",
        "ComplexFloatStorage",
        "ComplexDoubleStorage",
        "UntypedStorage",
    ];
    const DTYPES: [&str; 9] = [
        "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    ];
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_parameter"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch" => name == "Tensor" || STORAGES.contains(&name) || DTYPES.contains(&name),
        "torch.storage" => name == "UntypedStorage",
        _ => false,
    }
}

/// A value on the modelled stack: only strings matter (they name `STACK_GLOBAL`s).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Str(String),
    Mark,
    Other,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Item>,
    memo: HashMap<u64, Item>,
}

impl<'a> Scanner<'a> {
    fn malformed(&self, what: &str) -> ScanError {
        ScanError::Malformed(format!("{what} at byte {}", self.at))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ScanError> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(self.malformed(&format!(
                "a length of {n} bytes runs past the end ({left} left)"
            )));
        }
        let start = self.at;
        self.at += n as usize;
        Ok(&self.bytes[start..self.at])
    }

    fn uint(&mut self, width: u64) -> Result<u64, ScanError> {
        let b = self.take(width)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn line(&mut self) -> Result<&'a [u8], ScanError> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.malformed("a line without its newline"))?;
        self.at += end + 1;
        Ok(&rest[..end])
    }

    fn pop(&mut self) -> Result<Item, ScanError> {
        match self.stack.pop() {
            Some(Item::Mark) | None => Err(self.malformed("an opcode pops an empty stack")),
            Some(item) => Ok(item),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<(), ScanError> {
        (0..n).try_for_each(|_| self.pop().map(drop))
    }

    fn pop_mark(&mut self) -> Result<(), ScanError> {
        loop {
            match self.stack.pop() {
                Some(Item::Mark) => return Ok(()),
                Some(_) => {}
                None => return Err(self.malformed("an opcode needs a MARK that is not there")),
            }
        }
    }

    fn top(&self) -> Result<Item, ScanError> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| self.malformed("an opcode reads an empty stack"))
    }

    fn check_global(module: &str, name: &str) -> Result<(), ScanError> {
        if allowed(module, name) {
            Ok(())
        } else {
            Err(ScanError::Unsafe(format!("{module}.{name}")))
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn memo_get(&mut self, key: u64) -> Result<(), ScanError> {
        let item = self.memo.get(&key).cloned().ok_or_else(|| {
            self.malformed(&format!("memo entry {key} is read before it is written"))
        })?;
        self.stack.push(item);
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), ScanError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    /// Walks the opcodes to `STOP`.
    fn run(&mut self) -> Result<(), ScanError> {
        loop {
            let op = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| self.malformed("the pickle ends without STOP"))?;
            self.at += 1;
            match op {
                b'.' => return Ok(()),
                // Protocol and framing.
                0x80 => drop(self.take(1)?),
                0x95 => drop(self.take(8)?),
                // Pushes of plain values.
                b'(' => self.stack.push(Item::Mark),
                b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f => self.stack.push(Item::Other),
                b'K' => self.push_other(1)?,
                b'M' => self.push_other(2)?,
                b'J' => self.push_other(4)?,
                b'G' => self.push_other(8)?,
                b'I' | b'L' | b'F' => {
                    self.line()?;
                    self.stack.push(Item::Other);
                }
                0x8a => {
                    let n = self.uint(1)?;
                    self.push_other(n)?;
                }
                0x8b => {
                    let n = self.uint(4)?;
                    self.push_other(n)?;
                }
                b'C' => {
                    let n = self.uint(1)?;
                    self.push_other(n)?;
                }
                b'B' => {
                    let n = self.uint(4)?;
                    self.push_other(n)?;
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    self.push_other(n)?;
                }
                // Strings.
                0x8c => self.push_str(1)?,
                b'X' => self.push_str(4)?,
                0x8d => self.push_str(8)?,
                b'U' => self.push_str(1)?,
                b'T' => self.push_str(4)?,
                b'V' | b'S' => {
                    let s = Self::text(self.line()?);
                    // Protocol 0 strings are quoted; the quotes are not part of the name.
                    let s = s.trim_matches(|c| c == '\'' || c == '"').to_string();
                    self.stack.push(Item::Str(s));
                }
                // Stack and memo.
                b'0' => self.pop_n(1)?,
                b'1' => self.pop_mark()?,
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                b'p' => {
                    let key = Self::text(self.line()?);
                    let key = key
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed("a PUT key that is not a number"))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.uint(1)?;
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.uint(4)?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let key = Self::text(self.line()?);
                    let key = key
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed("a GET key that is not a number"))?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = self.uint(1)?;
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = self.uint(4)?;
                    self.memo_get(key)?;
                }
                // Containers.
                b'a' => self.pop_n(1)?,
                b's' => self.pop_n(2)?,
                b'e' | b'u' | 0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                b't' | b'l' | b'd' | 0x91 => {
                    self.pop_mark()?;
                    self.stack.push(Item::Other);
                }
                0x85 => self.replace(1)?,
                0x86 => self.replace(2)?,
                0x87 => self.replace(3)?,
                // Callables: only from the allow-list.
                b'c' => {
                    let module = Self::text(self.line()?);
                    let name = Self::text(self.line()?);
                    Self::check_global(&module, &name)?;
                    self.stack.push(Item::Other);
                }
                b'i' => {
                    let module = Self::text(self.line()?);
                    let name = Self::text(self.line()?);
                    Self::check_global(&module, &name)?;
                    self.pop_mark()?;
                    self.stack.push(Item::Other);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Item::Str(module), Item::Str(name)) => Self::check_global(&module, &name)?,
                        _ => {
                            return Err(ScanError::Unsafe(
                                "a global whose name is computed while unpickling".into(),
                            ));
                        }
                    }
                    self.stack.push(Item::Other);
                }
                b'R' => self.replace(2)?,
                0x81 => self.replace(2)?,
                0x92 => self.replace(3)?,
                b'o' => {
                    self.pop_mark()?;
                    self.stack.push(Item::Other);
                }
                b'b' => {
                    self.pop_n(1)?;
                    self.top()?;
                }
                // Persistent ids: how torch refers to its storages.
                b'P' => {
                    self.line()?;
                    self.stack.push(Item::Other);
                }
                b'Q' => self.replace(1)?,
                0x82..=0x84 => {
                    return Err(ScanError::Unsafe(
                        "an object from the copyreg extension registry (EXT1/EXT2/EXT4)".into(),
                    ));
                }
                0x97 | 0x98 => {
                    return Err(ScanError::Unsafe(
                        "an out-of-band buffer (protocol 5 NEXT_BUFFER)".into(),
                    ));
                }
                other => {
                    self.at -= 1;
                    return Err(self.malformed(&format!("unknown opcode 0x{other:02x}")));
                }
            }
        }
    }

    fn push_other(&mut self, n: u64) -> Result<(), ScanError> {
        self.take(n)?;
        self.stack.push(Item::Other);
        Ok(())
    }

    fn push_str(&mut self, width: u64) -> Result<(), ScanError> {
        let n = self.uint(width)?;
        let s = Self::text(self.take(n)?);
        self.stack.push(Item::Str(s));
        Ok(())
    }

    /// Pops `n` and pushes one result.
    fn replace(&mut self, n: usize) -> Result<(), ScanError> {
        self.pop_n(n)?;
        self.stack.push(Item::Other);
        Ok(())
    }
}

/// Scans one pickle (to its `STOP`); `Ok` means it only rebuilds tensors.
pub(crate) fn scan(bytes: &[u8]) -> Result<(), ScanError> {
    Scanner {
        bytes,
        at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_0_global_and_reduce_to_os_system_is_refused() {
        // pickle.dumps(Evil(), protocol=0) for __reduce__ -> (os.system, ('touch x',))
        let p = b"cposix\nsystem\np0\n(Vtouch x\np1\ntp2\nRp3\n.";
        assert_eq!(scan(p), Err(ScanError::Unsafe("posix.system".into())));
    }

    #[test]
    fn stack_global_names_are_followed_through_the_memo() {
        // \x8c builtins \x94 \x8c eval \x94 \x93: protocol 4 STACK_GLOBAL.
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend(b"builtins");
        p.extend([0x94, 0x8c, 4]);
        p.extend(b"eval");
        p.extend([0x94, 0x93, 0x94, b'.']);
        assert_eq!(scan(&p), Err(ScanError::Unsafe("builtins.eval".into())));
        // The same names fetched back from the memo.
        let mut q = vec![0x80, 4, 0x8c, 8];
        q.extend(b"builtins");
        q.extend([0x94, b'0', 0x8c, 4]);
        q.extend(b"exec");
        q.extend([0x94, b'0', b'h', 0, b'h', 1, 0x93, b'.']);
        assert_eq!(scan(&q), Err(ScanError::Unsafe("builtins.exec".into())));
    }

    #[test]
    fn an_ordered_dict_of_allowed_globals_passes() {
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert_eq!(scan(p), Ok(()));
    }

    #[test]
    fn lengths_past_the_end_and_missing_stop_are_malformed() {
        let p = [0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f, b'a'];
        assert!(matches!(scan(&p), Err(ScanError::Malformed(m)) if m.contains("past the end")));
        assert!(
            matches!(scan(b"\x80\x02N"), Err(ScanError::Malformed(m)) if m.contains("without STOP"))
        );
        assert!(matches!(scan(b"R."), Err(ScanError::Malformed(m)) if m.contains("empty stack")));
    }

    #[test]
    fn extension_registry_is_refused() {
        assert!(
            matches!(scan(b"\x80\x02\x82\x01."), Err(ScanError::Unsafe(m)) if m.contains("extension"))
        );
    }
}
