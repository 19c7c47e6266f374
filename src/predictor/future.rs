//! [`PredictFuture`]: the answer to an async request, as a plain `Future`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::timer::Alarm;
use super::{Reply, worker_gone};
use crate::cache::FlightOutcome;
use crate::error::{CapacityError, PredictError};
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
    Following(Follow<O>),
    Ready(Option<Result<O, PredictError>>),
}

/// Waiting for an identical request in flight, until the follower's own deadline.
pub(crate) struct Follow<O> {
    receiver: oneshot::Receiver<FlightOutcome<O>>,
    retry: Option<Retry<O>>,
    /// When the follower asked, and its deadline (its own or the predictor's).
    deadline: Option<(Instant, Duration)>,
    alarm: Alarm,
}

impl<O> Follow<O> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Result<Poll<Result<O, PredictError>>, Retry<O>> {
        match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(Some(FlightOutcome::Done(answer))) => return Ok(Poll::Ready(answer)),
            // The leader was cancelled: compute it ourselves (or follow a new leader).
            Poll::Ready(Some(FlightOutcome::Abandoned) | None) => {
                return match self.retry.take() {
                    Some(retry) => Err(retry),
                    None => Ok(Poll::Ready(worker_gone())),
                };
            }
            Poll::Pending => {}
        }
        let Some((started, deadline)) = self.deadline else {
            return Ok(Poll::Pending);
        };
        let Some(at) = started.checked_add(deadline) else {
            return Ok(Poll::Pending);
        };
        if Instant::now() >= at {
            let waited = started.elapsed();
            return Ok(Poll::Ready(Err(CapacityError::DeadlineExceeded {
                waited,
                deadline,
            }
            .into())));
        }
        self.alarm.set(at, cx.waker());
        Ok(Poll::Pending)
    }
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

    /// Follows a flight; gives up with `DeadlineExceeded` once `deadline` has passed since
    /// `started`.
    pub(crate) fn following(
        receiver: oneshot::Receiver<FlightOutcome<O>>,
        retry: Retry<O>,
        deadline: Option<(Instant, Duration)>,
    ) -> Self {
        PredictFuture {
            state: FutureState::Following(Follow {
                receiver,
                retry: Some(retry),
                deadline,
                alarm: Alarm::default(),
            }),
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
                FutureState::Following(follow) => match follow.poll(cx) {
                    Ok(poll) => return poll,
                    Err(retry) => retry().state,
                },
                FutureState::Ready(result) => {
                    return Poll::Ready(result.take().unwrap_or_else(worker_gone));
                }
            };
            self.state = next;
        }
    }
}
