//! Shared test helpers: where the reference model and data are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// The MiniLM reference model directory: `$MODELHOST_MINILM_DIR`, else
/// `models/all-MiniLM-L6-v2` as `scripts/fetch-models.sh` leaves it.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("MODELHOST_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the reference model is not at {}: run scripts/fetch-models.sh first",
        dir.display()
    );
    dir
}

/// One reference text and the embedding sentence-transformers computed for it.
#[derive(serde::Deserialize)]
pub struct Reference {
    pub text: String,
    pub embedding: Vec<f32>,
}

/// The 200 references in `tests/data/minilm-reference.jsonl`.
pub fn references() -> Vec<Reference> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm-reference.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Drives a future to completion on the current thread (no runtime needed).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// An empty directory of this test process under the system's temp dir, named `name`.
/// The same directories of earlier test processes that have ended are removed first:
/// some hold a 90 MB model copy, and tests that stop early never remove theirs (runs had
/// left 35 GB in /tmp and filled the disk).
pub fn scratch_dir(name: &str) -> PathBuf {
    let prefix = format!("modelhost-{name}-");
    let temp = std::env::temp_dir();
    for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let pid = file.to_str().and_then(|f| f.strip_prefix(&prefix));
        let ended = pid.is_some_and(|pid| {
            pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists()
        });
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = temp.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An example binary, built by `cargo test` beside the test binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --release` builds it (a filtered `--test` run does not; then run `cargo build --release --examples` first)",
        path.display()
    );
    path
}

/// Writes MiniLM with a classification head (`weight`: `[labels, 384]`) into `dir` the way
/// transformers saves a `BertForSequenceClassification`: encoder under `bert.`.
pub fn write_text_classifier(
    dir: &Path,
    labels: &[&str],
    weight: Vec<f32>,
    bias: Vec<f32>,
    extra: serde_json::Value,
) {
    let src = minilm_dir();
    let mut tensors: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (format!("bert.{name}"), t))
            .collect();
    let n = labels.len();
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (n, 384), &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::from_vec(bias, n, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();

    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let id2label: serde_json::Map<_, _> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = id2label.into();
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

/// The largest difference of any embedding component between two embedders over the 200
/// reference texts, embedded in batches of 25 mixed lengths (tokenized by `a`).
pub fn max_component_difference(
    a: &modelhost::models::sentence::SentenceEmbedder,
    b: &modelhost::models::sentence::SentenceEmbedder,
) -> f32 {
    let texts: Vec<String> = references().into_iter().map(|r| r.text).collect();
    let mut worst = 0f32;
    for chunk in texts.chunks(25) {
        let batch: Vec<_> = chunk.iter().map(|t| a.tokenize(t).unwrap()).collect();
        let ours = a.embed_batch(&batch).unwrap();
        let theirs = b.embed_batch(&batch).unwrap();
        for (x, y) in ours.iter().zip(&theirs) {
            for (p, q) in x.iter().zip(y.iter()) {
                worst = worst.max((p - q).abs());
            }
        }
    }
    worst
}

/// Runs the `embed` example with `args`, `input` on its stdin; asserts it succeeds and
/// returns its stdout.
pub fn run_embed(args: &[&std::ffi::OsStr], input: impl AsRef<[u8]>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(example_binary("embed"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_ref())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "embed {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// A regression model over every feature type, with hand-set weights.
pub fn write_house_model(dir: &std::path::Path, schema: serde_json::Value) {
    std::fs::write(dir.join("tabular.json"), schema.to_string()).unwrap();
    let weights = std::collections::HashMap::from([
        (
            "layers.0.weight".to_string(),
            Tensor::from_vec(
                vec![1.0f32, 2.0, 3.0, 0.5, -0.5, 0.25],
                (1, 6),
                &Device::Cpu,
            )
            .unwrap(),
        ),
        (
            "layers.0.bias".to_string(),
            Tensor::from_vec(vec![0.1f32], 1, &Device::Cpu).unwrap(),
        ),
    ]);
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
}

/// The schema of [`write_house_model`]'s model: a number, an integer, a boolean and a
/// category, predicting a price.
pub fn house_schema() -> serde_json::Value {
    serde_json::json!({
        "features": [
            {"name": "area", "type": "number", "min": 10, "max": 500, "mean": 100, "std": 20},
            {"name": "rooms", "type": "integer", "min": 1, "max": 12, "mean": 3, "std": 1},
            {"name": "garden", "type": "boolean", "default": false},
            {"name": "city", "type": "category", "values": ["oslo", "bergen", "tromso"], "default": "oslo"}
        ],
        "task": {"type": "regression", "target": "price", "mean": 300, "std": 50}
    })
}
