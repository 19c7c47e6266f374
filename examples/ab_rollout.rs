//! A/B rollout of a new model version: a 90/10 split, per-version statistics, promotion of
//! the canary, and a rollback.
//!
//! ```text
//! cargo run --release --example ab_rollout
//! ```
//!
//! Two versions of the shipped digits classifier live in a model repository laid out as
//! Triton and TF Serving lay theirs out, `ROOT/digits/VERSION/`: version 1 was trained for
//! 15 epochs (`examples/assets/digits-v1`), version 2 for 300 (`examples/assets/digits`).
//! Version 1 serves; version 2 appears on disk, is picked up by `reload()`, takes 10 % of
//! traffic as the canary, wins on accuracy and is promoted, then rolled back.

#[path = "common/digits.rs"]
mod digits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use modelhost::{
    drift::AccuracyMonitor, drift::Prediction, models::mlp::MlpClassifier,
    registry::ModelRepository, registry::Registry, registry::Routing,
};

fn install(root: &Path, version: &str, from: &Path) -> std::io::Result<()> {
    let dir = root.join("digits").join(version);
    std::fs::create_dir_all(&dir)?;
    for file in ["model.json", "model.safetensors"] {
        std::fs::copy(from.join(file), dir.join(file))?;
    }
    Ok(())
}

/// Sends every held-back image `rounds` times from 4 threads, each image a "user" with a
/// sticky key, and returns (version → (requests, correct)).
fn traffic(
    registry: &Registry<MlpClassifier>,
    feedback: &AccuracyMonitor,
    test: &digits::Digits,
    rounds: usize,
) -> HashMap<String, (usize, usize)> {
    let tally = Mutex::new(HashMap::<String, (usize, usize)>::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let tally = &tally;
            s.spawn(move || {
                for _ in 0..rounds {
                    for i in (t..test.images.len()).step_by(4) {
                        let user = format!("user-{i}");
                        let Ok(answer) =
                            registry.predict_sticky("digits", &user, test.images[i].clone())
                        else {
                            continue;
                        };
                        let correct = answer.output.index == test.labels[i] as usize;
                        // The truth arrives later in real life; here at once.
                        feedback.record(
                            answer.request_id,
                            &answer.version,
                            Prediction::Class(answer.output.index),
                        );
                        let _ = feedback.feedback(
                            answer.request_id,
                            Prediction::Class(test.labels[i] as usize),
                        );
                        if let Ok(mut tally) = tally.lock() {
                            let entry = tally.entry(answer.version.to_string()).or_default();
                            entry.0 += 1;
                            entry.1 += usize::from(correct);
                        }
                    }
                }
            });
        }
    });
    tally.into_inner().unwrap_or_default()
}

fn report(
    registry: &Registry<MlpClassifier>,
    feedback: &AccuracyMonitor,
    tally: &HashMap<String, (usize, usize)>,
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "  version  labels          traffic  requests  accuracy  rolling (feedback)  p50       p99"
    );
    for v in registry.versions("digits")? {
        let (n, correct) = tally.get(&v.version).copied().unwrap_or_default();
        let accuracy = if n == 0 {
            "-".to_string()
        } else {
            format!("{:.3}", correct as f64 / n as f64)
        };
        let rolling = feedback
            .accuracy(&v.version)
            .map_or("-".to_string(), |a| format!("{a:.3}"));
        println!(
            "  {:<8} {:<15} {:>6.0}%  {:>8}  {:>8}  {:>18}  {:<9.1?} {:.1?}",
            v.version,
            v.labels.join(","),
            v.traffic * 100.0,
            v.requests,
            accuracy,
            rolling,
            v.latency.p50,
            v.latency.p99
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_, test) = digits::split(digits::load(&digits::assets().join("digits.csv"))?);
    let assets = digits::assets();
    let root = std::env::temp_dir().join(format!("modelhost-ab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    install(&root, "1", &assets.with_file_name("digits-v1"))?;

    let registry = Arc::new(Registry::with_predictor_config(|b| b.max_batch_size(32)));
    let (repository, loaded) = ModelRepository::open(&root, registry.clone(), |dir: &Path| {
        MlpClassifier::load(dir)
    })?;
    println!("repository {}: loaded {:?}", root.display(), loaded.added);

    println!("\nversion 2 appears on disk; reload picks it up without giving it traffic:");
    install(&root, "2", &assets)?;
    println!("  reload: added {:?}", repository.reload()?.added);

    println!("\ncanary: 90 % stable (v1), 10 % canary (v2), sticky per user");
    registry.label("digits", "2", "canary")?;
    registry.set_routing("digits", Routing::split([("stable", 90), ("canary", 10)]))?;
    // Rolling accuracy over the last 1,000 answers with ground truth, per version; an alert
    // if a version falls under 90 %.
    let feedback = AccuracyMonitor::new(1000, 0.9).on_alert(|version, accuracy| {
        println!("  [alert] version {version}: rolling accuracy {accuracy:.3} < 0.9")
    });
    let tally = traffic(&registry, &feedback, &test, 5);
    report(&registry, &feedback, &tally)?;

    println!("\nthe canary is more accurate: promote it (all traffic to v2)");
    registry.promote("digits", "2")?;
    registry.set_routing("digits", Routing::fixed("stable"))?;
    let mut tally2 = traffic(&registry, &feedback, &test, 1);
    for (version, (n, c)) in &tally {
        let e = tally2.entry(version.clone()).or_default();
        e.0 += n;
        e.1 += c;
    }
    report(&registry, &feedback, &tally2)?;

    println!("\nsomething broke after the promotion: roll back");
    let restored = registry.rollback("digits")?;
    println!("  stable is version {restored} again");
    let answer = registry.predict("digits", test.images[0].clone())?;
    println!(
        "  next answer from version {} (label {})",
        answer.version, answer.output.label
    );

    std::fs::remove_dir_all(&root)?;
    Ok(())
}
