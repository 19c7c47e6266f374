//! The cache's place in a predictor's request path: look up before `prepare`, lead or
//! follow a flight on a miss.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PredictFuture, Predictor, RequestOptions, worker_gone};
use crate::batch::AnswerHook;
use crate::cache::{Begin, CacheKey, CacheWeight, Flight, FlightOutcome, PredictionCache};
use crate::error::{CapacityError, PredictError};
use crate::metrics::{Outcome, StatsRecorder};
use crate::model::Model;
use crate::oneshot;

/// What a predictor calls instead of its plain path when it has a cache. A trait object,
/// so that `Predictor<M>` needs no `Hash`/`Clone` bounds unless a cache is configured.
pub(crate) trait CachePath<M: Model>: Send + Sync {
    fn predict(
        &self,
        predictor: &Predictor<M>,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<M::Output, PredictError>;

    fn predict_async(
        &self,
        predictor: &Predictor<M>,
        input: M::Input,
        options: &RequestOptions,
    ) -> PredictFuture<M::Output>;

    fn predict_many(
        &self,
        predictor: &Predictor<M>,
        inputs: Vec<M::Input>,
    ) -> Vec<Result<M::Output, PredictError>>;
}

pub(crate) struct CacheLayer<K, O> {
    cache: Arc<PredictionCache<K, O>>,
    model: Arc<str>,
    version: Arc<str>,
    instance: u64,
}

impl<K, O> CacheLayer<K, O> {
    pub(crate) fn new(
        cache: Arc<PredictionCache<K, O>>,
        model: Arc<str>,
        version: Arc<str>,
        instance: u64,
    ) -> Self {
        CacheLayer {
            cache,
            model,
            version,
            instance,
        }
    }
}

impl<K, O> CacheLayer<K, O>
where
    K: Hash + Eq + Clone + CacheWeight + Send + Sync + 'static,
    O: Clone + CacheWeight + Send + Sync + 'static,
{
    fn key(&self, input: &K) -> CacheKey<K> {
        CacheKey {
            model: self.model.clone(),
            version: self.version.clone(),
            instance: self.instance,
            input: input.clone(),
        }
    }
}

/// Waits for the flight a follower joined, until the follower's own deadline (measured
/// from `started`): a follower never waits longer than it would have in the queue.
fn follow<O>(
    rx: oneshot::Receiver<FlightOutcome<O>>,
    started: Instant,
    deadline: Option<Duration>,
    stats: &StatsRecorder,
) -> Result<Option<FlightOutcome<O>>, PredictError> {
    let Some((deadline, until)) = deadline.and_then(|d| Some((d, started.checked_add(d)?))) else {
        return Ok(rx.recv());
    };
    rx.recv_until(until).map_err(|_| {
        let error = CapacityError::DeadlineExceeded {
            waited: started.elapsed(),
            deadline,
        };
        stats.record(Outcome::of_capacity(&error));
        error.into()
    })
}

/// The options of a request retried `started.elapsed()` into its `deadline`: what is left
/// of it, so that a retry never restarts the clock.
fn remaining(deadline: Option<Duration>, started: Instant) -> RequestOptions {
    RequestOptions {
        deadline: deadline.map(|d| d.saturating_sub(started.elapsed())),
    }
}

/// The worker completes a flight with its leader's answer: it fills the cache and answers
/// every follower.
fn complete_on_answer<K, O>(flight: Flight<K, O>) -> AnswerHook<O>
where
    K: Hash + Eq + Clone + CacheWeight + Send + Sync + 'static,
    O: Clone + CacheWeight + Send + Sync + 'static,
{
    Box::new(move |answer| flight.complete(answer))
}

impl<M> CachePath<M> for CacheLayer<M::Input, M::Output>
where
    M: Model,
    M::Input: Hash + Eq + Clone + CacheWeight + Sync,
    M::Output: Clone + CacheWeight + Sync,
{
    fn predict(
        &self,
        predictor: &Predictor<M>,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<M::Output, PredictError> {
        let stats = predictor.recorder();
        let started = Instant::now();
        let deadline = options.deadline.or(predictor.shared.deadline);
        loop {
            match self.cache.begin(self.key(&input)) {
                Begin::Hit(value) => {
                    stats.record_cache(true, false);
                    stats.record_answered(Outcome::CacheHit, started);
                    return Ok(value);
                }
                Begin::Follow(rx) => {
                    stats.record_cache(false, true);
                    match follow(rx, started, deadline, stats)? {
                        Some(FlightOutcome::Done(answer)) => {
                            stats.record_answered(Outcome::Coalesced, started);
                            return answer;
                        }
                        // The leader was cancelled: look again (and maybe lead).
                        Some(FlightOutcome::Abandoned) | None => continue,
                    }
                }
                Begin::Lead(flight) => {
                    stats.record_cache(false, false);
                    // The worker completes the flight with the answer; a refused request
                    // drops it, which sends the followers to try again themselves.
                    // After a cancelled leader, it leads with what is left of its deadline.
                    let options = remaining(deadline, started);
                    return predictor
                        .submit_leading(input, &options, Some(complete_on_answer(flight)))?
                        .recv()
                        .unwrap_or_else(worker_gone);
                }
            }
        }
    }

    fn predict_async(
        &self,
        predictor: &Predictor<M>,
        input: M::Input,
        options: &RequestOptions,
    ) -> PredictFuture<M::Output> {
        let stats = predictor.recorder();
        match self.cache.begin(self.key(&input)) {
            Begin::Hit(value) => {
                stats.record_cache(true, false);
                stats.record(Outcome::CacheHit);
                PredictFuture::ready(Ok(value))
            }
            Begin::Follow(rx) => {
                stats.record_cache(false, true);
                stats.record(Outcome::Coalesced);
                let deadline = options.deadline.or(predictor.shared.deadline);
                let (predictor, started) = (predictor.clone(), Instant::now());
                // A retry (the leader was cancelled) gets what is left of the deadline.
                PredictFuture::following(
                    rx,
                    Box::new(move || {
                        predictor.predict_async_with(input, &remaining(deadline, started))
                    }),
                    deadline.map(|d| (started, d)),
                )
            }
            Begin::Lead(flight) => {
                stats.record_cache(false, false);
                // The worker completes the flight, whether or not this future is polled.
                match predictor.submit_leading(input, options, Some(complete_on_answer(flight))) {
                    Ok(reply) => PredictFuture::waiting(reply),
                    Err(error) => PredictFuture::ready(Err(error)),
                }
            }
        }
    }

    fn predict_many(
        &self,
        predictor: &Predictor<M>,
        inputs: Vec<M::Input>,
    ) -> Vec<Result<M::Output, PredictError>> {
        enum Slot<O> {
            Ready(Result<O, PredictError>),
            Follow(crate::oneshot::Receiver<FlightOutcome<O>>),
            Lead,
        }
        let mut slots = Vec::with_capacity(inputs.len());
        let mut to_compute = Vec::new();
        let mut flights: Vec<Option<AnswerHook<M::Output>>> = Vec::new();
        let stats = predictor.recorder();
        let started = Instant::now();
        for input in &inputs {
            let begin = self.cache.begin(self.key(input));
            stats.record_cache(
                matches!(begin, Begin::Hit(_)),
                matches!(begin, Begin::Follow(_)),
            );
            slots.push(match begin {
                Begin::Hit(value) => {
                    stats.record(Outcome::CacheHit);
                    Slot::Ready(Ok(value))
                }
                Begin::Follow(rx) => Slot::Follow(rx),
                Begin::Lead(flight) => {
                    to_compute.push(input.clone());
                    flights.push(Some(complete_on_answer(flight)));
                    Slot::Lead
                }
            });
        }
        // The worker completes each lead's flight, so no follower below (or in another
        // thread) waits on this thread.
        let mut replies = predictor
            .submit_many_leading(to_compute, flights)
            .into_iter();
        slots
            .into_iter()
            .zip(inputs)
            .map(|(slot, input)| match slot {
                Slot::Ready(answer) => answer,
                Slot::Lead => replies
                    .next()
                    .unwrap_or_else(worker_gone)
                    .and_then(|r| r.recv().unwrap_or_else(worker_gone)),
                Slot::Follow(rx) => match follow(rx, started, predictor.shared.deadline, stats) {
                    Ok(Some(FlightOutcome::Done(answer))) => {
                        stats.record(Outcome::Coalesced);
                        answer
                    }
                    Ok(Some(FlightOutcome::Abandoned) | None) => self.predict(
                        predictor,
                        input,
                        &remaining(predictor.shared.deadline, started),
                    ),
                    Err(error) => Err(error),
                },
            })
            .collect()
    }
}
