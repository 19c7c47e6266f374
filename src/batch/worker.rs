//! The worker loop: take a batch, run the model, answer every request in it exactly once.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::{Queue, ReplyTo};
use crate::error::{PredictError, RuntimeError};
use crate::metrics::{Outcome, StatsRecorder};
use crate::model::Model;
use crate::predictor::OutputObserver;

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
    let (model_name, version) = (&*identity.0, &*identity.1);
    while let Some(batch) = queue.next_batch() {
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
        let outcome = span.in_scope(|| catch_unwind(AssertUnwindSafe(|| model.run_batch(&inputs))));
        let compute = started.elapsed();
        stats.record_batch(size, tokens, compute);
        let answer = |stats: &StatsRecorder,
                      reply: ReplyTo<M::Output>,
                      received_at: Instant,
                      answer: Result<M::Output, PredictError>| {
            stats.record(Outcome::of(&answer));
            if stats.instrument {
                stats.latency.record(received_at.elapsed());
            }
            reply.send(answer);
        };
        let error = match outcome {
            Ok(Ok(outputs)) if outputs.len() == size => {
                for ((reply, received_at), output) in replies.into_iter().zip(outputs) {
                    match &output {
                        Err(e) => {
                            tracing::warn!(model = model_name, version, error = %e, "an item of a batch failed")
                        }
                        Ok(out) => {
                            if let Some((rate, observe)) = &observe
                                && crate::util::sampled(*rate)
                            {
                                let _ = catch_unwind(AssertUnwindSafe(|| observe(out)));
                            }
                        }
                    }
                    answer(
                        &stats,
                        reply,
                        received_at,
                        output.map_err(PredictError::from),
                    );
                }
                continue;
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
            answer(&stats, reply, received_at, Err(error.clone().into()));
        }
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
