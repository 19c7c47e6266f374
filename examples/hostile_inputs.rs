//! Hostile inputs, made and fed one at a time, for `scripts/hostile-inputs.sh`.
//!
//! ```text
//! hostile_inputs make DIR                  # writes the crafted files into DIR
//! hostile_inputs image FILE EXPECTED       # digits model: preprocess one image file
//! hostile_inputs text FILE EXPECTED [--no-truncate]   # MiniLM: embed one text file
//! ```
//!
//! `EXPECTED` is `ok` or the name of the `InputError` variant the input must get; the
//! exit status is 0 when it does, 1 when not.

#[path = "common/png.rs"]
mod png;

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Rgba};
use modelhost::error::InputError;
use modelhost::models::image::ImageClassifier;
use modelhost::models::sentence::SentenceEmbedder;
use modelhost::models::text::EmbedderOptions;
use png::with_exif_rotation;

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .expect("encode");
    bytes
}

fn make(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let gray = |w, h| DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, image::Luma([255])));
    std::fs::write(dir.join("wide-40M.png"), png(&gray(40_000_000, 1)))?;
    let tall = png(&gray(1, 40_000_000));
    std::fs::write(dir.join("tall-40M.png"), &tall)?;
    std::fs::write(dir.join("tall-40M-exif.png"), with_exif_rotation(tall))?;
    let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::new(6324, 6324);
    std::fs::write(
        dir.join("rgba16-40M.png"),
        png(&DynamicImage::ImageRgba16(rgba16)),
    )?;
    std::fs::write(dir.join("gray-6000.png"), png(&gray(6000, 6000)))?;
    let rgb = DynamicImage::new_rgb8(8000, 5000);
    let mut jpeg = Vec::new();
    rgb.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .expect("jpeg");
    std::fs::write(dir.join("rgb-8000x5000.jpg"), jpeg)?;
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank. ";
    std::fs::write(
        dir.join("long-8MB.txt"),
        sentence.repeat((8 << 20) / sentence.len()),
    )?;
    std::fs::write(dir.join("word-8MB.txt"), "x".repeat(8 << 20))?;
    // No whitespace at all: cut between ideographs, and between added tokens.
    let chinese = "北京大学的学生正在学习机器学习。";
    std::fs::write(
        dir.join("chinese-8MB.txt"),
        chinese.repeat((8 << 20) / chinese.len()),
    )?;
    std::fs::write(dir.join("masks-8MB.txt"), "[MASK]".repeat((8 << 20) / 6))?;
    // One letter and 4 Mi combining accents: no cut anywhere.
    let accents = format!("a{}", "\u{301}".repeat(4 << 20));
    std::fs::write(dir.join("accents-8MB.txt"), accents)?;
    let mut lines = b"first line\nbad \xff\xfe bytes\n".to_vec();
    lines.extend(b"last line\n");
    std::fs::write(dir.join("not-utf8.txt"), lines)
}

/// The variant's name, as `EXPECTED` gives it.
fn variant(e: &InputError) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("make") if args.len() == 2 => {
            make(Path::new(&args[1])).expect("make");
            return;
        }
        Some("image") if args.len() == 3 => {
            let classifier = ImageClassifier::load("examples/assets/digits").expect("load");
            let bytes = std::fs::read(&args[1]).expect("read");
            classifier.preprocess(&bytes).map(|_| ())
        }
        Some("text") if args.len() >= 3 => {
            let options = EmbedderOptions {
                truncate: !args.iter().any(|a| a == "--no-truncate"),
                ..EmbedderOptions::default()
            };
            let embedder =
                SentenceEmbedder::load_with("models/all-MiniLM-L6-v2", options).expect("load");
            let text = std::fs::read_to_string(&args[1]).expect("read");
            embedder.tokenize(&text).and_then(|t| {
                embedder
                    .embed_batch(&[t])
                    .map(|_| ())
                    .map_err(|e| InputError::Invalid {
                        field: "text".into(),
                        reason: e.to_string(),
                    })
            })
        }
        _ => {
            eprintln!(
                "usage: hostile_inputs make DIR | image FILE EXPECTED | text FILE EXPECTED [--no-truncate]"
            );
            std::process::exit(2);
        }
    };
    let got = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => variant(e),
    };
    match &result {
        Ok(()) => println!("ok"),
        Err(e) => println!("{got}: {e}"),
    }
    std::process::exit(if got == args[2] { 0 } else { 1 });
}
