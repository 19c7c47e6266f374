//! Bytes as a JSON row for a tabular schema with every feature kind (a bounded number, an
//! integer, a boolean, a category with a default): decoding and validation never panic,
//! and an accepted row encodes to exactly the schema's width of finite values.
#![no_main]
use std::sync::OnceLock;

use modelhost::models::tabular::{TabularConfig, TabularRow};

const SCHEMA: &str = r#"{
  "features": [
    {"name": "x", "type": "number", "min": -1e6, "max": 1e6, "mean": 0.5, "std": 2.0},
    {"name": "n", "type": "integer", "min": 0, "max": 10, "mean": 3, "std": 1.5},
    {"name": "flag", "type": "boolean"},
    {"name": "colour", "type": "category", "values": ["red", "green", "blue"], "default": "red"}
  ],
  "task": {"type": "regression", "target": "y"},
  "hidden": [4]
}"#;

fn schema() -> &'static TabularConfig {
    static SCHEMA_CONFIG: OnceLock<TabularConfig> = OnceLock::new();
    SCHEMA_CONFIG.get_or_init(|| serde_json::from_str(SCHEMA).expect("the schema parses"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(row) = serde_json::from_slice::<TabularRow>(data) else {
        return;
    };
    let schema = schema();
    if let Ok(encoded) = schema.encode(&row) {
        assert_eq!(encoded.len(), schema.encoded_width());
        assert!(encoded.iter().all(|v| v.is_finite()), "{row:?} → {encoded:?}");
    }
});
