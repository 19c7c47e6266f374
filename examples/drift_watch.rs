//! Data drift on a text embedder: a reference sample, then live traffic from the same
//! distribution (no alert), then traffic of another kind (source code) → alert.
//!
//! ```text
//! scripts/fetch-models.sh
//! cargo run --release --example drift_watch [-- --model models/all-MiniLM-L6-v2]
//! ```
//!
//! Reference: 1,000 lines of `corpus-dev.txt` (`examples/assets/drift/reference.txt`). Live:
//! the next 1,000 lines (`live.txt`), then lines of this crate's own Rust sources. The
//! monitor sits on the predictor: every answered request feeds its embedding, and every
//! input its length, word count and punctuation share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use modelhost::{
    Predictor, drift::DriftConfig, drift::DriftMonitor, drift::DriftReport, metrics::Metrics,
    models::sentence::SentenceEmbedder,
};

fn features(text: &str) -> Vec<f64> {
    let chars = text.chars().count().max(1) as f64;
    let punct = text.chars().filter(|c| c.is_ascii_punctuation()).count() as f64;
    vec![chars, text.split_whitespace().count() as f64, punct / chars]
}

fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn code_lines(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| l.len() > 20)
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

fn row(phase: &str, r: &DriftReport) {
    let psi = |name: &str| {
        r.features
            .iter()
            .find(|f| f.name == name)
            .map_or(f64::NAN, |f| f.psi)
    };
    let ks_p = r.features.iter().map(|f| f.ks_p).fold(1.0, f64::min);
    let (score, max_psi) = r
        .embedding
        .as_ref()
        .map_or((f64::NAN, f64::NAN), |e| (e.score, e.max_psi));
    println!(
        "{phase:<22} {:>6} {:>9.3} {:>9.3} {:>11.3} {:>10.1e} {:>9.2} {:>10.3}  {}",
        r.window,
        psi("chars"),
        psi("words"),
        psi("punctuation"),
        ks_p,
        score,
        max_psi,
        if r.drifted() { "ALERT" } else { "ok" }
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut model = root.join("models/all-MiniLM-L6-v2");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = args.next().ok_or("--model needs a directory")?.into(),
            other => return Err(format!("unknown argument {other}; expected --model DIR").into()),
        }
    }
    let embedder = SentenceEmbedder::load(&model)
        .map_err(|e| format!("{e}\n(run scripts/fetch-models.sh for the reference model)"))?;
    let reference = read_lines(&root.join("examples/assets/drift/reference.txt"))?;
    let live = read_lines(&root.join("examples/assets/drift/live.txt"))?;
    let code = code_lines(&root);

    // The reference embeddings come from the same model, computed directly in batches.
    let mut reference_vectors: Vec<Vec<f32>> = Vec::with_capacity(reference.len());
    for chunk in reference.chunks(32) {
        let batch = chunk
            .iter()
            .map(|t| embedder.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        reference_vectors.extend(
            embedder
                .embed_batch(&batch)?
                .into_iter()
                .map(|e| e.into_vec()),
        );
    }
    let reference_rows: Vec<Vec<f64>> = reference.iter().map(|t| features(t)).collect();

    let monitor = Arc::new(
        DriftMonitor::builder("minilm-inputs")
            .config(DriftConfig {
                window: 400,
                check_every: 400,
                min_window: 400,
                ..DriftConfig::default()
            })
            .features(&["chars", "words", "punctuation"], &reference_rows)
            .embeddings(&reference_vectors)
            .on_alert(|name, report| eprintln!("[alert] {name}: {}", report.alerts.join("; ")))
            .build(),
    );
    let (on_in, on_out) = (monitor.clone(), monitor.clone());
    let predictor = Predictor::builder(embedder)
        .observe_inputs(1.0, move |text: &String| {
            on_in.observe_features(&features(text))
        })
        .observe_outputs(1.0, move |e: &modelhost::models::sentence::Embedding| {
            on_out.observe_embedding(e)
        })
        .build()?;
    let metrics = Metrics::new();
    metrics.register_drift(&monitor);

    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>11} {:>10} {:>9} {:>10}  verdict",
        "traffic",
        "window",
        "PSI chars",
        "PSI words",
        "PSI punct.",
        "min KS p",
        "emb score",
        "max dim PSI"
    );
    for (phase, texts) in [
        ("same distribution", &live[..400]),
        ("same distribution", &live[400..800]),
        ("source code", &code[..400.min(code.len())]),
    ] {
        for answer in predictor.predict_many(texts.to_vec()) {
            answer?;
        }
        row(phase, &monitor.check());
    }
    let gauges: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("modelhost_drift_alert") || l.starts_with("modelhost_drift_embedding")
        })
        .map(str::to_owned)
        .collect();
    println!("\n{}", gauges.join("\n"));
    Ok(())
}
