//! Weight formats: every format loads the same tensors as safetensors, formats are told by
//! content, malicious pickles are refused without running, corrupt files get typed errors,
//! and a Hugging Face directory with `pytorch_model.bin` embeds exactly like the
//! safetensors one. Fixtures: `scripts/make-fixtures.py` (committed in
//! `tests/fixtures/formats/`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{format_fixture, minilm_dir, scratch_dir, values};
use modelhost::formats::{self, WeightFormat};
use modelhost::{LoadError, SentenceEmbedder};

fn reference() -> HashMap<String, Tensor> {
    formats::load_tensors(&format_fixture("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn every_format_loads_the_same_tensors_as_safetensors() {
    let reference = reference();
    assert_eq!(reference.len(), 5);
    for (file, format, f16_kept) in [
        ("pytorch_model.bin", WeightFormat::PyTorch, true),
        ("model.npz", WeightFormat::Npz, true),
        // GGUF tensors are dequantised to f32.
        ("model.gguf", WeightFormat::Gguf, false),
    ] {
        let path = format_fixture(file);
        assert_eq!(formats::detect(&path).unwrap(), format, "{file}");
        let loaded = formats::load_tensors(&path, &Device::Cpu).unwrap();
        let mut names: Vec<_> = loaded.keys().collect();
        names.sort();
        let mut expected: Vec<_> = reference.keys().collect();
        expected.sort();
        assert_eq!(names, expected, "{file}");
        for (name, want) in &reference {
            let got = &loaded[name];
            assert_eq!(got.dims(), want.dims(), "{file}: {name}");
            let dtype = if f16_kept { want.dtype() } else { DType::F32 };
            assert_eq!(got.dtype(), dtype, "{file}: {name}");
            assert_eq!(values(got), values(want), "{file}: {name}");
        }
    }
    // The PyTorch file stores head.weight transposed and head.bias at an offset of a
    // shared storage; both come out as the logical tensors.
    let single = formats::load_tensors(&format_fixture("embed.npy"), &Device::Cpu).unwrap();
    assert_eq!(values(&single["array"]), values(&reference["embed.weight"]));
}

#[test]
fn formats_are_told_by_content_not_by_extension() {
    let dir = scratch_dir("misnamed");
    for (file, disguise, format) in [
        (
            "model.safetensors",
            "weights.bin",
            WeightFormat::Safetensors,
        ),
        (
            "pytorch_model.bin",
            "weights.safetensors",
            WeightFormat::PyTorch,
        ),
        ("model.npz", "weights.pt", WeightFormat::Npz),
        ("model.gguf", "weights.npz", WeightFormat::Gguf),
    ] {
        let path = dir.join(disguise);
        std::fs::copy(format_fixture(file), &path).unwrap();
        assert_eq!(formats::detect(&path).unwrap(), format, "{file}");
        let vb = formats::var_builder(&path, DType::F32, &Device::Cpu).unwrap();
        let w = vb.get((3, 4), "layers.0.weight").unwrap();
        assert_eq!(values(&w), values(&reference()["layers.0.weight"]));
    }
    std::fs::write(dir.join("notes.txt"), "these are not weights").unwrap();
    let err = formats::detect(&dir.join("notes.txt")).unwrap_err();
    assert!(matches!(err, LoadError::Format { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(
        err.to_string()
            .contains("safetensors, PyTorch zip checkpoint, .npz, .npy, GGUF, ONNX"),
        "{err}"
    );
}

const MARKER: &str = "/tmp/modelhost-pickle-marker";

#[test]
fn malicious_pickles_are_refused_naming_what_they_ask_for_and_never_run() {
    let _ = std::fs::remove_file(MARKER);
    for file in ["malicious.pth", "malicious-proto4.pt"] {
        let err = formats::load_tensors(&format_fixture(file), &Device::Cpu).unwrap_err();
        match &err {
            LoadError::UnsafePickle { path, global } => {
                assert_eq!(global, "posix.system", "{file}");
                assert!(path.ends_with(file));
            }
            other => panic!("{file}: {other}"),
        }
        assert!(err.to_string().contains("`posix.system`"), "{err}");
    }
    assert!(!Path::new(MARKER).exists(), "a pickle ran");

    // The same attack written here with a marker in a directory of this test, in a model
    // directory the embedder would load as `pytorch_model.bin`.
    let dir = scratch_dir("evil-model");
    let marker = dir.join("pwned");
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    pickle.extend((command.len() as u32).to_le_bytes());
    pickle.extend(command.as_bytes());
    pickle.extend(b"q\x01\x85q\x02Rq\x03.");
    write_zip(
        &dir.join("pytorch_model.bin"),
        &[("archive/data.pkl", &pickle)],
    );
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(minilm_dir().join(f), dir.join(f)).unwrap();
    }
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnsafePickle { global, .. } if global == "posix.system"),
        "{err}"
    );
    assert!(!marker.exists(), "a pickle ran");
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn truncated_and_corrupt_files_get_typed_errors_naming_the_file() {
    let dir = scratch_dir("truncated");
    for file in [
        "model.safetensors",
        "pytorch_model.bin",
        "model.npz",
        "model.gguf",
        "embed.npy",
    ] {
        let bytes = std::fs::read(format_fixture(file)).unwrap();
        // (Not the last few bytes: GGUF pads its data to 32 bytes, so such a cut is whole.)
        let cuts = [
            0,
            4,
            9,
            24,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 40,
        ];
        for cut in cuts {
            let path = dir.join(format!("cut-{cut}-{file}"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = formats::load_tensors(&path, &Device::Cpu)
                .err()
                .unwrap_or_else(|| panic!("{file} cut at {cut} loaded"));
            assert!(
                err.to_string().contains(&format!("cut-{cut}-{file}")),
                "{file} cut at {cut}: {err}"
            );
        }
    }
    // A zip with storages but no pickle, and a state dict whose storage is too small.
    let path = dir.join("no-pickle.pth");
    write_zip(&path, &[("archive/data/0", &[0u8; 16])]);
    let err = formats::load_tensors(&path, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("no data.pkl"), "{err}");

    let path = dir.join("short-storage.pth");
    write_torch(&path, &[("w".into(), vec![4, 4], vec![1.0; 16])]);
    let bytes = std::fs::read(&path).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut pickle = Vec::new();
    std::io::Read::read_to_end(
        &mut archive.by_name("archive/data.pkl").unwrap(),
        &mut pickle,
    )
    .unwrap();
    write_zip(
        &path,
        &[("archive/data.pkl", &pickle), ("archive/data/0", &[0u8; 8])],
    );
    let err = formats::load_tensors(&path, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor `w` needs 64 bytes but its storage archive/data/0 holds 8"),
        "{err}"
    );
}

/// Writes f32 tensors as `torch.save(state_dict)` does: a zip of `archive/data.pkl`
/// (protocol 2, `_rebuild_tensor_v2` with persistent storage ids) and raw storages.
fn write_torch(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    let mut p = vec![0x80, 2];
    global(&mut p, "collections", "OrderedDict");
    p.extend(b")R(");
    let mut storages = Vec::new();
    for (i, (name, shape, data)) in tensors.iter().enumerate() {
        text(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend(b"((");
        text(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        text(&mut p, &i.to_string());
        text(&mut p, "cpu");
        int(&mut p, data.len());
        p.extend(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        shape.iter().for_each(|&d| int(&mut p, d));
        p.push(b't');
        p.push(b'(');
        for k in 0..shape.len() {
            int(&mut p, shape[k + 1..].iter().product());
        }
        p.push(b't');
        p.push(0x89);
        global(&mut p, "collections", "OrderedDict");
        p.extend(b")RtR");
        storages.push((
            format!("archive/data/{i}"),
            data.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ));
    }
    p.extend(b"u.");
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &p)];
    entries.extend(storages.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    write_zip(path, &entries);
}

/// MiniLM's directory with `pytorch_model.bin` (written from its safetensors) instead of
/// `model.safetensors`.
fn minilm_as_pytorch() -> PathBuf {
    let dir = scratch_dir("minilm-pth");
    let src = minilm_dir();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name != "model.safetensors" {
            let target = dir.join(&name);
            std::os::unix::fs::symlink(entry.path(), target).unwrap();
        }
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let state: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .map(|(n, t)| {
            let dims = t.dims().to_vec();
            (n, dims, values(&t))
        })
        .collect();
    write_torch(&dir.join("pytorch_model.bin"), &state);
    dir
}

#[test]
fn a_directory_with_pytorch_model_bin_embeds_exactly_like_safetensors() {
    let dir = minilm_as_pytorch();
    assert!(!dir.join("model.safetensors").exists());
    let texts: Vec<String> = common::references()
        .into_iter()
        .take(20)
        .map(|r| r.text)
        .collect();
    let embed = |model: &SentenceEmbedder| {
        let batch: Vec<_> = texts.iter().map(|t| model.tokenize(t).unwrap()).collect();
        model.embed_batch(&batch).unwrap()
    };
    let from_bin = embed(&SentenceEmbedder::load(&dir).unwrap());
    let from_safetensors = embed(&SentenceEmbedder::load(minilm_dir()).unwrap());
    assert_eq!(from_bin, from_safetensors);

    // And through the `embed` example, which takes the directory as it is.
    let input = dir.join("texts.txt");
    std::fs::write(&input, texts[..3].join("\n") + "\n").unwrap();
    let out = std::process::Command::new(common::example_binary("embed"))
        .arg("--model")
        .arg(&dir)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, want) in lines.iter().zip(&from_safetensors) {
        let got: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        assert!(
            got.iter()
                .zip(want.as_slice())
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "the CLI's embedding differs"
        );
    }
}
