//! The bounded request queue shared by callers (producers) and workers (consumers).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::BatchPolicy;
use crate::error::{CapacityError, PredictError};
use crate::oneshot;

/// One accepted request: its prepared input and the channel its answer goes back on.
pub(crate) struct Request<P, O> {
    pub(crate) prepared: P,
    pub(crate) cost: usize,
    pub(crate) enqueued_at: Instant,
    pub(crate) deadline: Option<Duration>,
    pub(crate) reply: oneshot::Sender<Result<O, PredictError>>,
}

impl<P, O> Request<P, O> {
    fn expired(&self, now: Instant) -> Option<CapacityError> {
        let deadline = self.deadline?;
        let waited = now.saturating_duration_since(self.enqueued_at);
        (waited > deadline).then_some(CapacityError::DeadlineExceeded { waited, deadline })
    }
}

struct State<P, O> {
    items: VecDeque<Request<P, O>>,
    queued_cost: usize,
    closed: bool,
}

/// A bounded FIFO of requests with batch formation on the consumer side.
pub(crate) struct Queue<P, O> {
    state: Mutex<State<P, O>>,
    /// Signalled when a request arrives or the queue closes.
    arrived: Condvar,
    /// Signalled when requests leave the queue.
    space: Condvar,
    policy: BatchPolicy,
}

impl<P, O> Queue<P, O> {
    pub(crate) fn new(policy: BatchPolicy) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                queued_cost: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            space: Condvar::new(),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<P, O>> {
        // Every update of the state completes under the lock without calling user code, so
        // a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Accepts a request, or refuses it at once when the queue is full or closed.
    pub(crate) fn push(&self, request: Request<P, O>) -> Result<(), CapacityError> {
        let mut state = self.lock();
        if state.closed {
            return Err(CapacityError::ShuttingDown);
        }
        if state.items.len() >= self.policy.queue_capacity {
            return Err(CapacityError::QueueFull {
                capacity: self.policy.queue_capacity,
            });
        }
        state.queued_cost += request.cost;
        state.items.push_back(request);
        drop(state);
        self.arrived.notify_all();
        Ok(())
    }

    /// Accepts a request, waiting for room while the queue is full. Used for bulk submission
    /// (`predict_many`), where the caller asked for all of its inputs to be computed; the
    /// wait ends because workers always drain the queue. Fails only when the queue closes.
    pub(crate) fn push_wait(&self, request: Request<P, O>) -> Result<(), CapacityError> {
        let mut state = self.lock();
        while !state.closed && state.items.len() >= self.policy.queue_capacity {
            state = self
                .space
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return Err(CapacityError::ShuttingDown);
        }
        state.queued_cost += request.cost;
        state.items.push_back(request);
        drop(state);
        self.arrived.notify_all();
        Ok(())
    }

    /// Stops accepting requests. What was accepted is still handed out by `next_batch`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
        self.space.notify_all();
    }

    /// Blocks until a batch is ready and returns it; `None` once the queue is closed and
    /// empty. Cancelled requests are dropped and expired ones answered on the way.
    pub(crate) fn next_batch(&self) -> Option<Vec<Request<P, O>>> {
        let policy = &self.policy;
        let mut state = self.lock();
        loop {
            while state.items.is_empty() {
                if state.closed {
                    return None;
                }
                state = self
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // The batch window opens when its first request arrived.
            let fire_at = state
                .items
                .front()
                .map_or_else(Instant::now, |r| r.enqueued_at + policy.max_delay);
            loop {
                let full = state.items.len() >= policy.max_batch_size
                    || policy
                        .max_batch_tokens
                        .is_some_and(|budget| state.queued_cost >= budget);
                let now = Instant::now();
                if full || state.closed || now >= fire_at {
                    break;
                }
                state = self
                    .arrived
                    .wait_timeout(state, fire_at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }

            let now = Instant::now();
            let mut batch = Vec::new();
            let mut tokens = 0usize;
            while let Some(front) = state.items.front() {
                let skip = front.reply.is_closed();
                let expired = front.expired(now);
                if !skip && expired.is_none() {
                    if batch.len() >= policy.max_batch_size {
                        break;
                    }
                    if let Some(budget) = policy.max_batch_tokens
                        && !batch.is_empty()
                        && tokens + front.cost > budget
                    {
                        break;
                    }
                }
                let Some(request) = state.items.pop_front() else {
                    break;
                };
                state.queued_cost -= request.cost;
                if let Some(error) = expired {
                    request.reply.send(Err(error.into()));
                } else if !skip {
                    tokens += request.cost;
                    batch.push(request);
                }
            }
            self.space.notify_all();
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }
}
