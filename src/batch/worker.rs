//! The worker loop: take a batch, run the model, answer every request in it exactly once.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::Queue;
use crate::error::{PredictError, RuntimeError};
use crate::model::Model;
use crate::predictor::StatsRecorder;

/// Runs batches from `queue` on `model` until the queue is closed and drained.
pub(crate) fn run_worker<M: Model>(
    model: Arc<M>,
    queue: Arc<Queue<M::Prepared, M::Output>>,
    stats: Arc<StatsRecorder>,
) {
    /// Tells the queue when this worker stops, however it stops.
    struct Running<'a, P, O>(&'a Queue<P, O>);
    impl<P, O> Drop for Running<'_, P, O> {
        fn drop(&mut self) {
            self.0.worker_stopped();
        }
    }
    let _running = Running(&queue);
    while let Some(batch) = queue.next_batch() {
        let size = batch.len();
        let mut inputs = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(size);
        for request in batch {
            inputs.push(request.prepared);
            replies.push(request.reply);
        }
        stats.record_batch(size);

        let outcome = catch_unwind(AssertUnwindSafe(|| model.run_batch(&inputs)));
        let error = match outcome {
            Ok(Ok(outputs)) if outputs.len() == size => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    stats.record_outcome(output.is_ok());
                    reply.send(output.map_err(PredictError::from));
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
        for reply in replies {
            stats.record_outcome(false);
            reply.send(Err(error.clone().into()));
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
