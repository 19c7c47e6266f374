//! One deployed version: its predictor, its statistics and the handles pinned to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{Registry, RegistryError};
use crate::error::PredictError;
use crate::metrics::{LatencyHistogram, LatencySummary, PredictorStats};
use crate::model::Model;
use crate::predictor::{PredictFuture, Predictor};

/// An answer and the version that produced it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Routed<O> {
    /// The version that answered.
    pub version: Arc<str>,
    /// Its output.
    pub output: O,
    /// An id unique within this process, to join ground truth to this answer later
    /// (`drift::AccuracyMonitor`, feature `drift`).
    pub request_id: u64,
}

/// The source of [`Routed::request_id`].
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Per-version request statistics.
#[derive(Default)]
pub(super) struct VersionStats {
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) shadow_requests: AtomicU64,
    pub(super) shadow_errors: AtomicU64,
    pub(super) latency: LatencyHistogram,
}

impl VersionStats {
    pub(super) fn record(&self, started: Instant, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(started.elapsed());
    }
}

pub(super) struct VersionState<M: Model> {
    pub(super) version: Arc<str>,
    pub(super) predictor: Predictor<M>,
    pub(super) stats: VersionStats,
}

/// A cheap, cloneable handle pinned to one version of a model: it keeps answering with that
/// version after promotions and rollbacks, and keeps the version alive while it exists.
pub struct VersionHandle<M: Model> {
    pub(super) state: Arc<VersionState<M>>,
}

impl<M: Model> Clone for VersionHandle<M> {
    fn clone(&self) -> Self {
        VersionHandle {
            state: self.state.clone(),
        }
    }
}

impl<M: Model> std::fmt::Debug for VersionHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionHandle")
            .field("version", &self.state.version)
            .finish()
    }
}

impl<M: Model> VersionHandle<M> {
    /// The version this handle is pinned to.
    pub fn version(&self) -> &str {
        &self.state.version
    }

    /// The version's predictor.
    pub fn predictor(&self) -> &Predictor<M> {
        &self.state.predictor
    }

    /// Predicts with this version, counting the request in its statistics.
    pub fn predict(&self, input: M::Input) -> Result<Routed<M::Output>, PredictError> {
        let started = Instant::now();
        let answer = self.state.predictor.predict(input);
        self.state.stats.record(started, answer.is_ok());
        answer.map(|output| Routed {
            request_id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            version: self.state.version.clone(),
            output,
        })
    }

    /// [`predict_async`](Self::predict_async) for many inputs at once (see
    /// `Predictor::predict_many_async`: prepared in parallel and queued together, so the
    /// batcher sees them as one group); each future is counted in the version's statistics
    /// when it is answered.
    pub fn predict_many_async(
        &self,
        inputs: Vec<M::Input>,
    ) -> Vec<impl Future<Output = Result<Routed<M::Output>, PredictError>> + Send + use<M>> {
        let started = Instant::now();
        let answers = self.state.predictor.predict_many_async(inputs);
        answers
            .into_iter()
            .map(|answer| self.counted(started, answer))
            .collect()
    }

    /// Predicts with this version without blocking (see `Predictor::predict_async`): the
    /// request is queued now, and counted in the version's statistics when it is answered.
    /// Dropping the future cancels the request; a cancelled request is not counted.
    pub fn predict_async(
        &self,
        input: M::Input,
    ) -> impl Future<Output = Result<Routed<M::Output>, PredictError>> + Send + use<M> {
        let started = Instant::now();
        self.counted(started, self.state.predictor.predict_async(input))
    }

    /// `answer`, counted in the version's statistics (from `started`) when it comes, and
    /// labelled with the version.
    fn counted(
        &self,
        started: Instant,
        answer: PredictFuture<M::Output>,
    ) -> impl Future<Output = Result<Routed<M::Output>, PredictError>> + Send + use<M> {
        let state = self.state.clone();
        async move {
            let answer = answer.await;
            state.stats.record(started, answer.is_ok());
            answer.map(|output| Routed {
                request_id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
                version: state.version.clone(),
                output,
            })
        }
    }
}

/// One version as [`Registry::versions`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionReport {
    /// The version.
    pub version: String,
    /// Labels pointing at it.
    pub labels: Vec<String>,
    /// Share of routed traffic it takes now (0..=1).
    pub traffic: f64,
    /// Requests answered through the registry or a handle (shadow copies excluded).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Shadow copies sent to it.
    pub shadow_requests: u64,
    /// Of those, failed or refused.
    pub shadow_errors: u64,
    /// End-to-end latency of its requests (shadow copies included).
    pub latency: LatencySummary,
    /// Its predictor's counters.
    pub predictor: PredictorStats,
}

impl<M: Model> Registry<M> {
    /// Per-version statistics side by side, in deployment order.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionReport>, RegistryError> {
        let table = self.entry(name)?.table.load_full();
        let total = table.resolved.last().map_or(0, |(c, _)| *c);
        Ok(table
            .versions
            .values()
            .map(|s| {
                let mut labels: Vec<String> = table
                    .labels
                    .iter()
                    .filter(|(_, v)| **v == s.version)
                    .map(|(l, _)| l.clone())
                    .collect();
                labels.sort();
                let mut previous = 0;
                let mut share = 0;
                for (cumulative, state) in &table.resolved {
                    if Arc::ptr_eq(state, s) {
                        share += cumulative - previous;
                    }
                    previous = *cumulative;
                }
                VersionReport {
                    version: s.version.to_string(),
                    labels,
                    traffic: if total == 0 {
                        0.0
                    } else {
                        share as f64 / total as f64
                    },
                    requests: s.stats.requests.load(Ordering::Relaxed),
                    errors: s.stats.errors.load(Ordering::Relaxed),
                    shadow_requests: s.stats.shadow_requests.load(Ordering::Relaxed),
                    shadow_errors: s.stats.shadow_errors.load(Ordering::Relaxed),
                    latency: s.stats.latency.summary(),
                    predictor: s.predictor.stats(),
                }
            })
            .collect())
    }
}
