//! [`Predictor`]: prepare on the caller's thread → bounded queue → batched worker → reply.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::batch::{BatchPolicy, Grouping, Queue, ReplyTo, Request, run_worker};
use crate::cache::{CacheLayer, CachePath, CacheWeight, FlightOutcome, PredictionCache};
use crate::error::{CapacityError, ConfigError, PredictError};
use crate::metrics::{Outcome, PredictorStats, StatsRecorder};
use crate::model::{Model, Signature};
use crate::oneshot;

/// Liveness and readiness of a predictor, for health endpoints and orchestrators.
#[derive(Debug, Clone, PartialEq, Eq)]
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
struct WarmUp {
    state: Mutex<Option<Result<(), String>>>,
    done: std::sync::Condvar,
}

/// A handle that does not keep a predictor alive (for metrics exporters).
pub(crate) struct WeakPredictor<M: Model>(std::sync::Weak<Shared<M>>);

impl<M: Model> WeakPredictor<M> {
    pub(crate) fn upgrade(&self) -> Option<Predictor<M>> {
        self.0.upgrade().map(|shared| Predictor { shared })
    }
}

/// Per-request settings for [`Predictor::predict_with`] and
/// [`Predictor::predict_async_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Drop the request with `DeadlineExceeded` if it waits longer than this in the queue;
    /// overrides the predictor's default deadline.
    pub deadline: Option<Duration>,
}

impl RequestOptions {
    /// Options with a deadline.
    pub fn deadline(deadline: Duration) -> Self {
        RequestOptions {
            deadline: Some(deadline),
        }
    }
}

/// Serves one [`Model`]: validates and preprocesses inputs on the caller's thread, batches
/// them dynamically on a worker thread, and hands each caller its own output.
///
/// A `Predictor` is a cheap handle: clone it into every thread that predicts. The worker
/// stops when the last handle is dropped or [`shutdown`](Predictor::shutdown) is called, and
/// in both cases every request accepted before then is answered.
pub struct Predictor<M: Model> {
    shared: Arc<Shared<M>>,
}

impl<M: Model> Clone for Predictor<M> {
    fn clone(&self) -> Self {
        Predictor {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Model> fmt::Debug for Predictor<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Predictor")
            .field("model", &self.shared.signature.name)
            .field("policy", &self.shared.policy)
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

struct Shared<M: Model> {
    model: Arc<M>,
    signature: Signature,
    queue: Arc<Queue<M::Prepared, M::Output>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<StatsRecorder>,
    policy: BatchPolicy,
    deadline: Option<Duration>,
    cache: Option<Box<dyn CachePath<M>>>,
    /// (model name, version) in cache keys, metrics and spans.
    identity: (Arc<str>, Arc<str>),
    next_request_id: std::sync::atomic::AtomicU64,
    warmup: Arc<WarmUp>,
    observe_inputs: Option<(f64, InputObserver<M>)>,
}

/// Sees sampled inputs before preprocessing (e.g. a drift monitor).
type InputObserver<M> = Box<dyn Fn(&<M as Model>::Input) + Send + Sync>;

/// Sees sampled successful outputs on the worker thread (e.g. a drift monitor).
pub(crate) type OutputObserver<O> = Arc<dyn Fn(&O) + Send + Sync>;

impl<M: Model> Shared<M> {
    fn shutdown(&self) {
        self.queue.close();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let current = std::thread::current().id();
        for worker in workers {
            // A model that drops the last handle from inside `run_batch` must not join itself.
            if worker.thread().id() != current {
                let _ = worker.join();
            }
        }
    }
}

impl<M: Model> Drop for Shared<M> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<M: Model> Predictor<M> {
    /// Starts configuring a predictor for `model`.
    pub fn builder(model: M) -> PredictorBuilder<M> {
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

    /// Predicts one input, blocking the calling thread until the answer is there.
    pub fn predict(&self, input: M::Input) -> Result<M::Output, PredictError> {
        self.predict_with(input, &RequestOptions::default())
    }

    /// [`predict`](Predictor::predict) with per-request options (e.g. a deadline).
    pub fn predict_with(
        &self,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<M::Output, PredictError> {
        let _span = self.request_span().entered();
        if let Some(cache) = &self.shared.cache {
            return cache.predict(self, input, options);
        }
        self.predict_uncached(input, options)
    }

    /// A `tracing` span for one request: model, version and a request id unique within this
    /// predictor. Disabled (free) when instrumentation is off or no subscriber wants it.
    fn request_span(&self) -> tracing::Span {
        if !self.shared.stats.instrument {
            return tracing::Span::none();
        }
        let (model, version) = (&*self.shared.identity.0, &*self.shared.identity.1);
        let span = tracing::debug_span!(
            "modelhost.request",
            model,
            version,
            request_id = tracing::field::Empty
        );
        if !span.is_disabled() {
            let id = self
                .shared
                .next_request_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            span.record("request_id", id);
        }
        span
    }

    pub(crate) fn predict_uncached(
        &self,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<M::Output, PredictError> {
        self.submit(input, options)?
            .recv()
            .unwrap_or_else(worker_gone)
    }

    /// Predicts one input as a `Future` that any executor (or none: it is a plain oneshot)
    /// can drive. Validation and preprocessing run now, on the calling thread; dropping the
    /// future cancels the request if it has not been computed yet (unless, with a cache, it
    /// leads a flight that identical requests are waiting on: then it is computed for them).
    pub fn predict_async(&self, input: M::Input) -> PredictFuture<M::Output> {
        self.predict_async_with(input, &RequestOptions::default())
    }

    /// [`predict_async`](Predictor::predict_async) with per-request options.
    pub fn predict_async_with(
        &self,
        input: M::Input,
        options: &RequestOptions,
    ) -> PredictFuture<M::Output> {
        let _span = self.request_span().entered();
        if let Some(cache) = &self.shared.cache {
            return cache.predict_async(self, input, options);
        }
        self.predict_async_uncached(input, options)
    }

    pub(crate) fn predict_async_uncached(
        &self,
        input: M::Input,
        options: &RequestOptions,
    ) -> PredictFuture<M::Output> {
        match self.submit(input, options) {
            Ok(receiver) => PredictFuture::waiting(receiver),
            Err(error) => PredictFuture::ready(Err(error)),
        }
    }

    /// Submits `input` without waiting: `on_answer` receives the answer on the worker thread
    /// (it must return quickly). The cache is bypassed. Used for shadow traffic.
    pub(crate) fn submit_detached(
        &self,
        input: M::Input,
        on_answer: impl FnOnce(Result<M::Output, PredictError>) + Send + 'static,
    ) -> Result<(), PredictError> {
        let stats = &self.shared.stats;
        let prepared = self
            .shared
            .model
            .prepare(input)
            .inspect_err(|_| stats.record(Outcome::InputError))?;
        let now = Instant::now();
        let request = Request {
            cost: self.shared.model.cost(&prepared),
            prepared,
            received_at: now,
            enqueued_at: now,
            deadline: self.shared.deadline,
            reply: ReplyTo::Detached(Box::new(on_answer)),
        };
        self.shared
            .queue
            .push(request)
            .inspect_err(|e| stats.record(Outcome::of_capacity(e)))?;
        Ok(())
    }

    /// The model name and version this predictor's cache entries are keyed by.
    pub fn identity(&self) -> (&str, &str) {
        (&self.shared.identity.0, &self.shared.identity.1)
    }

    /// Predicts many inputs: preprocesses them in parallel (rayon), submits them as one
    /// group and returns one result per input, in input order. A bad input fails alone.
    /// When the group is larger than the free room in the queue, submission waits for room
    /// rather than shedding the caller's own inputs.
    pub fn predict_many(
        &self,
        inputs: impl IntoIterator<Item = M::Input>,
    ) -> Vec<Result<M::Output, PredictError>> {
        let inputs: Vec<M::Input> = inputs.into_iter().collect();
        if let Some(cache) = &self.shared.cache {
            return cache.predict_many(self, inputs);
        }
        self.submit_many(inputs)
            .into_iter()
            .map(|receiver| receiver.and_then(|r| r.recv().unwrap_or_else(worker_gone)))
            .collect()
    }

    /// Prepares `inputs` in parallel and queues them (waiting for room), without the cache.
    pub(crate) fn submit_many(
        &self,
        inputs: Vec<M::Input>,
    ) -> Vec<Result<Reply<M::Output>, PredictError>> {
        let flights = inputs.iter().map(|_| None).collect();
        self.submit_many_leading(inputs, flights)
    }

    /// [`submit_many`](Self::submit_many), each request with its cache flight if any.
    pub(crate) fn submit_many_leading(
        &self,
        inputs: Vec<M::Input>,
        flights: Vec<Option<Box<dyn CompleteFlight<M::Output>>>>,
    ) -> Vec<Result<Reply<M::Output>, PredictError>> {
        let model = &self.shared.model;
        inputs.iter().for_each(|input| self.observe_input(input));
        let prepared: Vec<_> = inputs
            .into_par_iter()
            .map(|input| model.prepare(input))
            .collect();
        let stats = &self.shared.stats;
        prepared
            .into_iter()
            .zip(flights)
            .map(|(prepared, flight)| {
                let prepared = prepared.inspect_err(|_| stats.record(Outcome::InputError))?;
                let (request, receiver) = self.request(prepared, self.shared.deadline, flight);
                self.shared
                    .queue
                    .push_wait(request)
                    .inspect_err(|e| stats.record(Outcome::of_capacity(e)))?;
                Ok(receiver)
            })
            .collect()
    }

    /// The model being served.
    pub fn model(&self) -> &M {
        &self.shared.model
    }

    /// The model's signature.
    pub fn signature(&self) -> &Signature {
        &self.shared.signature
    }

    /// The batching policy in force.
    pub fn policy(&self) -> &BatchPolicy {
        &self.shared.policy
    }

    /// Requests waiting in the queue now.
    pub fn queue_len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Counters, latency percentiles and batch statistics since the predictor started.
    pub fn stats(&self) -> PredictorStats {
        self.shared.stats.snapshot()
    }

    pub(crate) fn recorder(&self) -> &Arc<StatsRecorder> {
        &self.shared.stats
    }

    fn observe_input(&self, input: &M::Input) {
        if let Some((rate, observe)) = &self.shared.observe_inputs
            && crate::util::sampled(*rate)
        {
            observe(input);
        }
    }

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

    /// Stops taking requests, answers every request already accepted, and joins the
    /// workers. Later calls on any handle fail with
    /// [`CapacityError::ShuttingDown`](crate::CapacityError::ShuttingDown).
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    fn request(
        &self,
        prepared: M::Prepared,
        deadline: Option<Duration>,
        flight: Option<Box<dyn CompleteFlight<M::Output>>>,
    ) -> (Job<M>, Reply<M::Output>) {
        let (sender, receiver) = oneshot::channel();
        let reply = match flight {
            Some(flight) => ReplyTo::Lead(sender, flight),
            None => ReplyTo::Caller(sender),
        };
        let now = Instant::now();
        let request = Request {
            cost: self.shared.model.cost(&prepared),
            prepared,
            received_at: now,
            enqueued_at: now,
            deadline,
            reply,
        };
        (request, receiver)
    }

    pub(crate) fn submit(
        &self,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<Reply<M::Output>, PredictError> {
        self.submit_leading(input, options, None)
    }

    /// Submits one request; with a flight, the worker completes it with the answer.
    pub(crate) fn submit_leading(
        &self,
        input: M::Input,
        options: &RequestOptions,
        flight: Option<Box<dyn CompleteFlight<M::Output>>>,
    ) -> Result<Reply<M::Output>, PredictError> {
        let received_at = Instant::now();
        self.observe_input(&input);
        let stats = &self.shared.stats;
        let prepared = self.shared.model.prepare(input).inspect_err(|e| {
            stats.record(Outcome::InputError);
            tracing::debug!(model = %self.shared.identity.0, version = %self.shared.identity.1, error = %e, "input refused");
        })?;
        let (mut request, receiver) =
            self.request(prepared, options.deadline.or(self.shared.deadline), flight);
        request.received_at = received_at;
        self.shared.queue.push(request).inspect_err(|e| {
            stats.record(Outcome::of_capacity(e));
            tracing::debug!(model = %self.shared.identity.0, version = %self.shared.identity.1, error = %e, "request shed");
        })?;
        Ok(receiver)
    }
}

/// A request as the queue of a predictor of `M` holds it.
type Job<M> = Request<<M as Model>::Prepared, <M as Model>::Output>;

/// The caller's end of a request's reply channel.
pub(crate) type Reply<O> = oneshot::Receiver<Result<O, PredictError>>;

pub(crate) fn worker_gone<O>() -> Result<O, PredictError> {
    Err(CapacityError::WorkerGone.into())
}

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
    /// The most requests in one batch (default 32).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.policy.max_batch_size = n;
        self
    }

    /// The most cost units (tokens, for text models) in one batch (default: no budget).
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
    /// signature's name and version `"0"`). A [`Registry`](crate::Registry) sets them.
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
    /// preprocessing: feed a [`DriftMonitor`](crate::DriftMonitor) with input features.
    pub fn observe_inputs(
        mut self,
        rate: f64,
        f: impl Fn(&M::Input) + Send + Sync + 'static,
    ) -> Self {
        self.observe_inputs = Some((rate, Box::new(f)));
        self
    }

    /// Calls `f` with a `rate` (0..=1) sample of successful outputs, on the worker thread
    /// (keep it quick): feed a [`DriftMonitor`](crate::DriftMonitor) with embeddings or
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
        let queue = Arc::new(Queue::new(self.policy.clone(), stats.clone()));
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
    M::Input: std::hash::Hash + Eq + Clone + Sync,
    M::Output: Clone + CacheWeight + Sync,
{
    /// Answers repeated inputs from `cache` (keyed by this predictor's
    /// [`identity`](Self::identity) and the raw input, so a hit skips preprocessing), and
    /// computes identical requests in flight once.
    pub fn cache(mut self, cache: Arc<PredictionCache<M::Input, M::Output>>) -> Self {
        self.cache = Some(Box::new(move |model, version, instance| {
            Box::new(CacheLayer::new(cache, model, version, instance)) as Box<dyn CachePath<M>>
        }));
        self
    }
}

/// The answer to [`Predictor::predict_async`]; resolves to the prediction or its error.
#[must_use = "a prediction future does nothing unless awaited, and dropping it cancels the request"]
pub struct PredictFuture<O> {
    state: FutureState<O>,
}

/// Completes a cache flight with the answer its leader received.
pub(crate) trait CompleteFlight<O>: Send {
    fn complete(self: Box<Self>, result: &Result<O, PredictError>);
}

/// Starts the request again when the flight it followed was abandoned.
pub(crate) type Retry<O> = Box<dyn FnOnce() -> PredictFuture<O> + Send>;

enum FutureState<O> {
    Waiting(Reply<O>),
    Following(oneshot::Receiver<FlightOutcome<O>>, Option<Retry<O>>),
    Ready(Option<Result<O, PredictError>>),
}

impl<O> PredictFuture<O> {
    pub(crate) fn waiting(reply: Reply<O>) -> Self {
        PredictFuture {
            state: FutureState::Waiting(reply),
        }
    }

    pub(crate) fn ready(result: Result<O, PredictError>) -> Self {
        PredictFuture {
            state: FutureState::Ready(Some(result)),
        }
    }

    pub(crate) fn following(rx: oneshot::Receiver<FlightOutcome<O>>, retry: Retry<O>) -> Self {
        PredictFuture {
            state: FutureState::Following(rx, Some(retry)),
        }
    }
}

impl<O> fmt::Debug for PredictFuture<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            FutureState::Waiting(_) => "waiting",
            FutureState::Following(..) => "waiting for an identical request",
            FutureState::Ready(_) => "ready",
        };
        f.debug_struct("PredictFuture")
            .field("state", &state)
            .finish()
    }
}

// Nothing is structurally pinned: the output is only ever moved out, never polled in place.
impl<O> Unpin for PredictFuture<O> {}

impl<O> Future for PredictFuture<O> {
    type Output = Result<O, PredictError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match &mut self.state {
                FutureState::Waiting(receiver) => {
                    return Pin::new(receiver)
                        .poll(cx)
                        .map(|answer| answer.unwrap_or_else(worker_gone));
                }
                FutureState::Following(receiver, retry) => match Pin::new(receiver).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(FlightOutcome::Done(answer))) => return Poll::Ready(answer),
                    // The leader was cancelled: compute it ourselves (or follow a new leader).
                    Poll::Ready(Some(FlightOutcome::Abandoned) | None) => match retry.take() {
                        Some(retry) => retry().state,
                        None => return Poll::Ready(worker_gone()),
                    },
                },
                FutureState::Ready(result) => {
                    return Poll::Ready(result.take().unwrap_or_else(worker_gone));
                }
            };
            self.state = next;
        }
    }
}
