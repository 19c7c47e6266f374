//! The prediction cache on counting models: hits skip the model, keys never cross, bounds
//! evict, single-flight computes once, errors are not cached.

mod common;

use common::block_on;
use proptest::prelude::*;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::Duration;

use modelhost::{
    BatchOutputs, DataType, Model, Predictor, RequestOptions, Signature, TensorSpec,
    cache::CacheWeight, cache::PredictionCache, error::CapacityError, error::InputError,
    error::PredictError, error::RuntimeError,
};

/// An input whose hash is the same for every value: every lookup collides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Colliding(u64);

impl Hash for Colliding {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0u8.hash(state);
    }
}

impl CacheWeight for Colliding {
    fn cache_weight(&self) -> usize {
        self.0.cache_weight()
    }
}

/// Returns `input + add` as a vector of `width` copies (so outputs have a weight), counts
/// preparations and computed items, fails on 13, and can hold batches until released.
struct Counting {
    add: u64,
    width: usize,
    prepared: AtomicUsize,
    computed: AtomicUsize,
    hold: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Counting {
    fn new(add: u64) -> Self {
        Counting {
            add,
            width: 1,
            prepared: AtomicUsize::new(0),
            computed: AtomicUsize::new(0),
            hold: Mutex::new(None),
        }
    }
}

impl Model for Counting {
    type Input = Colliding;
    type Prepared = u64;
    type Output = Vec<u64>;

    fn signature(&self) -> Signature {
        Signature::new("counting")
            .input(TensorSpec::new("x", DataType::I64, [1]))
            .output(TensorSpec::new("y", DataType::I64, [-1]))
    }

    fn prepare(&self, x: Colliding) -> Result<u64, InputError> {
        self.prepared.fetch_add(1, Ordering::SeqCst);
        Ok(x.0)
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<Vec<u64>>, RuntimeError> {
        let hold = self.hold.lock().unwrap().clone();
        if let Some(hold) = hold {
            hold();
        }
        self.computed.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(batch
            .iter()
            .map(|&x| {
                if x == 13 {
                    Err(RuntimeError::Backend {
                        message: "13 is unlucky".into(),
                    })
                } else {
                    Ok(vec![x + self.add; self.width])
                }
            })
            .collect())
    }
}

fn cache(entries: usize, bytes: usize) -> Arc<PredictionCache<Colliding, Vec<u64>>> {
    Arc::new(
        PredictionCache::builder()
            .max_entries(entries)
            .max_bytes(bytes)
            .build(),
    )
}

fn predictor(
    model: Counting,
    cache: &Arc<PredictionCache<Colliding, Vec<u64>>>,
    version: &str,
) -> Predictor<Counting> {
    Predictor::builder(model)
        .cache(cache.clone())
        .identity("counting", version)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap()
}

#[test]
fn a_hit_returns_the_same_output_and_skips_the_model_and_preprocessing() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(1), &cache, "1");
    assert_eq!(p.predict(Colliding(5)), Ok(vec![6]));
    assert_eq!(p.predict(Colliding(5)), Ok(vec![6]));
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 1);
    assert_eq!(p.model().prepared.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
}

#[test]
fn colliding_hashes_never_cross_answers() {
    let cache = cache(1000, 1 << 20);
    let p = predictor(Counting::new(1000), &cache, "1");
    for round in 0..2 {
        for x in 20..70u64 {
            assert_eq!(p.predict(Colliding(x)), Ok(vec![x + 1000]), "round {round}");
        }
    }
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 50);
    assert_eq!(cache.stats().hits, 50);
}

#[test]
fn the_byte_bound_evicts_least_recently_used_entries() {
    let mut model = Counting::new(0);
    model.width = 100; // 100 × 8 bytes + the Vec itself per entry
    // An entry weighs its output and its key's input.
    let weight = vec![0u64; 100].cache_weight() + Colliding(0).cache_weight();
    let cache = cache(1000, 3 * weight);
    let p = predictor(model, &cache, "1");
    for x in [1, 2, 3] {
        p.predict(Colliding(x)).unwrap();
    }
    p.predict(Colliding(1)).unwrap(); // 1 is now the most recently used
    p.predict(Colliding(4)).unwrap(); // evicts 2
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (3, 1));
    assert!(stats.bytes <= 3 * weight);
    let computed = p.model().computed.load(Ordering::SeqCst);
    p.predict(Colliding(1)).unwrap();
    p.predict(Colliding(3)).unwrap();
    assert_eq!(
        p.model().computed.load(Ordering::SeqCst),
        computed,
        "1 and 3 stayed"
    );
    p.predict(Colliding(2)).unwrap();
    assert_eq!(
        p.model().computed.load(Ordering::SeqCst),
        computed + 1,
        "2 was evicted"
    );
}

#[test]
fn the_entry_bound_evicts() {
    let cache = cache(2, 1 << 20);
    let p = predictor(Counting::new(0), &cache, "1");
    for x in [1, 2, 3] {
        p.predict(Colliding(x)).unwrap();
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (2, 1));
}

#[test]
fn entries_past_their_ttl_are_not_served() {
    let cache = Arc::new(
        PredictionCache::builder()
            .ttl(Duration::from_millis(500))
            .build(),
    );
    let p = predictor(Counting::new(0), &cache, "1");
    p.predict(Colliding(7)).unwrap();
    p.predict(Colliding(7)).unwrap();
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 1);
    std::thread::sleep(Duration::from_millis(700));
    p.predict(Colliding(7)).unwrap();
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().expired, 1);
}

#[test]
fn errors_are_not_cached() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(0), &cache, "1");
    for _ in 0..2 {
        assert!(matches!(
            p.predict(Colliding(13)),
            Err(PredictError::Runtime(RuntimeError::Backend { .. }))
        ));
    }
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn thirty_two_concurrent_identical_requests_are_computed_once() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(1), &cache, "1");
    // The leader's batch waits until the 31 others have joined its flight.
    let watched = cache.clone();
    *p.model().hold.lock().unwrap() = Some(Arc::new(move || {
        while watched.stats().coalesced < 31 {
            std::thread::yield_now();
        }
    }));
    let barrier = Barrier::new(32);
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    p.predict(Colliding(41))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| a == &Ok(vec![42])), "{answers:?}");
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.coalesced), (1, 31));
}

#[test]
fn cache_entries_never_cross_versions() {
    let cache = cache(100, 1 << 20);
    let v1 = predictor(Counting::new(100), &cache, "1");
    let v2 = predictor(Counting::new(200), &cache, "2");
    for _ in 0..3 {
        assert_eq!(v1.predict(Colliding(1)), Ok(vec![101]));
        assert_eq!(v2.predict(Colliding(1)), Ok(vec![201]));
    }
    assert_eq!(v1.model().computed.load(Ordering::SeqCst), 1);
    assert_eq!(v2.model().computed.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().entries, 2);
}

#[test]
fn predict_many_answers_hits_from_the_cache_and_duplicates_once() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(0), &cache, "1");
    p.predict(Colliding(1)).unwrap();
    let answers = p.predict_many([1, 2, 2, 3, 13].map(Colliding));
    assert_eq!(
        answers[..4],
        [Ok(vec![1]), Ok(vec![2]), Ok(vec![2]), Ok(vec![3])]
    );
    assert!(answers[4].is_err());
    // 1 computed before; 2, 3 and 13 now; the second 2 followed the first.
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 4);
}

#[test]
fn a_follower_is_answered_even_when_the_async_leader_is_never_polled() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(1), &cache, "1");
    let leader = p.predict_async(Colliding(8));
    let follower = p.predict_async(Colliding(8));
    // The worker completes the flight; the follower does not depend on the leader's poll.
    assert_eq!(block_on(follower), Ok(vec![9]));
    assert_eq!(
        p.predict(Colliding(8)),
        Ok(vec![9]),
        "and the answer is cached"
    );
    drop(leader);
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 1);
    let stats = p.stats();
    assert_eq!(stats.outcome(modelhost::metrics::Outcome::Coalesced), 1);
    assert_eq!(stats.outcome(modelhost::metrics::Outcome::CacheHit), 1);
    assert_eq!(
        (stats.cache_hits, stats.cache_misses, stats.cache_coalesced),
        (1, 1, 1)
    );
}

#[test]
fn a_follower_of_a_cancelled_leader_computes_the_answer_itself() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(1), &cache, "1");
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    // Hold the first batch (a different input) so the leader below stays queued.
    *p.model().hold.lock().unwrap() = Some(Arc::new(move || {
        g.wait();
    }));
    let blocker = p.predict_async(Colliding(100));
    while p.queue_len() > 0 {
        std::thread::yield_now();
    }
    let leader = p.predict_async(Colliding(5));
    let follower = p.predict_async(Colliding(5));
    drop(leader); // cancels the leader's request and abandons its flight
    *p.model().hold.lock().unwrap() = None;
    gate.wait();
    assert_eq!(block_on(blocker), Ok(vec![101]));
    assert_eq!(block_on(follower), Ok(vec![6]));
}

/// Holds the model's batches until `open` sends (or, as a safety net so that a broken
/// build fails instead of hanging, until a minute has passed).
fn hold_until_opened(p: &Predictor<Counting>) -> mpsc::Sender<()> {
    let (open, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    *p.model().hold.lock().unwrap() = Some(Arc::new(move || {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
    }));
    open
}

fn is_deadline_exceeded<O>(answer: &Result<O, PredictError>) -> bool {
    matches!(
        answer,
        Err(PredictError::Capacity(
            CapacityError::DeadlineExceeded { .. }
        ))
    )
}

#[test]
fn a_coalesced_follower_gives_up_at_its_own_deadline() {
    let cache = cache(100, 1 << 20);
    let p = predictor(Counting::new(1), &cache, "1");
    let open = hold_until_opened(&p);
    let leader = p.predict_async(Colliding(7));
    while p.queue_len() > 0 {
        std::thread::yield_now();
    }
    let strict = RequestOptions::deadline(Duration::from_millis(5));
    let blocking = p.predict_with(Colliding(7), &strict);
    assert!(is_deadline_exceeded(&blocking), "{blocking:?}");
    let follower = p.predict_async_with(Colliding(7), &strict);
    let waited = block_on(follower);
    assert!(is_deadline_exceeded(&waited), "{waited:?}");
    open.send(()).unwrap();
    assert_eq!(block_on(leader), Ok(vec![8]));
    assert_eq!(p.stats().cache_coalesced, 2);
    assert_eq!(p.model().computed.load(Ordering::SeqCst), 1);
}

#[test]
fn a_coalesced_follower_gives_up_at_the_predictors_default_deadline() {
    let cache = cache(100, 1 << 20);
    let p = Predictor::builder(Counting::new(1))
        .cache(cache.clone())
        .max_delay(Duration::ZERO)
        .deadline(Duration::from_millis(5))
        .build()
        .unwrap();
    let open = hold_until_opened(&p);
    let patient = RequestOptions::deadline(Duration::from_secs(3600));
    let leader = p.predict_async_with(Colliding(7), &patient);
    while p.queue_len() > 0 {
        std::thread::yield_now();
    }
    let blocking = p.predict(Colliding(7));
    assert!(is_deadline_exceeded(&blocking), "{blocking:?}");
    let waited = block_on(p.predict_async(Colliding(7)));
    assert!(is_deadline_exceeded(&waited), "{waited:?}");
    open.send(()).unwrap();
    assert_eq!(block_on(leader), Ok(vec![8]));
}

#[test]
fn a_follower_retrying_after_its_leader_expired_keeps_its_original_deadline() {
    let cache = cache(100, 1 << 20);
    // One request per batch, so that the retry below cannot join the second blocker's.
    let p = Predictor::builder(Counting::new(1))
        .cache(cache.clone())
        .max_delay(Duration::ZERO)
        .max_batch_size(1)
        .build()
        .unwrap();
    let open = hold_until_opened(&p);
    let first = p.predict_async(Colliding(100));
    while p.queue_len() > 0 {
        std::thread::yield_now();
    }
    // The leader gives up at 100 ms; a capacity error sends its followers to retry.
    let leader = p.predict_async_with(
        Colliding(5),
        &RequestOptions::deadline(Duration::from_millis(100)),
    );
    let second = p.predict_async(Colliding(200));
    let follower = p.predict_async_with(
        Colliding(5),
        &RequestOptions::deadline(Duration::from_millis(400)),
    );
    let follower = std::thread::spawn(move || block_on(follower));
    // At 300 ms the worker answers the expired leader: the follower queues the request
    // itself, behind the second blocker, with 100 ms of its deadline left.
    std::thread::sleep(Duration::from_millis(300));
    open.send(()).unwrap();
    assert_eq!(block_on(first), Ok(vec![101]));
    assert!(is_deadline_exceeded(&block_on(leader)));
    // At 600 ms the retry has waited 300 ms: past its deadline. Had the retry restarted
    // the clock, it would have had until 700 ms and been computed.
    std::thread::sleep(Duration::from_millis(300));
    open.send(()).unwrap();
    assert_eq!(block_on(second), Ok(vec![201]));
    let _ = open.send(()); // would release a third batch: the retry, if it were computed
    let answer = follower.join().unwrap();
    assert!(is_deadline_exceeded(&answer), "{answer:?}");
    assert_eq!(
        p.model().computed.load(Ordering::SeqCst),
        2,
        "only the blockers ran"
    );
}

/// Answers a text's length: a tiny output keyed by a possibly long input.
struct Length;

impl Model for Length {
    type Input = String;
    type Prepared = String;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("length").input(TensorSpec::new("text", DataType::Bytes, [1]))
    }

    fn prepare(&self, text: String) -> Result<String, InputError> {
        Ok(text)
    }

    fn run_batch(&self, batch: &[String]) -> Result<BatchOutputs<u64>, RuntimeError> {
        Ok(batch.iter().map(|t| Ok(t.len() as u64)).collect())
    }
}

#[test]
fn the_byte_bound_counts_the_inputs_kept_as_keys() {
    let text = |i: u64| format!("{i:04}{}", "x".repeat(996));
    let entry = text(0).cache_weight() + 0u64.cache_weight();
    let cache = Arc::new(
        PredictionCache::builder()
            .max_entries(1000)
            .max_bytes(3 * entry)
            .build(),
    );
    let p = Predictor::builder(Length)
        .cache(cache.clone())
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    for i in 0..10 {
        assert_eq!(p.predict(text(i)), Ok(1000));
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (3, 7), "{stats:?}");
    assert_eq!(stats.bytes, 3 * entry);
    // The newest three stayed.
    assert_eq!(p.predict(text(9)), Ok(1000));
    assert_eq!(cache.stats().hits, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random lookups against a reference of what each key's answer is: the bounds hold
    /// after every step and a hit is always the answer for its own key.
    #[test]
    fn random_lookups_keep_the_bounds_and_never_cross_keys(
        entries in 1usize..6,
        bytes_for in 1usize..6,
        widths in prop::collection::vec(1usize..8, 1..4),
        keys in prop::collection::vec(0u64..14, 1..60),
    ) {
        let entry = |width: usize| vec![0u64; width].cache_weight() + Colliding(0).cache_weight();
        let max_bytes = bytes_for * entry(4);
        let cache = cache(entries, max_bytes);
        let predictors: Vec<_> = widths
            .iter()
            .enumerate()
            .map(|(i, &width)| {
                let mut model = Counting::new(100 * i as u64);
                model.width = width;
                predictor(model, &cache, &i.to_string())
            })
            .collect();
        for (step, key) in keys.iter().enumerate() {
            let i = step % predictors.len();
            let answer = predictors[i].predict(Colliding(*key));
            if *key == 13 {
                prop_assert!(answer.is_err());
            } else {
                prop_assert_eq!(answer, Ok(vec![key + 100 * i as u64; widths[i]]));
            }
            let stats = cache.stats();
            prop_assert!(stats.entries <= entries, "{:?}", stats);
            prop_assert!(stats.bytes <= max_bytes, "{:?}", stats);
        }
    }
}
