//! Tests of the dense kernels (`dense_f32`, `dense_bf16`, `dense_i8`) at every ISA level this
//! CPU supports, against f64 reference products on awkward shapes.
//!
//! Error bounds, per output `(r, c)`, with `S = Σ_i |x[r][i]·w[c][i]| + |bias[c]|`:
//! * f32: `|out − ref| ≤ 1e-4 · S`.
//! * bf16, against the exact product of the operands the kernel multiplies (bf16-rounded
//!   weights; activations rounded too on the `vdpbf16ps` path): `≤ 1e-5 · S` (f32
//!   accumulation only). Against the unrounded f64 product: rounding x and w to nearest
//!   bf16 (unit roundoff u = 2⁻⁸) moves each product by at most (2u + u²)·|x·w|, so
//!   `|out − ref| ≤ 2⁻⁷(1 + 2⁻⁹) · ‖x[r]‖₂ · ‖w[c]‖₂ + 1e-5 · S` (Cauchy–Schwarz).
//! * int8, against the quantized math done exactly (`acc` in i64, then
//!   `acc · (sx·sw) + bias` in f64): `≤ 1e-5 · (|acc·sx·sw| + |bias|)`. Against the
//!   unquantized product: `|x − sx·qx| ≤ sx/2`, `|w − sw·qw| ≤ sw/2`, so
//!   `|out − ref| ≤ (sw/2)‖x[r]‖₁ + (sx/2)‖w[c]‖₁ + k·sx·sw/4 + 1e-5 · S`.

use super::dense_bf16::{Method, PackedBf16, dense_bf16_by, dense_bf16_with};
use super::dense_f32::{PackedF32, dense_f32_with};
use super::dense_i8::{PackedI8, dense_i8_with, quantize_row};
use super::isa::{self, Isa};

/// Deterministic values in [-1, 1), with a few exact zeros and larger magnitudes mixed in.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            match i % 97 {
                0 => 0.0,
                1 => v * 8.0,
                _ => v,
            }
        })
        .collect()
}

/// (rows, n, k): rows 1, 7, 40, 129 and more; n not a multiple of 32 (and over 20 panels);
/// k odd, not a multiple of 4, and above the reduction block sizes.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1000, 383),
    (7, 385, 384),
    (40, 385, 383),
    (129, 1000, 385),
    (40, 33, 1537),
    (13, 31, 5),
    (3, 1, 1),
    (20, 100, 801),
    (300, 70, 66),
];

fn levels() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_supported())
        .collect()
}

struct Case {
    rows: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
}

fn cases() -> impl Iterator<Item = Case> {
    cases_of(&SHAPES)
}

fn cases_of(shapes: &[(usize, usize, usize)]) -> impl Iterator<Item = Case> + '_ {
    shapes.iter().enumerate().map(|(i, &(rows, n, k))| Case {
        rows,
        n,
        k,
        x: random(rows * k, 11 + i as u64),
        w: random(n * k, 101 + i as u64),
        bias: (i % 2 == 0).then(|| random(n, 1001 + i as u64)),
    })
}

/// Row counts around one and two microkernel strips (14 rows with AVX-512, 6 with AVX2):
/// one text at a time, where one row block is split into one column chunk per thread.
/// n = 416 is 13 panels (an odd number to share), k = 385 is over the f32 reduction block.
const SMALL_ROWS: [usize; 10] = [1, 2, 13, 14, 15, 26, 27, 31, 32, 33];

fn small_shapes() -> Vec<(usize, usize, usize)> {
    SMALL_ROWS.iter().map(|&rows| (rows, 416, 385)).collect()
}

/// Thread counts of the small-row tests (3 leaves panels unevenly shared).
const SMALL_THREADS: [usize; 3] = [1, 2, 3];

impl Case {
    fn bias(&self, c: usize) -> f64 {
        self.bias.as_ref().map_or(0.0, |b| f64::from(b[c]))
    }

    /// Σ_i x[r][i]·wv(c, i) in f64 and S (see the module docs).
    fn dot(
        &self,
        r: usize,
        c: usize,
        xv: impl Fn(f32) -> f32,
        wv: impl Fn(usize, usize) -> f32,
    ) -> (f64, f64) {
        let x = &self.x[r * self.k..][..self.k];
        let (mut sum, mut abs) = (0.0f64, 0.0f64);
        for (i, &xi) in x.iter().enumerate() {
            let p = f64::from(xv(xi)) * f64::from(wv(c, i));
            sum += p;
            abs += p.abs();
        }
        (sum + self.bias(c), abs + self.bias(c).abs())
    }

    fn row_norm(&self, r: usize) -> f64 {
        let x = &self.x[r * self.k..][..self.k];
        x.iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    fn col_norm(&self, c: usize) -> f64 {
        let w = &self.w[c * self.k..][..self.k];
        w.iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    fn describe(&self, what: &str, isa: Isa, threads: usize) -> String {
        format!(
            "{what} at {isa}, {threads} threads, rows {} n {} k {} bias {}",
            self.rows,
            self.n,
            self.k,
            self.bias.is_some()
        )
    }
}

fn check(ok: bool, what: &str, r: usize, c: usize, got: f32, want: f64, bound: f64) {
    assert!(
        ok,
        "{what}: out[{r}][{c}] = {got}, reference {want}, |diff| {} > {bound}",
        (f64::from(got) - want).abs()
    );
}

#[test]
fn f32_matches_reference() {
    check_f32(cases(), &[1, 2]);
}

#[test]
fn f32_small_row_counts_match_reference() {
    check_f32(cases_of(&small_shapes()), &SMALL_THREADS);
}

fn check_f32(cases: impl Iterator<Item = Case>, thread_counts: &[usize]) {
    for case in cases {
        let packed = PackedF32::new(&case.w, case.n, case.k);
        assert_eq!((packed.n(), packed.k()), (case.n, case.k));
        for isa in levels() {
            for &threads in thread_counts {
                let mut out = vec![f32::NAN; case.rows * case.n];
                dense_f32_with(
                    isa,
                    &case.x,
                    &packed,
                    case.bias.as_deref(),
                    &mut out,
                    case.rows,
                    threads,
                );
                let what = case.describe("f32", isa, threads);
                for r in 0..case.rows {
                    for c in 0..case.n {
                        let (want, s) = case.dot(r, c, |v| v, |c, i| case.w[c * case.k + i]);
                        let got = out[r * case.n + c];
                        let bound = 1e-4 * s;
                        check(
                            (f64::from(got) - want).abs() <= bound,
                            &what,
                            r,
                            c,
                            got,
                            want,
                            bound,
                        );
                    }
                }
            }
        }
    }
}

fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

#[test]
fn bf16_matches_reference() {
    check_bf16(cases(), &[1, 2]);
}

#[test]
fn bf16_small_row_counts_match_reference() {
    check_bf16(cases_of(&small_shapes()), &SMALL_THREADS);
}

fn check_bf16(cases: impl Iterator<Item = Case>, thread_counts: &[usize]) {
    for case in cases {
        let packed = PackedBf16::new(&case.w, case.n, case.k);
        assert_eq!((packed.n(), packed.k()), (case.n, case.k));
        for c in 0..case.n {
            for i in 0..case.k {
                assert_eq!(packed.weight(c, i), round_bf16(case.w[c * case.k + i]));
            }
        }
        for (isa, method) in levels()
            .into_iter()
            .flat_map(|isa| [(isa, Method::Widen), (isa, Method::DotBf16)])
            .filter(|&(isa, method)| method == Method::Widen || isa >= Isa::Avx512Bf16)
        {
            // Only the vdpbf16ps path rounds the activations.
            let rounds_x = method == Method::DotBf16;
            for &threads in thread_counts {
                let mut out = vec![f32::NAN; case.rows * case.n];
                let bias = case.bias.as_deref();
                dense_bf16_by(
                    method, isa, &case.x, &packed, bias, &mut out, case.rows, threads,
                );
                let what = case.describe(&format!("bf16 {method:?}"), isa, threads);
                for r in 0..case.rows {
                    for c in 0..case.n {
                        let got = out[r * case.n + c];
                        let xv = |v: f32| if rounds_x { round_bf16(v) } else { v };
                        let (exact, s) = case.dot(r, c, xv, |c, i| packed.weight(c, i));
                        let bound = 1e-5 * s;
                        check(
                            (f64::from(got) - exact).abs() <= bound,
                            &what,
                            r,
                            c,
                            got,
                            exact,
                            bound,
                        );
                        let (want, s) = case.dot(r, c, |v| v, |c, i| case.w[c * case.k + i]);
                        let bound = 2f64.powi(-7)
                            * (1.0 + 2f64.powi(-9))
                            * case.row_norm(r)
                            * case.col_norm(c)
                            + 1e-5 * s;
                        check(
                            (f64::from(got) - want).abs() <= bound,
                            &what,
                            r,
                            c,
                            got,
                            want,
                            bound,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn i8_matches_quantized_math() {
    check_i8(cases(), &[1, 2]);
}

#[test]
fn i8_small_row_counts_match_quantized_math() {
    check_i8(cases_of(&small_shapes()), &SMALL_THREADS);
}

fn check_i8(cases: impl Iterator<Item = Case>, thread_counts: &[usize]) {
    for case in cases {
        let (n, k) = (case.n, case.k);
        let packed = PackedI8::new(&case.w, n, k);
        assert_eq!((packed.n(), packed.k()), (n, k));
        // The weights as documented: scale max/127, round half away from zero.
        for c in 0..n {
            let row = &case.w[c * k..][..k];
            let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            let scale = max / 127.0;
            assert_eq!(packed.scale(c), scale);
            let mut sum = 0;
            for (i, &v) in row.iter().enumerate() {
                let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                assert_eq!(packed.weight(c, i), q, "weight {c} {i}");
                sum += i32::from(q);
            }
            assert_eq!(packed.column_sum(c), sum);
        }
        let mut qx = vec![0i8; case.rows * k];
        let sx: Vec<f32> = (0..case.rows)
            .map(|r| quantize_row(&case.x[r * k..][..k], &mut qx[r * k..][..k]))
            .collect();
        for isa in levels() {
            for &threads in thread_counts {
                let mut out = vec![f32::NAN; case.rows * n];
                dense_i8_with(
                    isa,
                    &case.x,
                    &packed,
                    case.bias.as_deref(),
                    &mut out,
                    case.rows,
                    threads,
                );
                let what = case.describe("i8", isa, threads);
                for r in 0..case.rows {
                    let x1: f64 = case.x[r * k..][..k]
                        .iter()
                        .map(|&v| f64::from(v.abs()))
                        .sum();
                    for c in 0..n {
                        let got = out[r * n + c];
                        let acc: i64 = (0..k)
                            .map(|i| i64::from(qx[r * k + i]) * i64::from(packed.weight(c, i)))
                            .sum();
                        let scale = f64::from(sx[r] * packed.scale(c));
                        let exact = acc as f64 * scale + case.bias(c);
                        let bound =
                            1e-5 * ((acc as f64 * scale).abs() + case.bias(c).abs()) + 1e-30;
                        check(
                            (f64::from(got) - exact).abs() <= bound,
                            &what,
                            r,
                            c,
                            got,
                            exact,
                            bound,
                        );
                        let (want, s) = case.dot(r, c, |v| v, |c, i| case.w[c * k + i]);
                        let w1: f64 = case.w[c * k..][..k]
                            .iter()
                            .map(|&v| f64::from(v.abs()))
                            .sum();
                        let (sxr, swc) = (f64::from(sx[r]), f64::from(packed.scale(c)));
                        let bound =
                            swc / 2.0 * x1 + sxr / 2.0 * w1 + k as f64 * sxr * swc / 4.0 + 1e-5 * s;
                        check(
                            (f64::from(got) - want).abs() <= bound,
                            &what,
                            r,
                            c,
                            got,
                            want,
                            bound,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn zero_and_empty_inputs() {
    for isa in levels() {
        let (n, k, rows) = (40, 9, 3);
        let w = random(n * k, 5);
        let bias = random(n, 6);
        let x = vec![0.0; rows * k];
        let mut out = vec![f32::NAN; rows * n];
        dense_i8_with(
            isa,
            &x,
            &PackedI8::new(&w, n, k),
            Some(&bias),
            &mut out,
            rows,
            2,
        );
        assert!(
            out.chunks_exact(n).all(|row| row == bias.as_slice()),
            "{isa}"
        );
        // k = 0: the product is empty, the output is the bias.
        let mut out = vec![f32::NAN; rows * n];
        dense_f32_with(
            isa,
            &[],
            &PackedF32::new(&[], n, 0),
            Some(&bias),
            &mut out,
            rows,
            1,
        );
        assert!(
            out.chunks_exact(n).all(|row| row == bias.as_slice()),
            "f32 k = 0 at {isa}"
        );
        out.fill(f32::NAN);
        dense_bf16_with(
            isa,
            &[],
            &PackedBf16::new(&[], n, 0),
            Some(&bias),
            &mut out,
            rows,
            1,
        );
        assert!(
            out.chunks_exact(n).all(|row| row == bias.as_slice()),
            "bf16 k = 0 at {isa}"
        );
        out.fill(f32::NAN);
        dense_i8_with(
            isa,
            &[],
            &PackedI8::new(&[], n, 0),
            Some(&bias),
            &mut out,
            rows,
            1,
        );
        assert!(
            out.chunks_exact(n).all(|row| row == bias.as_slice()),
            "i8 k = 0 at {isa}"
        );
        // Zero weights quantize to scale 0 without dividing by zero.
        let packed = PackedI8::new(&vec![0.0; n * k], n, k);
        let x = random(rows * k, 8);
        dense_i8_with(isa, &x, &packed, None, &mut out, rows, 1);
        assert!(out.iter().all(|&v| v == 0.0), "{isa}");
    }
}

#[test]
fn active_level_is_supported() {
    assert!(isa::active() <= isa::detected());
    assert!(levels().contains(&Isa::Portable));
}
