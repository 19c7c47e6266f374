//! Hostile weight files, built byte by byte: each is small (at most a few MB) and asks a
//! loader for far more memory or work than its size, or is valid but shaped to trip a
//! loader. Shared by `tests/formats_hostile.rs` and `examples/hostile_loaders.rs`
//! (which `scripts/hostile-loaders.sh` runs under a memory cap).

#![allow(dead_code)]

/// A hostile (or tricky but valid) file: its name, bytes, and what a loader must do.
pub struct Hostile {
    /// File name, with an extension saying the format.
    pub name: &'static str,
    /// What it attacks.
    pub attack: &'static str,
    /// The file.
    pub bytes: Vec<u8>,
    /// `None` when it must load; else the `LoadError` variant name it must be refused with.
    pub refused_as: Option<&'static str>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip of stored entries; `aliases` adds central-directory records, named by the
/// strings, that all point at the first entry's bytes.
pub fn zip(entries: &[(&str, &[u8])], aliases: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    let mut first = None;
    for (name, data) in entries {
        let off = out.len() as u32;
        let crc = crc32(data);
        let len = data.len() as u32;
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(crc.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend([0, 0]);
        out.extend(name.as_bytes());
        out.extend(*data);
        first.get_or_insert((off, crc, len));
        cd_record(&mut cd, name, off, crc, len);
    }
    if let Some((off, crc, len)) = first {
        for name in aliases {
            cd_record(&mut cd, name, off, crc, len);
        }
    }
    let count = (entries.len() + aliases.len()) as u16;
    let cd_off = out.len() as u32;
    let cd_len = cd.len() as u32;
    out.extend(cd);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(count.to_le_bytes());
    out.extend(count.to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_off.to_le_bytes());
    out.extend([0, 0]);
    out
}

fn cd_record(cd: &mut Vec<u8>, name: &str, off: u32, crc: u32, len: u32) {
    cd.extend(0x0201_4b50u32.to_le_bytes());
    cd.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    cd.extend(crc.to_le_bytes());
    cd.extend(len.to_le_bytes());
    cd.extend(len.to_le_bytes());
    cd.extend((name.len() as u16).to_le_bytes());
    cd.extend([0; 12]);
    cd.extend(off.to_le_bytes());
    cd.extend(name.as_bytes());
}

fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((s.len() as u32).to_le_bytes());
    v.extend(s.as_bytes());
    v
}

fn int(v: u64) -> Vec<u8> {
    let mut out = vec![0x8a, 8];
    out.extend(v.to_le_bytes());
    out
}

/// One tensor of [`state_dict`]: name, storage key, numel, offset, size, stride.
pub type Meta<'a> = (&'a str, &'a str, u64, u64, &'a [u64], &'a [u64]);

/// `{name: tensor}` for each `(name, storage key, numel, offset, size, stride)`, float32.
pub fn state_dict(tensors: &[Meta]) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for (name, key, numel, offset, size, stride) in tensors {
        p.extend(unicode(name));
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.extend(unicode("storage"));
        p.extend(b"ctorch\nFloatStorage\n");
        p.extend(unicode(key));
        p.extend(unicode("cpu"));
        p.extend(int(*numel));
        p.extend(b"tQ");
        p.extend(int(*offset));
        p.push(b'(');
        size.iter().for_each(|&d| p.extend(int(d)));
        p.extend(b"t(");
        stride.iter().for_each(|&d| p.extend(int(d)));
        p.extend(b"t\x89NtR");
    }
    p.extend(b"u.");
    p
}

/// A torch zip checkpoint under `dir/`.
pub fn torch_zip(dir: &str, pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("{dir}/data/{k}"))
        .collect();
    let pkl_name = format!("{dir}/data.pkl");
    let order = format!("{dir}/byteorder");
    let mut entries: Vec<(&str, &[u8])> = vec![(&pkl_name, pkl), (&order, b"little")];
    for ((_, data), name) in storages.iter().zip(&names) {
        entries.push((name, data));
    }
    zip(&entries, &[])
}

/// A pickle that pushes a 1 MiB byte string, then repeats `tail` `n` times.
fn big_value_then(tail: &[u8], n: usize, end: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x04B".to_vec();
    p.extend((1u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(b'a', 1 << 20));
    if tail.starts_with(b"h") {
        p.extend(b"q\x00");
    }
    for _ in 0..n {
        p.extend(tail);
    }
    p.extend(end);
    p
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

/// A GGUF v3 file: `kv` metadata entries (already encoded), f32 tensors `(name, dims,
/// offset)`, then `data` after 32-byte alignment.
pub fn gguf(kv: &[Vec<u8>], tensors: &[(&str, &[u64], u64)], data: &[u8]) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend((tensors.len() as u64).to_le_bytes());
    f.extend((kv.len() as u64).to_le_bytes());
    kv.iter().for_each(|e| f.extend(e));
    for (name, dims, offset) in tensors {
        f.extend(gguf_string(name));
        f.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
        f.extend(0u32.to_le_bytes()); // F32
        f.extend(offset.to_le_bytes());
    }
    while !f.len().is_multiple_of(32) {
        f.push(0);
    }
    f.extend(data);
    f
}

fn alignment_zero() -> Vec<u8> {
    let mut e = gguf_string("general.alignment");
    e.extend(4u32.to_le_bytes()); // U32
    e.extend(0u32.to_le_bytes());
    e
}

/// A valid safetensors file whose JSON header is padded to `header_len` bytes.
pub fn safetensors_with_header(header_len: usize) -> Vec<u8> {
    let json = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut header = json.as_bytes().to_vec();
    header.resize(header_len, b' ');
    let mut f = (header_len as u64).to_le_bytes().to_vec();
    f.extend(header);
    f.extend(1.0f32.to_le_bytes());
    f.extend(2.0f32.to_le_bytes());
    f
}

/// Every hostile file.
pub fn all() -> Vec<Hostile> {
    let mib = vec![0u8; 1 << 20];
    let one = 1.0f32.to_le_bytes();
    let overlap = vec![0u8; 73728 * 4];
    let mut v = vec![
        Hostile {
            name: "stride0.pth",
            attack: "one f32 viewed with stride 0 as a [32768, 16384] tensor (2 GiB)",
            bytes: torch_zip(
                "archive",
                &state_dict(&[("w", "0", 1, 0, &[32768, 16384], &[0, 0])]),
                &[("0", &one)],
            ),
            refused_as: Some("OverBudget"),
        },
        Hostile {
            name: "overlapping-strides.pth",
            attack: "73728 floats (288 KiB) viewed with strides [1, 1] as a [65536, 8192] tensor (2 GiB)",
            bytes: torch_zip(
                "archive",
                &state_dict(&[("w", "0", 73728, 0, &[65536, 8192], &[1, 1])]),
                &[("0", &overlap)],
            ),
            refused_as: Some("OverBudget"),
        },
        Hostile {
            name: "binput-1mib.pth",
            attack: "a 1 MiB byte string stored in the memo 3000 times (BINPUT)",
            bytes: torch_zip("archive", &big_value_then(b"q\x00", 3000, b"."), &[]),
            refused_as: Some("OverBudget"),
        },
        Hostile {
            name: "memoize-1mib.pth",
            attack: "a 1 MiB byte string memoised 3000 times (MEMOIZE)",
            bytes: torch_zip("archive", &big_value_then(b"\x94", 3000, b"."), &[]),
            refused_as: Some("OverBudget"),
        },
        Hostile {
            name: "get-1mib.pth",
            attack: "a 1 MiB byte string read back from the memo 3000 times (BINGET)",
            bytes: torch_zip("archive", &big_value_then(b"h\x00", 3000, b"."), &[]),
            refused_as: Some("OverBudget"),
        },
        Hostile {
            name: "bare-dup-then-global.pkl",
            attack: "a bare pickle that DUPs a 1 MiB string 3000 times before naming posix.system",
            bytes: big_value_then(b"2", 3000, b"cposix\nsystem\n."),
            refused_as: Some("UnsafePickle"),
        },
        Hostile {
            name: "gguf-align0.gguf",
            attack: "general.alignment = 0 (candle divides by it)",
            bytes: gguf(&[alignment_zero()], &[("w", &[2], 0)], &[0; 8]),
            refused_as: Some("Corrupt"),
        },
        Hostile {
            name: "gguf-past-offset.gguf",
            attack: "a tensor smaller than the file but larger than what is left after its offset",
            bytes: gguf(&[], &[("w", &[256], 64)], &[0; 1024]),
            refused_as: Some("Corrupt"),
        },
        Hostile {
            name: "safetensors-header-128.safetensors",
            attack: "valid safetensors whose header length (128) starts the file with 0x80 0x00, like a pickle PROTO",
            bytes: safetensors_with_header(128),
            refused_as: None,
        },
    ];
    let npy = {
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        let dict = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
            (1 << 20) / 4
        );
        let mut d = dict.into_bytes();
        d.resize(118, b' ');
        d.push(b'\n');
        h.extend((d.len() as u16).to_le_bytes());
        h.extend(d);
        h.extend(&mib);
        h
    };
    let aliases: Vec<String> = (1..2000).map(|i| format!("a{i}.npy")).collect();
    v.push(Hostile {
        name: "zip-alias.npz",
        attack: "2000 central-directory records pointing at one 1 MiB .npy (2 GiB)",
        bytes: zip(&[("a0.npy", &npy)], &aliases),
        refused_as: Some("Corrupt"),
    });
    let pkl = state_dict(&[("w", "0", 1 << 18, 0, &[1 << 18], &[1])]);
    let keys: Vec<String> = (1..2000).map(|i| format!("archive/data/{i}")).collect();
    let mut names: Vec<(String, String, u64)> = Vec::new();
    for i in 0..2000 {
        names.push((format!("w{i}"), i.to_string(), 1 << 18));
    }
    let meta: Vec<Meta> = names
        .iter()
        .map(|(n, k, numel)| {
            (
                n.as_str(),
                k.as_str(),
                *numel,
                0,
                &[1u64 << 18][..],
                &[1u64][..],
            )
        })
        .collect();
    let many = state_dict(&meta);
    let _ = pkl;
    v.push(Hostile {
        name: "zip-alias.pth",
        attack: "2000 storages whose central-directory records all point at one 1 MiB entry (2 GiB)",
        bytes: zip(&[("archive/data/0", &mib), ("archive/data.pkl", &many)], &keys),
        refused_as: Some("Corrupt"),
    });
    let tensors: Vec<(String, u64)> = (0..60).map(|i| (format!("t{i}"), 0)).collect();
    let infos: Vec<(&str, &[u64], u64)> = tensors
        .iter()
        .map(|(n, o)| (n.as_str(), &[1u64 << 18][..], *o))
        .collect();
    v.push(Hostile {
        name: "gguf-alias.gguf",
        attack: "60 tensor infos at one offset, each 1 MiB (dequantised 60 MiB, aliased)",
        bytes: gguf(&[], &infos, &mib),
        refused_as: Some("Corrupt"),
    });
    v
}
