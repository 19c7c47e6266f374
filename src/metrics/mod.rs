//! Measurements shared by the predictor and the registry.

mod histogram;

pub use histogram::{LatencyHistogram, LatencySummary};
