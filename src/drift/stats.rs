//! The statistics of drift: population stability index and two-sample Kolmogorov–Smirnov.

/// Fractions below this count as this much in PSI, so an empty bin does not divide by 0.
const EPS: f64 = 1e-4;

/// Bin edges at the deciles of a sorted reference sample (duplicates removed), so each bin
/// holds about a tenth of the reference.
pub(crate) fn decile_edges(sorted: &[f64]) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|i| {
            let rank = (i * sorted.len()) / 10;
            sorted
                .get(rank.min(sorted.len().saturating_sub(1)))
                .copied()
        })
        .collect();
    edges.dedup();
    edges
}

/// The bin of `x`: the number of edges strictly below it.
fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

/// Fraction of `values` in each bin.
pub(crate) fn fractions(edges: &[f64], values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    let mut n = 0usize;
    for v in values {
        counts[bin(edges, v)] += 1;
        n += 1;
    }
    counts
        .into_iter()
        .map(|c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
        .collect()
}

/// Population stability index of `actual` against `expected` bin fractions:
/// Σ (a − e) · ln(a / e). Below 0.1 is usually read as no shift, above 0.25 as a major one.
pub(crate) fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = (e.max(EPS), a.max(EPS));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Two-sample Kolmogorov–Smirnov: the statistic D (largest gap between the two empirical
/// distribution functions) and its asymptotic p-value. Both samples must be sorted.
pub(crate) fn ks(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 1.0);
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    (d, kolmogorov_q(lambda))
}

/// P(K > λ) for the Kolmogorov distribution.
fn kolmogorov_q(lambda: f64) -> f64 {
    // The alternating series converges slowly for small λ, where Q is 1 to within 1e-9
    // (Q(0.2) = 1 - 3e-11).
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn identical_distributions_have_small_psi_and_large_ks_p() {
        let mut r = lcg(1);
        let mut a: Vec<f64> = (0..5000).map(|_| r()).collect();
        let mut b: Vec<f64> = (0..5000).map(|_| r()).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let edges = decile_edges(&a);
        let p = psi(
            &fractions(&edges, a.iter().copied()),
            &fractions(&edges, b.iter().copied()),
        );
        assert!(p < 0.01, "psi {p}");
        let (d, pvalue) = ks(&a, &b);
        assert!(d < 0.05 && pvalue > 0.01, "D {d} p {pvalue}");
    }

    #[test]
    fn a_shifted_distribution_has_large_psi_and_tiny_ks_p() {
        let mut r = lcg(2);
        let mut a: Vec<f64> = (0..2000).map(|_| r()).collect();
        let mut b: Vec<f64> = (0..2000).map(|_| r() + 0.5).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let edges = decile_edges(&a);
        let p = psi(
            &fractions(&edges, a.iter().copied()),
            &fractions(&edges, b.iter().copied()),
        );
        assert!(p > 0.25, "psi {p}");
        let (d, pvalue) = ks(&a, &b);
        assert!((d - 0.5).abs() < 0.05 && pvalue < 1e-6, "D {d} p {pvalue}");
    }
}
