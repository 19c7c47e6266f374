//! Ground truth fed back after the fact: rolling accuracy (or mean absolute error) per
//! version, joined to predictions by request id.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use super::push_bounded;

/// A prediction or a ground truth for [`AccuracyMonitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prediction {
    /// A class index (classification).
    Class(usize),
    /// A value (regression).
    Value(f64),
}

/// Feedback could not be joined to a prediction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedbackError {
    /// No prediction was recorded under this id (or it was too old and dropped).
    #[error(
        "no prediction recorded for request {id} (unknown, already answered, or older than the last {capacity} predictions)"
    )]
    UnknownRequest {
        /// The id.
        id: u64,
        /// How many pending predictions are kept.
        capacity: usize,
    },
    /// A regression prediction or truth is NaN or infinite.
    #[error("request {id}: the prediction or the truth is not a finite number")]
    NotFinite {
        /// The id.
        id: u64,
    },
    /// The truth is a class and the prediction a value, or the other way round.
    #[error(
        "request {id}: the truth is {truth:?} but the prediction was {predicted:?}; both must be classes or both values"
    )]
    KindMismatch {
        /// The id.
        id: u64,
        /// What was predicted.
        predicted: Prediction,
        /// What was fed back.
        truth: Prediction,
    },
}

type FeedbackAlert = Box<dyn Fn(&str, f64) + Send + Sync>;

/// A version's last scores (1/0 for classification, absolute error for regression) and
/// whether it is alerting.
type Rolling = (VecDeque<f64>, bool);

/// Rolling accuracy (or mean absolute error) per version from ground truth fed back after
/// the fact. See the [module](super) docs.
///
/// ```
/// use modelhost::{drift::AccuracyMonitor, drift::Prediction};
///
/// let monitor = AccuracyMonitor::new(100, 0.9).on_alert(|version, accuracy| {
///     eprintln!("version {version}: accuracy fell to {accuracy:.2}");
/// });
/// monitor.record(1, "v2", Prediction::Class(3));
/// monitor.feedback(1, Prediction::Class(3)).unwrap();
/// assert_eq!(monitor.accuracy("v2"), Some(1.0));
/// ```
pub struct AccuracyMonitor {
    window: usize,
    threshold: f64,
    min_samples: usize,
    rearm_margin: f64,
    capacity: usize,
    pending: Mutex<LruCache<u64, (Arc<str>, Prediction)>>,
    scores: Mutex<HashMap<Arc<str>, Rolling>>,
    on_alert: Option<FeedbackAlert>,
}

impl std::fmt::Debug for AccuracyMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccuracyMonitor")
            .field("window", &self.window)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl AccuracyMonitor {
    /// Rolling over the last `window` feedbacks per version; alerts when accuracy falls
    /// below `threshold` (classification) or mean absolute error rises above it
    /// (regression), once the window holds at least a quarter of `window` feedbacks.
    pub fn new(window: usize, threshold: f64) -> Self {
        let capacity = 100_000;
        AccuracyMonitor {
            window: window.max(1),
            threshold,
            min_samples: (window / 4).max(1),
            rearm_margin: 0.05,
            capacity,
            pending: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            scores: Mutex::new(HashMap::new()),
            on_alert: None,
        }
    }

    /// How far back past the threshold a version must come before it can alert again
    /// (default 0.05), so a score hovering at the threshold does not alert on every
    /// feedback.
    pub fn rearm_margin(mut self, margin: f64) -> Self {
        self.rearm_margin = margin.max(0.0);
        self
    }

    /// Called with the version and its rolling accuracy (or error) when it first crosses
    /// the threshold (and again only after it came back by the re-arm margin).
    pub fn on_alert(mut self, f: impl Fn(&str, f64) + Send + Sync + 'static) -> Self {
        self.on_alert = Some(Box::new(f));
        self
    }

    /// Remembers what `version` predicted for request `id`, to be joined with its truth.
    pub fn record(&self, id: u64, version: &str, predicted: Prediction) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(id, (version.into(), predicted));
    }

    /// Joins the ground truth of request `id` to its prediction and updates its version's
    /// rolling score.
    pub fn feedback(&self, id: u64, truth: Prediction) -> Result<(), FeedbackError> {
        let (version, predicted) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop(&id)
            .ok_or(FeedbackError::UnknownRequest {
                id,
                capacity: self.capacity,
            })?;
        let score = match (predicted, truth) {
            (Prediction::Class(p), Prediction::Class(t)) => f64::from(u8::from(p == t)),
            (Prediction::Value(p), Prediction::Value(t)) => (p - t).abs(),
            _ => {
                // Keep the prediction: the right feedback may still come.
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(id, (version, predicted));
                return Err(FeedbackError::KindMismatch {
                    id,
                    predicted,
                    truth,
                });
            }
        };
        if !score.is_finite() {
            return Err(FeedbackError::NotFinite { id });
        }
        let classification = matches!(truth, Prediction::Class(_));
        let alert = {
            let mut scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
            let (window, alerting) = scores.entry(version.clone()).or_default();
            push_bounded(window, score, self.window);
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            let bad = window.len() >= self.min_samples
                && if classification {
                    mean < self.threshold
                } else {
                    mean > self.threshold
                };
            let newly = bad && !*alerting;
            if window.len() >= self.min_samples {
                *alerting = bad;
            }
            newly.then_some(mean)
        };
        if let Some(mean) = alert {
            tracing::warn!(version = %version, score = mean, "rolling accuracy crossed its threshold");
            if let Some(f) = &self.on_alert {
                f(&version, mean);
            }
        }
        Ok(())
    }

    /// Rolling accuracy (classification) or mean absolute error (regression) of `version`.
    pub fn accuracy(&self, version: &str) -> Option<f64> {
        let scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        let (window, _) = scores.get(version)?;
        (!window.is_empty()).then(|| window.iter().sum::<f64>() / window.len() as f64)
    }
}
