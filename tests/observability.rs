//! Metrics, health, drift and feedback.

mod common;

use common::block_on;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use modelhost::{
    BatchOutputs, DataType, Model, Predictor, Signature, TensorSpec, drift::AccuracyMonitor,
    drift::DriftConfig, drift::DriftMonitor, drift::Prediction, error::InputError,
    error::PredictError, error::RuntimeError, metrics::Metrics, metrics::Outcome,
};

/// Echoes; refuses inputs over 1000; panics on 666; can hold batches at a gate; warms up
/// with input 1 when asked to.
#[derive(Default)]
struct Scripted {
    gate: Mutex<Option<mpsc::Receiver<()>>>,
    warmup: bool,
}

impl Model for Scripted {
    type Input = u64;
    type Prepared = u64;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("scripted").input(TensorSpec::new("x", DataType::I64, [1]))
    }

    fn prepare(&self, x: u64) -> Result<u64, InputError> {
        if x > 1000 {
            return Err(InputError::Invalid {
                field: "x".into(),
                reason: "at most 1000".into(),
            });
        }
        Ok(x)
    }

    fn warmup_inputs(&self) -> Vec<u64> {
        if self.warmup { vec![1] } else { vec![] }
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<u64>, RuntimeError> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv().unwrap();
        }
        if batch.contains(&666) {
            panic!("scripted panic");
        }
        Ok(batch.iter().map(|&x| Ok(x)).collect())
    }
}

fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[test]
fn counters_and_histograms_move_by_exactly_the_scripted_amounts() {
    let (open, gate) = mpsc::channel();
    let model = Scripted {
        gate: Mutex::new(Some(gate)),
        ..Scripted::default()
    };
    let predictor = Predictor::builder(model)
        .identity("scripted", "7")
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .queue_capacity(1)
        .build()
        .unwrap();
    let metrics = Metrics::new();
    metrics.register_predictor(&predictor);

    // 3 successes, 2 input errors, 1 panic, 1 QueueFull.
    for x in [1, 2, 3] {
        open.send(()).unwrap();
        assert_eq!(predictor.predict(x), Ok(x));
    }
    for x in [5000, 6000] {
        assert!(matches!(predictor.predict(x), Err(PredictError::Input(_))));
    }
    open.send(()).unwrap();
    assert!(matches!(
        predictor.predict(666),
        Err(PredictError::Runtime(RuntimeError::Panicked { .. }))
    ));
    let held = predictor.predict_async(4); // taken by the worker, waiting at the gate
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let queued = predictor.predict_async(5); // fills the queue of 1
    assert!(matches!(
        predictor.predict(6),
        Err(PredictError::Capacity(_))
    ));
    let stats = predictor.stats();
    assert_eq!(stats.in_flight, 2);
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(block_on(held), Ok(4));
    assert_eq!(block_on(queued), Ok(5));

    let stats = predictor.stats();
    assert_eq!(stats.outcome(Outcome::Success), 5);
    assert_eq!(stats.outcome(Outcome::InputError), 2);
    assert_eq!(stats.outcome(Outcome::Panicked), 1);
    assert_eq!(stats.outcome(Outcome::QueueFull), 1);
    assert_eq!(stats.outcome(Outcome::DeadlineExceeded), 0);
    assert_eq!((stats.accepted, stats.in_flight, stats.batches), (6, 0, 6));
    assert_eq!(
        stats.latency.count, 6,
        "one end-to-end latency per answered request"
    );
    assert_eq!(stats.queue_wait.count, 6);
    assert_eq!(stats.compute.count, 6);

    let text = metrics.encode();
    let labels = r#"model="scripted",version="7""#;
    for (outcome, n) in [
        ("success", 5.0),
        ("input_error", 2.0),
        ("panicked", 1.0),
        ("queue_full", 1.0),
        ("runtime_error", 0.0),
    ] {
        let series = format!("modelhost_requests_total{{{labels},outcome=\"{outcome}\"}}");
        assert_eq!(series_value(&text, &series), n, "{series}");
    }
    assert_eq!(
        series_value(
            &text,
            &format!("modelhost_request_duration_seconds_count{{{labels}}}")
        ),
        6.0
    );
    assert_eq!(
        series_value(
            &text,
            &format!("modelhost_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}")
        ),
        6.0
    );
    assert_eq!(
        series_value(&text, &format!("modelhost_batch_size_count{{{labels}}}")),
        6.0
    );
    assert_eq!(
        series_value(&text, &format!("modelhost_batch_size_sum{{{labels}}}")),
        6.0
    );
    assert_eq!(
        series_value(
            &text,
            &format!("modelhost_batch_size_bucket{{le=\"1.0\",{labels}}}")
        ),
        6.0
    );
    assert_eq!(
        series_value(&text, &format!("modelhost_queue_depth{{{labels}}}")),
        0.0
    );
    assert_eq!(
        series_value(&text, &format!("modelhost_in_flight_requests{{{labels}}}")),
        0.0
    );
}

#[test]
fn the_exposition_parses_as_prometheus_text() {
    let predictor = Predictor::builder(Scripted::default())
        .identity("scripted", "1")
        .build()
        .unwrap();
    let metrics = Metrics::new();
    metrics.register_predictor(&predictor);
    let cache: Arc<modelhost::cache::PredictionCache<u64, u64>> =
        Arc::new(modelhost::cache::PredictionCache::builder().build());
    metrics.register_cache("main", &cache);
    for x in 0..20 {
        predictor.predict(x).unwrap();
    }
    assert!(
        metrics.encode().ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF"
    );
    let text = metrics.encode_prometheus();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "modelhost_requests_total",
        "modelhost_request_duration_seconds",
        "modelhost_queue_duration_seconds_count",
        "modelhost_batch_compute_duration_seconds_sum",
        "modelhost_batch_tokens",
        "modelhost_queue_depth",
        "modelhost_ready",
        "modelhost_cache_evictions_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let success = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "modelhost_requests_total" && s.labels.get("outcome") == Some("success")
        })
        .unwrap();
    assert!(
        matches!(success.value, prometheus_parse::Value::Counter(v) if v == 20.0),
        "{:?}",
        success.value
    );
    // Histograms parse with their buckets, cumulative up to +Inf = the count.
    let latency = scrape
        .samples
        .iter()
        .find(|s| s.metric == "modelhost_request_duration_seconds")
        .unwrap();
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let last = buckets.last().unwrap();
            assert!(last.less_than.is_infinite());
            assert_eq!(last.count, 20.0);
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
}

#[test]
fn readiness_is_false_until_warm_up_completes() {
    let (open, gate) = mpsc::channel();
    let model = Scripted {
        gate: Mutex::new(Some(gate)),
        warmup: true,
    };
    let predictor = Predictor::builder(model).build().unwrap();
    let health = predictor.health();
    assert!(health.live);
    assert!(!health.warmed_up && !health.ready, "{health:?}");
    open.send(()).unwrap(); // the warm-up batch runs
    assert!(predictor.wait_warmed_up(Duration::from_secs(10)));
    let health = predictor.health();
    assert!(health.ready && health.warmed_up, "{health:?}");
    assert_eq!(
        predictor.stats().accepted,
        0,
        "warm-up is not counted as traffic"
    );
    predictor.shutdown();
    assert!(!predictor.health().live);
}

#[test]
fn a_failed_warm_up_keeps_the_predictor_not_ready() {
    let predictor = Predictor::builder(Scripted::default())
        .warmup(vec![666])
        .build()
        .unwrap();
    assert!(!predictor.wait_warmed_up(Duration::from_secs(10)));
    let health = predictor.health();
    assert!(!health.ready);
    assert_eq!(
        health.warmup_error.as_deref(),
        Some("the model panicked during warm-up")
    );
}

/// Length, word count and punctuation share of a text line.
fn features(text: &str) -> Vec<f64> {
    let chars = text.chars().count().max(1) as f64;
    let punct = text.chars().filter(|c| c.is_ascii_punctuation()).count() as f64;
    vec![chars, text.split_whitespace().count() as f64, punct / chars]
}

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Lines of this crate's own source: text of another kind (code).
fn code_lines() -> Vec<String> {
    let mut out = Vec::new();
    for dir in [
        "src",
        "src/batch",
        "src/cache",
        "src/registry",
        "src/metrics",
        "src/drift",
        "src/encoder",
        "src/models",
        "tests",
    ] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| l.len() > 20)
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

#[test]
fn psi_is_small_on_the_same_distribution_and_large_on_shifted_text() {
    let reference: Vec<Vec<f64>> = lines("examples/assets/drift/reference.txt")
        .iter()
        .map(|t| features(t))
        .collect();
    let alerts = Arc::new(AtomicUsize::new(0));
    let fired = alerts.clone();
    let config = DriftConfig {
        window: 500,
        check_every: 500,
        min_window: 500,
        ..DriftConfig::default()
    };
    let monitor = DriftMonitor::builder("text")
        .config(config)
        .features(&["chars", "words", "punctuation"], &reference)
        .on_alert(move |_, _| {
            fired.fetch_add(1, Ordering::SeqCst);
        })
        .build();

    for text in lines("examples/assets/drift/live.txt").iter().take(500) {
        monitor.observe_features(&features(text));
    }
    let same = monitor.last_report().unwrap();
    for f in &same.features {
        assert!(f.psi < 0.1, "same distribution: {} PSI {}", f.name, f.psi);
    }
    assert!(!same.drifted(), "{same:?}");
    assert_eq!(alerts.load(Ordering::SeqCst), 0);

    let code = code_lines();
    assert!(code.len() >= 500);
    for text in code.iter().take(500) {
        monitor.observe_features(&features(text));
    }
    let shifted = monitor.last_report().unwrap();
    let punct = shifted
        .features
        .iter()
        .find(|f| f.name == "punctuation")
        .unwrap();
    assert!(punct.psi > 0.25, "shifted: punctuation PSI {}", punct.psi);
    assert!(punct.ks_p < 0.001);
    assert!(shifted.drifted());
    assert_eq!(alerts.load(Ordering::SeqCst), 1, "the alert fires once");
}

#[test]
fn embedding_drift_score_stays_near_one_without_drift_and_jumps_with_it() {
    // Reference and live from one distribution; then live with a shifted mean.
    let mut seed = 7u64;
    let mut gauss = move || {
        // Sum of 12 uniforms - 6: approximately standard normal.
        (0..12)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 11) as f64 / (1u64 << 53) as f64
            })
            .sum::<f64>()
            - 6.0
    };
    let mut sample =
        |shift: f64| -> Vec<f32> { (0..32).map(|_| (gauss() + shift) as f32).collect() };
    let reference: Vec<Vec<f32>> = (0..2000).map(|_| sample(0.0)).collect();
    let monitor = DriftMonitor::builder("vectors")
        .embeddings(&reference)
        .build();
    for _ in 0..500 {
        monitor.observe_embedding(&sample(0.0));
    }
    let calm = monitor.check().embedding.unwrap();
    assert!(calm.score < 2.5, "no drift: score {}", calm.score);
    for _ in 0..500 {
        monitor.observe_embedding(&sample(0.3));
    }
    let drifted = monitor.check();
    let e = drifted.embedding.unwrap();
    // A shift of 0.3 sd in each of 32 dimensions: about 0.3·√32 / √(32·(1/500 + 1/2000)) = 6.
    assert!(e.score > 4.5, "drift: score {}", e.score);
    assert!(drifted.alerts.iter().any(|a| a.starts_with("embeddings")));
}

#[test]
fn a_drop_in_feedback_accuracy_fires_the_alert() {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let monitor = AccuracyMonitor::new(100, 0.9).on_alert(move |version, accuracy| {
        f.lock().unwrap().push((version.to_string(), accuracy));
    });
    // 200 good predictions, then a run of bad ones.
    for id in 0..400u64 {
        monitor.record(id, "v2", Prediction::Class(1));
    }
    for id in 0..200u64 {
        monitor.feedback(id, Prediction::Class(1)).unwrap();
    }
    assert_eq!(monitor.accuracy("v2"), Some(1.0));
    assert!(fired.lock().unwrap().is_empty());
    for id in 200..400u64 {
        monitor.feedback(id, Prediction::Class(0)).unwrap();
    }
    let fired = fired.lock().unwrap();
    assert_eq!(fired.len(), 1, "fires once: {fired:?}");
    assert_eq!(fired[0].0, "v2");
    assert!(fired[0].1 < 0.9);
    assert_eq!(monitor.accuracy("v2"), Some(0.0));
    assert!(monitor.feedback(9999, Prediction::Class(1)).is_err());
}

#[test]
fn a_drift_monitor_can_sit_on_a_predictor() {
    let monitor = Arc::new(
        DriftMonitor::builder("echo-out")
            .classes(10, &(0..1000).map(|i| i % 10).collect::<Vec<_>>())
            .build(),
    );
    let m = monitor.clone();
    let predictor = Predictor::builder(Scripted::default())
        .observe_outputs(1.0, move |out: &u64| m.observe_class(*out as usize % 10))
        .build()
        .unwrap();
    for x in 0..300 {
        predictor.predict(x % 10).unwrap();
    }
    let report = monitor.check();
    assert_eq!(report.window, 300);
    assert!(report.class_psi.unwrap() < 0.01);
    for _ in 0..300 {
        predictor.predict(3).unwrap();
    }
    let report = monitor.check();
    assert!(report.class_psi.unwrap() > 0.25, "{report:?}");
    let metrics = Metrics::new();
    metrics.register_drift(&monitor);
    assert!(
        metrics
            .encode()
            .contains(r#"modelhost_drift_alert{monitor="echo-out"} 1"#)
    );
}
