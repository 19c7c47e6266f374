//! The bounded request queue shared by callers (producers) and workers (consumers).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{BatchPolicy, Grouping};
use crate::error::{CapacityError, PredictError};
use crate::metrics::{Outcome, StatsRecorder};
use crate::model::BatchCost;
use crate::oneshot;

/// One accepted request: its prepared input and the channel its answer goes back on.
pub(crate) struct Request<P, O> {
    pub(crate) prepared: P,
    pub(crate) cost: usize,
    /// When the caller asked (before preprocessing): the start of its end-to-end latency.
    pub(crate) received_at: Instant,
    pub(crate) enqueued_at: Instant,
    pub(crate) deadline: Option<Duration>,
    pub(crate) reply: ReplyTo<O>,
}

/// Where a request's answer goes.
pub(crate) enum ReplyTo<O> {
    /// A caller waiting on the other end of a oneshot.
    Caller(oneshot::Sender<Result<O, PredictError>>),
    /// A fire-and-forget request (a shadow copy): the callback gets the answer on the
    /// worker thread and must return quickly.
    Detached(Box<dyn FnOnce(Result<O, PredictError>) + Send>),
    /// A caller whose answer others wait for too (e.g. identical requests coalesced by a
    /// cache): the hook sees the answer first, then the caller gets it if it is still
    /// there. Computed even if its caller has gone, because of those others.
    Shared(oneshot::Sender<Result<O, PredictError>>, AnswerHook<O>),
}

/// Sees a request's answer on the worker thread before its caller does; must be quick.
pub(crate) type AnswerHook<O> = Box<dyn FnOnce(&Result<O, PredictError>) + Send>;

impl<O> ReplyTo<O> {
    /// True when nobody wants the answer any more.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Caller(sender) => sender.is_closed(),
            ReplyTo::Detached(_) | ReplyTo::Shared(..) => false,
        }
    }

    /// Delivers the answer.
    pub(crate) fn send(self, answer: Result<O, PredictError>) {
        match self {
            ReplyTo::Caller(sender) => sender.send(answer),
            ReplyTo::Shared(sender, hook) => {
                hook(&answer);
                sender.send(answer);
            }
            ReplyTo::Detached(callback) => {
                // A callback's panic must not take the worker down with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(answer)));
            }
        }
    }
}

impl<P, O> Request<P, O> {
    /// The latest moment its batch should start: half its deadline after it arrived, so a
    /// request with a short deadline does not spend it waiting for company.
    fn fire_by(&self) -> Option<Instant> {
        self.enqueued_at.checked_add(self.deadline? / 2)
    }

    fn expires_at(&self) -> Option<Instant> {
        self.enqueued_at.checked_add(self.deadline?)
    }

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
    /// The earliest `fire_by` among the waiting requests.
    fire_by: Option<Instant>,
    /// Workers running; when the last one dies the queue fails what it holds.
    workers: usize,
    /// The earliest moment a waiting request passes its deadline (a lower bound).
    expires_at: Option<Instant>,
    /// Full scans for cancelled and expired requests so far.
    scans: u64,
}

impl<P, O> State<P, O> {
    fn refresh_fire_by(&mut self) {
        self.fire_by = self.items.iter().filter_map(Request::fire_by).min();
        self.expires_at = self.items.iter().filter_map(Request::expires_at).min();
    }
}

/// Answers to send once the queue's lock is released (sending may run a waker or a
/// callback, which must never run under the lock).
type Expired<O> = Vec<(ReplyTo<O>, CapacityError)>;

fn send_all<O>(expired: Expired<O>, stats: &StatsRecorder) {
    for (reply, error) in expired {
        stats.record(Outcome::of_capacity(&error));
        reply.send(Err(error.into()));
    }
}

/// A bounded FIFO of requests with batch formation on the consumer side.
pub(crate) struct Queue<P, O> {
    state: Mutex<State<P, O>>,
    /// Signalled when a request arrives or the queue closes.
    arrived: Condvar,
    /// Signalled when requests leave the queue.
    space: Condvar,
    /// Requests waiting, readable without the lock (for the worker's brief spin).
    waiting: AtomicUsize,
    policy: BatchPolicy,
    /// How the model counts a batch against `policy.max_batch_tokens`.
    cost: BatchCost,
    stats: Arc<StatsRecorder>,
    /// Callers that dropped their receiver before the answer since the last scan: while it
    /// is 0 and no deadline has passed, a full queue holds no slot to give back.
    cancels: Arc<AtomicUsize>,
}

/// How long an idle worker polls for a new request before it sleeps on the condition
/// variable. Waking a sleeping thread costs tens of microseconds on a busy or virtualised
/// machine; a request that arrives within the spin is picked up at once.
const IDLE_SPIN: Duration = Duration::from_micros(50);

impl<P, O> Queue<P, O> {
    pub(crate) fn new(policy: BatchPolicy, cost: BatchCost, stats: Arc<StatsRecorder>) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                queued_cost: 0,
                closed: false,
                fire_by: None,
                workers: 0,
                expires_at: None,
                scans: 0,
            }),
            arrived: Condvar::new(),
            space: Condvar::new(),
            waiting: AtomicUsize::new(0),
            policy,
            cost,
            stats,
            cancels: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A reply channel whose receiver, dropped before the answer, tells this queue that a
    /// cancelled request may be waiting.
    pub(crate) fn reply_channel<T>(&self) -> (oneshot::Sender<T>, oneshot::Receiver<T>) {
        oneshot::channel_counting_cancels(Some(self.cancels.clone()))
    }

    /// True when a full scan may free a slot: a caller cancelled since the last scan or a
    /// waiting request's deadline has passed. Keeps refusals of a full queue O(1).
    fn may_free(&self, state: &State<P, O>) -> bool {
        self.cancels.load(Ordering::Acquire) > 0
            || state.expires_at.is_some_and(|at| at < Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State<P, O>> {
        // Every update of the state completes under the lock without calling user code
        // (answers are sent after it is released), so a poisoned lock still holds
        // consistent data.
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
            // Requests whose callers have gone or whose deadline passed give their slots
            // back before we refuse; the scan runs only when one can exist.
            if !self.may_free(&state) {
                drop(state);
                return Err(CapacityError::QueueFull {
                    capacity: self.policy.queue_capacity,
                });
            }
            let expired = self.purge(&mut state);
            let full = state.items.len() >= self.policy.queue_capacity;
            if full {
                drop(state);
                send_all(expired, &self.stats);
                return Err(CapacityError::QueueFull {
                    capacity: self.policy.queue_capacity,
                });
            }
            self.enqueue(state, request);
            send_all(expired, &self.stats);
            return Ok(());
        }
        self.enqueue(state, request);
        Ok(())
    }

    /// Accepts a request, waiting for room while the queue is full. Used for bulk submission
    /// (`predict_many`), where the caller asked for all of its inputs to be computed; the
    /// wait ends because workers always drain the queue. Fails only when the queue closes.
    pub(crate) fn push_wait(&self, request: Request<P, O>) -> Result<(), CapacityError> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        loop {
            if state.closed {
                drop(state);
                send_all(expired, &self.stats);
                return Err(CapacityError::ShuttingDown);
            }
            if state.items.len() < self.policy.queue_capacity {
                break;
            }
            if self.may_free(&state) {
                expired.extend(self.purge(&mut state));
                if state.items.len() < self.policy.queue_capacity {
                    break;
                }
            }
            state = self
                .space
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.enqueue(state, request);
        send_all(expired, &self.stats);
        Ok(())
    }

    fn enqueue(&self, mut state: MutexGuard<'_, State<P, O>>, mut request: Request<P, O>) {
        // The clock of the deadline and the batch window starts now, not when a bulk
        // submission began waiting for room.
        request.enqueued_at = Instant::now();
        if let Some(by) = request.fire_by() {
            state.fire_by = Some(state.fire_by.map_or(by, |t| t.min(by)));
        }
        if let Some(at) = request.expires_at() {
            state.expires_at = Some(state.expires_at.map_or(at, |t| t.min(at)));
        }
        state.queued_cost += request.cost;
        state.items.push_back(request);
        // Counted before any worker can answer it, so in-flight never goes below zero.
        self.stats.record_accepted();
        self.waiting.store(state.items.len(), Ordering::Relaxed);
        drop(state);
        self.arrived.notify_all();
    }

    /// Drops the requests whose callers have gone and takes out those past their deadline,
    /// whose answers the caller sends after releasing the lock.
    fn purge(&self, state: &mut State<P, O>) -> Expired<O> {
        // Reset before the scan: a cancellation counted after this is looked at next time.
        self.cancels.store(0, Ordering::Release);
        state.scans += 1;
        let stats = &self.stats;
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(state.items.len());
        for request in state.items.drain(..) {
            if request.reply.is_closed() {
                stats.record(Outcome::Cancelled);
                continue;
            }
            match request.expired(now) {
                Some(error) => expired.push((request.reply, error)),
                None => kept.push_back(request),
            }
        }
        state.items = kept;
        state.queued_cost = state.items.iter().map(|r| r.cost).sum();
        state.refresh_fire_by();
        expired
    }

    /// Workers running, and whether the queue still takes requests.
    pub(crate) fn workers(&self) -> (usize, bool) {
        let state = self.lock();
        (state.workers, !state.closed)
    }

    /// The most requests that may wait.
    pub(crate) fn capacity(&self) -> usize {
        self.policy.queue_capacity
    }

    /// A worker started.
    pub(crate) fn worker_started(&self) {
        self.lock().workers += 1;
    }

    /// A worker stopped; `panicked` when it died. When no worker is left the queue closes
    /// and every request in it is answered with `WorkerGone`, so no caller waits forever.
    pub(crate) fn worker_stopped(&self) {
        let mut state = self.lock();
        state.workers = state.workers.saturating_sub(1);
        if state.workers > 0 {
            return;
        }
        state.closed = true;
        let orphans: Expired<O> = state
            .items
            .drain(..)
            .map(|r| (r.reply, CapacityError::WorkerGone))
            .collect();
        state.queued_cost = 0;
        state.fire_by = None;
        state.expires_at = None;
        self.waiting.store(0, Ordering::Relaxed);
        drop(state);
        self.arrived.notify_all();
        self.space.notify_all();
        send_all(orphans, &self.stats);
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
        let mut state = self.lock();
        loop {
            state = self.wait_for_requests(state)?;
            state = self.wait_for_batch(state);
            let mut expired = Vec::new();
            let batch = match self.policy.grouping {
                Grouping::Arrival => self.take_in_arrival_order(&mut state, &mut expired),
                Grouping::Length => self.take_by_length(&mut state, &mut expired),
            };
            state.refresh_fire_by();
            self.waiting.store(state.items.len(), Ordering::Relaxed);
            self.space.notify_all();
            if !expired.is_empty() {
                drop(state);
                send_all(expired, &self.stats);
                if !batch.is_empty() {
                    return Some(batch);
                }
                state = self.lock();
                continue;
            }
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }

    /// Waits until a request is queued; `None` once the queue is closed and empty.
    fn wait_for_requests<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<P, O>>,
    ) -> Option<MutexGuard<'a, State<P, O>>> {
        while state.items.is_empty() {
            if state.closed {
                return None;
            }
            drop(state);
            self.spin_while_idle();
            state = self.lock();
            if state.items.is_empty() && !state.closed {
                state = self
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        Some(state)
    }

    /// Waits until the waiting requests make a batch: full (size or token budget), the
    /// batch window over, or the queue closed.
    fn wait_for_batch<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<P, O>>,
    ) -> MutexGuard<'a, State<P, O>> {
        let policy = &self.policy;
        loop {
            // The batch window opens when its first request arrived; a request with a
            // deadline cuts it to half that deadline.
            let window = state
                .items
                .front()
                .and_then(|r| r.enqueued_at.checked_add(policy.max_delay));
            let fire_at = match (window, state.fire_by) {
                (Some(w), Some(d)) => Some(w.min(d)),
                (w, d) => w.or(d),
            };
            let full = state.items.len() >= policy.max_batch_size
                || policy
                    .max_batch_tokens
                    .is_some_and(|budget| self.waiting_cost(&state) >= budget);
            let now = Instant::now();
            if full || state.closed || state.items.is_empty() || fire_at.is_some_and(|t| now >= t) {
                return state;
            }
            state = match fire_at {
                Some(t) => {
                    self.arrived
                        .wait_timeout(state, t - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                // max_delay too long to represent: wait for a full batch.
                None => self
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// What the waiting requests (the oldest batch-size of them) would cost as one batch:
    /// the signal that a batch is full and need not wait out its window. An estimate: the
    /// batch taken may skip cancelled or expired requests, or (grouped by length) pick
    /// others; it never exceeds the budget either way.
    fn waiting_cost(&self, state: &State<P, O>) -> usize {
        match self.cost {
            BatchCost::Sum => state.queued_cost,
            BatchCost::Padded => {
                let batch = state.items.iter().take(self.policy.max_batch_size);
                let longest = batch.map(|r| r.cost).max().unwrap_or(0);
                let count = state.items.len().min(self.policy.max_batch_size);
                self.cost.of(count, state.queued_cost, longest)
            }
        }
    }

    /// Polls for a request for at most [`IDLE_SPIN`] without holding the lock.
    fn spin_while_idle(&self) {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if self.waiting.load(Ordering::Relaxed) > 0 {
                    return;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= IDLE_SPIN {
                return;
            }
        }
    }

    /// Takes requests from the front, in order, up to the size and token bounds. Cancelled
    /// requests met on the way are dropped and expired ones answered.
    fn take_in_arrival_order(
        &self,
        state: &mut State<P, O>,
        expired_out: &mut Expired<O>,
    ) -> Vec<Request<P, O>> {
        let (policy, stats) = (&self.policy, &self.stats);
        let now = Instant::now();
        let mut batch = Vec::new();
        let (mut tokens, mut longest) = (0usize, 0usize);
        while let Some(front) = state.items.front() {
            let skip = front.reply.is_closed();
            let expired = front.expired(now);
            if !skip && expired.is_none() {
                if batch.len() >= policy.max_batch_size {
                    break;
                }
                if let Some(budget) = policy.max_batch_tokens
                    && !batch.is_empty()
                    && self.cost.of(
                        batch.len() + 1,
                        tokens + front.cost,
                        longest.max(front.cost),
                    ) > budget
                {
                    break;
                }
            }
            let Some(request) = state.items.pop_front() else {
                break;
            };
            state.queued_cost -= request.cost;
            if let Some(error) = expired {
                expired_out.push((request.reply, error));
            } else if skip {
                stats.record(Outcome::Cancelled);
            } else {
                tokens += request.cost;
                longest = longest.max(request.cost);
                batch.push(request);
            }
        }
        batch
    }

    /// Takes the oldest request and the waiting requests nearest to it in cost, while the
    /// batch stays within the size and token bounds and at least [`MIN_FILL`] real tokens
    /// when padded to its longest member.
    fn take_by_length(
        &self,
        state: &mut State<P, O>,
        expired_out: &mut Expired<O>,
    ) -> Vec<Request<P, O>> {
        let policy = &self.policy;
        // Drop cancelled and take out expired requests anywhere in the queue first.
        expired_out.extend(self.purge(state));
        if state.items.is_empty() {
            return Vec::new();
        }

        // Positions in the queue, sorted by cost (ties by age); the anchor is the oldest.
        let mut order: Vec<usize> = (0..state.items.len()).collect();
        order.sort_by_key(|&i| (state.items[i].cost, i));
        let cost = |k: usize| state.items[order[k]].cost;
        let Some(anchor) = order.iter().position(|&i| i == 0) else {
            return Vec::new();
        };
        let (mut lo, mut hi) = (anchor, anchor);
        let mut sum = cost(anchor);
        let fits = |lo: usize, hi: usize, sum: usize| {
            let count = hi - lo + 1;
            let longest = cost(hi).max(1);
            count <= policy.max_batch_size
                && policy
                    .max_batch_tokens
                    .is_none_or(|budget| self.cost.of(count, sum, longest) <= budget)
                && sum as f64 >= MIN_FILL * (count * longest) as f64
        };
        loop {
            let left = (lo > 0).then(|| lo - 1);
            let right = (hi + 1 < order.len()).then_some(hi + 1);
            let anchor_cost = cost(anchor);
            let distance = |k: usize| cost(k).abs_diff(anchor_cost);
            let mut candidates: Vec<usize> = left.into_iter().chain(right).collect();
            candidates.sort_by_key(|&k| distance(k));
            let Some(k) = candidates
                .into_iter()
                .find(|&k| fits(lo.min(k), hi.max(k), sum + cost(k)))
            else {
                break;
            };
            sum += cost(k);
            lo = lo.min(k);
            hi = hi.max(k);
        }

        let mut chosen: Vec<usize> = order[lo..=hi].to_vec();
        chosen.sort_unstable();
        let mut batch = Vec::with_capacity(chosen.len());
        let mut rest = VecDeque::with_capacity(state.items.len() - chosen.len());
        let mut next = chosen.iter().peekable();
        for (i, request) in state.items.drain(..).enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                state.queued_cost -= request.cost;
                batch.push(request);
            } else {
                rest.push_back(request);
            }
        }
        state.items = rest;
        batch
    }
}

/// The least share of real (unpadded) cost a length-grouped batch keeps.
const MIN_FILL: f64 = 0.75;

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
