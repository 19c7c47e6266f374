//! The cache's place in a predictor's request path: look up before `prepare`, lead or
//! follow a flight on a miss.

use std::hash::Hash;
use std::sync::Arc;

use super::{Begin, CacheKey, CacheWeight, Flight, FlightOutcome, PredictionCache};
use crate::error::PredictError;
use crate::model::Model;
use crate::predictor::{CompleteFlight, PredictFuture, Predictor, RequestOptions, worker_gone};

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
}

impl<K, O> CacheLayer<K, O> {
    pub(crate) fn new(
        cache: Arc<PredictionCache<K, O>>,
        model: Arc<str>,
        version: Arc<str>,
    ) -> Self {
        CacheLayer {
            cache,
            model,
            version,
        }
    }
}

impl<K, O> CacheLayer<K, O>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    O: Clone + CacheWeight + Send + Sync + 'static,
{
    fn key(&self, input: &K) -> CacheKey<K> {
        CacheKey {
            model: self.model.clone(),
            version: self.version.clone(),
            input: input.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static, O: Clone + CacheWeight + Send + 'static>
    CompleteFlight<O> for Flight<K, O>
{
    fn complete(self: Box<Self>, result: &Result<O, PredictError>) {
        Flight::complete(*self, result);
    }
}

impl<M> CachePath<M> for CacheLayer<M::Input, M::Output>
where
    M: Model,
    M::Input: Hash + Eq + Clone + Sync,
    M::Output: Clone + CacheWeight + Sync,
{
    fn predict(
        &self,
        predictor: &Predictor<M>,
        input: M::Input,
        options: &RequestOptions,
    ) -> Result<M::Output, PredictError> {
        let stats = predictor.recorder();
        loop {
            match self.cache.begin(self.key(&input)) {
                Begin::Hit(value) => {
                    stats.record_cache(true, false);
                    return Ok(value);
                }
                Begin::Follow(rx) => {
                    stats.record_cache(false, true);
                    match rx.recv() {
                        Some(FlightOutcome::Done(answer)) => return answer,
                        // The leader was cancelled: look again (and maybe lead).
                        Some(FlightOutcome::Abandoned) | None => continue,
                    }
                }
                Begin::Lead(flight) => {
                    stats.record_cache(false, false);
                    let answer = predictor.predict_uncached(input, options);
                    flight.complete(&answer);
                    return answer;
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
                PredictFuture::ready(Ok(value))
            }
            Begin::Follow(rx) => {
                stats.record_cache(false, true);
                let (predictor, options) = (predictor.clone(), options.clone());
                PredictFuture::following(
                    rx,
                    Box::new(move || predictor.predict_async_with(input, &options)),
                )
            }
            Begin::Lead(flight) => {
                stats.record_cache(false, false);
                match predictor.submit(input, options) {
                    Ok(reply) => PredictFuture::leading(reply, Box::new(flight)),
                    Err(error) => {
                        let answer = Err(error);
                        flight.complete(&answer);
                        PredictFuture::ready(answer)
                    }
                }
            }
        }
    }

    fn predict_many(
        &self,
        predictor: &Predictor<M>,
        inputs: Vec<M::Input>,
    ) -> Vec<Result<M::Output, PredictError>> {
        enum Slot<O, F> {
            Ready(Result<O, PredictError>),
            Follow(crate::oneshot::Receiver<FlightOutcome<O>>),
            Lead(F),
        }
        let mut slots = Vec::with_capacity(inputs.len());
        let mut to_compute = Vec::new();
        let stats = predictor.recorder();
        for input in &inputs {
            let begin = self.cache.begin(self.key(input));
            stats.record_cache(
                matches!(begin, Begin::Hit(_)),
                matches!(begin, Begin::Follow(_)),
            );
            slots.push(match begin {
                Begin::Hit(value) => Slot::Ready(Ok(value)),
                Begin::Follow(rx) => Slot::Follow(rx),
                Begin::Lead(flight) => {
                    to_compute.push(input.clone());
                    Slot::Lead(flight)
                }
            });
        }
        let mut replies = predictor.submit_many(to_compute).into_iter();
        // Leaders come before their followers (the first occurrence leads), so resolving in
        // input order completes every flight before anyone in this call waits on it.
        slots
            .into_iter()
            .zip(inputs)
            .map(|(slot, input)| match slot {
                Slot::Ready(answer) => answer,
                Slot::Lead(flight) => {
                    let answer = replies
                        .next()
                        .unwrap_or_else(worker_gone)
                        .and_then(|r| r.recv().unwrap_or_else(worker_gone));
                    flight.complete(&answer);
                    answer
                }
                Slot::Follow(rx) => match rx.recv() {
                    Some(FlightOutcome::Done(answer)) => answer,
                    Some(FlightOutcome::Abandoned) | None => {
                        self.predict(predictor, input, &RequestOptions::default())
                    }
                },
            })
            .collect()
    }
}
