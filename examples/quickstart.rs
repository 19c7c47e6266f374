//! Serve the shipped digits classifier through a `Predictor`.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Loads `examples/assets/digits/` (an MLP trained by `train_digits` on scikit-learn's 8×8
//! handwritten digits), predicts a few held-back images one at a time, then the whole
//! held-back set as one `predict_many` call and from four threads at once, and prints the
//! predictions, the accuracy and the batch sizes the dynamic batcher formed.

#[path = "common/digits.rs"]
mod digits;

use std::time::Duration;

use modelhost::{Predictor, models::mlp::MlpClassifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = MlpClassifier::load(digits::assets())?;
    let predictor = Predictor::builder(model)
        .max_batch_size(32)
        .max_delay(Duration::from_millis(2))
        .build()?;
    println!("serving {:?}", predictor.signature());

    let (_, test) = digits::split(digits::load(&digits::assets().join("digits.csv"))?);

    println!("\none at a time:");
    for (image, label) in test.images.iter().zip(&test.labels).take(5) {
        let c = predictor.predict(image.clone())?;
        println!(
            "  truth {label}  predicted {}  (p = {:.3})",
            c.label, c.score
        );
    }

    println!("\nthe held-back set as one predict_many call:");
    let answers = predictor.predict_many(test.images.clone());
    let mut correct = 0;
    for (answer, label) in answers.iter().zip(&test.labels) {
        if answer.as_ref().is_ok_and(|c| c.index == *label as usize) {
            correct += 1;
        }
    }
    let accuracy = correct as f64 / test.labels.len() as f64;
    println!(
        "  accuracy on {} held-back images: {accuracy:.3}",
        test.labels.len()
    );

    println!("\nfour threads at once, one image per call:");
    let correct_threads: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (predictor, test) = (&predictor, &test);
                s.spawn(move || {
                    (t..test.images.len())
                        .step_by(4)
                        .filter(|&i| {
                            predictor
                                .predict(test.images[i].clone())
                                .is_ok_and(|c| c.index == test.labels[i] as usize)
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    println!(
        "  accuracy: {:.3}",
        correct_threads as f64 / test.labels.len() as f64
    );

    println!("\na bad input is refused before it is queued:");
    match predictor.predict(vec![0.0; 10]) {
        Err(e) => println!("  {e}"),
        Ok(c) => println!("  unexpectedly accepted: {c:?}"),
    }

    let stats = predictor.stats();
    println!(
        "\n{} requests in {} batches (mean size {:.1}); batch sizes seen (size: count): {:?}",
        stats.succeeded,
        stats.batches,
        stats.mean_batch_size(),
        stats.batch_sizes
    );
    Ok(())
}
