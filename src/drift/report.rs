//! What a drift check reports, and the window and thresholds it runs with.

/// Thresholds and window of a [`DriftMonitor`](super::DriftMonitor).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Live observations kept (the sliding window).
    pub window: usize,
    /// Compare the window with the reference every this many observations.
    pub check_every: usize,
    /// No verdict before the window holds this many observations.
    pub min_window: usize,
    /// PSI above this is drift (features, classes, and the largest per-dimension PSI of
    /// embeddings is reported but not alerted on).
    pub psi_threshold: f64,
    /// A KS p-value below this is drift (numeric features).
    pub ks_p_threshold: f64,
    /// An embedding drift score above this is drift.
    pub embedding_threshold: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window: 500,
            check_every: 100,
            min_window: 200,
            psi_threshold: 0.25,
            ks_p_threshold: 0.001,
            embedding_threshold: 4.0,
        }
    }
}

/// Drift of one numeric feature.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDrift {
    /// The feature's name.
    pub name: String,
    /// Population stability index of the window against the reference.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic.
    pub ks: f64,
    /// Its p-value.
    pub ks_p: f64,
}

/// Drift of embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingDrift {
    /// Distance of the window mean to the reference mean in sampling-noise units (≈ 1
    /// without drift).
    pub score: f64,
    /// Mean PSI over the dimensions.
    pub mean_psi: f64,
    /// Largest PSI of a dimension.
    pub max_psi: f64,
}

/// One comparison of the window with the reference.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DriftReport {
    /// Observations in the window.
    pub window: usize,
    /// Per numeric feature.
    pub features: Vec<FeatureDrift>,
    /// For embeddings.
    pub embedding: Option<EmbeddingDrift>,
    /// PSI of the predicted class frequencies.
    pub class_psi: Option<f64>,
    /// What crossed a threshold, in words; empty when nothing did.
    pub alerts: Vec<String>,
}

impl DriftReport {
    /// True when something crossed a threshold.
    pub fn drifted(&self) -> bool {
        !self.alerts.is_empty()
    }
}
