//! Bytes as an image request to the digits classifier shipped in `examples/assets/digits`:
//! decoding (PNG/JPEG, EXIF orientation) and preprocessing within the default limits.
//! Either a typed error or the network's input of exactly `C × H × W` finite values.
#![no_main]
use std::sync::OnceLock;

use modelhost::models::image::ImageClassifier;

fn model() -> &'static ImageClassifier {
    static MODEL: OnceLock<ImageClassifier> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/assets/digits");
        ImageClassifier::load(dir).expect("the digits model loads")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let model = model();
    if let Ok(input) = model.preprocess(data) {
        let (c, h, w) = model.preprocessing().output_shape();
        assert_eq!(input.len(), c * h * w);
        assert!(input.iter().all(|v| v.is_finite()));
    }
});
