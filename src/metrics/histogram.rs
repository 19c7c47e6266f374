//! A lock-free latency histogram with log-spaced buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of latency: quantiles are exact to within 2^(1/8) ≈ 9 %.
const PER_OCTAVE: usize = 8;
/// Octaves from 1 µs: up to 2^30 µs ≈ 18 minutes.
const OCTAVES: usize = 30;
const BUCKETS: usize = PER_OCTAVE * OCTAVES + 1;

/// Counts of latencies in log-spaced buckets from 1 µs to ~18 minutes; recording is one
/// atomic add. Quantiles are read as the upper edge of the bucket they fall in.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LatencyHistogram")
            .field(&self.summary())
            .finish()
    }
}

fn bucket_of(us: f64) -> usize {
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * PER_OCTAVE as f64).ceil() as usize).min(BUCKETS - 1)
}

fn upper_edge(bucket: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf(bucket as f64 / PER_OCTAVE as f64) / 1e6)
}

/// Count, mean and quantiles of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Latencies recorded.
    pub count: u64,
    /// Their mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let us = latency.as_secs_f64() * 1e6;
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us as u64, Ordering::Relaxed);
    }

    /// The latency below which a fraction `q` (0..=1) of the recorded ones fall (the upper
    /// edge of its bucket); zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_edge(bucket);
            }
        }
        upper_edge(BUCKETS - 1)
    }

    /// Per-bucket counts regrouped under `bounds` (seconds, ascending) plus a last `+Inf`
    /// bucket, the sum in seconds and the count, for export. A fine bucket goes under the
    /// first bound at or above its upper edge, so a bound is exact to within one fine bucket
    /// (9 %).
    pub(crate) fn buckets_for(&self, bounds: &[f64]) -> (Vec<(f64, u64)>, f64, u64) {
        let mut out: Vec<(f64, u64)> = bounds
            .iter()
            .map(|b| (*b, 0))
            .chain(std::iter::once((f64::INFINITY, 0)))
            .collect();
        for (bucket, n) in self.buckets.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let edge = upper_edge(bucket).as_secs_f64();
            let slot = out
                .iter()
                .position(|(b, _)| edge <= *b * (1.0 + 1e-9))
                .unwrap_or(out.len() - 1);
            out[slot].1 += n;
        }
        let count = out.iter().map(|(_, n)| n).sum();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (out, sum, count)
    }

    /// Count, mean, p50, p95 and p99.
    pub fn summary(&self) -> LatencySummary {
        let count = self.count.load(Ordering::Relaxed);
        let mean = Duration::from_micros(
            self.sum_us
                .load(Ordering::Relaxed)
                .checked_div(count)
                .unwrap_or(0),
        );
        LatencySummary {
            count,
            mean,
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_within_one_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        for (got, want) in [(s.p50, 50.0), (s.p95, 95.0), (s.p99, 99.0)] {
            let got = got.as_secs_f64() * 1e3;
            assert!(got >= want && got <= want * 1.091, "{got} ms for {want} ms");
        }
        assert_eq!(s.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        assert_eq!(
            LatencyHistogram::default().summary(),
            LatencySummary::default()
        );
    }
}
