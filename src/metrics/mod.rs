//! Measurements shared by the predictor and the registry.

mod export;
mod histogram;
mod recorder;

pub use export::Metrics;
pub(crate) use export::{Labels, Scrape};
pub use histogram::{LatencyHistogram, LatencySummary};
pub(crate) use recorder::StatsRecorder;
pub use recorder::{Outcome, PredictorStats};
