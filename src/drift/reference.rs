//! The reference samples a [`DriftMonitor`](super::DriftMonitor) compares live traffic
//! with — numeric features, embeddings, predicted classes — and each one's comparison
//! with the window.

use std::collections::VecDeque;

use super::report::{DriftConfig, EmbeddingDrift, FeatureDrift};
use super::stats;

/// One numeric feature's reference: its sorted finite values, decile bins and the
/// fraction of the reference in each.
pub(super) struct FeatureRef {
    name: String,
    sorted: Vec<f64>,
    edges: Vec<f64>,
    fractions: Vec<f64>,
}

impl FeatureRef {
    /// Feature `name`: the finite values in column `i` of `rows`.
    pub(super) fn from_rows(name: &str, i: usize, rows: &[Vec<f64>]) -> Self {
        let mut sorted: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get(i).copied())
            .filter(|v| v.is_finite())
            .collect();
        sorted.sort_by(f64::total_cmp);
        let edges = stats::decile_edges(&sorted);
        let fractions = stats::fractions(&edges, sorted.iter().copied());
        FeatureRef {
            name: name.to_string(),
            sorted,
            edges,
            fractions,
        }
    }

    /// PSI and KS of the `live` values against the reference (none when either has no
    /// finite value); a threshold crossed by a full enough window is added to `alerts`.
    pub(super) fn compare(
        &self,
        live: impl Iterator<Item = f64>,
        c: &DriftConfig,
        alerts: &mut Vec<String>,
    ) -> Option<FeatureDrift> {
        if self.sorted.is_empty() {
            return None;
        }
        let mut live: Vec<f64> = live.filter(|v| v.is_finite()).collect();
        if live.is_empty() {
            return None;
        }
        live.sort_by(f64::total_cmp);
        let psi = stats::psi(
            &self.fractions,
            &stats::fractions(&self.edges, live.iter().copied()),
        );
        let (ks, ks_p) = stats::ks(&self.sorted, &live);
        if live.len() >= c.min_window {
            if psi > c.psi_threshold {
                alerts.push(format!(
                    "feature `{}`: PSI {psi:.3} > {}",
                    self.name, c.psi_threshold
                ));
            }
            if ks_p < c.ks_p_threshold {
                alerts.push(format!(
                    "feature `{}`: KS p-value {ks_p:.2e} < {}",
                    self.name, c.ks_p_threshold
                ));
            }
        }
        Some(FeatureDrift {
            name: self.name.clone(),
            psi,
            ks,
            ks_p,
        })
    }
}

/// The embeddings' reference: mean vector, total variance (trace of the covariance),
/// sample size and per-dimension bins.
pub(super) struct EmbeddingRef {
    mean: Vec<f64>,
    trace: f64,
    n: usize,
    /// Per dimension: decile edges and reference fractions.
    dims: Vec<(Vec<f64>, Vec<f64>)>,
}

impl EmbeddingRef {
    /// The reference of the finite `vectors` of the first one's dimension; none when
    /// fewer than two remain or the dimension is 0 (no spread to measure against).
    pub(super) fn from_vectors(vectors: &[Vec<f32>]) -> Option<Self> {
        let dim = vectors.first().map(Vec::len)?;
        let vectors: Vec<&Vec<f32>> = vectors
            .iter()
            .filter(|v| v.len() == dim && v.iter().all(|x| x.is_finite()))
            .collect();
        let n = vectors.len();
        if n < 2 || dim == 0 {
            return None;
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
        Some(EmbeddingRef {
            mean,
            trace,
            n,
            dims,
        })
    }

    /// The dimension of the reference embeddings.
    pub(super) fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The drift score and per-dimension PSI of the `live` embeddings (none when there
    /// are none); a score over the threshold on a full enough window is added to `alerts`.
    pub(super) fn compare(
        &self,
        live: &VecDeque<Vec<f32>>,
        c: &DriftConfig,
        alerts: &mut Vec<String>,
    ) -> Option<EmbeddingDrift> {
        if live.is_empty() {
            return None;
        }
        let n = live.len();
        let score = self.mean_shift_score(live);
        let psis = self.dimension_psis(live);
        let mean_psi = psis.iter().sum::<f64>() / psis.len().max(1) as f64;
        let max_psi = psis.iter().copied().fold(0.0, f64::max);
        if n >= c.min_window && score > c.embedding_threshold {
            alerts.push(format!(
                "embeddings: drift score {score:.2} > {}",
                c.embedding_threshold
            ));
        }
        Some(EmbeddingDrift {
            score,
            mean_psi,
            max_psi,
        })
    }

    /// `‖μ_w − μ_r‖ / sqrt(tr Σ_r · (1/n_w + 1/n_r))`: the distance of the window mean to
    /// the reference mean in sampling-noise units.
    fn mean_shift_score(&self, live: &VecDeque<Vec<f32>>) -> f64 {
        let n = live.len();
        let dim = self.mean.len();
        let mut mean = vec![0f64; dim];
        for v in live.iter().filter(|v| v.len() == dim) {
            for (m, x) in mean.iter_mut().zip(v.iter()) {
                *m += f64::from(*x);
            }
        }
        let dist2: f64 = mean
            .iter()
            .zip(&self.mean)
            .map(|(m, r)| (m / n as f64 - r).powi(2))
            .sum();
        let noise = (self.trace * (1.0 / n as f64 + 1.0 / self.n as f64)).max(1e-12);
        (dist2 / noise).sqrt()
    }

    /// The PSI of each dimension of the `live` embeddings against the reference.
    fn dimension_psis(&self, live: &VecDeque<Vec<f32>>) -> Vec<f64> {
        self.dims
            .iter()
            .enumerate()
            .map(|(d, (edges, fractions))| {
                let values = live.iter().filter_map(|v| v.get(d).map(|x| f64::from(*x)));
                stats::psi(fractions, &stats::fractions(edges, values))
            })
            .collect()
    }
}

/// The predicted classes' reference: the fraction of each class.
pub(super) struct ClassRef {
    fractions: Vec<f64>,
}

impl ClassRef {
    /// The reference of `predicted` classes (indices below `num_classes`).
    pub(super) fn new(num_classes: usize, predicted: &[usize]) -> Self {
        ClassRef {
            fractions: class_fractions(num_classes, predicted.iter().copied()),
        }
    }

    /// The PSI of the `live` class frequencies (none when there are none); over the
    /// threshold on a full enough window it is added to `alerts`.
    pub(super) fn compare(
        &self,
        live: &VecDeque<usize>,
        c: &DriftConfig,
        alerts: &mut Vec<String>,
    ) -> Option<f64> {
        if live.is_empty() {
            return None;
        }
        let fractions = class_fractions(self.fractions.len(), live.iter().copied());
        let psi = stats::psi(&self.fractions, &fractions);
        if live.len() >= c.min_window && psi > c.psi_threshold {
            alerts.push(format!(
                "predicted classes: PSI {psi:.3} > {}",
                c.psi_threshold
            ));
        }
        Some(psi)
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
