//! The worker loop: take a batch, run the model, answer every request in it exactly once.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::{Queue, ReplyTo, Request};
use crate::error::{PredictError, RuntimeError};
use crate::metrics::{Outcome, StatsRecorder};
use crate::model::Model;

/// Sees sampled successful outputs on the worker thread (e.g. a drift monitor).
pub(crate) type OutputObserver<O> = Arc<dyn Fn(&O) + Send + Sync>;

/// What one worker needs besides its queue.
struct Worker<M: Model> {
    model: Arc<M>,
    stats: Arc<StatsRecorder>,
    /// (model name, version), for spans and logs.
    identity: (Arc<str>, Arc<str>),
    observe: Option<(f64, OutputObserver<M::Output>)>,
}

/// Runs batches from `queue` on `model` until the queue is closed and drained.
pub(crate) fn run_worker<M: Model>(
    model: Arc<M>,
    queue: Arc<Queue<M::Prepared, M::Output>>,
    stats: Arc<StatsRecorder>,
    identity: (Arc<str>, Arc<str>),
    observe: Option<(f64, OutputObserver<M::Output>)>,
) {
    /// Tells the queue when this worker stops, however it stops.
    struct Running<'a, P, O>(&'a Queue<P, O>);
    impl<P, O> Drop for Running<'_, P, O> {
        fn drop(&mut self) {
            self.0.worker_stopped();
        }
    }
    let _running = Running(&queue);
    let worker = Worker {
        model,
        stats,
        identity,
        observe,
    };
    while let Some(batch) = queue.next_batch() {
        worker.run(batch);
    }
}

impl<M: Model> Worker<M> {
    /// Runs one batch and answers each of its requests once.
    fn run(&self, batch: Vec<Request<M::Prepared, M::Output>>) {
        let stats = &self.stats;
        let (model_name, version) = (&*self.identity.0, &*self.identity.1);
        let size = batch.len();
        let started = Instant::now();
        let mut inputs = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(size);
        let mut tokens = 0;
        for request in batch {
            if stats.instrument {
                stats
                    .queue_wait
                    .record(started.saturating_duration_since(request.enqueued_at));
            }
            tokens += request.cost;
            inputs.push(request.prepared);
            replies.push((request.reply, request.received_at));
        }
        let span = if stats.instrument {
            tracing::debug_span!("modelhost.batch", model = model_name, version, size, tokens)
        } else {
            tracing::Span::none()
        };
        let outcome =
            span.in_scope(|| catch_unwind(AssertUnwindSafe(|| self.model.run_batch(&inputs))));
        stats.record_batch(size, tokens, started.elapsed());
        let error = match outcome {
            Ok(Ok(outputs)) if outputs.len() == size => {
                for ((reply, received_at), output) in replies.into_iter().zip(outputs) {
                    self.observe_output(&output);
                    self.answer(reply, received_at, output.map_err(PredictError::from));
                }
                return;
            }
            Ok(Ok(outputs)) => RuntimeError::OutputCount {
                expected: size,
                got: outputs.len(),
            },
            Ok(Err(error)) => error,
            Err(panic) => RuntimeError::Panicked {
                batch_size: size,
                message: panic_message(panic.as_ref()),
            },
        };
        tracing::error!(model = model_name, version, batch_size = size, error = %error, "batch failed");
        for (reply, received_at) in replies {
            self.answer(reply, received_at, Err(error.clone().into()));
        }
    }

    /// Logs an item that failed alone; hands a sample of successes to the observer.
    fn observe_output(&self, output: &Result<M::Output, RuntimeError>) {
        let (model_name, version) = (&*self.identity.0, &*self.identity.1);
        match output {
            Err(e) => {
                tracing::warn!(model = model_name, version, error = %e, "an item of a batch failed")
            }
            Ok(out) => {
                if let Some((rate, observe)) = &self.observe
                    && crate::util::sampled(*rate)
                {
                    let _ = catch_unwind(AssertUnwindSafe(|| observe(out)));
                }
            }
        }
    }

    fn answer(
        &self,
        reply: ReplyTo<M::Output>,
        received_at: Instant,
        answer: Result<M::Output, PredictError>,
    ) {
        self.stats.record(Outcome::of(&answer));
        if self.stats.instrument {
            self.stats.latency.record(received_at.elapsed());
        }
        reply.send(answer);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
