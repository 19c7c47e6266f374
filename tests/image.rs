//! Image classification: the shipped digits model read from PNG and JPEG files, exact
//! preprocessing, decompression-bomb and bad-file errors, and ResNet / ViT directories
//! whose outputs match candle-transformers run directly on the same input.

#[path = "../examples/common/digits.rs"]
mod digits;

mod common;
#[path = "../examples/common/png.rs"]
mod png;

use std::io::Cursor;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{resnet, vit};
use common::scratch_dir;
use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};
use modelhost::{
    Predictor, error::InputError, error::LoadError, error::PredictError,
    models::image::ImageClassifier, models::image::ImageOptions,
};
use png::{png_chunk, with_exif_rotation};

/// A digit (64 values in 0..=16, ink) as dark ink on white paper, `scale`× enlarged.
fn render(values: &[f32], scale: u32) -> DynamicImage {
    let gray = GrayImage::from_fn(8 * scale, 8 * scale, |x, y| {
        let v = values[((y / scale) * 8 + x / scale) as usize];
        image::Luma([255 - (v * 255.0 / 16.0).round() as u8])
    });
    DynamicImage::ImageLuma8(gray)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    let image = match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8()),
        _ => image.clone(),
    };
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn input_error(result: Result<modelhost::models::Classification, PredictError>) -> InputError {
    match result {
        Err(PredictError::Input(e)) => e,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn the_digits_model_reads_png_and_jpeg_files_of_held_back_digits() {
    let classifier = ImageClassifier::load(digits::assets()).unwrap();
    assert_eq!(classifier.labels().len(), 10);
    let predictor = Predictor::builder(classifier)
        .max_batch_size(32)
        .build()
        .unwrap();
    let data = digits::load(&digits::assets().join("digits.csv")).unwrap();
    let (_, test) = digits::split(data);
    assert_eq!(test.labels.len(), 359);

    // Exact-size PNGs hold the values themselves (to 1/510); enlarged JPEGs are resized
    // back down and carry JPEG's loss.
    for (format, scale, floor) in [(ImageFormat::Png, 1, 0.95), (ImageFormat::Jpeg, 4, 0.9)] {
        let files: Vec<Vec<u8>> = test
            .images
            .iter()
            .map(|v| encode(&render(v, scale), format))
            .collect();
        let answers = predictor.predict_many(files);
        let correct = answers
            .into_iter()
            .zip(&test.labels)
            .filter(|(a, label)| a.as_ref().unwrap().label == label.to_string())
            .count();
        let accuracy = correct as f64 / test.labels.len() as f64;
        println!("{format:?} ×{scale}: {accuracy:.3}");
        assert!(accuracy >= floor, "{format:?}: accuracy {accuracy}");
    }
}

/// A PNG declaring `width` × `height` RGB pixels whose image data is 64 zero bytes: what
/// a decompression bomb looks like before it is inflated.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    png.extend(png_chunk(b"IHDR", &ihdr));
    // zlib: header, one stored block of 64 zeros, Adler-32 of 64 zeros.
    let mut idat = vec![0x78, 0x01, 0x01, 64, 0, !64u8, 0xFF];
    idat.extend([0u8; 64]);
    idat.extend([0x00, 0x40, 0x00, 0x01]);
    png.extend(png_chunk(b"IDAT", &idat));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A white grey PNG of `width` × `height` pixels; with `rotate`, an EXIF orientation
/// of 6 (rotate 90°) in an `eXIf` chunk, which makes a tall image a wide one.
fn white_png(width: u32, height: u32, rotate: bool) -> Vec<u8> {
    let image = DynamicImage::ImageLuma8(GrayImage::from_pixel(width, height, image::Luma([255])));
    let mut png = encode(&image, ImageFormat::Png);
    if rotate {
        png = with_exif_rotation(png);
    }
    png
}

#[test]
fn extreme_aspect_ratios_are_refused_from_the_header_before_the_resize_allocates() {
    let predictor = Predictor::builder(ImageClassifier::load(digits::assets()).unwrap())
        .build()
        .unwrap();
    // 10,000,000 × 1 is inside the pixel guard, but resizing it to 8 × 8 first resamples
    // into a 10,000,000 × 8 buffer of 16-byte pixels (1.28 GB).
    let e = input_error(predictor.predict(white_png(10_000_000, 1, false)));
    let InputError::ImageOverBudget {
        width,
        height,
        needed,
        max_bytes,
    } = e.clone()
    else {
        panic!("expected ImageOverBudget, got {e:?}");
    };
    assert_eq!((width, height, max_bytes), (10_000_000, 1, 512 << 20));
    assert!(needed > 1_280_000_000, "{needed}");
    assert!(
        e.to_string().contains("at most 536870912 are allowed"),
        "{e}"
    );
    // Tall is cheap (the vertical pass is one pixel wide) ...
    assert!(predictor.predict(white_png(1, 10_000_000, false)).is_ok());
    // ... until EXIF turns it on its side: the orientation counts before decoding.
    let e = input_error(predictor.predict(white_png(1, 10_000_000, true)));
    assert!(
        matches!(
            e,
            InputError::ImageOverBudget {
                width: 10_000_000,
                height: 1,
                ..
            }
        ),
        "{e:?}"
    );
    // The budget is an option: a tighter one refuses a modest image.
    let options = ImageOptions {
        max_memory_bytes: 1 << 20,
        ..ImageOptions::default()
    };
    let tight = ImageClassifier::load_with(digits::assets(), options).unwrap();
    let e = tight.preprocess(&white_png(1000, 1000, false)).unwrap_err();
    assert!(matches!(e, InputError::ImageOverBudget { .. }), "{e:?}");
    assert!(tight.preprocess(&white_png(64, 64, false)).is_ok());
}

#[test]
fn bombs_bad_files_and_oversized_uploads_get_typed_errors() {
    let options = ImageOptions {
        max_pixels: 1_000_000,
        max_bytes: 64 * 1024,
        ..ImageOptions::default()
    };
    let predictor =
        Predictor::builder(ImageClassifier::load_with(digits::assets(), options).unwrap())
            .build()
            .unwrap();
    // 50,000 × 50,000 declared in 140 bytes: refused from the header, nothing inflated.
    let e = input_error(predictor.predict(png_bomb(50_000, 50_000)));
    assert_eq!(
        e,
        InputError::ImageTooLarge {
            width: 50_000,
            height: 50_000,
            max_pixels: 1_000_000
        }
    );
    assert!(e.to_string().contains("at most 1000000 pixels"), "{e}");

    let e = input_error(predictor.predict(b"GIF89a not what we take".to_vec()));
    assert!(
        e.to_string().contains("Gif image, not a PNG or JPEG"),
        "{e}"
    );
    let e = input_error(predictor.predict(b"plain text".to_vec()));
    assert!(e.to_string().contains("not a PNG or JPEG"), "{e}");

    let mut truncated = encode(&render(&[8.0; 64], 4), ImageFormat::Png);
    truncated.truncate(truncated.len() / 2);
    let e = input_error(predictor.predict(truncated));
    assert!(e.to_string().contains("cannot be decoded"), "{e}");

    let e = input_error(predictor.predict(vec![0u8; 100_000]));
    assert!(e.to_string().contains("100000 bytes; at most 65536"), "{e}");

    // A good file still works after all that.
    let ok = predictor.predict(encode(&render(&[0.0; 64], 1), ImageFormat::Png));
    assert!(ok.is_ok());
}

/// Writes a randomly initialised network's weights with `build`, returns the var map.
fn save_random<F>(dir: &std::path::Path, build: F) -> VarMap
where
    F: FnOnce(VarBuilder<'static>),
{
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu));
    varmap.save(dir.join("model.safetensors")).unwrap();
    varmap
}

fn checker_png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) * 5 % 256) as u8,
        ])
    });
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn a_timm_resnet_directory_matches_candle_on_the_same_input() {
    let dir = scratch_dir("resnet");
    save_random(&dir, |vb| {
        resnet::resnet18(3, vb).unwrap();
    });
    let config = serde_json::json!({
        "architecture": "resnet18",
        "num_classes": 3,
        "label_names": ["cat", "dog", "fox"],
        "pretrained_cfg": {
            "input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 0.875,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]
        }
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let classifier = ImageClassifier::load(&dir).unwrap();
    assert_eq!(classifier.labels(), ["cat", "dog", "fox"]);
    // timm: shortest edge to 64 / 0.875 = 73, then a 64 × 64 center crop.
    let png = checker_png(120, 90);
    let input = classifier.preprocess(&png).unwrap();
    assert_eq!(input.len(), 3 * 64 * 64);

    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let net = resnet::resnet18(
        3,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = Tensor::from_vec(input, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let expected =
        candle_nn::ops::softmax_last_dim(&candle_core::Module::forward(&net, &x).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .remove(0);
    let predictor = Predictor::builder(classifier).build().unwrap();
    let got = predictor.predict(png).unwrap();
    // A 1000 × 10 strip would be resized to 7300 × 73 before the crop: refused.
    let e = predictor.predict(checker_png(1000, 10)).unwrap_err();
    assert!(
        e.to_string()
            .contains("1000×10; the aspect ratio may be at most 32:1"),
        "{e}"
    );
    assert_close(&got.scores, &expected);
    assert_eq!(got.label, ["cat", "dog", "fox"][got.index]);
}

#[test]
fn a_vit_directory_matches_candle_and_preprocesses_exactly() {
    let dir = scratch_dir("vit");
    let config = serde_json::json!({
        "model_type": "vit",
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "image_size": 16, "patch_size": 8, "num_channels": 3, "qkv_bias": true,
        "id2label": {"0": "no", "1": "yes"}
    });
    let vit_config: vit::Config = serde_json::from_value(config.clone()).unwrap();
    save_random(&dir, |vb| {
        vit::Model::new(&vit_config, 2, vb).unwrap();
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let pre = serde_json::json!({
        "do_resize": true, "size": {"height": 16, "width": 16}, "resample": 2,
        "do_rescale": true, "rescale_factor": 1.0 / 255.0,
        "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
    });
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();
    let classifier = ImageClassifier::load(&dir).unwrap();

    // A 16 × 16 image needs no resize: every value is (v / 255 - 0.5) / 0.5, channel-major.
    let png = checker_png(16, 16);
    let input = classifier.preprocess(&png).unwrap();
    let (x, y) = (3usize, 5usize);
    let at = |c: usize| input[c * 256 + y * 16 + x];
    let expect = |v: u32| (v as f32 / 255.0 - 0.5) / 0.5;
    assert_close(
        &[at(0), at(1), at(2)],
        &[expect(3 * 7), expect(5 * 13), expect((3 + 5) * 5)],
    );

    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = vit::Model::new(
        &vit_config,
        2,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let t = Tensor::from_vec(input, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let expected = candle_nn::ops::softmax_last_dim(&model.forward(&t).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .remove(0);
    let got = &Predictor::builder(classifier)
        .build()
        .unwrap()
        .predict(png)
        .unwrap();
    assert_close(&got.scores, &expected);
    assert!(["no", "yes"].contains(&got.label.as_str()));

    // A preprocessor that disagrees with the network's input is refused at load.
    let pre = serde_json::json!({"size": {"height": 32, "width": 32}});
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();
    let err = ImageClassifier::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Config { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("3×32×32 but the ViT takes 3×16×16"),
        "{err}"
    );
}

#[test]
fn unknown_architectures_are_refused_naming_what_is_supported() {
    let dir = scratch_dir("unknown-arch");
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("x".to_string(), t)]),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architecture": "efficientnet_b0", "num_classes": 3}"#,
    )
    .unwrap();
    let err = ImageClassifier::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Unsupported { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"efficientnet_b0\"") && message.contains("resnet18"),
        "{message}"
    );
}

#[test]
fn grey_follows_pils_luma_and_small_images_are_padded_not_stretched() {
    // Pure red through the digits preprocessing (grey, inverted, /255): PIL's "L" gives 76.
    let classifier = ImageClassifier::load(digits::assets()).unwrap();
    let red = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([255, 0, 0])));
    let values = classifier
        .preprocess(&encode(&red, ImageFormat::Png))
        .unwrap();
    assert!(
        values
            .iter()
            .all(|&v| (v - (255.0 - 76.0) / 255.0).abs() < 1e-6),
        "{:?}",
        &values[..4]
    );

    // A 4 × 4 resize then an 8 × 8 crop: the image sits in the middle, black around it.
    let dir = scratch_dir("pad");
    let config = serde_json::json!({
        "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "image_size": 8, "patch_size": 4, "num_channels": 3, "qkv_bias": true,
        "id2label": {"0": "no", "1": "yes"}
    });
    let vit_config: vit::Config = serde_json::from_value(config.clone()).unwrap();
    save_random(&dir, |vb| {
        vit::Model::new(&vit_config, 2, vb).unwrap();
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let pre = serde_json::json!({
        "size": {"height": 4, "width": 4}, "do_center_crop": true, "crop_size": 8,
        "do_normalize": false
    });
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();
    let classifier = ImageClassifier::load(&dir).unwrap();
    let white = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([255, 255, 255])));
    let values = classifier
        .preprocess(&encode(&white, ImageFormat::Png))
        .unwrap();
    let at = |y: usize, x: usize| values[y * 8 + x];
    assert_eq!((at(0, 0), at(1, 1), at(7, 7)), (0.0, 0.0, 0.0));
    assert_eq!((at(2, 2), at(5, 5), at(3, 4)), (1.0, 1.0, 1.0));
}

#[test]
fn timm_non_square_inputs_resize_exactly_then_crop() {
    let dir = scratch_dir("resnet-nonsquare");
    save_random(&dir, |vb| {
        resnet::resnet18(2, vb).unwrap();
    });
    let config = serde_json::json!({
        "architecture": "resnet18", "num_classes": 2,
        "pretrained_cfg": {
            "input_size": [3, 32, 48], "interpolation": "bilinear", "crop_pct": 0.8,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]
        }
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let classifier = ImageClassifier::load(&dir).unwrap();
    assert_eq!(
        classifier.preprocessing().resize,
        modelhost::models::image::Resize::Exact(40, 60)
    );
    assert_eq!(classifier.preprocessing().crop, Some((32, 48)));
    let out = classifier.preprocess(&checker_png(90, 70)).unwrap();
    assert_eq!(out.len(), 3 * 32 * 48);
    // label_names must agree with num_classes.
    let mut bad = config.clone();
    bad["label_names"] = serde_json::json!(["a", "b", "c"]);
    std::fs::write(dir.join("config.json"), bad.to_string()).unwrap();
    let err = ImageClassifier::load(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("equal the number of `label_names`"),
        "{err}"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    std::fs::read(path.join(name)).unwrap()
}

#[test]
fn headers_declaring_more_pixels_than_the_file_can_hold_are_refused_before_decoding() {
    let classifier = ImageClassifier::load(digits::assets()).unwrap();
    // Found by the `image` fuzz target: 538 and 656 bytes declaring 65514×247 pixels of a
    // progressive JPEG, which the decoder filled in for 1.4 s.
    for name in ["progressive-16mpx-538b.jpg", "slow-unit-656b.jpg"] {
        let bytes = fixture(name);
        let e = classifier.preprocess(&bytes).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("more than a complete Jpeg file of")
                && message.contains("at most 1024 pixels per byte"),
            "{name}: {message}"
        );
    }
    // The densest legitimate files still decode: 4 million white pixels as an optimised
    // progressive JPEG (168 pixels per byte) and as a 1-bit PNG (1,972 per byte).
    for name in ["white-2000-progressive.jpg", "white-2000-1bit.png"] {
        let input = classifier.preprocess(&fixture(name)).unwrap();
        assert_eq!(input.len(), 64, "{name}");
        // White paper, inverted by the digits model's preprocessing: all zeros.
        assert!(input.iter().all(|&v| v.abs() < 1e-6), "{name}: {input:?}");
    }
}
