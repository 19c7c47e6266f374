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

mod stats;

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::metrics::Metrics;

/// Thresholds and window of a [`DriftMonitor`].
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

struct FeatureRef {
    name: String,
    sorted: Vec<f64>,
    edges: Vec<f64>,
    fractions: Vec<f64>,
}

struct EmbeddingRef {
    mean: Vec<f64>,
    trace: f64,
    n: usize,
    /// Per dimension: decile edges and reference fractions.
    dims: Vec<(Vec<f64>, Vec<f64>)>,
}

struct ClassRef {
    fractions: Vec<f64>,
}

#[derive(Default)]
struct Window {
    features: VecDeque<Vec<f64>>,
    embeddings: VecDeque<Vec<f32>>,
    classes: VecDeque<usize>,
    since_check: usize,
    alerting: bool,
    last: Option<DriftReport>,
}

type AlertFn = Box<dyn Fn(&str, &DriftReport) + Send + Sync>;

/// Watches live traffic for drift from a reference sample. See the [module](self) docs.
pub struct DriftMonitor {
    name: String,
    config: DriftConfig,
    features: Vec<FeatureRef>,
    embedding: Option<EmbeddingRef>,
    classes: Option<ClassRef>,
    window: Mutex<Window>,
    on_alert: Option<AlertFn>,
}

impl std::fmt::Debug for DriftMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftMonitor")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DriftMonitor`] from reference samples.
pub struct DriftMonitorBuilder {
    name: String,
    config: DriftConfig,
    features: Vec<FeatureRef>,
    embedding: Option<EmbeddingRef>,
    classes: Option<ClassRef>,
    on_alert: Option<AlertFn>,
}

impl std::fmt::Debug for DriftMonitorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftMonitorBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DriftMonitorBuilder {
    /// The window and thresholds.
    pub fn config(mut self, config: DriftConfig) -> Self {
        self.config = config;
        self
    }

    /// Reference rows of numeric features, one value per name in each row.
    pub fn features(mut self, names: &[&str], rows: &[Vec<f64>]) -> Self {
        self.features = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut sorted: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.get(i).copied())
                    .filter(|v| v.is_finite())
                    .collect();
                sorted.sort_by(f64::total_cmp);
                let edges = stats::decile_edges(&sorted);
                let fractions = stats::fractions(&edges, sorted.iter().copied());
                FeatureRef {
                    name: (*name).to_string(),
                    sorted,
                    edges,
                    fractions,
                }
            })
            .collect();
        self
    }

    /// Reference embeddings (all of one dimension).
    pub fn embeddings(mut self, vectors: &[Vec<f32>]) -> Self {
        let Some(dim) = vectors.first().map(Vec::len) else {
            return self;
        };
        let vectors: Vec<&Vec<f32>> = vectors
            .iter()
            .filter(|v| v.len() == dim && v.iter().all(|x| x.is_finite()))
            .collect();
        let n = vectors.len();
        if n < 2 || dim == 0 {
            // No spread to measure against: no embedding reference.
            return self;
        }
        let mut mean = vec![0f64; dim];
        for v in &vectors {
            for (m, x) in mean.iter_mut().zip(v.iter()) {
                *m += f64::from(*x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut trace = 0.0;
        let mut dims = Vec::with_capacity(dim);
        for d in 0..dim {
            let mut column: Vec<f64> = vectors.iter().map(|v| f64::from(v[d])).collect();
            trace +=
                column.iter().map(|x| (x - mean[d]).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
            column.sort_by(f64::total_cmp);
            let edges = stats::decile_edges(&column);
            let fractions = stats::fractions(&edges, column.iter().copied());
            dims.push((edges, fractions));
        }
        self.embedding = Some(EmbeddingRef {
            mean,
            trace,
            n,
            dims,
        });
        self
    }

    /// Reference predicted classes (indices below `num_classes`).
    pub fn classes(mut self, num_classes: usize, predicted: &[usize]) -> Self {
        self.classes = Some(ClassRef {
            fractions: class_fractions(num_classes, predicted.iter().copied()),
        });
        self
    }

    /// Called with the monitor's name and the report when drift is first detected (and
    /// again only after a check found no drift).
    pub fn on_alert(mut self, f: impl Fn(&str, &DriftReport) + Send + Sync + 'static) -> Self {
        self.on_alert = Some(Box::new(f));
        self
    }

    /// The monitor.
    pub fn build(self) -> DriftMonitor {
        DriftMonitor {
            name: self.name,
            config: self.config,
            features: self.features,
            embedding: self.embedding,
            classes: self.classes,
            window: Mutex::new(Window::default()),
            on_alert: self.on_alert,
        }
    }
}

fn class_fractions(num_classes: usize, classes: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut counts = vec![0usize; num_classes.max(1)];
    let mut n = 0;
    for c in classes {
        if let Some(slot) = counts.get_mut(c) {
            *slot += 1;
            n += 1;
        }
    }
    counts
        .into_iter()
        .map(|c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
        .collect()
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() >= cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

impl DriftMonitor {
    /// Starts building a monitor called `name` (its label in metrics and alerts).
    pub fn builder(name: &str) -> DriftMonitorBuilder {
        DriftMonitorBuilder {
            name: name.to_string(),
            config: DriftConfig::default(),
            features: Vec::new(),
            embedding: None,
            classes: None,
            on_alert: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one row of live numeric features (in the reference's order).
    pub fn observe_features(&self, row: &[f64]) {
        let mut w = self.lock();
        push_bounded(&mut w.features, row.to_vec(), self.config.window);
        self.tick(w);
    }

    /// Records one live embedding.
    pub fn observe_embedding(&self, vector: &[f32]) {
        let expected = self.embedding.as_ref().map(|e| e.mean.len());
        if expected.is_some_and(|d| d != vector.len()) || vector.iter().any(|x| !x.is_finite()) {
            // Not comparable with the reference: counting it would look like drift.
            return;
        }
        let mut w = self.lock();
        push_bounded(&mut w.embeddings, vector.to_vec(), self.config.window);
        self.tick(w);
    }

    /// Records one live predicted class.
    pub fn observe_class(&self, class: usize) {
        let mut w = self.lock();
        push_bounded(&mut w.classes, class, self.config.window);
        self.tick(w);
    }

    fn tick(&self, mut w: MutexGuard<'_, Window>) {
        w.since_check += 1;
        if w.since_check >= self.config.check_every.max(1) {
            w.since_check = 0;
            let report = self.compare(&w);
            self.conclude(w, report);
        }
    }

    /// Compares the window with the reference now, fires the alert on a new drift, and
    /// returns the report.
    pub fn check(&self) -> DriftReport {
        let w = self.lock();
        let report = self.compare(&w);
        self.conclude(w, report.clone());
        report
    }

    /// The last report a check produced.
    pub fn last_report(&self) -> Option<DriftReport> {
        self.lock().last.clone()
    }

    fn conclude(&self, mut w: MutexGuard<'_, Window>, report: DriftReport) {
        let newly = report.drifted() && !w.alerting;
        let enough = report.window >= self.config.min_window;
        if enough {
            w.alerting = report.drifted();
        }
        w.last = Some(report.clone());
        drop(w);
        if newly && enough {
            tracing::warn!(monitor = %self.name, alerts = ?report.alerts, "drift detected");
            if let Some(alert) = &self.on_alert {
                alert(&self.name, &report);
            }
        }
    }

    fn compare(&self, w: &Window) -> DriftReport {
        let c = &self.config;
        let mut report = DriftReport {
            window: w
                .features
                .len()
                .max(w.embeddings.len())
                .max(w.classes.len()),
            ..DriftReport::default()
        };
        for (i, f) in self.features.iter().enumerate() {
            if f.sorted.is_empty() {
                continue;
            }
            let mut live: Vec<f64> = w
                .features
                .iter()
                .filter_map(|r| r.get(i).copied())
                .filter(|v| v.is_finite())
                .collect();
            if live.is_empty() {
                continue;
            }
            live.sort_by(f64::total_cmp);
            let psi = stats::psi(
                &f.fractions,
                &stats::fractions(&f.edges, live.iter().copied()),
            );
            let (ks, ks_p) = stats::ks(&f.sorted, &live);
            if live.len() >= c.min_window {
                if psi > c.psi_threshold {
                    report.alerts.push(format!(
                        "feature `{}`: PSI {psi:.3} > {}",
                        f.name, c.psi_threshold
                    ));
                }
                if ks_p < c.ks_p_threshold {
                    report.alerts.push(format!(
                        "feature `{}`: KS p-value {ks_p:.2e} < {}",
                        f.name, c.ks_p_threshold
                    ));
                }
            }
            report.features.push(FeatureDrift {
                name: f.name.clone(),
                psi,
                ks,
                ks_p,
            });
        }
        if let Some(e) = &self.embedding
            && !w.embeddings.is_empty()
        {
            let n = w.embeddings.len();
            let dim = e.mean.len();
            let mut mean = vec![0f64; dim];
            for v in w.embeddings.iter().filter(|v| v.len() == dim) {
                for (m, x) in mean.iter_mut().zip(v.iter()) {
                    *m += f64::from(*x);
                }
            }
            let dist2: f64 = mean
                .iter()
                .zip(&e.mean)
                .map(|(m, r)| (m / n as f64 - r).powi(2))
                .sum();
            let noise = (e.trace * (1.0 / n as f64 + 1.0 / e.n as f64)).max(1e-12);
            let score = (dist2 / noise).sqrt();
            let psis: Vec<f64> = e
                .dims
                .iter()
                .enumerate()
                .map(|(d, (edges, fractions))| {
                    let live = w
                        .embeddings
                        .iter()
                        .filter_map(|v| v.get(d).map(|x| f64::from(*x)));
                    stats::psi(fractions, &stats::fractions(edges, live))
                })
                .collect();
            let mean_psi = psis.iter().sum::<f64>() / psis.len().max(1) as f64;
            let max_psi = psis.iter().copied().fold(0.0, f64::max);
            if n >= c.min_window && score > c.embedding_threshold {
                report.alerts.push(format!(
                    "embeddings: drift score {score:.2} > {}",
                    c.embedding_threshold
                ));
            }
            report.embedding = Some(EmbeddingDrift {
                score,
                mean_psi,
                max_psi,
            });
        }
        if let Some(r) = &self.classes
            && !w.classes.is_empty()
        {
            let live = class_fractions(r.fractions.len(), w.classes.iter().copied());
            let psi = stats::psi(&r.fractions, &live);
            if w.classes.len() >= c.min_window && psi > c.psi_threshold {
                report.alerts.push(format!(
                    "predicted classes: PSI {psi:.3} > {}",
                    c.psi_threshold
                ));
            }
            report.class_psi = Some(psi);
        }
        report
    }
}

impl Metrics {
    /// Exports a drift monitor's last report as gauges: `modelhost_drift_psi{monitor,
    /// feature}`, `modelhost_drift_ks{monitor,feature}`,
    /// `modelhost_drift_embedding_score{monitor}`, `modelhost_drift_class_psi{monitor}` and
    /// `modelhost_drift_alert{monitor}` (1 while drifting).
    pub fn register_drift(&self, monitor: &Arc<DriftMonitor>) {
        let weak = Arc::downgrade(monitor);
        self.register_source(move |scrape| {
            let Some(monitor) = weak.upgrade() else {
                return false;
            };
            let name = monitor.name.clone();
            let (report, alerting) = {
                let w = monitor.lock();
                (w.last.clone().unwrap_or_default(), w.alerting)
            };
            for f in &report.features {
                let labels = vec![("monitor", name.clone()), ("feature", f.name.clone())];
                scrape.gauge(
                    "modelhost_drift_psi",
                    "Population stability index of a feature against its reference.",
                    labels.clone(),
                    f.psi,
                );
                scrape.gauge(
                    "modelhost_drift_ks",
                    "Kolmogorov-Smirnov statistic of a feature against its reference.",
                    labels,
                    f.ks,
                );
            }
            if let Some(e) = &report.embedding {
                scrape.gauge(
                    "modelhost_drift_embedding_score",
                    "Embedding mean shift in sampling-noise units (about 1 without drift).",
                    vec![("monitor", name.clone())],
                    e.score,
                );
            }
            if let Some(p) = report.class_psi {
                scrape.gauge(
                    "modelhost_drift_class_psi",
                    "PSI of predicted class frequencies.",
                    vec![("monitor", name.clone())],
                    p,
                );
            }
            scrape.gauge(
                "modelhost_drift_alert",
                "1 while the monitor reports drift.",
                vec![("monitor", name)],
                f64::from(u8::from(alerting)),
            );
            true
        });
    }
}

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
/// the fact. See the [module](self) docs.
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
