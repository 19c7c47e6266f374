//! The image and tabular paths: PNG files through the shipped digits model, and rows of
//! named features through the shipped wine classifier, each with the errors bad input gets.
//!
//! ```text
//! cargo run --release --example image_and_tabular [-- IMAGE.png ...]
//! ```
//!
//! Without arguments it writes five held-back digits as PNG files (dark ink on white,
//! 32 × 32) under the system's temp directory and classifies those.

#[path = "common/digits.rs"]
mod digits;
#[path = "common/wine.rs"]
mod wine;

use std::path::PathBuf;

use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use modelhost::{
    Predictor, models::image::ImageClassifier, models::tabular::TabularModel,
    models::tabular::TabularRow,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    images()?;
    println!();
    tabular()?;
    Ok(())
}

fn images() -> Result<(), Box<dyn std::error::Error>> {
    let predictor = Predictor::builder(ImageClassifier::load(digits::assets())?)
        .max_batch_size(16)
        .build()?;
    let mut files: Vec<(PathBuf, Option<u32>)> =
        std::env::args().skip(1).map(|p| (p.into(), None)).collect();
    if files.is_empty() {
        let (_, test) = digits::split(digits::load(&digits::assets().join("digits.csv"))?);
        let dir = std::env::temp_dir().join("modelhost-digits");
        std::fs::create_dir_all(&dir)?;
        for (i, (values, label)) in test.images.iter().zip(&test.labels).take(5).enumerate() {
            let gray = GrayImage::from_fn(32, 32, |x, y| {
                let v = values[((y / 4) * 8 + x / 4) as usize];
                Luma([255 - (v * 255.0 / 16.0).round() as u8])
            });
            let path = dir.join(format!("digit-{i}.png"));
            DynamicImage::ImageLuma8(gray).save_with_format(&path, ImageFormat::Png)?;
            files.push((path, Some(*label)));
        }
    }
    println!("== images: the digits model reads PNG or JPEG files");
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|(p, _)| std::fs::read(p))
        .collect::<Result<_, _>>()?;
    for ((path, truth), answer) in files.iter().zip(predictor.predict_many(bytes)) {
        let truth = truth.map_or(String::new(), |t| format!(" (drawn: {t})"));
        match answer {
            Ok(c) => println!(
                "{}: {} with p = {:.3}{truth}",
                path.display(),
                c.label,
                c.score
            ),
            Err(e) => println!("{}: error: {e}", path.display()),
        }
    }
    // Anything but a PNG or JPEG is refused before it is queued (and so is an image whose
    // header declares more pixels than `ImageOptions::max_pixels`, before decoding).
    match predictor.predict(b"just some text".to_vec()) {
        Ok(c) => println!("text was classified as {}?", c.label),
        Err(e) => println!("a text file: {e}"),
    }
    Ok(())
}

fn tabular() -> Result<(), Box<dyn std::error::Error>> {
    let predictor = Predictor::builder(TabularModel::load(wine::assets())?).build()?;
    println!("== tabular: the wine classifier takes rows of named features");
    let row: TabularRow = serde_json::from_str(
        r#"{"alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2,
            "magnesium": 100, "total_phenols": 2.65, "flavanoids": 2.76,
            "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28, "color_intensity": 4.38,
            "hue": 1.05, "od280_od315_of_diluted_wines": 3.4, "proline": 1050}"#,
    )?;
    let answer = predictor.predict(row.clone())?;
    let c = answer.class().ok_or("the wine model is a classifier")?;
    println!(
        "wine 2 of the data set: {} with p = {:.3} (probabilities {:?})",
        c.label, c.score, c.scores
    );
    let (rows, classes): (Vec<TabularRow>, Vec<usize>) = wine::load()?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| wine::held_back(*i))
        .map(|(_, r)| r)
        .unzip();
    let correct = predictor
        .predict_many(rows)
        .into_iter()
        .zip(&classes)
        .filter(|(a, c)| a.as_ref().ok().and_then(|a| a.class()).map(|x| x.index) == Some(**c))
        .count();
    println!("held-back wines right: {correct} of {}", classes.len());
    for (what, bad) in [
        ("proline left out", {
            let mut r = row.clone();
            r.0.remove("proline");
            r
        }),
        ("hue = -3", row.clone().with("hue", -3.0)),
        (
            "alcohol = \"strong\"",
            row.clone().with("alcohol", "strong"),
        ),
        ("an unknown feature", row.clone().with("vintage", 1998)),
    ] {
        match predictor.predict(bad) {
            Ok(_) => println!("{what}: accepted?"),
            Err(e) => println!("{what}: {e}"),
        }
    }
    Ok(())
}
