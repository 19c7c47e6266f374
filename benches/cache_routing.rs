//! The cost of a cache hit on MiniLM's predictor and of routing a request in a registry.
//!
//! `cargo bench --bench cache_routing` (the cache-hit bench needs `scripts/fetch-models.sh`).

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use modelhost::{
    Predictor, cache::PredictionCache, models::sentence::SentenceEmbedder, registry::Registry,
    registry::Routing,
};

fn cache_hit(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let Ok(embedder) = SentenceEmbedder::load(&dir) else {
        eprintln!(
            "skipping cache_hit: no model at {} (run scripts/fetch-models.sh)",
            dir.display()
        );
        return;
    };
    let cache = Arc::new(PredictionCache::builder().build());
    let predictor = Predictor::builder(embedder)
        .cache(cache.clone())
        .build()
        .unwrap();
    // A 100-character text: the key is hashed and compared in full on every hit.
    let text = "The quick brown fox jumps over the lazy dog while the cat watches from a sunny windowsill nearby!!!!"
        .to_string();
    assert_eq!(text.len(), 100);
    predictor.predict(text.clone()).unwrap();
    c.bench_function("cache_hit_minilm_100_chars", |b| {
        b.iter(|| predictor.predict(text.clone()).unwrap())
    });
    assert!(cache.stats().hits > 0);
}

#[path = "common/trivial.rs"]
mod trivial;
use trivial::Trivial;

fn routing(c: &mut Criterion) {
    let registry = Registry::new();
    for v in ["1", "2", "3"] {
        registry.deploy("m", v, Trivial).unwrap();
    }
    registry.label("m", "2", "canary").unwrap();
    registry
        .set_routing(
            "m",
            Routing::split([("stable", 80), ("canary", 15), ("3", 5)]),
        )
        .unwrap();
    c.bench_function("route_weighted_random", |b| {
        b.iter(|| registry.route("m", None).unwrap())
    });
    let key = "user-12345";
    c.bench_function("route_weighted_sticky", |b| {
        b.iter(|| registry.route("m", Some(&key)).unwrap())
    });
}

criterion_group!(benches, cache_hit, routing);
criterion_main!(benches);
