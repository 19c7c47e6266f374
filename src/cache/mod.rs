//! The prediction cache: an LRU of outputs keyed by (model, version, raw input), bounded by
//! entries and bytes, with an optional time to live and single-flight for identical
//! requests in flight.
//!
//! A cache is shared: build one and hand it to any number of predictors (e.g. every version
//! of a model in a `Registry`); the model name and version are part of
//! every key, so entries never cross models or versions. A hit compares the whole key, not
//! only its hash, and skips preprocessing. Errors are never cached.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use modelhost::{cache::PredictionCache, Predictor, models::sentence::SentenceEmbedder};
//!
//! let cache = Arc::new(
//!     PredictionCache::builder()
//!         .max_entries(10_000)
//!         .max_bytes(64 << 20)
//!         .ttl(Duration::from_secs(600))
//!         .build(),
//! );
//! // The reference model, which scripts/fetch-models.sh unpacks (the tests fetch it first).
//! let predictor = Predictor::builder(SentenceEmbedder::load("models/all-MiniLM-L6-v2")?)
//!     .cache(cache.clone())
//!     .build()?;
//! let first = predictor.predict("a repeated question".to_string())?;
//! let again = predictor.predict("a repeated question".to_string())?; // from the cache
//! assert_eq!(first, again);
//! assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The input type is the key, so it must be `Hash + Eq + Clone + CacheWeight`: text inputs
//! are; a model
//! over floats can wrap its input in a type that hashes the bits.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::error::PredictError;
use crate::metrics::{Labels, Metrics};
use crate::oneshot;

/// How many bytes a cached output, or the input it is keyed by, holds, for the cache's byte
/// bound: an entry weighs its key's input plus its output, so long texts, images or rows
/// used as keys count against [`CacheConfig::max_bytes`] too.
pub trait CacheWeight {
    /// Approximate heap and inline size in bytes.
    fn cache_weight(&self) -> usize;
}

macro_rules! plain_weight {
    ($($t:ty),*) => {
        $(impl CacheWeight for $t {
            fn cache_weight(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        })*
    };
}
plain_weight!(
    u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, bool
);

impl<T: CacheWeight> CacheWeight for Vec<T> {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.iter().map(CacheWeight::cache_weight).sum::<usize>()
    }
}

impl<A: CacheWeight, B: CacheWeight> CacheWeight for (A, B) {
    fn cache_weight(&self) -> usize {
        self.0.cache_weight() + self.1.cache_weight()
    }
}

impl<T: CacheWeight> CacheWeight for Option<T> {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.as_ref().map_or(0, CacheWeight::cache_weight)
    }
}

impl CacheWeight for String {
    fn cache_weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.len()
    }
}

/// Limits of a [`PredictionCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most entries held.
    pub max_entries: NonZeroUsize,
    /// The most bytes held: each entry's input (its key) and output, by [`CacheWeight`].
    pub max_bytes: usize,
    /// Entries older than this are not served (`None`: no expiry).
    pub ttl: Option<Duration>,
}

/// Builds a [`PredictionCache`]. Defaults: 10,000 entries, 256 MiB, no TTL.
#[derive(Debug, Clone)]
pub struct CacheBuilder {
    config: CacheConfig,
}

impl CacheBuilder {
    /// The most entries held (at least 1).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.config.max_entries = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }

    /// The most bytes of inputs (keys) and outputs held.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.config.max_bytes = bytes;
        self
    }

    /// Entries older than this are dropped instead of served.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = Some(ttl);
        self
    }

    /// The cache.
    pub fn build<K: Hash + Eq, O>(self) -> PredictionCache<K, O> {
        PredictionCache {
            inner: Mutex::new(Inner {
                lru: LruCache::new(self.config.max_entries),
                bytes: 0,
                inflight: HashMap::new(),
            }),
            config: self.config,
            counters: Counters::default(),
        }
    }
}

/// The full key of an entry. Equality compares every part, so two inputs whose hashes
/// collide never share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey<K> {
    pub(crate) model: Arc<str>,
    pub(crate) version: Arc<str>,
    /// Unique per predictor built: a version retired and deployed again under the same
    /// name (with other weights) never sees the old build's entries.
    pub(crate) instance: u64,
    pub(crate) input: K,
}

struct Entry<O> {
    value: O,
    weight: usize,
    inserted: Instant,
}

/// What a follower of a flight receives.
pub(crate) enum FlightOutcome<O> {
    /// The leader's answer (an error is shared but not cached).
    Done(Result<O, PredictError>),
    /// The leader went away without an answer (its caller cancelled): try again.
    Abandoned,
}

type Followers<O> = Vec<oneshot::Sender<FlightOutcome<O>>>;

struct Inner<K, O> {
    lru: LruCache<CacheKey<K>, Entry<O>>,
    bytes: usize,
    inflight: HashMap<CacheKey<K>, Followers<O>>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
}

/// Counters and size of a [`PredictionCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that computed the output.
    pub misses: u64,
    /// Lookups that waited for an identical request already in flight.
    pub coalesced: u64,
    /// Entries dropped to stay within the entry or byte bound.
    pub evictions: u64,
    /// Entries dropped because they outlived the TTL.
    pub expired: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now.
    pub bytes: usize,
}

/// An LRU cache of predictions, shared by predictors. See the [module](self) docs.
pub struct PredictionCache<K, O> {
    inner: Mutex<Inner<K, O>>,
    config: CacheConfig,
    counters: Counters,
}

impl<K, O> std::fmt::Debug for PredictionCache<K, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictionCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PredictionCache<(), ()> {
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder {
            config: CacheConfig {
                max_entries: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
                max_bytes: 256 << 20,
                ttl: None,
            },
        }
    }
}

/// The start of a cached request.
pub(crate) enum Begin<K: Hash + Eq + Clone + CacheWeight, O: Clone + CacheWeight> {
    /// The answer, from the cache.
    Hit(O),
    /// An identical request is in flight; its answer will arrive here.
    Follow(oneshot::Receiver<FlightOutcome<O>>),
    /// This request computes the answer and must complete the flight.
    Lead(Flight<K, O>),
}

impl<K: Hash + Eq + Clone + CacheWeight, O: Clone + CacheWeight> PredictionCache<K, O> {
    fn lock(&self) -> MutexGuard<'_, Inner<K, O>> {
        // Every update completes under the lock without calling user code that can panic
        // midway, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits in force.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            coalesced: self.counters.coalesced.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expired: self.counters.expired.load(Ordering::Relaxed),
            entries: inner.lru.len(),
            bytes: inner.bytes,
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }

    /// Looks `key` up: a hit, a flight to follow, or the lead of a new flight.
    pub(crate) fn begin(self: &Arc<Self>, key: CacheKey<K>) -> Begin<K, O> {
        let mut inner = self.lock();
        if let Some(entry) = inner.lru.get(&key) {
            let fresh = self
                .config
                .ttl
                .is_none_or(|ttl| entry.inserted.elapsed() <= ttl);
            if fresh {
                let value = entry.value.clone();
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Begin::Hit(value);
            }
            if let Some(entry) = inner.lru.pop(&key) {
                inner.bytes -= entry.weight;
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(followers) = inner.inflight.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            followers.push(tx);
            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            return Begin::Follow(rx);
        }
        inner.inflight.insert(key.clone(), Vec::new());
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        Begin::Lead(Flight {
            cache: self.clone(),
            key: Some(key),
        })
    }

    fn insert(
        inner: &mut Inner<K, O>,
        key: CacheKey<K>,
        value: O,
        config: &CacheConfig,
        counters: &Counters,
    ) {
        // The key's input is held as long as the output: both count.
        let weight = value
            .cache_weight()
            .saturating_add(key.input.cache_weight());
        if weight > config.max_bytes {
            return;
        }
        if let Some(old) = inner.lru.pop(&key) {
            inner.bytes -= old.weight;
        }
        while inner.bytes + weight > config.max_bytes || inner.lru.len() >= config.max_entries.get()
        {
            match inner.lru.pop_lru() {
                Some((_, old)) => {
                    inner.bytes -= old.weight;
                    counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        inner.bytes += weight;
        inner.lru.push(
            key,
            Entry {
                value,
                weight,
                inserted: Instant::now(),
            },
        );
    }
}

/// The lead of a single flight: whoever holds it computes the answer and hands it to the
/// followers with [`Flight::complete`]; dropped without completing, it tells them to try
/// again.
pub(crate) struct Flight<K: Hash + Eq + Clone + CacheWeight, O: Clone + CacheWeight> {
    cache: Arc<PredictionCache<K, O>>,
    key: Option<CacheKey<K>>,
}

impl<K: Hash + Eq + Clone + CacheWeight, O: Clone + CacheWeight> Flight<K, O> {
    /// Caches a successful answer and hands the answer, or the error, to every follower.
    pub(crate) fn complete(mut self, result: &Result<O, PredictError>) {
        let Some(key) = self.key.take() else { return };
        let followers = {
            let cache = &self.cache;
            let mut inner = cache.lock();
            let followers = inner.inflight.remove(&key).unwrap_or_default();
            if let Ok(value) = result {
                PredictionCache::insert(
                    &mut inner,
                    key,
                    value.clone(),
                    &cache.config,
                    &cache.counters,
                );
            }
            followers
        };
        // A leader shed or dropped for capacity says nothing about the followers' own
        // requests: they try again themselves.
        let retry = matches!(result, Err(PredictError::Capacity(_)));
        for follower in followers {
            follower.send(if retry {
                FlightOutcome::Abandoned
            } else {
                FlightOutcome::Done(result.clone())
            });
        }
    }
}

impl<K: Hash + Eq + Clone + CacheWeight, O: Clone + CacheWeight> Drop for Flight<K, O> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let followers = self.cache.lock().inflight.remove(&key).unwrap_or_default();
            for follower in followers {
                follower.send(FlightOutcome::Abandoned);
            }
        }
    }
}

impl Metrics {
    /// Exports a cache's size and evictions under the label `cache="name"`.
    pub fn register_cache<K, O>(&self, name: &str, cache: &Arc<PredictionCache<K, O>>)
    where
        K: Hash + Eq + Clone + CacheWeight + Send + Sync + 'static,
        O: Clone + CacheWeight + Send + Sync + 'static,
    {
        let weak = Arc::downgrade(cache);
        let name = name.to_string();
        self.register_source(move |scrape| {
            let Some(cache) = weak.upgrade() else {
                return false;
            };
            let s = cache.stats();
            let labels: Labels = vec![("cache", name.clone())];
            scrape.counter(
                "modelhost_cache_evictions",
                "Cache entries dropped to stay within the entry or byte bound.",
                labels.clone(),
                s.evictions,
            );
            scrape.gauge(
                "modelhost_cache_entries",
                "Entries in the cache.",
                labels.clone(),
                s.entries as f64,
            );
            scrape.gauge(
                "modelhost_cache_bytes",
                "Bytes of inputs (keys) and outputs in the cache.",
                labels,
                s.bytes as f64,
            );
            true
        });
    }
}
