//! Liveness, readiness and warm-up of a predictor, and its metrics export.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Predictor, Shared};
use crate::metrics::Metrics;
use crate::model::Model;

/// Liveness and readiness of a predictor, for health endpoints and orchestrators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Its workers are running and it takes requests.
    pub live: bool,
    /// Live, warmed up and not shedding load: route traffic to it.
    pub ready: bool,
    /// The warm-up inputs have run through the model (true when there are none).
    pub warmed_up: bool,
    /// Why the warm-up failed, if it did (the predictor then never reports ready).
    pub warmup_error: Option<String>,
    /// The queue is full: new requests are being refused with `QueueFull`.
    pub shedding: bool,
    /// Worker threads running.
    pub workers: usize,
    /// Requests waiting.
    pub queue_depth: usize,
    /// The most requests that may wait.
    pub queue_capacity: usize,
}

/// Warm-up progress, shared with the warm-up thread.
#[derive(Default)]
pub(super) struct WarmUp {
    pub(super) state: Mutex<Option<Result<(), String>>>,
    pub(super) done: std::sync::Condvar,
}

/// A handle that does not keep a predictor alive (for metrics exporters).
pub(crate) struct WeakPredictor<M: Model>(std::sync::Weak<Shared<M>>);

impl<M: Model> WeakPredictor<M> {
    pub(crate) fn upgrade(&self) -> Option<Predictor<M>> {
        self.0.upgrade().map(|shared| Predictor { shared })
    }
}

impl<M: Model> Predictor<M> {
    pub(crate) fn downgrade(&self) -> WeakPredictor<M> {
        WeakPredictor(Arc::downgrade(&self.shared))
    }

    /// Adds this predictor's metrics to a scrape.
    pub(crate) fn scrape_into(&self, scrape: &mut crate::metrics::Scrape) {
        let health = self.health();
        let (model, version) = self.identity();
        scrape.predictor(
            &self.shared.stats,
            model,
            version,
            health.queue_depth,
            health.ready,
            health.workers,
        );
    }

    /// Liveness (workers running) and readiness (live, warmed up, not shedding load).
    pub fn health(&self) -> Health {
        let (workers, open) = self.shared.queue.workers();
        let queue_depth = self.shared.queue.len();
        let queue_capacity = self.shared.queue.capacity();
        let warm = self
            .shared
            .warmup
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let live = workers > 0 && open;
        let warmed_up = matches!(warm, Some(Ok(())));
        let shedding = queue_depth >= queue_capacity;
        Health {
            live,
            ready: live && warmed_up && !shedding,
            warmed_up,
            warmup_error: warm.and_then(|w| w.err()),
            shedding,
            workers,
            queue_depth,
            queue_capacity,
        }
    }

    /// Waits until the warm-up is over (at most `timeout`); true when it succeeded.
    pub fn wait_warmed_up(&self, timeout: Duration) -> bool {
        let warmup = &self.shared.warmup;
        let state = warmup.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = warmup
            .done
            .wait_timeout_while(state, timeout, |s| s.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        matches!(*state, Some(Ok(())))
    }
}

impl Metrics {
    /// Exports a predictor's metrics, labelled with its identity (model, version), for as
    /// long as the predictor lives.
    pub fn register_predictor<M: Model>(&self, predictor: &Predictor<M>) {
        let weak = predictor.downgrade();
        self.register_source(move |scrape| match weak.upgrade() {
            Some(p) => {
                p.scrape_into(scrape);
                true
            }
            None => false,
        });
    }
}
