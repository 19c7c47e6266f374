//! The input side of a tabular model: one feature's value and a row of them, usable as a
//! cache key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::CacheWeight;

/// One feature's value in a [`TabularRow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// `true` or `false`.
    Bool(bool),
    /// A number (integers included).
    Number(f64),
    /// A category.
    Text(String),
}

impl FeatureValue {
    /// The value in words, for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            FeatureValue::Bool(b) => format!("the boolean {b}"),
            FeatureValue::Number(n) => format!("the number {n}"),
            FeatureValue::Text(t) => format!("the text {t:?}"),
        }
    }
}

// Rows are cache keys, so equality and hashing must agree for every value, NaN included:
// numbers compare by their bits, with -0.0 taken as 0.0 (and every NaN as one NaN).
fn number_key(n: f64) -> u64 {
    if n == 0.0 {
        0
    } else if n.is_nan() {
        f64::NAN.to_bits()
    } else {
        n.to_bits()
    }
}

impl PartialEq for FeatureValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FeatureValue::Bool(a), FeatureValue::Bool(b)) => a == b,
            (FeatureValue::Number(a), FeatureValue::Number(b)) => number_key(*a) == number_key(*b),
            (FeatureValue::Text(a), FeatureValue::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for FeatureValue {}

impl std::hash::Hash for FeatureValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            FeatureValue::Bool(b) => b.hash(state),
            FeatureValue::Number(n) => number_key(*n).hash(state),
            FeatureValue::Text(t) => t.hash(state),
        }
    }
}

impl From<f64> for FeatureValue {
    fn from(v: f64) -> Self {
        FeatureValue::Number(v)
    }
}

impl From<f32> for FeatureValue {
    fn from(v: f32) -> Self {
        FeatureValue::Number(f64::from(v))
    }
}

impl From<i64> for FeatureValue {
    fn from(v: i64) -> Self {
        FeatureValue::Number(v as f64)
    }
}

impl From<i32> for FeatureValue {
    fn from(v: i32) -> Self {
        FeatureValue::Number(f64::from(v))
    }
}

impl From<bool> for FeatureValue {
    fn from(v: bool) -> Self {
        FeatureValue::Bool(v)
    }
}

impl From<&str> for FeatureValue {
    fn from(v: &str) -> Self {
        FeatureValue::Text(v.to_string())
    }
}

impl From<String> for FeatureValue {
    fn from(v: String) -> Self {
        FeatureValue::Text(v)
    }
}

/// One row: feature name → value. Deserializes from a JSON object such as
/// `{"alcohol": 13.2, "color": "red", "organic": true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TabularRow(pub BTreeMap<String, FeatureValue>);

impl TabularRow {
    /// An empty row.
    pub fn new() -> Self {
        TabularRow::default()
    }

    /// The row with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<FeatureValue>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<FeatureValue>) {
        self.0.insert(name.into(), value.into());
    }
}

impl CacheWeight for FeatureValue {
    fn cache_weight(&self) -> usize {
        let text = match self {
            FeatureValue::Text(t) => t.len(),
            FeatureValue::Bool(_) | FeatureValue::Number(_) => 0,
        };
        std::mem::size_of::<Self>() + text
    }
}

/// A row used as a cache key counts its names and values against the cache's byte bound.
impl CacheWeight for TabularRow {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .0
                .iter()
                .map(|(name, value)| name.cache_weight() + value.cache_weight())
                .sum::<usize>()
    }
}
