//! [`PredictorBuilder`]: settings, worker start-up and warm-up.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::cached::{CacheLayer, CachePath};
use super::health::WarmUp;
use super::{InputObserver, Predictor, Shared};
use crate::batch::{BatchPolicy, Grouping, OutputObserver, Queue, run_worker};
use crate::cache::{CacheWeight, PredictionCache};
use crate::error::ConfigError;
use crate::metrics::StatsRecorder;
use crate::model::{BatchCost, Model};

/// Configures a [`Predictor`]. Every setting has a sensible default.
pub struct PredictorBuilder<M: Model> {
    model: Arc<M>,
    policy: BatchPolicy,
    deadline: Option<Duration>,
    workers: usize,
    replicas: Vec<Arc<M>>,
    cache: Option<CacheFactory<M>>,
    identity: Option<(Arc<str>, Arc<str>)>,
    instrument: bool,
    warmup: Option<Vec<M::Input>>,
    observe_inputs: Option<(f64, InputObserver<M>)>,
    observe_outputs: Option<(f64, OutputObserver<M::Output>)>,
}

/// Makes the cache path once the predictor's identity is known.
type CacheFactory<M> = Box<dyn FnOnce(Arc<str>, Arc<str>, u64) -> Box<dyn CachePath<M>> + Send>;

/// Numbers every predictor built, for cache keys.
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<M: Model> fmt::Debug for PredictorBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PredictorBuilder")
            .field("policy", &self.policy)
            .field("deadline", &self.deadline)
            .field("workers", &self.workers)
            .field("replicas", &(self.replicas.len() + 1))
            .finish()
    }
}

impl<M: Model> PredictorBuilder<M> {
    pub(super) fn new(model: M) -> Self {
        PredictorBuilder {
            model: Arc::new(model),
            policy: BatchPolicy::default(),
            deadline: None,
            workers: 1,
            replicas: Vec::new(),
            cache: None,
            identity: None,
            instrument: true,
            warmup: None,
            observe_inputs: None,
            observe_outputs: None,
        }
    }

    /// The most requests in one batch (default 32).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.policy.max_batch_size = n;
        self
    }

    /// The most cost units (tokens, for text models) in one batch, as the model counts a
    /// batch (`Model::batch_cost`: summed, or longest × count when it pads) (default: no
    /// budget).
    pub fn max_batch_tokens(mut self, n: usize) -> Self {
        self.policy.max_batch_tokens = Some(n);
        self
    }

    /// How long a batch's first request may wait for others (default 2 ms).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// The most requests waiting; past it `predict` fails fast with `QueueFull`
    /// (default 1024).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.policy.queue_capacity = n;
        self
    }

    /// Which waiting requests share a batch (default [`Grouping::Arrival`]).
    pub fn grouping(mut self, grouping: Grouping) -> Self {
        self.policy.grouping = grouping;
        self
    }

    /// The whole batching policy at once.
    pub fn policy(mut self, policy: BatchPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Drop requests that waited longer than this in the queue, answering them with
    /// `DeadlineExceeded` (default: no deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Number of worker threads (default 1). Without [`replicas`](Self::replicas) they share
    /// the one model, so more than one helps only when the model is single-threaded or
    /// waits on a device.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// More copies of the model, each owned by a worker of its own (e.g. one per GPU). The
    /// number of workers becomes at least the number of replicas; worker `i` runs replica
    /// `i % replicas`. Validation and preprocessing use the first model.
    pub fn replicas(mut self, more: impl IntoIterator<Item = M>) -> Self {
        self.replicas.extend(more.into_iter().map(Arc::new));
        self
    }

    /// The model name and version that key this predictor's cache entries (default: the
    /// signature's name and version `"0"`). A `Registry` sets them.
    pub fn identity(mut self, model: &str, version: &str) -> Self {
        self.identity = Some((model.into(), version.into()));
        self
    }

    /// Inputs to run through every model replica before the predictor reports ready
    /// (default: [`Model::warmup_inputs`]; an empty list means ready at once). The warm-up
    /// runs on its own thread and is not counted in the statistics.
    pub fn warmup(mut self, inputs: Vec<M::Input>) -> Self {
        self.warmup = Some(inputs);
        self
    }

    /// Calls `f` with a `rate` (0..=1) sample of inputs, on the caller's thread before
    /// preprocessing: feed a `drift::DriftMonitor` (feature `drift`) with input features.
    pub fn observe_inputs(
        mut self,
        rate: f64,
        f: impl Fn(&M::Input) + Send + Sync + 'static,
    ) -> Self {
        self.observe_inputs = Some((rate, Box::new(f)));
        self
    }

    /// Calls `f` with a `rate` (0..=1) sample of successful outputs, on the worker thread
    /// (keep it quick): feed a `drift::DriftMonitor` (feature `drift`) with embeddings or
    /// predicted classes.
    pub fn observe_outputs(
        mut self,
        rate: f64,
        f: impl Fn(&M::Output) + Send + Sync + 'static,
    ) -> Self {
        self.observe_outputs = Some((rate, Arc::new(f)));
        self
    }

    /// Record latency histograms and tracing spans (default on; counters are always kept).
    /// Off only to measure what instrumentation costs.
    pub fn instrument(mut self, on: bool) -> Self {
        self.instrument = on;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Predictor<M>, ConfigError> {
        self.policy.validate()?;
        if self.workers == 0 {
            return Err(ConfigError::InvalidSetting {
                name: "workers",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        let mut replicas = vec![self.model.clone()];
        replicas.extend(self.replicas);
        let workers = self.workers.max(replicas.len());
        let stats = Arc::new(StatsRecorder::new(
            self.policy.max_batch_size,
            self.instrument,
        ));
        // A batch may run on any replica: count it as padded if any of them pads.
        let batch_cost = replicas
            .iter()
            .map(|r| r.batch_cost())
            .find(|c| *c == BatchCost::Padded)
            .unwrap_or_default();
        let queue = Arc::new(Queue::new(self.policy.clone(), batch_cost, stats.clone()));
        let signature = self.model.signature();
        let identity = self
            .identity
            .unwrap_or_else(|| (signature.name.as_str().into(), "0".into()));
        let instance = NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cache = self
            .cache
            .map(|make| make(identity.0.clone(), identity.1.clone(), instance));
        let shared = Arc::new(Shared {
            model: self.model,
            signature,
            queue,
            workers: Mutex::new(Vec::new()),
            stats,
            policy: self.policy,
            deadline: self.deadline,
            cache,
            identity,
            next_request_id: std::sync::atomic::AtomicU64::new(0),
            warmup: Arc::new(WarmUp::default()),
            observe_inputs: self.observe_inputs,
            _release: crate::util::ReleaseFreedMemory,
        });
        for i in 0..workers {
            shared.queue.worker_started();
            let (model, queue, stats, identity, observe) = (
                replicas[i % replicas.len()].clone(),
                shared.queue.clone(),
                shared.stats.clone(),
                shared.identity.clone(),
                self.observe_outputs.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("modelhost-worker-{i}"))
                .spawn(move || run_worker(model, queue, stats, identity, observe))
                .map_err(|e| ConfigError::Spawn {
                    message: e.to_string(),
                })?;
            shared
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(handle);
        }
        let inputs = self.warmup.unwrap_or_else(|| shared.model.warmup_inputs());
        start_warmup(replicas, inputs, shared.warmup.clone());
        Ok(Predictor { shared })
    }
}

/// Runs the warm-up inputs through every replica on a thread of its own, then marks the
/// predictor warmed up (or records why it could not).
fn start_warmup<M: Model>(replicas: Vec<Arc<M>>, inputs: Vec<M::Input>, warmup: Arc<WarmUp>) {
    let finish = |warmup: &WarmUp, result: Result<(), String>| {
        *warmup.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        warmup.done.notify_all();
    };
    if inputs.is_empty() {
        finish(&warmup, Ok(()));
        return;
    }
    let failed = warmup.clone();
    let run = move || {
        let model = &replicas[0];
        let prepared: Result<Vec<M::Prepared>, _> =
            inputs.into_iter().map(|i| model.prepare(i)).collect();
        let result = match prepared {
            Err(e) => Err(format!("a warm-up input was refused: {e}")),
            Ok(prepared) => replicas.iter().try_for_each(|replica| {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    replica.run_batch(&prepared)
                }));
                match ran {
                    Ok(Ok(out)) => match out.into_iter().find_map(Result::err) {
                        Some(e) => Err(format!("warm-up failed: {e}")),
                        None => Ok(()),
                    },
                    Ok(Err(e)) => Err(format!("warm-up failed: {e}")),
                    Err(_) => Err("the model panicked during warm-up".to_string()),
                }
            }),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "warm-up failed; the predictor will not report ready");
        }
        finish(&warmup, result);
    };
    let spawned = std::thread::Builder::new()
        .name("modelhost-warmup".into())
        .spawn(run);
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the warm-up thread");
        finish(
            &failed,
            Err(format!("cannot start the warm-up thread: {e}")),
        );
    }
}

impl<M: Model> PredictorBuilder<M>
where
    M::Input: std::hash::Hash + Eq + Clone + CacheWeight + Sync,
    M::Output: Clone + CacheWeight + Sync,
{
    /// Answers repeated inputs from `cache` (keyed by this predictor's
    /// [`identity`](Self::identity) and the raw input, so a hit skips preprocessing), and
    /// computes identical requests in flight once. The input's [`CacheWeight`] counts
    /// against the cache's byte bound with the output's.
    pub fn cache(mut self, cache: Arc<PredictionCache<M::Input, M::Output>>) -> Self {
        self.cache = Some(Box::new(move |model, version, instance| {
            Box::new(CacheLayer::new(cache, model, version, instance)) as Box<dyn CachePath<M>>
        }));
        self
    }
}
