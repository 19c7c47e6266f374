//! Scaled dot-product attention of one text and one head, for the packed CPU encoder.
//!
//! The products are tiny (a 26-token text and a 32-wide head: 22 k multiply-adds each), so
//! a general GEMM's set-up and packing cost more than the arithmetic. Both products are
//! written as broadcast-and-accumulate loops over contiguous rows, which LLVM vectorises
//! (compiled for AVX-512 and AVX2 + FMA besides the baseline, picked at run time):
//!
//! * `scores[i, ·] = Σ_c (scale · q[i, c]) · kᵀ[c, ·]` over a transposed copy of K, so each
//!   step adds a scaled row of `kᵀ` to the scores row;
//! * `ctx[i, ·] = Σ_j p[i, j] · v[j, ·]`, adding scaled rows of V.
//!
//! No horizontal sums, so the compiled code keeps every lane busy; the multiply-adds are
//! not fused, and run in the same order on every ISA level.

use super::kernels::{dispatch, softmax_rows};

/// Per-thread scratch of one (text, head): K transposed, the scores and the context rows.
#[derive(Default)]
pub(crate) struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    ctx: Vec<f32>,
}

dispatch! {
    fn transpose_head(k: &[f32], stride: usize, len: usize, d: usize, kt: &mut [f32]) {
        for j in 0..len {
            let row = &k[j * stride..j * stride + d];
            for (c, &v) in row.iter().enumerate() {
                kt[c * len + j] = v;
            }
        }
    }
}

dispatch! {
    fn scores_rows(
        q: &[f32],
        stride: usize,
        kt: &[f32],
        len: usize,
        d: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            row.fill(0.0);
            let qi = &q[i * stride..i * stride + d];
            for (c, &qc) in qi.iter().enumerate() {
                let qc = qc * scale;
                for (s, &k) in row.iter_mut().zip(&kt[c * len..(c + 1) * len]) {
                    *s += qc * k;
                }
            }
        }
    }
}

dispatch! {
    fn context_rows(
        probs: &[f32],
        len: usize,
        v: &[f32],
        stride: usize,
        d: usize,
        ctx: &mut [f32],
    ) {
        for (p_row, out) in probs.chunks_exact(len).zip(ctx.chunks_exact_mut(d)) {
            out.fill(0.0);
            for (j, &p) in p_row.iter().enumerate() {
                for (o, &x) in out.iter_mut().zip(&v[j * stride..j * stride + d]) {
                    *o += p * x;
                }
            }
        }
    }
}

/// Attention of one text and head. `q`, `k`, `v` start at the text's first row of the
/// head's columns, rows `stride` apart (`len` rows of `d` values each); `bias` is MPNet's
/// relative position bias of this head (`2·max − 1` values, the one for distance `r` at
/// `r + max − 1`, where `max − 1 ≥ len − 1`). Returns the context rows, `[len, d]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head<'s>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    len: usize,
    d: usize,
    scale: f32,
    bias: Option<(&[f32], usize)>,
    scratch: &'s mut Scratch,
) -> &'s [f32] {
    let Scratch { kt, scores, ctx } = scratch;
    kt.resize(len * d, 0.0);
    scores.resize(len * len, 0.0);
    ctx.resize(len * d, 0.0);
    let (kt, scores, ctx) = (
        &mut kt[..len * d],
        &mut scores[..len * len],
        &mut ctx[..len * d],
    );
    transpose_head(k, stride, len, d, kt);
    scores_rows(q, stride, kt, len, d, scale, scores);
    if let Some((bias, max)) = bias {
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            // Key j is j − i positions after query i: entry j − i + max − 1.
            let from = max - 1 - i;
            for (s, b) in row.iter_mut().zip(&bias[from..from + len]) {
                *s += b;
            }
        }
    }
    softmax_rows(scores, len);
    context_rows(scores, len, v, stride, d, ctx);
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same attention in plain f64 loops.
    fn reference(qkv: &[f32], stride: usize, len: usize, d: usize, scale: f32) -> Vec<f32> {
        let at = |r: usize, part: usize, c: usize| qkv[r * stride + part * d + c] as f64;
        let mut out = vec![0f32; len * d];
        for i in 0..len {
            let s: Vec<f64> = (0..len)
                .map(|j| (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() * scale as f64)
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..d {
                out[i * d + c] = ((0..len).map(|j| e[j] / sum * at(j, 2, c)).sum::<f64>()) as f32;
            }
        }
        out
    }

    #[test]
    fn one_head_matches_plain_f64_attention_at_every_length() {
        let d = 32;
        let stride = 3 * d + 5; // rows of [q | k | v | other columns]
        let mut scratch = Scratch::default();
        for len in [1, 2, 7, 16, 17, 33, 130] {
            let qkv: Vec<f32> = (0..len * stride)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.8)
                .collect();
            let scale = 1.0 / (d as f32).sqrt();
            let ours = head(
                &qkv,
                &qkv[d..],
                &qkv[2 * d..],
                stride,
                len,
                d,
                scale,
                None,
                &mut scratch,
            )
            .to_vec();
            let expected = reference(&qkv, stride, len, d, scale);
            for (a, b) in ours.iter().zip(&expected) {
                assert!((a - b).abs() < 2e-6, "len {len}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_relative_bias_shifts_each_score_by_its_distance() {
        // With Q = 0 every score is its bias, so the softmax weights come from the bias.
        let (len, d, max) = (3, 2, 4);
        let stride = 3 * d;
        let mut qkv = vec![0f32; len * stride];
        for j in 0..len {
            qkv[j * stride + 2 * d] = j as f32; // v[j] = (j, 0)
        }
        let bias: Vec<f32> = (0..2 * max - 1).map(|r| r as f32).collect(); // distance r - 3
        let mut scratch = Scratch::default();
        let ctx = head(
            &qkv,
            &qkv[d..],
            &qkv[2 * d..],
            stride,
            len,
            d,
            1.0,
            Some((&bias, max)),
            &mut scratch,
        )
        .to_vec();
        for i in 0..len {
            // Scores j - i + 3 for j in 0..3: softmax weights ∝ e^j whatever i is.
            let w: Vec<f64> = (0..len).map(|j| (j as f64).exp()).collect();
            let expected = (0..len).map(|j| w[j] * j as f64).sum::<f64>() / w.iter().sum::<f64>();
            assert!((ctx[i * d] as f64 - expected).abs() < 1e-6, "row {i}");
        }
    }
}
