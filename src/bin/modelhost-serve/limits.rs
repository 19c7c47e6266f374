//! Limits and fairness: how many rows one request may carry, and how much of the queues
//! multi-row ("bulk") requests may hold at once, so that a bulk client cannot starve
//! one-row requests of queue room.

use std::sync::Arc;

use axum::http::StatusCode;
use modelhost::Model;
use modelhost::error::{CapacityError, PredictError};
use modelhost::registry::{Routed, VersionHandle};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// What one request may ask, and the room bulk requests share.
pub(crate) struct Admission {
    /// Rows one request may carry (413 above).
    max_rows: usize,
    /// Rows of bulk requests queued at once, across every model: the rest of each queue is
    /// kept for one-row requests.
    bulk_rows: usize,
    bulk: Arc<Semaphore>,
}

type Answers<O> = Vec<Result<Routed<O>, PredictError>>;

/// The process's admission, set once at start-up (every route's rows go through it).
static ADMISSION: std::sync::OnceLock<Admission> = std::sync::OnceLock::new();

/// Sets the process's admission; the first call wins.
pub(crate) fn install(admission: Admission) {
    let _ = ADMISSION.set(admission);
}

/// The process's admission (defaults until `install` is called: 1024 rows per request,
/// 512 bulk rows).
pub(crate) fn admission() -> &'static Admission {
    ADMISSION.get_or_init(|| Admission::new(1024, 512))
}

impl Admission {
    pub(crate) fn new(max_rows: usize, bulk_rows: usize) -> Self {
        let bulk_rows = bulk_rows.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Admission {
            max_rows: max_rows.max(1),
            bulk_rows,
            bulk: Arc::new(Semaphore::new(bulk_rows)),
        }
    }

    /// A 413 naming the limit when a request carries more rows than one request may.
    pub(crate) fn check_rows(&self, rows: usize) -> ApiResult<()> {
        self.check_count(rows, "rows")
    }

    /// [`check_rows`](Self::check_rows) for `count` items of a request that calls its
    /// rows `what` (texts, inputs, instances).
    pub(crate) fn check_count(&self, count: usize, what: &str) -> ApiResult<()> {
        if count > self.max_rows {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request has {count} {what}; this server takes at most {} per request \
                     (--max-client-batch-size): split it",
                    self.max_rows
                ),
            ));
        }
        Ok(())
    }

    /// Predicts every row with `handle`. A one-row request is queued at once (a full queue
    /// answers 429). A bulk request's rows are queued in chunks, each waiting (in arrival
    /// order among bulk requests) until bulk requests hold fewer than `bulk_rows` queued
    /// rows in all. Dropping the future — the client went away — cancels the queued rows
    /// and queues no more.
    pub(crate) async fn predict<M: Model>(
        &self,
        handle: &VersionHandle<M>,
        inputs: Vec<M::Input>,
    ) -> Answers<M::Output> {
        if inputs.len() <= 1 {
            let mut answers = Vec::with_capacity(inputs.len());
            for input in inputs {
                answers.push(handle.predict_async(input).await);
            }
            return answers;
        }
        let mut answers = Vec::with_capacity(inputs.len());
        let mut rows = inputs.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<M::Input> = rows.by_ref().take(self.bulk_rows).collect();
            let Ok(_permit) = self.bulk.acquire_many(chunk.len() as u32).await else {
                answers.extend(chunk.iter().map(|_| Err(shutting_down())));
                continue;
            };
            // Preparing (tokenizing, decoding) a chunk takes a while: off the async workers.
            // Queued together, the rows form the batches `predict_many` would.
            let pending = tokio::task::block_in_place(|| handle.predict_many_async(chunk));
            for answer in pending {
                answers.push(answer.await);
            }
        }
        answers
    }
}

fn shutting_down() -> PredictError {
    PredictError::Capacity(CapacityError::ShuttingDown)
}
