//! Prometheus / OpenMetrics text exposition of what predictors, registries and caches
//! record, through `prometheus-client`'s encoder.
//!
//! Nothing is recorded twice: predictors keep their own lock-free counters and histograms
//! (which `stats()` also reads); [`Metrics`] reads them when it is scraped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::histogram::LatencyHistogram;
use super::recorder::{Outcome, StatsRecorder};

/// Upper bounds of the exported latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

/// `(name, value)` label pairs of one series.
pub(crate) type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    kind: MetricType,
    unit: Option<Unit>,
    series: Vec<(Labels, Value)>,
}

/// What a scrape collects, by metric name.
#[derive(Default)]
pub(crate) struct Scrape {
    families: BTreeMap<&'static str, Family>,
}

impl Scrape {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        unit: Option<Unit>,
        labels: Labels,
        value: Value,
    ) {
        self.families
            .entry(name)
            .or_insert_with(|| Family {
                help,
                kind,
                unit,
                series: Vec::new(),
            })
            .series
            .push((labels, value));
    }

    /// Adds a counter (for sources outside this module, e.g. caches).
    pub(crate) fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        v: u64,
    ) {
        self.push(
            name,
            help,
            MetricType::Counter,
            None,
            labels,
            Value::Counter(v),
        );
    }

    /// Adds a gauge (for sources outside this module, e.g. drift monitors).
    pub(crate) fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.push(name, help, MetricType::Gauge, None, labels, Value::Gauge(v));
    }

    fn latency(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &Labels,
        h: &LatencyHistogram,
    ) {
        let (buckets, sum, count) = h.buckets_for(&LATENCY_BOUNDS);
        self.push(
            name,
            help,
            MetricType::Histogram,
            Some(Unit::Seconds),
            labels.clone(),
            Value::Histogram {
                sum,
                count,
                buckets,
            },
        );
    }

    /// Adds everything a predictor records, labelled with its model and version.
    pub(crate) fn predictor(
        &mut self,
        stats: &StatsRecorder,
        model: &str,
        version: &str,
        queue_depth: usize,
        ready: bool,
        workers: usize,
    ) {
        let labels: Labels = vec![
            ("model", model.to_string()),
            ("version", version.to_string()),
        ];
        let snapshot = stats.snapshot();
        for outcome in Outcome::ALL {
            let mut l = labels.clone();
            l.push(("outcome", outcome.as_str().to_string()));
            self.counter(
                "modelhost_requests",
                "Requests by how they ended.",
                l,
                snapshot.outcome(outcome),
            );
        }
        self.latencies(stats, &labels);
        self.batch_shapes(stats, snapshot.batches, &labels);
        let gauges = [
            (
                "modelhost_queue_depth",
                "Requests waiting in the queue.",
                queue_depth as f64,
            ),
            (
                "modelhost_in_flight_requests",
                "Requests accepted and not answered yet.",
                snapshot.in_flight as f64,
            ),
            (
                "modelhost_ready",
                "1 when the predictor is ready for traffic.",
                f64::from(u8::from(ready)),
            ),
            (
                "modelhost_workers_alive",
                "Worker threads running.",
                workers as f64,
            ),
        ];
        for (name, help, v) in gauges {
            self.gauge(name, help, labels.clone(), v);
        }
        let cache = [
            (
                "modelhost_cache_hits",
                "Requests answered from the prediction cache.",
                snapshot.cache_hits,
            ),
            (
                "modelhost_cache_misses",
                "Requests the cache could not answer.",
                snapshot.cache_misses,
            ),
            (
                "modelhost_cache_coalesced",
                "Requests that waited for an identical one in flight.",
                snapshot.cache_coalesced,
            ),
        ];
        for (name, help, v) in cache {
            self.counter(name, help, labels.clone(), v);
        }
    }

    /// A predictor's latency histograms: end to end, queue wait and batch compute.
    fn latencies(&mut self, stats: &StatsRecorder, labels: &Labels) {
        self.latency(
            "modelhost_request_duration",
            "From the call to its answer: preprocessing, queue and compute.",
            labels,
            &stats.latency,
        );
        self.latency(
            "modelhost_queue_duration",
            "Time a request waited in the queue before its batch started.",
            labels,
            &stats.queue_wait,
        );
        self.latency(
            "modelhost_batch_compute_duration",
            "Compute time of one batch.",
            labels,
            &stats.compute,
        );
    }

    /// A predictor's batch size and batch token histograms.
    fn batch_shapes(&mut self, stats: &StatsRecorder, batches: u64, labels: &Labels) {
        let sizes = stats.batch_size_counts();
        let size_sum: u64 = sizes.iter().map(|(s, n)| *s as u64 * n).sum();
        let size_buckets = pow2_buckets(sizes.iter().map(|(s, n)| (*s as u64, *n)));
        self.push(
            "modelhost_batch_size",
            "Requests per batch.",
            MetricType::Histogram,
            None,
            labels.clone(),
            Value::Histogram {
                sum: size_sum as f64,
                count: batches,
                buckets: size_buckets,
            },
        );
        let (token_buckets, token_sum) = stats.batch_token_buckets();
        self.push(
            "modelhost_batch_tokens",
            "Cost units (tokens for text) per batch.",
            MetricType::Histogram,
            None,
            labels.clone(),
            Value::Histogram {
                sum: token_sum as f64,
                count: batches,
                buckets: token_buckets,
            },
        );
    }

    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, family) in &self.families {
            let mut metric =
                encoder.encode_descriptor(name, family.help, family.unit.as_ref(), family.kind)?;
            for (labels, value) in &family.series {
                let mut series = metric.encode_family(labels)?;
                match value {
                    Value::Counter(v) => series.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    Value::Gauge(v) => series.encode_gauge(v)?,
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

/// Per-bucket counts with upper bounds 1, 2, 4, ... for `(value, count)` pairs.
fn pow2_buckets(values: impl Iterator<Item = (u64, u64)>) -> Vec<(f64, u64)> {
    let mut buckets = vec![0u64; 17];
    for (v, n) in values {
        let i = (v.max(1).next_power_of_two().trailing_zeros() as usize).min(buckets.len() - 1);
        buckets[i] += n;
    }
    let last = buckets.len() - 1;
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            (
                if i == last {
                    f64::INFINITY
                } else {
                    (1u64 << i) as f64
                },
                n,
            )
        })
        .collect()
}

/// Something that adds series to a scrape; `false` once what it watches is gone.
type Source = Box<dyn Fn(&mut Scrape) -> bool + Send + Sync>;

/// The metrics of the predictors, registries, caches and drift monitors registered with it,
/// in the Prometheus text exposition format (OpenMetrics flavour), read when scraped.
///
/// Metric names: `modelhost_requests_total{model,version,outcome}`,
/// `modelhost_request_duration_seconds`, `modelhost_queue_duration_seconds`,
/// `modelhost_batch_compute_duration_seconds`, `modelhost_batch_size`,
/// `modelhost_batch_tokens` (histograms), `modelhost_queue_depth`,
/// `modelhost_in_flight_requests`, `modelhost_ready`, `modelhost_workers_alive` (gauges),
/// `modelhost_cache_{hits,misses,coalesced}_total{model,version}`,
/// `modelhost_cache_evictions_total{cache}`, `modelhost_cache_entries{cache}`,
/// `modelhost_cache_bytes{cache}` and the drift gauges of
/// `drift::DriftMonitor`.
///
/// ```
/// use modelhost::{metrics::Metrics, models::mlp::MlpClassifier, Predictor};
///
/// let metrics = Metrics::new();
/// let predictor = Predictor::builder(MlpClassifier::load("examples/assets/digits")?).build()?;
/// metrics.register_predictor(&predictor);
/// predictor.predict(vec![0.0; 64])?;
/// let text = metrics.encode();
/// assert!(text.contains(r#"modelhost_requests_total{model="digits",version="0",outcome="success"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Metrics {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sources.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Metrics").field("sources", &n).finish()
    }
}

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, source: Source) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    /// Adds a source of series, scraped until it returns `false` (what it watches is
    /// gone). Predictors, registries, caches and drift monitors register themselves
    /// through it, each in its own module, so this one imports none of them.
    pub(crate) fn register_source(
        &self,
        source: impl Fn(&mut Scrape) -> bool + Send + Sync + 'static,
    ) {
        self.add(Box::new(source));
    }

    fn collect(&self) -> Scrape {
        let mut scrape = Scrape::default();
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|source| source(&mut scrape));
        scrape
    }

    /// The exposition text (`Content-Type: application/openmetrics-text; version=1.0.0;
    /// charset=utf-8`), ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Metrics {
    /// The same metrics in the classic Prometheus text format (`Content-Type: text/plain;
    /// version=0.0.4`), for scrapers and parsers that do not speak OpenMetrics: counter
    /// families are named with their `_total` suffix, and there are no `# UNIT` or `# EOF`
    /// lines.
    pub fn encode_prometheus(&self) -> String {
        let open_metrics = self.encode();
        let counters: std::collections::HashSet<&str> = open_metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open_metrics.len());
        for line in open_metrics.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }
}

impl Collector for Metrics {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.collect().encode(encoder)
    }
}
