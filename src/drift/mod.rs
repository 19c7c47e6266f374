//! Data drift (live inputs and outputs against a reference sample) and concept drift
//! (rolling accuracy against ground truth fed back later).
//!
//! A [`DriftMonitor`] is built from a reference sample — numeric features, embeddings,
//! predicted classes, any of them — and keeps a sliding window of live traffic. Every
//! `check_every` observations it compares the window with the reference:
//!
//! - numeric features: population stability index over the reference's decile bins, and the
//!   two-sample Kolmogorov–Smirnov statistic with its p-value;
//! - embeddings: a drift score for the whole vector — the distance between the window's mean
//!   and the reference mean in units of what sampling noise alone would give
//!   (`‖μ_w − μ_r‖ / sqrt(tr Σ_r · (1/n_w + 1/n_r))`, ≈ 1 without drift) — and the mean and
//!   largest per-dimension PSI;
//! - predicted classes: PSI of the class frequencies.
//!
//! Crossing a threshold calls the alert callback once (again only after the window has gone
//! back under every threshold) and sets the `modelhost_drift_*` gauges when the monitor is
//! registered with [`Metrics`](crate::metrics::Metrics). Attach it to a predictor with
//! [`PredictorBuilder::observe_outputs`](crate::PredictorBuilder::observe_outputs) or
//! [`observe_inputs`](crate::PredictorBuilder::observe_inputs) (sampled if you like), or
//! feed it yourself.
//!
//! [`AccuracyMonitor`] joins ground truth to predictions by request id and keeps rolling
//! accuracy (classification) or mean absolute error (regression) per version, with an alert
//! when it crosses a threshold: the signal to retrain or roll back.
//!
//! ```
//! use modelhost::drift::{DriftConfig, DriftMonitor};
//!
//! // A reference of one numeric feature spread over 0..100, checked every 200 rows.
//! let reference: Vec<Vec<f64>> = (0..1000).map(|i| vec![(i % 100) as f64]).collect();
//! let config = DriftConfig { window: 200, check_every: 200, min_window: 200, ..DriftConfig::default() };
//! let monitor = DriftMonitor::builder("lengths")
//!     .config(config)
//!     .features(&["length"], &reference)
//!     .build();
//! for i in 0..200 {
//!     monitor.observe_features(&[(i % 100) as f64]); // live traffic like the reference
//! }
//! assert!(!monitor.last_report().unwrap().drifted());
//! for i in 0..200 {
//!     monitor.observe_features(&[(i % 100) as f64 + 80.0]); // shifted by 80
//! }
//! let report = monitor.last_report().unwrap();
//! assert!(report.drifted() && report.features[0].psi > 0.25, "{report:?}");
//! ```

mod accuracy;
mod export;
mod monitor;
mod reference;
mod report;
mod stats;

use std::collections::VecDeque;

pub use self::accuracy::{AccuracyMonitor, FeedbackError, Prediction};
pub use self::monitor::{DriftMonitor, DriftMonitorBuilder};
pub use self::report::{DriftConfig, DriftReport, EmbeddingDrift, FeatureDrift};

/// Appends `item`, first dropping the oldest item when the queue already holds `cap`.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() >= cap {
        queue.pop_front();
    }
    queue.push_back(item);
}
