//! Concrete models, each a [`Model`](crate::Model) with typed input and output.

pub mod classifier;
pub mod image;
pub mod mlp;
pub mod sentence;
pub mod tabular;
pub mod text;

/// The answer of a classifier.
#[derive(Debug, Clone, PartialEq)]
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
