//! The batcher's own overhead per request, with a model that does no work.
//!
//! `cargo bench --bench batcher` — reports the time per request at concurrency 1 (one caller,
//! `max_batch_size` 1, no delay) and at concurrency 32 (32 callers, `max_batch_size` 32).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modelhost::Predictor;

#[path = "common/trivial.rs"]
mod trivial;
use trivial::Trivial;

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher_overhead_per_request");
    group.throughput(Throughput::Elements(1));

    let single = Predictor::builder(Trivial)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    group.bench_function("concurrency_1", |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            single.predict(x).unwrap()
        })
    });

    let shared = Predictor::builder(Trivial)
        .max_batch_size(32)
        .max_delay(Duration::from_micros(100))
        .build()
        .unwrap();
    group.bench_function("concurrency_32", |b| {
        b.iter_custom(|iters| {
            // `iters` requests in all, spread over 32 callers; time per request.
            let threads = 32u64;
            let per_thread = iters.div_ceil(threads);
            let barrier = Barrier::new(threads as usize + 1);
            std::thread::scope(|s| {
                let callers: Vec<_> = (0..threads)
                    .map(|t| {
                        let (shared, barrier) = (&shared, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            for i in 0..per_thread {
                                shared.predict(t * per_thread + i).unwrap();
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for caller in callers {
                    caller.join().unwrap();
                }
                // Scale to exactly `iters` requests (per_thread was rounded up).
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
