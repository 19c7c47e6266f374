//! Measurements: what predictors record about their requests, read back as
//! [`PredictorStats`] or exported in the Prometheus text format by [`Metrics`].
//!
//! Predictors keep lock-free counters and latency histograms ([`LatencyHistogram`]) that
//! they write where things happen (caller thread, queue, worker); nothing is recorded
//! twice. [`Metrics`] reads them when it is scraped; predictors, registries, caches and
//! drift monitors register themselves with it and hand it snapshots, so this module
//! imports none of them.
//!
//! ```
//! use modelhost::Predictor;
//! use modelhost::metrics::{Metrics, Outcome};
//! use modelhost::models::mlp::MlpClassifier;
//!
//! let predictor = Predictor::builder(MlpClassifier::load("examples/assets/digits")?).build()?;
//! predictor.predict(vec![0.0; 64])?;
//! let _ = predictor.predict(vec![0.0; 3]); // refused before it is queued
//! let stats = predictor.stats();
//! assert_eq!((stats.outcome(Outcome::Success), stats.outcome(Outcome::InputError)), (1, 1));
//!
//! let metrics = Metrics::new();
//! metrics.register_predictor(&predictor);
//! assert!(metrics.encode_prometheus().contains("modelhost_requests_total{"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod export;
mod histogram;
mod recorder;

pub use export::Metrics;
pub(crate) use export::{Labels, Scrape};
pub use histogram::{LatencyHistogram, LatencySummary};
pub(crate) use recorder::StatsRecorder;
pub use recorder::{Outcome, PredictorStats};
