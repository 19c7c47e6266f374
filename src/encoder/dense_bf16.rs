//! bf16 dense layers: weights stored as bf16 (half the memory and bandwidth of f32),
//! products accumulated in f32.
//!
//! Weights (`[n, k]`, PyTorch `Linear` layout) are rounded to bf16 once (round to nearest
//! even, [`half::bf16::from_f32`]) and packed in the pair layout `vdpbf16ps` reads: panels of
//! [`NR`] = 32 output columns, each `[k/2][32]` of `u32`, where the `u32` of pair `q` and
//! column `j` holds `w[j][2q]` in its low half and `w[j][2q + 1]` in its high half (zero
//! past an odd `k`).
//!
//! Two ways to multiply ([`Method`]):
//! * [`Method::DotBf16`] (AVX512_BF16): activation strips are rounded to bf16 (nearest
//!   even, `vcvtne2ps2bf16`) and packed the same way per row (`[k/2][mr]`); the microkernel
//!   broadcasts one row's pair against 16 columns' pairs with `vdpbf16ps`.
//! * [`Method::Widen`] (every level): the f32 loop nest of
//!   [`dense_f32_with`](super::dense_f32::dense_f32_with) runs with
//!   microkernels that widen the pairs to f32 in registers (exact: a bf16 is the high half
//!   of an f32) and FMA them with the unrounded f32 activations.
//!
//! `vdpbf16ps` does two multiply-adds per lane where an FMA does one, but on Intel Sapphire
//! / Emerald Rapids it issues at a quarter of the FMA rate (measured here: 1.3 against 5.3
//! G instructions/s per core), so there it is half as fast as widening. [`dense_bf16_with`]
//! always widens (a model's numbers must not depend on a timing); [`dense_bf16_by`] runs
//! either. The two methods differ by the rounding of the activations only.

use half::bf16;

#[cfg(target_arch = "x86_64")]
use super::dense_f32::by_height;
use super::dense_f32::{self, Init, KernelF32, PanelSource};
use super::dense_plan::{Aligned, NR};
use super::isa::{self, Isa};

/// Weights packed for [`dense_bf16_with`] (see the module docs for the layout).
#[derive(Debug)]
pub(crate) struct PackedBf16 {
    data: Aligned<u32>,
    n: usize,
    k: usize,
}

impl PackedBf16 {
    /// Rounds `w` (`[n, k]` row-major) to bf16 and packs it.
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weights must be n × k");
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = Aligned::zeroed(panels * pairs * NR);
        let packed = data.as_mut_slice();
        if k > 0 {
            for (col, row) in w.chunks_exact(k).enumerate() {
                let panel = &mut packed[(col / NR) * pairs * NR..][..pairs * NR];
                for (step, pair) in panel.chunks_exact_mut(NR).zip(row.chunks(2)) {
                    let lo = u32::from(bf16::from_f32(pair[0]).to_bits());
                    let hi = pair
                        .get(1)
                        .map_or(0, |&v| u32::from(bf16::from_f32(v).to_bits()));
                    step[col % NR] = lo | hi << 16;
                }
            }
        }
        PackedBf16 { data, n, k }
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
        self.data.bytes()
    }

    #[cfg(test)]
    /// The stored (bf16-rounded) weight of output `col`, input `i`, as f32.
    pub(crate) fn weight(&self, col: usize, i: usize) -> f32 {
        assert!(col < self.n && i < self.k);
        let pairs = self.k.div_ceil(2);
        let v = self.data.as_slice()[((col / NR) * pairs + i / 2) * NR + col % NR];
        f32::from_bits(if i.is_multiple_of(2) {
            v << 16
        } else {
            v & 0xFFFF_0000
        })
    }

    fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }
}

/// Widening: the f32 loop nest multiplies f32 activations with bf16 pairs widened to f32
/// in registers (a bf16 is the high half of an f32, so this is exact).
impl PanelSource for PackedBf16 {
    const STEP: usize = 2;

    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize, pc: usize) -> *const u8 {
        debug_assert_eq!(pc % 2, 0, "reduction blocks start on a pair");
        self.data.as_slice()[(p * self.pairs() + pc / 2) * NR..]
            .as_ptr()
            .cast()
    }

    fn kernel(level: dense_f32::Level, m: usize) -> KernelF32 {
        use dense_f32::Level;
        #[cfg(not(target_arch = "x86_64"))]
        let _ = m;
        match level {
            Level::Portable => widen_portable,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => by_height!(x86::widen_avx2, KernelF32, m, 1 2 3 4 5 6),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                by_height!(x86::widen_avx512, KernelF32, m, 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => widen_portable,
        }
    }
}

/// How [`dense_bf16_with`] multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `vdpbf16ps` on activations rounded to bf16 (needs [`Isa::Avx512Bf16`]).
    DotBf16,
    /// Weights widened to f32 in registers, FMA with the f32 activations (any level).
    Widen,
}

/// `out[rows × n] = x[rows × k] · Wᵀ (+ bias)` with bf16 weights at level `isa`, lowered
/// to what this CPU supports, on up to `threads` threads of the current rayon pool (`out`
/// is overwritten), always by [`Method::Widen`]: f32 activations, so the numbers do not
/// depend on the CPU's speed at `vdpbf16ps` (half the FMA rate on Intel Sapphire Rapids;
/// [`dense_bf16_by`] runs [`Method::DotBf16`] where a caller wants it).
pub(crate) fn dense_bf16_with(
    isa: Isa,
    x: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    threads: usize,
) {
    dense_bf16_by(Method::Widen, isa, x, w, bias, out, rows, threads);
}

/// [`dense_bf16_with`] with `method`
/// ([`Method::DotBf16`] falls back to [`Method::Widen`] below [`Isa::Avx512Bf16`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_bf16_by(
    method: Method,
    isa: Isa,
    x: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    threads: usize,
) {
    let isa = isa.min(isa::detected());
    #[cfg(target_arch = "x86_64")]
    if method == Method::DotBf16 && isa >= Isa::Avx512Bf16 && w.k > 0 {
        run_dpbf16(x, w, bias, out, rows, threads);
        return;
    }
    let _ = method;
    dense_f32::run(
        dense_f32::Level::for_isa(isa),
        x,
        w,
        bias,
        out,
        rows,
        threads,
    );
}

/// Portable widening microkernel (any strip height).
///
/// # Safety
/// See [`KernelF32`]; `b` points to `kc / 2` pairs × NR.
#[allow(clippy::too_many_arguments)]
unsafe fn widen_portable(
    m: usize,
    kc: usize,
    a: *const f32,
    b: *const u8,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    init: Init,
) {
    // SAFETY: the caller guarantees a holds kc × m values and b kc/2 × NR pairs.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * m),
            std::slice::from_raw_parts(b.cast::<u32>(), kc / 2 * NR),
        )
    };
    for r in 0..m {
        let mut acc = [0.0f32; NR];
        for (steps, pairs) in a.chunks_exact(2 * m).zip(b.chunks_exact(NR)) {
            let (a0, a1) = (steps[r], steps[m + r]);
            for (acc, &pair) in acc.iter_mut().zip(pairs) {
                *acc += a0 * f32::from_bits(pair << 16);
                *acc += a1 * f32::from_bits(pair & 0xFFFF_0000);
            }
        }
        // SAFETY: the caller guarantees row r of c holds `cols` values only we access.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        // SAFETY: for `Init::Bias`, the caller guarantees `cols` bias values.
        unsafe { dense_f32::finish_row(row, &acc[..cols], init) };
    }
}

#[cfg(target_arch = "x86_64")]
use dot::run_dpbf16;

/// The `vdpbf16ps` loop nest (activations packed as bf16 pairs per strip).
#[cfg(target_arch = "x86_64")]
mod dot {
    use super::super::dense_f32::{Init, NC_PANELS, by_height};
    use super::super::dense_plan::{self, NR, SendPtr, Tile};
    use super::{PackedBf16, x86};

    /// Rows per `vdpbf16ps` strip.
    const MR: usize = 14;
    /// Rows per packed activation block.
    const MC: usize = 8 * MR;
    /// Pairs per reduction block: a 14-row strip is 21 KiB, a 640-column weight block 960 KiB.
    const KC_PAIRS: usize = 384;

    pub(super) fn run_dpbf16(
        x: &[f32],
        w: &PackedBf16,
        bias: Option<&[f32]>,
        out: &mut [f32],
        rows: usize,
        threads: usize,
    ) {
        let (n, k) = (w.n, w.k);
        dense_plan::check_shapes(x, bias, out, rows, n, k);
        let tiles = dense_plan::split(rows, n, k, threads, MR, MC);
        let ptr = SendPtr(out.as_mut_ptr());
        dense_plan::for_each_tile(&tiles, threads, |tile| {
            // SAFETY: the level is supported (checked by the caller), `out` holds rows × n
            // values (checked) and tiles are disjoint.
            unsafe { run_tile(tile, x, w, bias, ptr) }
        });
    }

    /// Computes one tile with `vdpbf16ps`.
    ///
    /// # Safety
    /// The CPU must support [`Isa::Avx512Bf16`](super::Isa::Avx512Bf16); `out` must point to `rows × n` values of
    /// which this call alone writes the tile's part; `x`, `bias` hold `rows × k` and `n` values.
    unsafe fn run_tile(tile: &Tile, x: &[f32], w: &PackedBf16, bias: Option<&[f32]>, out: SendPtr) {
        let (n, k, pairs) = (w.n, w.k, w.pairs());
        let kcp = KC_PAIRS.min(pairs);
        let data = w.data.as_slice();
        dense_plan::with_scratch::<u32, u32, _>(
            MC.min(tile.rows) * kcp,
            MR * kcp,
            |packed, rows_bf| {
                let row_end = tile.row0 + tile.rows;
                let panel_end = tile.panel0 + tile.panels;
                for ic in (tile.row0..row_end).step_by(MC) {
                    let block_rows = MC.min(row_end - ic);
                    for pc in (0..pairs).step_by(kcp) {
                        let block_pairs = kcp.min(pairs - pc);
                        for r0 in (0..block_rows).step_by(MR) {
                            let m = MR.min(block_rows - r0);
                            let rows_bf = &mut rows_bf[..m * block_pairs];
                            for (r, row_bf) in rows_bf.chunks_exact_mut(block_pairs).enumerate() {
                                let row = &x[(ic + r0 + r) * k..][..k];
                                let end = k.min(2 * (pc + block_pairs));
                                // SAFETY: the CPU supports AVX512_BF16 (caller's contract).
                                unsafe { x86::to_pairs(&row[2 * pc..end], row_bf) };
                            }
                            let dst = &mut packed[r0 * block_pairs..][..m * block_pairs];
                            dense_plan::interleave(
                                rows_bf,
                                block_pairs,
                                m,
                                block_pairs,
                                0,
                                dst,
                                true,
                            );
                        }
                        for jc in (tile.panel0..panel_end).step_by(NC_PANELS) {
                            let panels = NC_PANELS.min(panel_end - jc);
                            for r0 in (0..block_rows).step_by(MR) {
                                let m = MR.min(block_rows - r0);
                                let micro = by_height!(
                                    x86::kernel, x86::Kernel, m, 1 2 3 4 5 6 7 8 9 10 11 12 13 14
                                );
                                let a = packed[r0 * block_pairs..].as_ptr();
                                for p in jc..jc + panels {
                                    let col0 = p * NR;
                                    let b = data[(p * pairs + pc) * NR..].as_ptr();
                                    // SAFETY: the strip holds block_pairs × m pairs, the panel
                                    // block_pairs × NR from a 64-byte boundary; the outputs lie in
                                    // this tile; the CPU supports the kernel (caller's contract).
                                    unsafe {
                                        micro(
                                            m,
                                            block_pairs,
                                            a,
                                            b,
                                            out.0.add((ic + r0) * n + col0),
                                            n,
                                            NR.min(n - col0),
                                            Init::for_block(pc, bias, col0),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX512_BF16 packing and microkernel.

    use std::arch::x86_64::*;

    use super::super::dense_f32::Init;
    use super::super::dense_f32::x86::{store_avx2, store_avx512};
    use super::super::dense_plan::prefetch_ahead;
    use super::NR;

    /// Widening microkernel for AVX-512: `M` rows × 32 columns like the f32 one; per pair
    /// of steps the even weights are the pairs shifted left by 16 bits and the odd ones
    /// the pairs with their low halves zeroed by a masked load.
    ///
    /// # Safety
    /// See [`KernelF32`](super::KernelF32) (`kc` even, `b` holding `kc / 2` pairs × NR);
    /// the CPU must support AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn widen_avx512<const M: usize>(
        _m: usize,
        kc: usize,
        a: *const f32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let b = b.cast::<u32>();
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for q in 0..kc / 2 {
            prefetch_ahead(b.wrapping_add(q * NR));
            // SAFETY: b holds kc/2 × NR pairs from a 64-byte boundary, a holds kc × M.
            unsafe {
                let p = b.add(q * NR);
                let e0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_load_si512(p.cast())));
                let e1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_load_si512(
                    p.add(16).cast(),
                )));
                let even = a.add(2 * q * M);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*even.add(r));
                    acc[0] = _mm512_fmadd_ps(av, e0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, e1, acc[1]);
                }
                let o0 = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(0xAAAA_AAAA, p.cast()));
                let o1 =
                    _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(0xAAAA_AAAA, p.add(16).cast()));
                let odd = even.add(M);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*odd.add(r));
                    acc[0] = _mm512_fmadd_ps(av, o0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, o1, acc[1]);
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { store_avx512(&acc, c, ldc, cols, init) }
    }

    /// Widening microkernel for AVX2: `M` rows × 16 columns, over both halves of a panel.
    /// Unlike the other kernels it does not prefetch its panel: with 18 live vectors in 16
    /// registers a prefetch in the loop cost 7–15 % at 26 and 300 rows (`MODELHOST_ISA=avx2`).
    ///
    /// # Safety
    /// See [`KernelF32`](super::KernelF32) (`kc` even, `b` holding `kc / 2` pairs × NR);
    /// the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn widen_avx2<const M: usize>(
        _m: usize,
        kc: usize,
        a: *const f32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let b = b.cast::<u32>();
        let high = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
        for h0 in [0, 16] {
            if cols <= h0 {
                break;
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            for q in 0..kc / 2 {
                // SAFETY: b holds kc/2 × NR pairs from a 64-byte boundary, a holds kc × M.
                unsafe {
                    let p = b.add(q * NR + h0);
                    let v0 = _mm256_load_si256(p.cast());
                    let v1 = _mm256_load_si256(p.add(8).cast());
                    let e0 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v0));
                    let e1 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v1));
                    let even = a.add(2 * q * M);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*even.add(r));
                        acc[0] = _mm256_fmadd_ps(av, e0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, e1, acc[1]);
                    }
                    let o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, high));
                    let o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, high));
                    let odd = even.add(M);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*odd.add(r));
                        acc[0] = _mm256_fmadd_ps(av, o0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, o1, acc[1]);
                    }
                }
            }
            // SAFETY: columns h0.. of the strip's rows are valid for cols - h0 values.
            unsafe { store_avx2(&acc, c.add(h0), ldc, (cols - h0).min(16), init.offset(h0)) }
        }
    }

    /// A `vdpbf16ps` microkernel: arguments as
    /// [`KernelF32`](super::super::dense_f32::KernelF32) with `kc` counted in pairs and
    /// `a`, `b` pointing to pairs.
    pub(super) type Kernel =
        unsafe fn(usize, usize, *const u32, *const u32, *mut f32, usize, usize, Init);

    /// `M` rows × 32 columns, 2·M `zmm` accumulators, one `vdpbf16ps` per row, pair and
    /// 16 columns.
    ///
    /// # Safety
    /// `a` must hold `pairs × M` values, `b` `pairs × NR` from a 64-byte boundary, `c` be
    /// valid for `M` rows (stride `ldc`) of `cols` values that nothing else accesses, a bias
    /// pointer for `cols` values; the CPU must support AVX-512 F/BW/VL/DQ and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const M: usize>(
        _m: usize,
        pairs: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for q in 0..pairs {
            prefetch_ahead(b.wrapping_add(q * NR));
            // SAFETY: in bounds and aligned per the contract; `__m512i` and `__m512bh` are
            // both 64-byte vectors of plain bits, so the transmutes only relabel lanes.
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_load_si512(b.add(q * NR).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_load_si512(b.add(q * NR + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(q * M + r) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { store_avx512(&acc, c, ldc, cols, init) }
    }

    /// Rounds `x` to bf16 (nearest even) as pairs: `pairs[i]` holds `x[2i]` in its low and
    /// `x[2i + 1]` in its high half, zero past `x.len()`; `pairs.len() ≥ x.len() / 2`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
    pub(super) unsafe fn to_pairs(x: &[f32], pairs: &mut [u32]) {
        assert!(2 * pairs.len() >= x.len());
        let len = x.len();
        for (t, out) in (0..2 * pairs.len()).step_by(32).zip(pairs.chunks_mut(16)) {
            let left = len.saturating_sub(t);
            let lo = if left >= 16 {
                u16::MAX
            } else {
                ((1u32 << left) - 1) as u16
            };
            let hi = if left >= 32 {
                u16::MAX
            } else {
                ((1u32 << left.saturating_sub(16)) - 1) as u16
            };
            let store = ((1u32 << out.len()) - 1) as u16;
            // SAFETY: the load masks enable only values below `len`, the store mask only
            // the `out.len()` pairs of this chunk; masked-off lanes are not accessed, so
            // the pointers past the ends are never dereferenced.
            unsafe {
                let p = x.as_ptr().wrapping_add(t);
                let v_lo = _mm512_maskz_loadu_ps(lo, p);
                let v_hi = _mm512_maskz_loadu_ps(hi, p.wrapping_add(16));
                let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(v_hi, v_lo));
                _mm512_mask_storeu_epi32(out.as_mut_ptr().cast(), store, bf);
            }
        }
    }
}
