//! [`Predictor`]: prepare on the caller's thread → bounded queue → batched worker → reply.
//!
//! The handle and its request paths live here; [`PredictorBuilder`] in `builder`, the
//! async answer in `future`, health and metrics export in `health`, and the cache's place
//! in the request path (look up before `prepare`, lead or follow a flight) in `cached`.

mod builder;
mod cached;
mod future;
mod health;
mod timer;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

pub use builder::PredictorBuilder;
pub use future::PredictFuture;
pub use health::Health;

use crate::batch::{AnswerHook, BatchPolicy, Queue, ReplyTo, Request};
use crate::error::{CapacityError, PredictError};
use crate::metrics::{Outcome, PredictorStats, StatsRecorder};
use crate::model::{Model, Signature};
use crate::oneshot;
use cached::CachePath;
use health::WarmUp;

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
    /// Last, so it drops after the model and everything else: gives the memory they freed
    /// back to the system.
    _release: crate::util::ReleaseFreedMemory,
}

/// Sees sampled inputs before preprocessing (e.g. a drift monitor).
type InputObserver<M> = Box<dyn Fn(&<M as Model>::Input) + Send + Sync>;

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
        PredictorBuilder::new(model)
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
        let request = self.job(
            prepared,
            self.shared.deadline,
            ReplyTo::Detached(Box::new(on_answer)),
        );
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

    /// [`predict_many`](Self::predict_many) as futures, one per input in input order:
    /// the inputs are preprocessed in parallel and queued together now (waiting for room
    /// in the queue, on this thread), so the batcher sees them as one group, as with
    /// `predict_many`; each future resolves to its input's answer, and dropping one cancels
    /// its request. With a cache, each input goes through the cache as
    /// [`predict_async`](Self::predict_async) does.
    pub fn predict_many_async(
        &self,
        inputs: impl IntoIterator<Item = M::Input>,
    ) -> Vec<PredictFuture<M::Output>> {
        let inputs: Vec<M::Input> = inputs.into_iter().collect();
        if self.shared.cache.is_some() {
            return inputs.into_iter().map(|i| self.predict_async(i)).collect();
        }
        self.submit_many(inputs)
            .into_iter()
            .map(|submitted| match submitted {
                Ok(reply) => PredictFuture::waiting(reply),
                Err(error) => PredictFuture::ready(Err(error)),
            })
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
        flights: Vec<Option<AnswerHook<M::Output>>>,
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

    /// Stops taking requests, answers every request already accepted, and joins the
    /// workers. Later calls on any handle fail with
    /// [`CapacityError::ShuttingDown`](crate::error::CapacityError::ShuttingDown).
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    fn request(
        &self,
        prepared: M::Prepared,
        deadline: Option<Duration>,
        flight: Option<AnswerHook<M::Output>>,
    ) -> (Job<M>, Reply<M::Output>) {
        let (sender, receiver) = self.shared.queue.reply_channel();
        let reply = match flight {
            Some(hook) => ReplyTo::Shared(sender, hook),
            None => ReplyTo::Caller(sender),
        };
        (self.job(prepared, deadline, reply), receiver)
    }

    /// A queued request for `prepared`, received now.
    fn job(
        &self,
        prepared: M::Prepared,
        deadline: Option<Duration>,
        reply: ReplyTo<M::Output>,
    ) -> Job<M> {
        let now = Instant::now();
        Request {
            cost: self.shared.model.cost(&prepared),
            prepared,
            received_at: now,
            enqueued_at: now,
            deadline,
            reply,
        }
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
        flight: Option<AnswerHook<M::Output>>,
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
