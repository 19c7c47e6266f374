//! [`PredictFuture`]: the answer to an async request, as a plain `Future`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Reply, worker_gone};
use crate::cache::FlightOutcome;
use crate::error::PredictError;
use crate::oneshot;

/// The answer to [`Predictor::predict_async`](crate::Predictor::predict_async); resolves to the prediction or its error.
#[must_use = "a prediction future does nothing unless awaited, and dropping it cancels the request"]
pub struct PredictFuture<O> {
    state: FutureState<O>,
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
