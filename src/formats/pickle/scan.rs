//! A bare pickle's opcodes walked without building anything: enough to name the first
//! global outside the allow-list, in one pass of constant memory.
//!
//! A bare pickle is refused whatever it holds, so interpreting it (building its values,
//! copying its memo) would be work spent on a file that cannot be loaded. The scan reads
//! each opcode's argument by its length and checks the globals that `GLOBAL`, `INST` and
//! `STACK_GLOBAL` (from the two strings just before it) name.

use super::torch::ALLOWED_GLOBALS;
use super::{PResult, PickleError, bad};

/// How an opcode's argument is laid out.
enum Arg {
    None,
    Fixed(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Sized(usize),
    Lines(usize),
}

fn arg(op: u8) -> Option<Arg> {
    Some(match op {
        b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}'
        | b'e' | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' => Arg::None,
        0x81 | 0x85..=0x89 | 0x8f..=0x94 | 0x97 | 0x98 => Arg::None,
        b'F' | b'I' | b'L' | b'P' | b'S' | b'V' | b'g' | b'p' => Arg::Lines(1),
        b'c' | b'i' => Arg::Lines(2),
        b'K' | b'h' | b'q' | 0x80 => Arg::Fixed(1),
        b'M' => Arg::Fixed(2),
        b'J' | b'j' | b'r' => Arg::Fixed(4),
        b'G' | 0x95 => Arg::Fixed(8),
        b'U' | b'C' | 0x8a | 0x8c => Arg::Sized(1),
        b'T' | b'X' | b'B' | 0x8b => Arg::Sized(4),
        0x8d | 0x8e | 0x96 => Arg::Sized(8),
        _ => return None,
    })
}

fn check(full: String) -> PResult<()> {
    if ALLOWED_GLOBALS.contains(&full.as_str()) {
        Ok(())
    } else {
        Err(PickleError::Unsafe(full))
    }
}

/// A text argument without its newline.
fn line(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\n").unwrap_or(body)
}

/// A protocol 0 `S` string without its quotes.
fn unquote(text: &[u8]) -> &[u8] {
    match text {
        [b'\'', inner @ .., b'\''] | [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// Walks `data` to its `STOP`: the first disallowed global is [`PickleError::Unsafe`],
/// a cut-off or unknown opcode [`PickleError::Malformed`].
pub(crate) fn scan_globals(data: &[u8]) -> PResult<()> {
    let mut pos = 0usize;
    // The last two strings pushed, for STACK_GLOBAL (memo stores leave them in place).
    let mut strings: [Option<&[u8]>; 2] = [None, None];
    loop {
        let Some(&op) = data.get(pos) else {
            return bad(format!("cut off at offset {pos}: no STOP opcode"));
        };
        let at = pos;
        pos += 1;
        if (0x82..=0x84).contains(&op) {
            return bad(format!(
                "opcode 0x{op:02x} at offset {at} names a global through copyreg's extension registry, which this reader does not resolve"
            ));
        }
        let Some(layout) = arg(op) else {
            return bad(format!(
                "opcode 0x{op:02x} at offset {at} is not one this reader accepts"
            ));
        };
        let rest = &data[pos..];
        let (len, body) = match layout {
            Arg::None => (0, &rest[..0]),
            Arg::Fixed(n) => (n, &rest[..0]),
            Arg::Sized(n) => {
                let Some(b) = rest.get(..n) else {
                    return bad(format!(
                        "cut off in the length of the opcode at offset {at}"
                    ));
                };
                let mut le = [0u8; 8];
                le[..n].copy_from_slice(b);
                let body_len = usize::try_from(u64::from_le_bytes(le))
                    .ok()
                    .filter(|&l| l <= rest.len() - n)
                    .ok_or_else(|| {
                        PickleError::Malformed(format!(
                            "the argument of the opcode at offset {at} runs past the end"
                        ))
                    })?;
                (n + body_len, &rest[n..n + body_len])
            }
            Arg::Lines(k) => {
                let mut end = 0;
                for _ in 0..k {
                    let Some(nl) = rest[end..].iter().position(|&b| b == b'\n') else {
                        return bad(format!("cut off: unterminated line at offset {pos}"));
                    };
                    end += nl + 1;
                }
                (end, &rest[..end])
            }
        };
        if len > rest.len() {
            return bad(format!(
                "cut off in the argument of the opcode at offset {at}"
            ));
        }
        pos += len;
        match op {
            b'.' => return Ok(()),
            b'c' | b'i' => {
                let text = String::from_utf8_lossy(body);
                let mut lines = text.split('\n');
                let module = lines.next().unwrap_or_default();
                let name = lines.next().unwrap_or_default();
                check(format!("{module}.{name}"))?;
            }
            0x93 => {
                let [Some(m), Some(n)] = strings else {
                    // Its operands come from the memo or from values built at load time:
                    // the name cannot be read without interpreting, and no torch file
                    // does this.
                    return Err(PickleError::Unsafe(format!(
                        "a global whose name is computed at load time (STACK_GLOBAL at offset {at})"
                    )));
                };
                let (m, n) = (String::from_utf8_lossy(m), String::from_utf8_lossy(n));
                check(format!("{m}.{n}"))?;
                strings = [None, None];
            }
            b'X' | b'U' | b'T' | 0x8c | 0x8d => strings = [strings[1], Some(body)],
            // Protocol 0 strings: `S'text'` (quoted, as Python's repr) and `Vtext`.
            b'S' => strings = [strings[1], Some(unquote(line(body)))],
            b'V' => strings = [strings[1], Some(line(body))],
            b'q' | b'r' | b'p' | 0x94 | 0x95 | 0x80 => {}
            _ => strings = [None, None],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_are_named_without_interpreting() {
        let named = |p: &[u8]| match scan_globals(p) {
            Err(PickleError::Unsafe(g)) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(named(b"cposix\nsystem\n(S'x'\ntR."), "posix.system");
        assert_eq!(
            named(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x93."),
            "builtins.eval"
        );
        assert_eq!(named(b"(ios\nsystem\nS'x'\n."), "os.system");
        // STACK_GLOBAL from protocol 0 strings, quoted (S) and raw (V).
        assert_eq!(named(b"S'os'\nS'system'\n\x93."), "os.system");
        assert_eq!(named(b"Vbuiltins\nVexec\n\x93."), "builtins.exec");
        // From the memo: named as what it is.
        let memo = named(b"\x8c\x02os\x94h\x00\x8c\x06system\x93.");
        assert!(memo.contains("computed at load time"), "{memo}");
        assert!(scan_globals(b"\x80\x02}q\x00.").is_ok());
        for cut in [
            &b"\x80\x02}"[..],
            b"X\xff\xff\xff\xff",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"c\n",
            b"\x82\x01.",
        ] {
            assert!(
                matches!(scan_globals(cut), Err(PickleError::Malformed(_))),
                "{cut:?}"
            );
        }
    }
}
