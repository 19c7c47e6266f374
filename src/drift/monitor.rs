//! [`DriftMonitor`]: the reference samples, the sliding window of live traffic, the
//! periodic comparison and the alert.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::push_bounded;
use super::reference::{ClassRef, EmbeddingRef, FeatureRef};
use super::report::{DriftConfig, DriftReport};

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

/// Watches live traffic for drift from a reference sample. See the [module](super) docs.
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
            .map(|(i, name)| FeatureRef::from_rows(name, i, rows))
            .collect();
        self
    }

    /// Reference embeddings (all of one dimension).
    pub fn embeddings(mut self, vectors: &[Vec<f32>]) -> Self {
        // Without at least two comparable vectors there is no embedding reference.
        if let Some(reference) = EmbeddingRef::from_vectors(vectors) {
            self.embedding = Some(reference);
        }
        self
    }

    /// Reference predicted classes (indices below `num_classes`).
    pub fn classes(mut self, num_classes: usize, predicted: &[usize]) -> Self {
        self.classes = Some(ClassRef::new(num_classes, predicted));
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
        let expected = self.embedding.as_ref().map(EmbeddingRef::dim);
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
            let live = w.features.iter().filter_map(|r| r.get(i).copied());
            if let Some(drift) = f.compare(live, c, &mut report.alerts) {
                report.features.push(drift);
            }
        }
        if let Some(e) = &self.embedding {
            report.embedding = e.compare(&w.embeddings, c, &mut report.alerts);
        }
        if let Some(r) = &self.classes {
            report.class_psi = r.compare(&w.classes, c, &mut report.alerts);
        }
        report
    }

    /// The last report (empty before the first check) and whether the monitor is
    /// alerting: what the metrics export.
    pub(super) fn snapshot(&self) -> (DriftReport, bool) {
        let w = self.lock();
        (w.last.clone().unwrap_or_default(), w.alerting)
    }
}
