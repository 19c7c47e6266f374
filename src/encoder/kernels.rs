//! CPU kernels for the packed encoder: matrix products through `gemm` (candle's CPU GEMM),
//! and fused element-wise passes (bias + GELU, residual + layer norm, softmax) written so
//! LLVM vectorises them; on x86-64 they are compiled a second time for AVX2 + FMA and picked
//! at run time.

use gemm::Parallelism;

/// Lanes of the partial sums in reductions: independent accumulators let LLVM vectorise a
/// float reduction without reordering that changes results between runs.
const LANES: usize = 8;

/// Runs `$body` (an expression using the function's arguments) compiled for AVX-512 or
/// AVX2 + FMA when the [`isa::active`](super::isa::active) level has them (detected at run
/// time, capped by `MODELHOST_ISA`), and for the baseline target otherwise.
macro_rules! dispatch {
    (fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                use super::isa::{self, Isa};
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                let level = isa::active();
                if level >= Isa::Avx512 {
                    // SAFETY: the CPU supports the features `avx512` was compiled for
                    // (`isa::active` never exceeds what was detected).
                    return unsafe { avx512($($arg),*) };
                }
                if level >= Isa::Avx2 {
                    // SAFETY: as above, for `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// `exp(x)` for f32 to about 2 ulp, in plain arithmetic that vectorises (Cephes `expf`).
/// `n = round(x · log₂e)` and `2ⁿ` come from adding `1.5 · 2²³` (the integer lands in the
/// low mantissa bits) instead of a float → int conversion: Rust's saturating `as i32`
/// does not vectorise, and was most of the softmax's time.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.376_26);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // n is in -126..=128: its bits in t, re-biased, are 2ⁿ's exponent.
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    y * f32::from_bits(biased << 23)
}

/// `erf(x)` as a rational function of x (the coefficients of Eigen's float `erf`), to a few
/// 1e-7 absolute error and with no `exp`.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// The activation after the first feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x · Φ(x)` with the exact (erf) normal CDF: BERT's `gelu`.
    Gelu,
    /// The tanh approximation of GELU (`gelu_new`, `gelu_approximate`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

dispatch! {
    fn bias_gelu_rows(xs: &mut [f32], bias: &[f32]) {
        for row in xs.chunks_exact_mut(bias.len()) {
            for (x, b) in row.iter_mut().zip(bias) {
                let v = *x + b;
                *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }
}

dispatch! {
    fn bias_gelu_tanh_rows(xs: &mut [f32], bias: &[f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for row in xs.chunks_exact_mut(bias.len()) {
            for (x, b) in row.iter_mut().zip(bias) {
                let v = *x + b;
                let u = C * (v + 0.044_715 * v * v * v);
                // tanh(u) = 1 - 2 / (exp(2u) + 1)
                let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
                *x = 0.5 * v * (1.0 + t);
            }
        }
    }
}

/// Rows per parallel task in the row-wise passes.
const ROWS_PER_TASK: usize = 16;

/// `x = act(x + bias)` for every row (rows of `bias.len()`), in parallel over rows.
pub(crate) fn bias_activate(xs: &mut [f32], bias: &[f32], act: Activation) {
    use rayon::prelude::*;
    xs.par_chunks_mut(bias.len() * ROWS_PER_TASK)
        .for_each(|rows| match act {
            Activation::Gelu => bias_gelu_rows(rows, bias),
            Activation::GeluTanh => bias_gelu_tanh_rows(rows, bias),
            Activation::Relu => rows.chunks_exact_mut(bias.len()).for_each(|row| {
                row.iter_mut()
                    .zip(bias)
                    .for_each(|(x, b)| *x = (*x + b).max(0.0))
            }),
        });
}

/// The largest of `xs` (`-inf` for none; NaNs are skipped), in lanes that vectorise:
/// `f32::max` in a fold kept the loop scalar.
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 2 * LANES];
    let chunks = xs.chunks_exact(2 * LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..2 * LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let fold = |m: f32, &v: &f32| if v > m { v } else { m };
    rest.iter()
        .fold(acc.iter().fold(f32::NEG_INFINITY, fold), fold)
}

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

dispatch! {
    fn add_layer_norm_rows(
        x: &mut [f32],
        bias: &[f32],
        residual: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let h = gamma.len();
        for (i, row) in x.chunks_exact_mut(h).enumerate() {
            if !bias.is_empty() {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            if !residual.is_empty() {
                for (v, r) in row.iter_mut().zip(&residual[i * h..(i + 1) * h]) {
                    *v += r;
                }
            }
            let mean = sum(row) / h as f32;
            let mut acc = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let mut var = 0f32;
            for v in chunks.remainder() {
                var += (v - mean) * (v - mean);
            }
            for c in chunks {
                for l in 0..LANES {
                    let d = c[l] - mean;
                    acc[l] += d * d;
                }
            }
            var = (var + acc.iter().sum::<f32>()) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// `x = layer_norm(x + bias + residual)` row by row (rows of `gamma.len()`), in parallel.
pub(crate) fn add_layer_norm(
    x: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    use rayon::prelude::*;
    let h = gamma.len();
    x.par_chunks_mut(h * ROWS_PER_TASK)
        .zip(residual.par_chunks(h * ROWS_PER_TASK))
        .for_each(|(x, r)| add_layer_norm_rows(x, bias, r, gamma, beta, eps));
}

/// `x = layer_norm(x)` row by row, in parallel.
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    use rayon::prelude::*;
    let h = gamma.len();
    x.par_chunks_mut(h * ROWS_PER_TASK)
        .for_each(|x| add_layer_norm_rows(x, &[], &[], gamma, beta, eps));
}

/// Softmax of every row of `width` scores: at AVX-512 in blocks of 16 with the row's tail
/// padded (so short rows' exponentials are not left to a scalar loop), else as before (the
/// padded tail made AVX2 up to 12 % slower).
pub(crate) fn softmax_rows(scores: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::isa::active() >= super::isa::Isa::Avx512 {
        return softmax_rows_blocked(scores, width);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = softmax_rows_blocked;
    softmax_rows_plain(scores, width);
}

dispatch! {
    fn softmax_rows_plain(scores: &mut [f32], width: usize) {
        for row in scores.chunks_exact_mut(width) {
            let max = max(row);
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let inv = 1.0 / sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

// Whole blocks of 16 run in place; a row's tail is padded to a block in a buffer, so the
// exponentials never run in a scalar remainder loop (rows of a few dozen scores, one text
// at a time, left up to 15 of them there).
dispatch! {
    fn softmax_rows_blocked(scores: &mut [f32], width: usize) {
        const BLOCK: usize = 16;
        for row in scores.chunks_exact_mut(width) {
            let max = max(row);
            let mut acc = [0f32; BLOCK];
            let mut blocks = row.chunks_exact_mut(BLOCK);
            for block in &mut blocks {
                for (v, acc) in block.iter_mut().zip(&mut acc) {
                    let e = exp(*v - max);
                    *v = e;
                    *acc += e;
                }
            }
            let tail = blocks.into_remainder();
            if !tail.is_empty() {
                let len = tail.len();
                let mut buf = [0f32; BLOCK];
                buf[..len].copy_from_slice(tail);
                for (l, (v, acc)) in buf.iter_mut().zip(&mut acc).enumerate() {
                    let e = exp(*v - max);
                    *v = e;
                    *acc += if l < len { e } else { 0.0 };
                }
                tail.copy_from_slice(&buf[..len]);
            }
            let inv = 1.0 / acc.iter().sum::<f32>();
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Row-major matrix views for [`matmul`]: element `(r, c)` is at `ptr[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

impl View {
    /// A contiguous row-major matrix with `cols` columns.
    pub(crate) fn rows(cols: usize) -> View {
        View {
            rs: cols as isize,
            cs: 1,
        }
    }
}

/// `dst[m×n] (= dst if accumulate, else 0) + scale · lhs[m×k] · rhs[k×n]`.
///
/// # Safety
/// Every element addressed through the pointers and views must lie inside its buffer, and
/// `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_view: View,
    accumulate: bool,
    lhs: *const f32,
    lhs_view: View,
    rhs: *const f32,
    rhs_view: View,
    scale: f32,
    threads: usize,
) {
    let small = m * n * k < 64 * 64 * 64;
    let parallelism = if threads > 1 && !small {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_view.cs,
            dst_view.rs,
            accumulate,
            lhs,
            lhs_view.cs,
            lhs_view.rs,
            rhs,
            rhs_view.cs,
            rhs_view.rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f32;
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0).collect();
        let mut ys = xs.clone();
        bias_gelu_rows(&mut ys, &[0.0; 8]);
        for (x, y) in xs.iter().zip(&ys) {
            let x64 = f64::from(*x);
            let want = 0.5 * x64 * (1.0 + libm_erf(x64 / std::f64::consts::SQRT_2));
            assert!(
                (f64::from(*y) - want).abs() < 2e-6,
                "gelu({x}) = {y}, want {want}"
            );
        }
    }

    /// erf in f64 by its Taylor series (|x| < 5 converges well in f64).
    fn libm_erf(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_and_unit_variance() {
        let h = 384;
        let mut x: Vec<f32> = (0..2 * h)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let residual = vec![0.5f32; 2 * h];
        add_layer_norm(&mut x, &[], &residual, &vec![1.0; h], &vec![0.0; h], 1e-12);
        for row in x.chunks(h) {
            let mean: f32 = row.iter().sum::<f32>() / h as f32;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / h as f32;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
    }

    /// `matmul` on small attention-like layouts against f64 sums, accumulating or not.
    #[test]
    fn small_matmul_matches_reference() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 250.0;
        for &(m, n, k) in &[
            (1, 1, 1),
            (26, 26, 32),
            (26, 32, 26),
            (13, 17, 33),
            (5, 40, 7),
        ] {
            // Operands inside wider rows (stride 3·w), as Q, K and V sit in the qkv rows.
            let (ld_a, ld_b) = (3 * k + 5, 3 * (k.max(n)) + 5);
            let a: Vec<f32> = (0..m * ld_a).map(value).collect();
            let b: Vec<f32> = (0..k.max(n) * ld_b).map(|i| value(i + 3)).collect();
            for (dots, accumulate) in [(true, false), (true, true), (false, false), (false, true)] {
                // dots: rhs element (p, j) at b[j·ld_b + p]; else at b[p·ld_b + j].
                let rhs_view = if dots {
                    View {
                        rs: 1,
                        cs: ld_b as isize,
                    }
                } else {
                    View {
                        rs: ld_b as isize,
                        cs: 1,
                    }
                };
                let init: Vec<f32> = (0..m * n).map(|i| value(i + 11)).collect();
                let mut dst = init.clone();
                // SAFETY: every view addresses elements inside a, b and dst.
                unsafe {
                    matmul(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        View::rows(n),
                        accumulate,
                        a.as_ptr(),
                        View {
                            rs: ld_a as isize,
                            cs: 1,
                        },
                        b.as_ptr(),
                        rhs_view,
                        0.5,
                        1,
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut size) = (0f64, 0f64);
                        for p in 0..k {
                            let y = if dots {
                                b[j * ld_b + p]
                            } else {
                                b[p * ld_b + j]
                            };
                            let t = f64::from(a[i * ld_a + p]) * f64::from(y);
                            want += t;
                            size += t.abs();
                        }
                        want *= 0.5;
                        if accumulate {
                            want += f64::from(init[i * n + j]);
                        }
                        let got = f64::from(dst[i * n + j]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (size + 1.0),
                            "{m}x{n}x{k} dots {dots} acc {accumulate}: [{i}][{j}] {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let mut s = vec![1.0, 2.0, 3.0, -1e4, 0.0, 0.0];
        softmax_rows(&mut s, 3);
        assert!((s[0] + s[1] + s[2] - 1.0).abs() < 1e-6);
        assert!(s[0] < s[1] && s[1] < s[2]);
        assert!((s[4] - 0.5).abs() < 1e-6 && s[3] < 1e-30);
        // Rows longer than a block of 16, with a tail.
        for width in [16, 26, 33] {
            let mut s: Vec<f32> = (0..2 * width)
                .map(|i| (i as f32 * 0.7).sin() * 5.0)
                .collect();
            let want: Vec<f64> = s
                .chunks(width)
                .flat_map(|row| {
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let e: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    e.into_iter().map(move |v| v / total)
                })
                .collect();
            softmax_rows(&mut s, width);
            for (got, want) in s.iter().zip(&want) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-6,
                    "{width}: {got} vs {want}"
                );
            }
        }
    }
}
