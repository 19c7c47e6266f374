//! Concrete models, each a [`Model`](crate::Model) with typed input and output, loaded from
//! the directory its training library saves.
//!
//! | model | input → output | module |
//! |---|---|---|
//! | [`SentenceEmbedder`](sentence::SentenceEmbedder) | `String` → [`Embedding`](sentence::Embedding) | [`sentence`] |
//! | [`TextClassifier`](classifier::TextClassifier) | `String` → [`Classification`] | [`classifier`] |
//! | [`CrossEncoder`](classifier::CrossEncoder) | [`TextPair`](classifier::TextPair) → [`Relevance`](classifier::Relevance) | [`classifier`] |
//! | `ImageClassifier` | PNG/JPEG bytes → [`Classification`] | `image` (feature `image`) |
//! | `TabularModel` | `TabularRow` → `TabularOutput` | `tabular` (feature `tabular`) |
//! | [`MlpClassifier`](mlp::MlpClassifier) | `Vec<f32>` → [`Classification`] | [`mlp`] |
//!
//! The text models share [`text`]: the tokenizer, input validation and the forward pass.
//! `image` needs the cargo feature `image` and `tabular` the feature `tabular` (both on
//! by default).
//! Outputs implement `serde::Serialize`.
//!
//! ```
//! use modelhost::Predictor;
//! use modelhost::models::mlp::MlpClassifier;
//!
//! let predictor = Predictor::builder(MlpClassifier::load("examples/assets/digits")?).build()?;
//! let answer = predictor.predict(vec![0.0; 64])?;
//! assert_eq!(answer.scores.len(), 10);
//! let json = serde_json::to_value(&answer)?;
//! assert_eq!(json["label"], answer.label.as_str());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod classifier;
#[cfg(feature = "image")]
pub mod image;
pub mod mlp;
pub mod sentence;
#[cfg(feature = "tabular")]
pub mod tabular;
pub mod text;

/// The answer of a classifier.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// The most likely class's label.
    pub label: String,
    /// The most likely class's index.
    pub index: usize,
    /// Its probability.
    pub score: f32,
    /// The probability of every class, in label order.
    pub scores: Vec<f32>,
}

impl crate::cache::CacheWeight for Classification {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.label.len() + 4 * self.scores.len()
    }
}

impl Classification {
    /// The classification for a vector of class probabilities (the first maximum wins).
    pub fn from_scores(scores: Vec<f32>, labels: &[String]) -> Self {
        let (index, score) =
            scores
                .iter()
                .copied()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
                    if s > best.1 { (i, s) } else { best }
                });
        let label = labels
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string());
        Classification {
            label,
            index,
            score,
            scores,
        }
    }
}
