//! Weight formats: each loads the same tensors as safetensors, pickles never run, and
//! damaged files are typed errors. Fixtures: `tests/fixtures/formats/`, written by
//! `scripts/make-fixtures.py`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use modelhost::error::WeightFormat;
use modelhost::formats;
use modelhost::{DType, Device, error::LoadError};

use candle_core::Tensor;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/formats")
        .join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("modelhost-formats-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    formats::load_tensors(&fixture("model.safetensors"), &Device::Cpu).unwrap()
}

/// Same names, dtypes, shapes and values, exactly.
fn assert_same(got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, what: &str) {
    let mut got_names: Vec<&String> = got.keys().collect();
    let mut want_names: Vec<&String> = want.keys().collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(got_names, want_names, "{what}: tensor names");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dtype(), w.dtype(), "{what}: dtype of {name}");
        assert_eq!(g.dims(), w.dims(), "{what}: shape of {name}");
        assert_eq!(values(g), values(w), "{what}: values of {name}");
    }
}

#[test]
fn every_format_is_detected_by_content() {
    for (file, format) in [
        ("model.safetensors", WeightFormat::Safetensors),
        ("model.pth", WeightFormat::PyTorchZip),
        ("model-p4.pth", WeightFormat::PyTorchZip),
        ("malicious.pth", WeightFormat::PyTorchZip),
        ("malicious-p4.pkl", WeightFormat::Pickle),
        ("model.npz", WeightFormat::Npz),
        ("model.gguf", WeightFormat::Gguf),
        ("model.onnx", WeightFormat::Onnx),
        ("unsupported-op.onnx", WeightFormat::Onnx),
    ] {
        assert_eq!(formats::detect(&fixture(file)).unwrap(), format, "{file}");
    }
    // The extension is never consulted.
    let dir = scratch("renamed");
    for (file, format) in [
        ("model.pth", WeightFormat::PyTorchZip),
        ("model.npz", WeightFormat::Npz),
        ("model.gguf", WeightFormat::Gguf),
    ] {
        let renamed = dir.join(format!("{file}.safetensors"));
        std::fs::copy(fixture(file), &renamed).unwrap();
        assert_eq!(formats::detect(&renamed).unwrap(), format, "{file}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pytorch_checkpoint_loads_the_same_tensors_as_safetensors() {
    // Shared storages, a strided (transposed) view, a row view at an offset, an
    // nn.Parameter, f16 and i64 storages.
    let pth = formats::load_tensors(&fixture("model.pth"), &Device::Cpu).unwrap();
    assert_same(&pth, &reference(), "model.pth");
    // Pickle protocol 4, and a tensor rebuilt through `_rebuild_from_type_v2`.
    let p4 = formats::load_tensors(&fixture("model-p4.pth"), &Device::Cpu).unwrap();
    assert_same(&p4, &reference(), "model-p4.pth");
}

#[test]
fn an_npz_archive_loads_the_same_tensors_as_safetensors() {
    // `layers.1.weight_t` is stored in Fortran order.
    let npz = formats::load_tensors(&fixture("model.npz"), &Device::Cpu).unwrap();
    assert_same(&npz, &reference(), "model.npz");
}

#[test]
fn a_gguf_file_loads_the_same_float_tensors_as_safetensors_dequantised_to_f32() {
    let gguf = formats::load_tensors(&fixture("model.gguf"), &Device::Cpu).unwrap();
    let want: HashMap<String, Tensor> = reference()
        .into_iter()
        .filter(|(_, t)| t.dtype().is_float())
        .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
        .collect();
    assert_eq!(want.len(), 8);
    assert_same(&gguf, &want, "model.gguf");
    let q = formats::load_quantized(&fixture("model.gguf"), &Device::Cpu).unwrap();
    assert_eq!(
        q["embed.half"].dtype(),
        candle_core::quantized::GgmlDType::F16
    );
}

#[test]
fn var_builder_reads_every_format_in_the_dtype_asked_for() {
    let want = values(&reference()["layers.1.weight_t"]);
    for file in ["model.safetensors", "model.pth", "model.npz", "model.gguf"] {
        let vb = formats::var_builder(&fixture(file), DType::F32, &Device::Cpu).unwrap();
        let t = vb.get((8, 3), "layers.1.weight_t").unwrap();
        assert_eq!(t.dtype(), DType::F32, "{file}");
        assert_eq!(values(&t), want, "{file}");
    }
}

#[test]
fn find_weights_prefers_safetensors_then_pytorch_model_bin_and_names_what_it_looked_for() {
    let dir = scratch("find");
    let err = formats::find_weights(&dir).unwrap_err();
    match &err {
        LoadError::MissingFile { path, what } => {
            assert_eq!(path, &dir.join("model.safetensors"));
            assert!(what.contains("pytorch_model.bin"), "{what}");
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    std::fs::copy(fixture("model.pth"), dir.join("pytorch_model.bin")).unwrap();
    assert_eq!(
        formats::find_weights(&dir).unwrap(),
        dir.join("pytorch_model.bin")
    );
    std::fs::copy(fixture("model.safetensors"), dir.join("model.safetensors")).unwrap();
    assert_eq!(
        formats::find_weights(&dir).unwrap(),
        dir.join("model.safetensors")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- pickles never run ---------------------------------------------------------------

fn assert_refused(path: &Path, global: &str) {
    match formats::load_tensors(path, &Device::Cpu) {
        Err(LoadError::UnsafePickle {
            path: p,
            global: g,
            allowed,
        }) => {
            assert_eq!(p, path);
            assert_eq!(g, global);
            assert_eq!(allowed, formats::pickle::ALLOWED_GLOBALS);
        }
        other => panic!("{}: expected UnsafePickle, got {other:?}", path.display()),
    }
    // The error names the global and what is allowed.
    let msg = formats::load_tensors(path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(global) && msg.contains("torch._utils._rebuild_tensor_v2"),
        "{msg}"
    );
    assert_eq!(
        msg,
        format!(
            "{} asks for the Python global `{global}`, which is not part of tensor reconstruction; the pickle was refused and nothing in it was run (allowed globals: {})",
            path.display(),
            formats::pickle::ALLOWED_GLOBALS.join(", ")
        )
    );
}

#[test]
fn the_committed_malicious_pickles_are_refused_and_never_run() {
    // The fixtures' command is `touch modelhost-pwned-marker`, relative to the working
    // directory, which for tests is the package root.
    let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join("modelhost-pwned-marker");
    assert!(
        !marker.exists(),
        "a stale {} is in the way",
        marker.display()
    );
    assert_refused(&fixture("malicious.pth"), "posix.system");
    assert_refused(&fixture("malicious-p4.pkl"), "posix.system");
    assert!(
        !marker.exists(),
        "the pickle ran: {} exists",
        marker.display()
    );
    // The model-loading paths refuse it too.
    let dir = scratch("malicious-dir");
    std::fs::copy(fixture("malicious.pth"), dir.join("pytorch_model.bin")).unwrap();
    let err = formats::var_builder(&dir.join("pytorch_model.bin"), DType::F32, &Device::Cpu);
    assert!(matches!(err, Err(LoadError::UnsafePickle { .. })));
    assert!(!marker.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A pickle calling `module.name(command)`: protocol 2 `GLOBAL`, protocol 4
/// `STACK_GLOBAL`, protocol 0 `INST`.
fn malicious_pickles(module: &str, name: &str, command: &str) -> Vec<Vec<u8>> {
    let arg = pth::unicode(command);
    let mut global = vec![0x80, 2];
    global.extend(format!("c{module}\n{name}\n").bytes());
    global.extend(&arg);
    global.extend(b"\x85R.");
    let mut stack_global = vec![0x80, 4];
    stack_global.extend(pth::unicode(module));
    stack_global.extend(pth::unicode(name));
    stack_global.push(0x93);
    stack_global.extend(&arg);
    stack_global.extend(b"\x85R.");
    let mut inst = b"(".to_vec();
    inst.extend(&arg);
    inst.extend(format!("i{module}\n{name}\n.").bytes());
    vec![global, stack_global, inst]
}

#[test]
fn pickles_asking_for_os_system_are_refused_by_name_and_the_command_never_runs() {
    let dir = scratch("pwn");
    let marker = dir.join("pwned");
    let command = format!("touch {}", marker.display());
    let mut n = 0;
    for (module, name) in [
        ("posix", "system"),
        ("os", "system"),
        ("builtins", "exec"),
        ("subprocess", "call"),
    ] {
        for pickle in malicious_pickles(module, name, &command) {
            let zip = dir.join(format!("{n}.pth"));
            pth::write_torch_zip(&zip, &pickle, &[]);
            assert_refused(&zip, &format!("{module}.{name}"));
            if pickle[0] == 0x80 {
                let bare = dir.join(format!("{n}.pkl"));
                std::fs::write(&bare, &pickle).unwrap();
                assert_eq!(formats::detect(&bare).unwrap(), WeightFormat::Pickle);
                assert_refused(&bare, &format!("{module}.{name}"));
            }
            n += 1;
        }
    }
    assert!(!marker.exists(), "a pickle ran its command");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_safe_bare_pickle_is_refused_as_unsupported_naming_the_fix() {
    let dir = scratch("bare");
    let path = dir.join("legacy.pkl");
    std::fs::write(&path, b"\x80\x02}q\x00.").unwrap();
    match formats::load_tensors(&path, &Device::Cpu) {
        Err(LoadError::Unsupported { what, .. }) => assert!(what.contains("torch.save"), "{what}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- damaged files -------------------------------------------------------------------

fn assert_typed_error(path: &Path, what: &str) -> LoadError {
    let err = match formats::load_tensors(path, &Device::Cpu) {
        Ok(t) => panic!("{what}: loaded {} tensors from a damaged file", t.len()),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            LoadError::Corrupt { .. }
                | LoadError::UnknownFormat { .. }
                | LoadError::Unsupported { .. }
        ),
        "{what}: {err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{what}: the error does not name the file: {err}"
    );
    err
}

/// One fixture of every format (PyTorch zip in both protocols), cut and corrupted below.
const EVERY_FORMAT: [&str; 6] = [
    "model.safetensors",
    "model.pth",
    "model-p4.pth",
    "model.npz",
    "model.gguf",
    "model.onnx",
];

#[test]
fn every_fixture_cut_short_at_any_length_is_a_typed_error_naming_the_file() {
    let dir = scratch("truncated");
    for file in EVERY_FORMAT {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let path = dir.join(file);
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            // GGUF pads its tensor data to the alignment: cutting padding only loses nothing.
            if file.ends_with(".gguf") && bytes[len..].iter().all(|&b| b == 0) {
                continue;
            }
            assert_typed_error(&path, &format!("{file} cut to {len} bytes"));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_files_say_what_is_wrong() {
    let dir = scratch("damaged");
    let path = dir.join("weights");

    // A safetensors header cut off.
    let st = std::fs::read(fixture("model.safetensors")).unwrap();
    std::fs::write(&path, &st[..40]).unwrap();
    let err = assert_typed_error(&path, "safetensors header");
    assert!(
        matches!(
            err,
            LoadError::Corrupt {
                format: WeightFormat::Safetensors,
                ..
            }
        ),
        "{err:?}"
    );

    // A PyTorch zip without data.pkl.
    pth::write_zip(
        &path,
        &[
            ("archive/data/0", &[0u8; 16][..]),
            ("archive/version", b"3\n"),
        ],
    );
    let err = assert_typed_error(&path, "zip without data.pkl");
    assert!(
        matches!(&err, LoadError::Corrupt { format: WeightFormat::PyTorchZip, what, .. } if what.contains("data.pkl")),
        "{err:?}"
    );

    // A tensor whose storage is missing or too short.
    let mut sd = Vec::new();
    pth::pickle_state_dict(&mut sd, &[("w", "FloatStorage", &[4, 4][..])]);
    pth::write_torch_zip(&path, &sd, &[("0", vec![0u8; 16])]);
    let err = assert_typed_error(&path, "short storage");
    assert!(err.to_string().contains("tensor `w`"), "{err}");

    // An npz whose .npy header is damaged.
    let mut npy = b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'shape': (2, 2), }".to_vec();
    npy.extend([0u8; 16]);
    pth::write_zip(&path, &[("w.npy", &npy[..])]);
    let err = assert_typed_error(&path, "npz without fortran_order");
    assert!(
        matches!(&err, LoadError::Corrupt { format: WeightFormat::Npz, what, .. } if what.contains("w.npy") && what.contains("fortran_order")),
        "{err:?}"
    );
    let mut npy =
        b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }  \n"
            .to_vec();
    npy.extend([0u8; 16]);
    pth::write_zip(&path, &[("w.npy", &npy[..])]);
    let err = assert_typed_error(&path, "npz with too little data");
    assert!(err.to_string().contains("needs 24 bytes"), "{err}");

    // A compressed npz (deflate) says how to re-save it.
    let err = assert_typed_error(&fixture("compressed.npz"), "compressed npz");
    assert!(err.to_string().contains("np.savez_compressed"), "{err}");

    // GGUF cut off in its tensor data.
    let gguf = std::fs::read(fixture("model.gguf")).unwrap();
    let data_end = gguf.iter().rposition(|&b| b != 0).unwrap();
    std::fs::write(&path, &gguf[..data_end]).unwrap();
    let err = assert_typed_error(&path, "gguf");
    assert!(
        matches!(
            err,
            LoadError::Corrupt {
                format: WeightFormat::Gguf,
                ..
            }
        ),
        "{err:?}"
    );

    // Not a weights file at all.
    std::fs::write(&path, b"hello, world\n").unwrap();
    let err = assert_typed_error(&path, "text");
    assert!(matches!(err, LoadError::UnknownFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("safetensors, PyTorch"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_single_byte_corruption_of_a_checkpoint_pickle_is_handled_without_panicking() {
    let pkl = {
        let mut z =
            zip::ZipArchive::new(std::fs::File::open(fixture("model.pth")).unwrap()).unwrap();
        let mut f = z.by_name("archive/data.pkl").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    };
    let storages: Vec<(String, Vec<u8>)> = {
        let mut z =
            zip::ZipArchive::new(std::fs::File::open(fixture("model.pth")).unwrap()).unwrap();
        (0..6)
            .map(|k| {
                let mut f = z.by_name(&format!("archive/data/{k}")).unwrap();
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v).unwrap();
                (k.to_string(), v)
            })
            .collect()
    };
    let storages: Vec<(&str, Vec<u8>)> = storages
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let dir = scratch("flip");
    let path = dir.join("model.pth");
    let mut outcomes = [0usize; 2];
    for i in 0..pkl.len() {
        for b in [0x00u8, 0xff, pkl[i] ^ 0x01] {
            let mut bad = pkl.clone();
            bad[i] = b;
            pth::write_torch_zip(&path, &bad, &storages);
            // Anything but a panic: tensors or a typed error.
            let r = formats::load_tensors(&path, &Device::Cpu);
            outcomes[r.is_ok() as usize] += 1;
        }
    }
    assert!(outcomes[0] > 0, "no corruption was detected at all");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_single_byte_corruption_of_every_fixture_is_handled_without_panicking() {
    let dir = scratch("flip-all");
    for file in EVERY_FORMAT {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let path = dir.join(file);
        for i in 0..bytes.len() {
            for b in [0x00u8, 0xff, bytes[i] ^ 0x80] {
                let mut bad = bytes.clone();
                bad[i] = b;
                std::fs::write(&path, &bad).unwrap();
                // Tensors or a typed error, never a panic.
                let _ = formats::load_tensors(&path, &Device::Cpu);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- models load from pytorch_model.bin ----------------------------------------------

#[test]
fn the_digits_classifier_loads_from_pytorch_model_bin_and_predicts_identically() {
    use modelhost::{Predictor, models::mlp::MlpClassifier};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/digits");
    let dir = scratch("digits-bin");
    std::fs::copy(src.join("model.json"), dir.join("model.json")).unwrap();
    let tensors = formats::load_tensors(&src.join("model.safetensors"), &Device::Cpu).unwrap();
    pth::write_pth(&dir.join("pytorch_model.bin"), &tensors);
    assert_eq!(
        formats::detect(&dir.join("pytorch_model.bin")).unwrap(),
        WeightFormat::PyTorchZip
    );

    let a = Predictor::builder(MlpClassifier::load(&src).unwrap())
        .build()
        .unwrap();
    let b = Predictor::builder(MlpClassifier::load(&dir).unwrap())
        .build()
        .unwrap();
    for seed in 0..20u32 {
        let x: Vec<f32> = (0..64).map(|i| ((i * 7 + seed * 13) % 17) as f32).collect();
        let (pa, pb) = (a.predict(x.clone()).unwrap(), b.predict(x).unwrap());
        assert_eq!(pa.label, pb.label);
        assert_eq!(pa.scores, pb.scores);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of the MiniLM directory with `pytorch_model.bin` instead of `model.safetensors`,
/// written from the safetensors' tensors. Laid out like the Hugging Face cache: real
/// directories (module directories must lie inside the model directory), files linked.
fn minilm_with_pytorch_model_bin(tag: &str) -> PathBuf {
    fn link_tree(src: &Path, dst: &Path) {
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let target = dst.join(entry.file_name());
            if entry.file_name() == "model.safetensors" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                link_tree(&entry.path(), &target);
            } else {
                std::os::unix::fs::symlink(entry.path(), target).unwrap();
            }
        }
    }
    let src = common::minilm_dir();
    let dir = scratch(tag);
    link_tree(&src, &dir);
    let tensors = formats::load_tensors(&src.join("model.safetensors"), &Device::Cpu).unwrap();
    pth::write_pth(&dir.join("pytorch_model.bin"), &tensors);
    dir
}

#[test]
fn a_sentence_transformers_dir_with_pytorch_model_bin_embeds_identically() {
    use modelhost::{
        models::sentence::SentenceEmbedder, models::text::EmbedderOptions, models::text::Engine,
    };
    let dir = minilm_with_pytorch_model_bin("minilm-bin");
    let texts: Vec<String> = common::references()
        .into_iter()
        .take(24)
        .map(|r| r.text)
        .collect();
    for engine in [Engine::Packed, Engine::PackedPortable, Engine::Candle] {
        let opts = || EmbedderOptions {
            engine,
            ..EmbedderOptions::default()
        };
        let st = SentenceEmbedder::load_with(common::minilm_dir(), opts()).unwrap();
        let bin = SentenceEmbedder::load_with(&dir, opts()).unwrap();
        let (st, bin) = (
            modelhost::Predictor::builder(st).build().unwrap(),
            modelhost::Predictor::builder(bin).build().unwrap(),
        );
        for text in &texts {
            let (a, b) = (
                st.predict(text.clone()).unwrap(),
                bin.predict(text.clone()).unwrap(),
            );
            assert_eq!(a.0, b.0, "{engine:?}: {text:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_embed_example_reads_a_pytorch_model_bin_directory() {
    let dir = minilm_with_pytorch_model_bin("minilm-bin-cli");
    let input: String = common::references()
        .into_iter()
        .take(24)
        .map(|r| r.text + "\n")
        .collect();
    let run = |model: &Path| common::run_embed(&["--model".as_ref(), model.as_ref()], &input);
    let (st, bin) = (run(&common::minilm_dir()), run(&dir));
    assert_eq!(st.lines().count(), 24);
    assert!(st.contains("\"embedding\""));
    assert_eq!(st, bin);
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- real files: Silero VAD from PyPI -------------------------------------------------

/// `models/silero-vad`, as `scripts/fetch-models.sh` leaves it.
fn silero(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/silero-vad")
        .join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh first",
        path.display()
    );
    path
}

#[test]
fn a_real_torchscript_archive_is_refused_naming_the_class_it_asks_for() {
    // Written by torch.jit.save: a real PyTorch zip whose data.pkl rebuilds a scripted module.
    let jit = silero("silero_vad.jit");
    assert_eq!(formats::detect(&jit).unwrap(), WeightFormat::PyTorchZip);
    assert_refused(&jit, "__torch__.vad.model.vad_annotator.VADRNNJITMerge");
    // The same model's safetensors and ONNX exports are recognised by content.
    let st = formats::load_tensors(&silero("silero_vad_16k.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(st.len(), 15);
    assert_eq!(st["stft_conv.weight"].dims(), &[258, 1, 256]);
    assert_eq!(
        formats::detect(&silero("silero_vad.onnx")).unwrap(),
        WeightFormat::Onnx
    );
}

// --- ONNX ----------------------------------------------------------------------------

#[cfg(feature = "onnx")]
mod onnx {
    use super::*;
    use modelhost::formats::OnnxModel;

    #[test]
    fn the_onnx_mlp_computes_what_candle_computes_from_the_same_weights() {
        let model = OnnxModel::load(fixture("model.onnx")).unwrap();
        assert_eq!(model.inputs().len(), 1);
        assert_eq!(model.inputs()[0].name, "x");
        assert_eq!(model.inputs()[0].shape, vec![None, Some(4)]);
        assert_eq!(model.outputs()[1].name, "probs");

        let w = reference();
        let x = Tensor::new(
            &[
                [0.5f32, -1.0, 2.0, 0.25],
                [-0.75, 0.0, 1.5, -2.0],
                [1.0, 1.0, 1.0, 1.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let h = x
            .matmul(&w["layers.0.weight"].t().unwrap())
            .unwrap()
            .broadcast_add(&w["layers.0.bias"])
            .unwrap()
            .relu()
            .unwrap();
        let logits = h
            .matmul(&w["layers.1.weight"].t().unwrap())
            .unwrap()
            .broadcast_add(&w["layers.1.bias"])
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&logits).unwrap();

        let out = model.run(HashMap::from([("x".to_string(), x)])).unwrap();
        for (name, want) in [("logits", logits), ("probs", probs)] {
            let got = values(&out[name]);
            let want = values(&want);
            assert_eq!(got.len(), 9);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6, "{name}: {g} vs {w}");
            }
        }
        // Its initializers are the safetensors' tensors.
        let init = formats::load_tensors(&fixture("model.onnx"), &Device::Cpu).unwrap();
        let want: HashMap<String, Tensor> = reference()
            .into_iter()
            .filter(|(k, _)| init.contains_key(k))
            .collect();
        assert_eq!(want.len(), 4);
        assert_same(&init, &want, "model.onnx");
    }

    #[test]
    fn the_onnx_model_serves_through_a_predictor() {
        let model = OnnxModel::load(fixture("model.onnx")).unwrap();
        let predictor = modelhost::Predictor::builder(model).build().unwrap();
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0, 0.25]], &Device::Cpu).unwrap();
        let out = predictor
            .predict(HashMap::from([("x".to_string(), x)]))
            .unwrap();
        let probs = values(&out["probs"]);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // A missing input is refused before it is queued.
        let err = predictor.predict(HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    #[derive(serde::Deserialize)]
    struct VadChunk {
        input: Vec<f32>,
        prob: f32,
        state: Vec<f32>,
    }

    #[derive(serde::Deserialize)]
    struct VadReference {
        chunks: Vec<VadChunk>,
    }

    #[test]
    fn silero_vad_runs_through_candle_onnx_like_onnx_runtime() {
        // A real exported graph (If, LSTM, Conv, STFT as Conv, ...), state carried across
        // chunks; the reference is ONNX Runtime's (scripts/make-fixtures.py --silero).
        let model = OnnxModel::load(silero("silero_vad.onnx")).unwrap();
        let names: Vec<&str> = model.inputs().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["input", "state", "sr"]);
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/silero-vad-reference.json");
        let reference: VadReference =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut state = Tensor::zeros((2, 1, 128), DType::F32, &Device::Cpu).unwrap();
        for (i, chunk) in reference.chunks.iter().enumerate() {
            let x = Tensor::from_vec(chunk.input.clone(), (1, 512), &Device::Cpu).unwrap();
            let sr = Tensor::new(16000i64, &Device::Cpu).unwrap();
            let out = model
                .run(HashMap::from([
                    ("input".to_string(), x),
                    ("state".to_string(), state),
                    ("sr".to_string(), sr),
                ]))
                .unwrap();
            let prob = values(&out["output"]);
            assert_eq!(prob.len(), 1);
            assert!(
                (prob[0] - f64::from(chunk.prob)).abs() <= 1e-5,
                "chunk {i}: {prob:?} vs {}",
                chunk.prob
            );
            let got = values(&out["stateN"]);
            assert_eq!(got.len(), 256);
            for (g, w) in got.iter().zip(&chunk.state) {
                assert!(
                    (g - f64::from(*w)).abs() <= 1e-5,
                    "chunk {i}: state {g} vs {w}"
                );
            }
            state = out["stateN"].clone();
        }
    }

    #[test]
    fn a_graph_with_an_unsupported_operator_is_refused_naming_it() {
        match OnnxModel::load(fixture("unsupported-op.onnx")) {
            Err(LoadError::UnsupportedOperator {
                op,
                node,
                supported,
                ..
            }) => {
                assert_eq!(op, "Einsum");
                assert_eq!(node, "contract");
                assert_eq!(supported, formats::ONNX_OPERATORS);
            }
            other => panic!("expected UnsupportedOperator, got {other:?}"),
        }
        let msg = OnnxModel::load(fixture("unsupported-op.onnx"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Einsum") && msg.contains("MatMul"), "{msg}");
        assert_eq!(
            msg,
            format!(
                "{}: node `contract` uses the ONNX operator `Einsum`, which is not supported; supported operators: {}",
                fixture("unsupported-op.onnx").display(),
                formats::ONNX_OPERATORS.join(", ")
            )
        );
    }
}

/// Writing PyTorch checkpoints (the zip layout `torch.save` writes) without torch.
mod pth {
    use super::*;
    use std::io::Write;

    pub fn unicode(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((s.len() as u32).to_le_bytes());
        v.extend(s.as_bytes());
        v
    }

    fn int(v: usize) -> Vec<u8> {
        let mut out = vec![b'J'];
        out.extend(i32::try_from(v).unwrap().to_le_bytes());
        out
    }

    /// A protocol-2 pickle of an OrderedDict of contiguous tensors, storage `i` for the
    /// i-th: `(name, storage class, shape)`.
    pub fn pickle_state_dict(p: &mut Vec<u8>, tensors: &[(&str, &str, &[usize])]) {
        p.extend(b"\x80\x02ccollections\nOrderedDict\n)R(");
        for (i, (name, storage, shape)) in tensors.iter().enumerate() {
            let numel: usize = shape.iter().product();
            p.extend(unicode(name));
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            p.extend(unicode("storage"));
            p.extend(format!("ctorch\n{storage}\n").bytes());
            p.extend(unicode(&i.to_string()));
            p.extend(unicode("cpu"));
            p.extend(int(numel));
            p.extend(b"tQ");
            p.extend(int(0));
            p.push(b'(');
            for &d in shape.iter() {
                p.extend(int(d));
            }
            p.extend(b"t(");
            let mut stride = vec![1usize; shape.len()];
            for d in (0..shape.len().saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * shape[d + 1];
            }
            for s in stride {
                p.extend(int(s));
            }
            p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend(b"u.");
    }

    pub fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    pub fn write_torch_zip(path: &Path, pkl: &[u8], storages: &[(&str, Vec<u8>)]) {
        let names: Vec<String> = storages
            .iter()
            .map(|(k, _)| format!("archive/data/{k}"))
            .collect();
        let mut entries: Vec<(&str, &[u8])> =
            vec![("archive/data.pkl", pkl), ("archive/byteorder", b"little")];
        for ((_, data), name) in storages.iter().zip(&names) {
            entries.push((name.as_str(), data.as_slice()));
        }
        entries.push(("archive/version", b"3\n"));
        write_zip(path, &entries);
    }

    fn raw_bytes(t: &Tensor) -> (&'static str, Vec<u8>) {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => (
                "FloatStorage",
                t.to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            DType::I64 => (
                "LongStorage",
                t.to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            other => panic!("no storage for {other:?}"),
        }
    }

    /// Writes `tensors` as a PyTorch zip checkpoint.
    pub fn write_pth(path: &Path, tensors: &HashMap<String, Tensor>) {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let data: Vec<(&'static str, Vec<u8>)> =
            names.iter().map(|n| raw_bytes(&tensors[*n])).collect();
        let meta: Vec<(&str, &str, &[usize])> = names
            .iter()
            .zip(&data)
            .map(|(n, (kind, _))| (n.as_str(), *kind, tensors[*n].dims()))
            .collect();
        let mut pkl = Vec::new();
        pickle_state_dict(&mut pkl, &meta);
        let keys: Vec<String> = (0..names.len()).map(|i| i.to_string()).collect();
        let storages: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .zip(data)
            .map(|(k, (_, bytes))| (k.as_str(), bytes))
            .collect();
        write_torch_zip(path, &pkl, &storages);
    }
}
