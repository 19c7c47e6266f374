//! Drift monitors as Prometheus gauges.

use std::sync::Arc;

use super::DriftMonitor;
use crate::metrics::Metrics;

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
            let name = monitor.name().to_string();
            let (report, alerting) = monitor.snapshot();
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
