//! int8 dense layers: symmetric per-output-channel weights, symmetric per-row activations,
//! exact integer accumulation (`vpdpbusd` with AVX512_VNNI).
//!
//! Weights: for output column `c`, `sw[c] = max_i |w[c][i]| / 127` and
//! `qw[c][i] = round(w[c][i] / sw[c])` (ties away from zero, in −127..=127; a zero row gives
//! `sw = 0`, `qw = 0`), packed in the quad layout `vpdpbusd` reads: panels of [`NR`] = 32
//! columns, each `[k/4][32]` of `u32` holding 4 consecutive `i8` of one column (zero past
//! `k`), plus the column sums `Σ_i qw[c][i]`.
//!
//! Activations, per row `r` and call: `m = max_i |x[r][i]|`, `sx[r] = m / 127` and
//! `qx[r][i] = round_ties_even(x[r][i] · (127 / m))` clamped to −127..=127 (all zero when
//! `m` is below `f32::MIN_POSITIVE`). Then, with `acc = Σ_i qx·qw` exact in i32,
//!
//! `out[r][c] = (acc as f32) · (sx[r] · sw[c]) + bias[c]`
//!
//! (the multiply-add may be fused). `vpdpbusd` multiplies unsigned by signed bytes, so the
//! kernel feeds `qx + 128` and subtracts `128 · Σ_i qw[c][i]`; without VNNI, AVX2 sign-extends
//! both to i16 and uses `vpmaddwd` (no saturation), and the portable path plain i32 math.
//! All paths therefore give the same `acc`.

use super::dense_f32::NC_PANELS;
#[cfg(target_arch = "x86_64")]
use super::dense_f32::by_height;
use super::dense_plan::{self, Aligned, NR, SendPtr, Tile};
use super::isa::{self, Isa};

/// The longest reduction [`PackedI8`] accepts: `vpdpbusd` sums `(q + 128)·qw` terms of at
/// most 255 · 127 in i32, so `k · 32385` must stay below 2³¹.
pub(crate) const MAX_K: usize = 65_536;

/// Weights quantized and packed for [`dense_i8_with`] (see the module docs).
#[derive(Debug)]
pub(crate) struct PackedI8 {
    data: Aligned<u32>,
    /// `sw` per column, zero padded to whole panels.
    scales: Vec<f32>,
    /// `Σ_i qw[c][i]` per column, zero padded to whole panels.
    sums: Vec<i32>,
    n: usize,
    k: usize,
}

impl PackedI8 {
    /// Quantizes `w` (`[n, k]` row-major) per output column and packs it.
    ///
    /// # Panics
    /// If `k > MAX_K` (the i32 accumulators could overflow).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weights must be n × k");
        assert!(
            k <= MAX_K,
            "int8 products are limited to k ≤ {MAX_K}, got {k}"
        );
        let quads = k.div_ceil(4);
        let padded = n.div_ceil(NR) * NR;
        let mut data = Aligned::<u32>::zeroed(padded / NR * quads * NR);
        let mut scales = vec![0.0; padded];
        let mut sums = vec![0; padded];
        let packed = data.as_mut_slice();
        let mut q = vec![0i8; quads * 4];
        if k > 0 {
            for (col, row) in w.chunks_exact(k).enumerate() {
                let scale = quantize_weights(row, &mut q[..k]);
                scales[col] = scale;
                sums[col] = q.iter().map(|&v| i32::from(v)).sum();
                let panel = &mut packed[(col / NR) * quads * NR..][..quads * NR];
                for (step, quad) in panel.chunks_exact_mut(NR).zip(q.chunks_exact(4)) {
                    step[col % NR] = u32::from_le_bytes(quad.map_to_bytes());
                }
            }
        }
        PackedI8 {
            data,
            scales,
            sums,
            n,
            k,
        }
    }

    #[cfg(test)]
    /// Output features.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    #[cfg(test)]
    /// Input features.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.data.bytes() + self.scales.len() * 4 + self.sums.len() * 4
    }

    #[cfg(test)]
    /// The quantized weight `qw[col][i]`.
    pub(crate) fn weight(&self, col: usize, i: usize) -> i8 {
        assert!(col < self.n && i < self.k);
        let quads = self.k.div_ceil(4);
        let v = self.data.as_slice()[((col / NR) * quads + i / 4) * NR + col % NR];
        v.to_le_bytes()[i % 4] as i8
    }

    #[cfg(test)]
    /// The scale `sw[col]`.
    pub(crate) fn scale(&self, col: usize) -> f32 {
        self.scales[col]
    }

    #[cfg(test)]
    /// `Σ_i qw[col][i]`.
    pub(crate) fn column_sum(&self, col: usize) -> i32 {
        self.sums[col]
    }

    fn quads(&self) -> usize {
        self.k.div_ceil(4)
    }
}

/// Reinterprets four `i8` as bytes.
trait MapToBytes {
    fn map_to_bytes(&self) -> [u8; 4];
}

impl MapToBytes for [i8] {
    fn map_to_bytes(&self) -> [u8; 4] {
        [self[0] as u8, self[1] as u8, self[2] as u8, self[3] as u8]
    }
}

/// Quantizes one weight row into `q` (same length); returns its scale.
fn quantize_weights(row: &[f32], q: &mut [i8]) -> f32 {
    let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let scale = max / 127.0;
    if !(scale >= f32::MIN_POSITIVE && scale.is_finite()) {
        q.fill(0);
        return 0.0;
    }
    for (q, &v) in q.iter_mut().zip(row) {
        *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Quantizes one activation row into `q` (same length) as in the module docs; returns
/// `sx`. The reference for the vectorised versions, which give identical results.
pub(crate) fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_row_body(x, q)
}

#[inline(always)]
fn quantize_row_body(x: &[f32], q: &mut [i8]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.max(v.abs());
        }
    }
    for (l, &v) in lanes.iter_mut().zip(tail) {
        *l = l.max(v.abs());
    }
    let max = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    if !(max >= f32::MIN_POSITIVE && max.is_finite()) {
        q.fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// The int8 microkernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Plain i32 loops.
    Portable,
    /// AVX2 `vpmaddwd` on sign-extended i16, 6 rows × 8 columns.
    Avx2,
    /// AVX512_VNNI `vpdpbusd`, 14 rows × 32 columns.
    Vnni,
}

impl Level {
    fn for_isa(isa: Isa) -> Level {
        match isa.min(isa::detected()) {
            Isa::Portable => Level::Portable,
            Isa::Avx2 | Isa::Avx512 => Level::Avx2,
            Isa::Avx512Vnni | Isa::Avx512Bf16 => Level::Vnni,
        }
    }

    fn mr(self) -> usize {
        match self {
            Level::Portable => 4,
            Level::Avx2 => 6,
            Level::Vnni => 14,
        }
    }

    fn mc(self) -> usize {
        8 * self.mr()
    }
}

/// The most rows a packed activation block holds (`8 × 14`).
const MAX_MC: usize = 112;

/// `out[rows × n] = x[rows × k] · Wᵀ (+ bias)` with int8 weights and activations (see
/// the module docs) at level `isa`, lowered to what this CPU supports: `vpdpbusd` from
/// [`Isa::Avx512Vnni`], AVX2 `vpmaddwd` at [`Isa::Avx2`] and [`Isa::Avx512`].
pub(crate) fn dense_i8_with(
    isa: Isa,
    x: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    threads: usize,
) {
    let (n, k) = (w.n, w.k);
    dense_plan::check_shapes(x, bias, out, rows, n, k);
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out[..rows * n].chunks_exact_mut(n) {
            match bias {
                Some(bias) => row.copy_from_slice(bias),
                None => row.fill(0.0),
            }
        }
        return;
    }
    let level = Level::for_isa(isa);
    let tiles = dense_plan::split(rows, n, k, threads, level.mr(), level.mc());
    let ptr = SendPtr(out.as_mut_ptr());
    dense_plan::for_each_tile(&tiles, threads, |tile| {
        // SAFETY: `level` is supported (for_isa clamps to the detected level), `out`
        // holds rows × n values (checked) and tiles are disjoint.
        unsafe { run_tile(level, tile, x, w, bias, ptr) }
    });
}

/// What the int8 microkernels need besides the packed operands, for one strip × panel.
pub(crate) struct Epilogue {
    /// `sx` of the strip's rows.
    sx: *const f32,
    /// `sw` of the panel's 32 columns (padded).
    sw: *const f32,
    /// Column sums of the panel's 32 columns (padded).
    sums: *const i32,
    /// Bias of the panel's first column (`cols` values valid), if any.
    bias: Option<*const f32>,
}

/// An int8 microkernel: `m`, `quads`, packed strip (layout per level), panel `[quads][NR]`
/// (64-byte aligned), output, its row stride, valid columns (1..=NR), epilogue.
///
/// # Safety
/// The pointers must be valid for those extents, the outputs accessed by nothing else, and
/// the CPU must support the kernel's level.
type Kernel = unsafe fn(usize, usize, *const u8, *const u32, *mut f32, usize, usize, &Epilogue);

fn kernel(level: Level, m: usize) -> Kernel {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = m;
    match level {
        Level::Portable => kernel_portable,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => by_height!(x86::kernel_avx2, Kernel, m, 1 2 3 4 5 6),
        #[cfg(target_arch = "x86_64")]
        Level::Vnni => {
            by_height!(x86::kernel_vnni, Kernel, m, 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => kernel_portable,
    }
}

/// Computes one tile.
///
/// # Safety
/// The CPU must support `level`; `out` must point to `rows × n` values of which this call
/// alone writes the tile's part; `x`, `bias` hold `rows × k` and `n` values.
unsafe fn run_tile(
    level: Level,
    tile: &Tile,
    x: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    out: SendPtr,
) {
    let (n, k, quads) = (w.n, w.k, w.quads());
    let (mr, mc) = (level.mr(), level.mc());
    debug_assert!(mc <= MAX_MC);
    let data = w.data.as_slice();
    // Packed strips: u64 per row and quad (AVX2: four i16), or u32 (four bytes) in the
    // first half of each strip's span; `rows_q` holds one strip's quantized rows.
    let (packed_len, q_len) = (mc.min(tile.rows) * quads, mr * quads * 4);
    dense_plan::with_scratch::<u64, i8, _>(packed_len, q_len, |packed, rows_q| {
        let mut sx = [0.0f32; MAX_MC];
        let row_end = tile.row0 + tile.rows;
        let panel_end = tile.panel0 + tile.panels;
        for ic in (tile.row0..row_end).step_by(mc) {
            let block_rows = mc.min(row_end - ic);
            for r0 in (0..block_rows).step_by(mr) {
                let m = mr.min(block_rows - r0);
                let rows_q = &mut rows_q[..m * quads * 4];
                for (r, q) in rows_q.chunks_exact_mut(quads * 4).enumerate() {
                    let row = &x[(ic + r0 + r) * k..][..k];
                    sx[r0 + r] = quantize(level, row, &mut q[..k]);
                    q[k..].fill(0);
                }
                pack_strip(
                    level,
                    rows_q,
                    quads,
                    m,
                    &mut packed[r0 * quads..][..m * quads],
                );
            }
            for jc in (tile.panel0..panel_end).step_by(NC_PANELS) {
                let panels = NC_PANELS.min(panel_end - jc);
                for r0 in (0..block_rows).step_by(mr) {
                    let m = mr.min(block_rows - r0);
                    let micro = kernel(level, m);
                    let a = packed[r0 * quads..].as_ptr().cast::<u8>();
                    for p in jc..jc + panels {
                        let col0 = p * NR;
                        let epilogue = Epilogue {
                            sx: sx[r0..].as_ptr(),
                            sw: w.scales[col0..].as_ptr(),
                            sums: w.sums[col0..].as_ptr(),
                            bias: bias.map(|b| b[col0..].as_ptr()),
                        };
                        // SAFETY: the strip holds quads × m packed values, the panel
                        // quads × NR from a 64-byte boundary, scales and sums NR padded
                        // values, sx m values; the outputs lie in this tile; the CPU
                        // supports `level` (caller's contract).
                        unsafe {
                            micro(
                                m,
                                quads,
                                a,
                                data[p * quads * NR..].as_ptr(),
                                out.0.add((ic + r0) * n + col0),
                                n,
                                NR.min(n - col0),
                                &epilogue,
                            );
                        }
                    }
                }
            }
        }
    });
}

/// Quantizes a row with the fastest routine of `level` (same results as [`quantize_row`]).
fn quantize(level: Level, x: &[f32], q: &mut [i8]) -> f32 {
    match level {
        Level::Portable => quantize_row(x, q),
        // SAFETY: `level` was clamped to what the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::quantize_avx2(x, q) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Vnni => unsafe { x86::quantize_avx512(x, q) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => quantize_row(x, q),
    }
}

/// Packs the quantized rows `q` (`m` rows of `quads` quads) into a strip in the layout of
/// `level`, `[quads][m]`: VNNI `u32` of `q + 128` bytes, AVX2 `u64` of four i16, portable
/// `u32` of four i8.
fn pack_strip(level: Level, q: &[i8], quads: usize, m: usize, strip: &mut [u64]) {
    match level {
        Level::Avx2 => {
            for (r, row) in q.chunks_exact(quads * 4).enumerate() {
                for (step, quad) in strip.chunks_exact_mut(m).zip(row.chunks_exact(4)) {
                    step[r] = quad
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| u64::from(v as i16 as u16) << (16 * i))
                        .fold(0, |a, b| a | b);
                }
            }
        }
        Level::Portable | Level::Vnni => {
            let src: &[u32] = bytemuck::cast_slice(q);
            let dst: &mut [u32] = &mut bytemuck::cast_slice_mut(strip)[..quads * m];
            let (flip, avx512) = if level == Level::Vnni {
                (0x8080_8080, true)
            } else {
                (0, false)
            };
            dense_plan::interleave(src, quads, m, quads, flip, dst, avx512);
        }
    }
}

/// Portable microkernel (any strip height).
///
/// # Safety
/// See [`Kernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable(
    m: usize,
    quads: usize,
    a: *const u8,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: &Epilogue,
) {
    // SAFETY: the caller guarantees the strip (quads × m u32), the panel (quads × NR), and
    // the epilogue's arrays (m row scales, NR column scales, `cols` bias values). The
    // activations are signed here, so the column sums are not needed.
    let (a, b, sx, sw, bias) = unsafe {
        (
            std::slice::from_raw_parts(a.cast::<u32>(), quads * m),
            std::slice::from_raw_parts(b, quads * NR),
            std::slice::from_raw_parts(epi.sx, m),
            std::slice::from_raw_parts(epi.sw, NR),
            epi.bias.map(|b| std::slice::from_raw_parts(b, cols)),
        )
    };
    for r in 0..m {
        let mut acc = [0i32; NR];
        for (step, panel) in a.chunks_exact(m).zip(b.chunks_exact(NR)) {
            let xa = step[r].to_le_bytes().map(|v| i32::from(v as i8));
            for (acc, &wq) in acc.iter_mut().zip(panel) {
                let wb = wq.to_le_bytes();
                *acc += xa[0] * i32::from(wb[0] as i8)
                    + xa[1] * i32::from(wb[1] as i8)
                    + xa[2] * i32::from(wb[2] as i8)
                    + xa[3] * i32::from(wb[3] as i8);
            }
        }
        // SAFETY: the caller guarantees row r holds `cols` values only this call accesses.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        for (j, o) in row.iter_mut().enumerate() {
            let v = acc[j] as f32 * (sx[r] * sw[j]);
            *o = bias.map_or(v, |b| v + b[j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86-64 int8 microkernels and quantizers.

    use std::arch::x86_64::*;

    use super::super::dense_plan::prefetch_ahead;
    use super::{Epilogue, NR};

    /// VNNI microkernel: `M` rows × 32 columns, 2·M `zmm` i32 accumulators, one `vpdpbusd`
    /// per row, quad and 16 columns.
    ///
    /// # Safety
    /// See [`Kernel`](super::Kernel); the strip is `[quads][M]` u32 of `q + 128` bytes; the
    /// CPU must support AVX-512 F/BW/VL/DQ and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_vnni<const M: usize>(
        _m: usize,
        quads: usize,
        a: *const u8,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        epi: &Epilogue,
    ) {
        let a = a.cast::<i32>();
        let mut acc = [[_mm512_setzero_si512(); 2]; M];
        for q in 0..quads {
            prefetch_ahead(b.wrapping_add(q * NR));
            // SAFETY: in bounds and aligned per the contract.
            unsafe {
                let b0 = _mm512_load_si512(b.add(q * NR).cast());
                let b1 = _mm512_load_si512(b.add(q * NR + 16).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.add(q * M + r));
                    acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
                }
            }
        }
        let mask = if cols >= NR {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
        // SAFETY: sw and sums hold NR values; the bias `cols` values, the rest masked off;
        // row r of c holds `cols` values, the rest masked off.
        unsafe {
            let sw0 = _mm512_loadu_ps(epi.sw);
            let sw1 = _mm512_loadu_ps(epi.sw.add(16));
            let comp0 = _mm512_slli_epi32::<7>(_mm512_loadu_si512(epi.sums.cast()));
            let comp1 = _mm512_slli_epi32::<7>(_mm512_loadu_si512(epi.sums.add(16).cast()));
            let bias = epi.bias.map(|b| {
                (
                    _mm512_maskz_loadu_ps(m0, b),
                    _mm512_maskz_loadu_ps(m1, b.wrapping_add(16)),
                )
            });
            for (r, acc) in acc.iter().enumerate() {
                let sx = _mm512_set1_ps(*epi.sx.add(r));
                let v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[0], comp0));
                let v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[1], comp1));
                let s0 = _mm512_mul_ps(sx, sw0);
                let s1 = _mm512_mul_ps(sx, sw1);
                let (o0, o1) = match bias {
                    Some((b0, b1)) => (_mm512_fmadd_ps(v0, s0, b0), _mm512_fmadd_ps(v1, s1, b1)),
                    None => (_mm512_mul_ps(v0, s0), _mm512_mul_ps(v1, s1)),
                };
                let row = c.wrapping_add(r * ldc);
                _mm512_mask_storeu_ps(row, m0, o0);
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, o1);
            }
        }
    }

    /// AVX2 microkernel: `M` rows × 8 columns at a time, sign-extended i16 products summed
    /// in pairs by `vpmaddwd` (exact: |q| ≤ 127), run over the panel's four 8-column groups.
    ///
    /// # Safety
    /// See [`Kernel`](super::Kernel); the strip is `[quads][M]` u64 of four i16; the CPU
    /// must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx2<const M: usize>(
        _m: usize,
        quads: usize,
        a: *const u8,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        epi: &Epilogue,
    ) {
        let a = a.cast::<i64>();
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for c0 in (0..NR).step_by(8) {
            if cols <= c0 {
                break;
            }
            let mut acc = [[_mm256_setzero_si256(); 2]; M];
            for q in 0..quads {
                if c0 == 0 {
                    prefetch_ahead(b.wrapping_add(q * NR));
                }
                // SAFETY: in bounds per the contract (32 bytes of the quad's 128).
                unsafe {
                    let w = b.add(q * NR + c0).cast::<__m128i>();
                    let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w));
                    let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(1)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_epi64x(*a.add(q * M + r));
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(w0, av));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(w1, av));
                    }
                }
            }
            let valid = (cols - c0).min(8);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lanes);
            // SAFETY: sw holds NR values; the bias and row r of c `cols` values, with
            // lanes past them masked off.
            unsafe {
                let sw = _mm256_loadu_ps(epi.sw.add(c0));
                let bias = epi
                    .bias
                    .map(|b| _mm256_maskload_ps(b.wrapping_add(c0), mask));
                for (r, acc) in acc.iter().enumerate() {
                    // [c0 c1 c4 c5 | c2 c3 c6 c7] → c0..c7.
                    let sums = _mm256_hadd_epi32(acc[0], acc[1]);
                    let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(sums);
                    let v = _mm256_cvtepi32_ps(sums);
                    let s = _mm256_mul_ps(_mm256_set1_ps(*epi.sx.add(r)), sw);
                    let o = match bias {
                        Some(b) => _mm256_fmadd_ps(v, s, b),
                        None => _mm256_mul_ps(v, s),
                    };
                    let row = c.wrapping_add(r * ldc + c0);
                    if valid == 8 {
                        _mm256_storeu_ps(row, o);
                    } else {
                        _mm256_maskstore_ps(row, mask, o);
                    }
                }
            }
        }
    }

    /// [`quantize_row`](super::quantize_row) with AVX-512 (identical results).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn quantize_avx512(x: &[f32], q: &mut [i8]) -> f32 {
        assert!(q.len() >= x.len());
        let len = x.len();
        let p = x.as_ptr();
        let tail_mask = |i: usize| -> __mmask16 {
            if len - i >= 16 {
                u16::MAX
            } else {
                (1u16 << (len - i)) - 1
            }
        };
        let mut max = _mm512_setzero_ps();
        for i in (0..len).step_by(16) {
            // SAFETY: the mask enables only values below `len`.
            let v = unsafe { _mm512_maskz_loadu_ps(tail_mask(i), p.add(i)) };
            max = _mm512_max_ps(max, _mm512_abs_ps(v));
        }
        let max = _mm512_reduce_max_ps(max);
        if !(max >= f32::MIN_POSITIVE && max.is_finite()) {
            q.fill(0);
            return 0.0;
        }
        let inv = _mm512_set1_ps(127.0 / max);
        let (lo, hi) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
        for i in (0..len).step_by(16) {
            let mask = tail_mask(i);
            // SAFETY: the mask enables only values below `len` ≤ `q.len()`.
            unsafe {
                let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, p.add(i)), inv);
                let v = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    v,
                );
                let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
                _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i), mask, v);
            }
        }
        max / 127.0
    }

    /// [`quantize_row`](super::quantize_row) compiled for AVX2 (identical results).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_avx2(x: &[f32], q: &mut [i8]) -> f32 {
        super::quantize_row_body(x, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_quantizers_match_reference() {
        let mut s = 0x1234_5678_9abc_def1u64;
        for len in [1, 5, 15, 16, 17, 31, 64, 383, 384, 1537] {
            // Multiples of 1/254 of the maximum put many products exactly on .5 ties.
            let x: Vec<f32> = (0..len)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if i % 3 == 0 {
                        ((s >> 50) as f32 - 8192.0) / 254.0
                    } else {
                        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 64.0
                    }
                })
                .collect();
            let mut want = vec![0i8; len];
            let want_scale = quantize_row(&x, &mut want);
            for isa in Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
                let mut got = vec![1i8; len];
                let scale = quantize(Level::for_isa(isa), &x, &mut got);
                assert_eq!(scale, want_scale, "{isa} {len}");
                assert_eq!(got, want, "{isa} {len}");
            }
        }
    }
}
