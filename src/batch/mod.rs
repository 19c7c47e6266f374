//! Dynamic batching: a bounded queue of prepared requests and the worker that turns it into
//! batches.
//!
//! A batch closes when it holds [`BatchPolicy::max_batch_size`] requests, when the requests
//! waiting reach [`BatchPolicy::max_batch_tokens`], or when its first request has waited
//! [`BatchPolicy::max_delay`] — whichever comes first. A request whose caller has gone is
//! skipped; one past its deadline is answered with
//! [`CapacityError::DeadlineExceeded`](crate::error::CapacityError::DeadlineExceeded) and not
//! computed. Past [`BatchPolicy::queue_capacity`] the queue refuses new requests with
//! [`CapacityError::QueueFull`](crate::error::CapacityError::QueueFull) instead of blocking.
//!
//! A model says what a request costs (`Model::cost`: tokens, for text) and how costs add up
//! in a batch (`Model::batch_cost`: the sum for engines that compute real tokens only,
//! longest × count for one that pads); the token budget applies that rule.
//!
//! ```
//! use std::time::Duration;
//! use modelhost::Predictor;
//! use modelhost::batch::{BatchPolicy, Grouping};
//! use modelhost::models::mlp::MlpClassifier;
//!
//! let policy = BatchPolicy {
//!     max_batch_size: 16,
//!     max_delay: Duration::from_millis(1),
//!     queue_capacity: 256,
//!     grouping: Grouping::Arrival,
//!     ..BatchPolicy::default()
//! };
//! let predictor = Predictor::builder(MlpClassifier::load("examples/assets/digits")?)
//!     .policy(policy.clone())
//!     .build()?;
//! assert_eq!(predictor.policy(), &policy);
//! // A policy that cannot work is refused when the predictor is built.
//! let model = MlpClassifier::load("examples/assets/digits")?;
//! let err = Predictor::builder(model).max_batch_size(0).build().unwrap_err();
//! assert_eq!(err.to_string(), "`max_batch_size` = 0 is not allowed: at least 1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod queue;
mod worker;

use std::time::Duration;

use crate::error::ConfigError;

pub(crate) use queue::{AnswerHook, Queue, ReplyTo, Request};
pub(crate) use worker::{OutputObserver, run_worker};

/// How requests are grouped into batches and how many may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// The most requests in one batch (≥ 1).
    pub max_batch_size: usize,
    /// The most cost units ([`Model::cost`](crate::Model::cost), tokens for text models) in
    /// one batch, counted as the model computes them ([`Model::batch_cost`](crate::Model::batch_cost):
    /// the sum of the requests' costs, or longest × count for an engine that pads); a single
    /// request over the budget runs alone. `None`: no token budget.
    pub max_batch_tokens: Option<usize>,
    /// How long the first request of a batch may wait for others to join it.
    pub max_delay: Duration,
    /// The most requests waiting in the queue (≥ 1).
    pub queue_capacity: usize,
    /// Which waiting requests share a batch.
    pub grouping: Grouping,
}

/// Which waiting requests are put in the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Grouping {
    /// First come, first batched.
    #[default]
    Arrival,
    /// The oldest request waiting, joined by the waiting requests closest to it in
    /// [`Model::cost`](crate::Model::cost) (length, for text), as long as the batch stays at
    /// least 75 % real tokens when padded to its longest member. For engines that pad: it
    /// keeps the padding they compute small. The oldest request always goes first, so no
    /// request starves.
    Length,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch_size: 32,
            max_batch_tokens: None,
            max_delay: Duration::from_millis(2),
            queue_capacity: 1024,
            grouping: Grouping::Arrival,
        }
    }
}

impl BatchPolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_batch_size == 0 {
            return Err(ConfigError::InvalidSetting {
                name: "max_batch_size",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        if self.max_batch_tokens == Some(0) {
            return Err(ConfigError::InvalidSetting {
                name: "max_batch_tokens",
                value: "0".into(),
                allowed: "at least 1, or None for no token budget",
            });
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::InvalidSetting {
                name: "queue_capacity",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        Ok(())
    }
}
