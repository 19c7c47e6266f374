//! What a predictor records about its requests: lock-free counters and histograms written
//! where things happen (caller thread, queue, worker) and read by `Predictor::stats` and
//! the Prometheus exposition.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::{LatencyHistogram, LatencySummary};
use crate::error::{CapacityError, PredictError, RuntimeError};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// Answered with an output.
    Success,
    /// Refused by validation before it was queued.
    InputError,
    /// Refused because the queue was full.
    QueueFull,
    /// Refused because the predictor was shutting down.
    ShuttingDown,
    /// Dropped in the queue past its deadline.
    DeadlineExceeded,
    /// Its caller went away before it was computed.
    Cancelled,
    /// The model returned an error for it (or its batch).
    RuntimeError,
    /// The model panicked in its batch.
    Panicked,
    /// No worker was left to compute it.
    WorkerGone,
    /// Answered from the prediction cache (never queued).
    CacheHit,
    /// Answered with the result of an identical request in flight (never queued).
    Coalesced,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Success,
        Outcome::InputError,
        Outcome::QueueFull,
        Outcome::ShuttingDown,
        Outcome::DeadlineExceeded,
        Outcome::Cancelled,
        Outcome::RuntimeError,
        Outcome::Panicked,
        Outcome::WorkerGone,
        Outcome::CacheHit,
        Outcome::Coalesced,
    ];

    /// The label value used in metrics, e.g. `"queue_full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::InputError => "input_error",
            Outcome::QueueFull => "queue_full",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::DeadlineExceeded => "deadline_exceeded",
            Outcome::Cancelled => "cancelled",
            Outcome::RuntimeError => "runtime_error",
            Outcome::Panicked => "panicked",
            Outcome::WorkerGone => "worker_gone",
            Outcome::CacheHit => "cache_hit",
            Outcome::Coalesced => "coalesced",
        }
    }

    /// The outcome of an answer.
    pub fn of<O>(answer: &Result<O, PredictError>) -> Outcome {
        match answer {
            Ok(_) => Outcome::Success,
            Err(PredictError::Input(_)) => Outcome::InputError,
            Err(PredictError::Runtime(RuntimeError::Panicked { .. })) => Outcome::Panicked,
            Err(PredictError::Runtime(_)) => Outcome::RuntimeError,
            Err(PredictError::Capacity(c)) => Outcome::of_capacity(c),
        }
    }

    pub(crate) fn of_capacity(error: &CapacityError) -> Outcome {
        match error {
            CapacityError::QueueFull { .. } => Outcome::QueueFull,
            CapacityError::DeadlineExceeded { .. } => Outcome::DeadlineExceeded,
            CapacityError::ShuttingDown => Outcome::ShuttingDown,
            _ => Outcome::WorkerGone,
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }

    /// True for outcomes of requests that were accepted into the queue.
    fn was_accepted(self) -> bool {
        !matches!(
            self,
            Outcome::InputError
                | Outcome::QueueFull
                | Outcome::ShuttingDown
                | Outcome::CacheHit
                | Outcome::Coalesced
        )
    }
}

/// Power-of-two buckets for counts (batch tokens): bucket `i` holds values ≤ 2^i.
const COUNT_BUCKETS: usize = 21;

/// Counters of a predictor since it started; see [`Predictor::stats`](crate::Predictor::stats).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PredictorStats {
    /// Requests accepted into the queue.
    pub accepted: u64,
    /// Requests refused by validation (`InputError`).
    pub input_errors: u64,
    /// Requests refused because the queue was full or closed.
    pub shed: u64,
    /// Requests the model answered with an output.
    pub succeeded: u64,
    /// Requests the model failed (a runtime error or a panic).
    pub failed: u64,
    /// Every outcome and how often it happened.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Requests accepted and not answered yet.
    pub in_flight: u64,
    /// Batches run.
    pub batches: u64,
    /// How many batches of each size ran.
    pub batch_sizes: BTreeMap<usize, u64>,
    /// Cost units ([`Model::cost`](crate::Model::cost), tokens for text) of all batches.
    pub batch_tokens: u64,
    /// From the call to its answer (preprocessing, queue and compute), answered requests.
    pub latency: LatencySummary,
    /// Time in the queue before its batch started.
    pub queue_wait: LatencySummary,
    /// Compute time of each batch.
    pub compute: LatencySummary,
    /// Cache hits, misses and requests coalesced onto an identical one in flight.
    pub cache_hits: u64,
    /// See `cache_hits`.
    pub cache_misses: u64,
    /// See `cache_hits`.
    pub cache_coalesced: u64,
}

impl PredictorStats {
    /// The mean number of requests per batch (0 before the first batch).
    pub fn mean_batch_size(&self) -> f64 {
        let items: u64 = self
            .batch_sizes
            .iter()
            .map(|(size, n)| *size as u64 * n)
            .sum();
        if self.batches == 0 {
            0.0
        } else {
            items as f64 / self.batches as f64
        }
    }

    /// How often `outcome` happened.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }
}

/// Lock-free counters, shared by the handles, the queue and the workers.
pub(crate) struct StatsRecorder {
    /// Time histograms (and tracing spans) are recorded only when set.
    pub(crate) instrument: bool,
    accepted: AtomicU64,
    outcomes: [AtomicU64; 11],
    batches: AtomicU64,
    /// Index = batch size.
    batch_sizes: Vec<AtomicU64>,
    batch_tokens: AtomicU64,
    batch_token_buckets: [AtomicU64; COUNT_BUCKETS],
    pub(crate) latency: LatencyHistogram,
    pub(crate) queue_wait: LatencyHistogram,
    pub(crate) compute: LatencyHistogram,
    cache: [AtomicU64; 3],
}

impl StatsRecorder {
    pub(crate) fn new(max_batch_size: usize, instrument: bool) -> Self {
        StatsRecorder {
            instrument,
            accepted: AtomicU64::new(0),
            outcomes: Default::default(),
            batches: AtomicU64::new(0),
            batch_sizes: (0..=max_batch_size).map(|_| AtomicU64::new(0)).collect(),
            batch_tokens: AtomicU64::new(0),
            batch_token_buckets: Default::default(),
            latency: LatencyHistogram::default(),
            queue_wait: LatencyHistogram::default(),
            compute: LatencyHistogram::default(),
            cache: Default::default(),
        }
    }

    pub(crate) fn record_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An outcome answered on the caller's thread (a cache hit), with its latency.
    pub(crate) fn record_answered(&self, outcome: Outcome, started: std::time::Instant) {
        self.record(outcome);
        if self.instrument {
            self.latency.record(started.elapsed());
        }
    }

    pub(crate) fn record_batch(&self, size: usize, tokens: usize, compute: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.batch_sizes.get(size) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.batch_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        let bucket =
            (tokens.max(1).next_power_of_two().trailing_zeros() as usize).min(COUNT_BUCKETS - 1);
        self.batch_token_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if self.instrument {
            self.compute.record(compute);
        }
    }

    pub(crate) fn record_cache(&self, hit: bool, coalesced: bool) {
        let i = if coalesced { 2 } else { usize::from(!hit) };
        self.cache[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Batch sizes as `(size, batches)` with at least one batch.
    pub(crate) fn batch_size_counts(&self) -> Vec<(usize, u64)> {
        self.batch_sizes
            .iter()
            .enumerate()
            .filter_map(|(size, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((size, n))
            })
            .collect()
    }

    /// Batch tokens as per-bucket counts with upper bounds 2^i, and their sum.
    pub(crate) fn batch_token_buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let buckets = self
            .batch_token_buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = if i == COUNT_BUCKETS - 1 {
                    f64::INFINITY
                } else {
                    (1u64 << i) as f64
                };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        (buckets, self.batch_tokens.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self) -> PredictorStats {
        let outcomes: BTreeMap<Outcome, u64> = Outcome::ALL
            .iter()
            .map(|o| (*o, self.outcomes[o.index()].load(Ordering::Relaxed)))
            .collect();
        let count = |o: Outcome| outcomes.get(&o).copied().unwrap_or(0);
        let accepted = self.accepted.load(Ordering::Relaxed);
        let finished: u64 = outcomes
            .iter()
            .filter(|(o, _)| o.was_accepted())
            .map(|(_, n)| n)
            .sum();
        PredictorStats {
            accepted,
            input_errors: count(Outcome::InputError),
            shed: count(Outcome::QueueFull) + count(Outcome::ShuttingDown),
            succeeded: count(Outcome::Success),
            failed: count(Outcome::RuntimeError) + count(Outcome::Panicked),
            in_flight: accepted.saturating_sub(finished),
            outcomes,
            batches: self.batches.load(Ordering::Relaxed),
            batch_sizes: self.batch_size_counts().into_iter().collect(),
            batch_tokens: self.batch_tokens.load(Ordering::Relaxed),
            latency: self.latency.summary(),
            queue_wait: self.queue_wait.summary(),
            compute: self.compute.summary(),
            cache_hits: self.cache[0].load(Ordering::Relaxed),
            cache_misses: self.cache[1].load(Ordering::Relaxed),
            cache_coalesced: self.cache[2].load(Ordering::Relaxed),
        }
    }
}
