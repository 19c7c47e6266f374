//! Shared test helpers: where the reference model and data are.
#![allow(dead_code)]

use std::path::PathBuf;

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
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("modelhost-{name}-{}", std::process::id()));
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
