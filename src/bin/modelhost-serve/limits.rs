//! Limits and fairness: how many rows one request may carry, and how much of the queues
//! multi-row ("bulk") requests may hold at once, so that a bulk client cannot starve
//! one-row requests of queue room.

use std::sync::Arc;

use axum::http::StatusCode;
use modelhost::Model;
use modelhost::error::{CapacityError, PredictError, RuntimeError};
use modelhost::registry::{Routed, VersionHandle};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::pool::{Panicked, Pool};

/// What one request may ask, and the room bulk requests share.
pub(crate) struct Admission {
    /// Rows one request may carry (413 above).
    max_rows: usize,
    /// Rows of bulk requests queued at once, across every model: the rest of each queue is
    /// kept for one-row requests.
    bulk_rows: usize,
    bulk: Arc<Semaphore>,
    /// The threads that prepare rows (tokenize, decode, queue), and a permit per thread:
    /// a request waits for a permit (cancellably) before its job is handed over.
    pool: Pool,
    preparing: Semaphore,
}

type Answers<O> = Vec<Result<Routed<O>, PredictError>>;

/// A queued row's answer.
type Pending<O> = std::pin::Pin<Box<dyn Future<Output = Result<Routed<O>, PredictError>> + Send>>;

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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = PREPARING_PER_CORE * cores.max(2);
        Admission {
            max_rows: max_rows.max(1),
            bulk_rows,
            bulk: Arc::new(Semaphore::new(bulk_rows)),
            pool: Pool::new(threads),
            preparing: Semaphore::new(threads),
        }
    }

    /// Runs `f` (work on rows: tokenizing, decoding, queueing) on the preparing threads
    /// ([`PREPARING_PER_CORE`] per core), waiting for a free one; an error if it panicked.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        // Never closed: acquiring fails only on a closed semaphore.
        let _permit = self.preparing.acquire().await;
        self.pool.run(f).await
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

    /// Predicts every row with `handle`. Rows are prepared (tokenized, decoded) on the
    /// blocking pool, never on the async workers, in chunks of at most `CHUNK` rows, so a
    /// timeout or a disconnect stops a request within one chunk. A one-row request is
    /// queued at once (a full queue answers 429). A bulk request's chunks each wait (in
    /// arrival order among bulk requests) until bulk requests hold fewer than `bulk_rows`
    /// queued rows in all. Dropping the future cancels the queued rows and queues no more.
    pub(crate) async fn predict<M: Model>(
        &self,
        handle: &VersionHandle<M>,
        inputs: Vec<M::Input>,
    ) -> Answers<M::Output> {
        let bulk = inputs.len() > 1;
        let mut answers = Vec::with_capacity(inputs.len());
        let mut rows = inputs.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<M::Input> = rows.by_ref().take(self.bulk_rows.min(CHUNK)).collect();
            let permit = match bulk {
                true => match self.bulk.acquire_many(chunk.len() as u32).await {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        answers.extend(chunk.iter().map(|_| Err(shutting_down())));
                        continue;
                    }
                },
                false => None,
            };
            // Queued together, the rows form the batches `predict_many` would.
            // A one-row request is shed when the queue is full; a bulk chunk waits for room.
            let (handle, n) = (handle.clone(), chunk.len());
            let submit = move || -> Vec<Pending<M::Output>> {
                if bulk {
                    let pending = handle.predict_many_async(chunk).into_iter();
                    pending.map(|f| Box::pin(f) as Pending<M::Output>).collect()
                } else {
                    let pending = chunk.into_iter().map(|i| handle.predict_async(i));
                    pending.map(|f| Box::pin(f) as Pending<M::Output>).collect()
                }
            };
            let Ok(pending) = self.blocking(submit).await else {
                // Preparing panicked (a model's bug): each of the chunk's rows says so.
                answers.extend((0..n).map(|_| Err(prepare_panicked())));
                continue;
            };
            for answer in pending {
                answers.push(answer.await);
            }
            drop(permit);
        }
        answers
    }
}

/// Blocking tasks preparing rows at once, per core: one computing while another waits
/// (for the model's thread pool, or for queue room).
const PREPARING_PER_CORE: usize = 2;

/// The most rows prepared in one go: bounds the work a timed-out or abandoned request
/// still finishes.
const CHUNK: usize = 64;

fn prepare_panicked() -> PredictError {
    PredictError::Runtime(RuntimeError::Backend {
        message: "preparing this row failed unexpectedly (a panic in the model's prepare)".into(),
    })
}

fn shutting_down() -> PredictError {
    PredictError::Capacity(CapacityError::ShuttingDown)
}
