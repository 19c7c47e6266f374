//! Shared plumbing of the dense-layer kernels (`dense_f32`, `dense_bf16`, `dense_i8`):
//! 64-byte aligned buffers, per-thread scratch, and the split of one product into tiles
//! that run in parallel on the rayon global pool.
//!
//! Every kernel computes `out[rows × n] = x[rows × k] · Wᵀ (+ bias)` with `W` packed into
//! panels of [`NR`] output columns; a tile is a range of rows × a range of panels, and tiles
//! write disjoint parts of `out`.

use std::cell::RefCell;
use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

/// Output columns per packed weight panel (two AVX-512 vectors of f32).
pub(crate) const NR: usize = 32;

/// Products with fewer multiply-adds than this run on the calling thread.
const PARALLEL_MIN_MACS: usize = 64 * 64 * 64;

/// One 64-byte, 64-byte aligned block: the storage unit of [`Aligned`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; 64]);

// SAFETY: `Line` is 64 plain bytes with alignment 64 and size 64, so it has no padding and
// every bit pattern (including all zeros) is valid.
unsafe impl Zeroable for Line {}
// SAFETY: as above; it is `Copy`, `'static` and `repr(C)`.
unsafe impl Pod for Line {}

/// A zero-initialised buffer of `len` values of `T` starting on a 64-byte boundary, so
/// aligned vector loads of packed weights never split a cache line.
pub(crate) struct Aligned<T: Pod> {
    lines: Vec<Line>,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Pod> Aligned<T> {
    /// `len` zeroed values.
    pub(crate) fn zeroed(len: usize) -> Self {
        let lines = (len * size_of::<T>()).div_ceil(size_of::<Line>());
        Aligned {
            lines: vec![Line([0; 64]); lines],
            len,
            _values: PhantomData,
        }
    }

    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    /// The values, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.lines.len() * size_of::<Line>()
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aligned")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Per-thread scratch for packed activations and converted weight blocks, kept between
    /// calls so a product allocates nothing after a thread's first call.
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with two 64-byte aligned scratch slices of this thread, of at least `first` and
/// `second` values (contents unspecified). Not reentrant: `f` must not call it again.
pub(crate) fn with_scratch<A: Pod, B: Pod, R>(
    first: usize,
    second: usize,
    f: impl FnOnce(&mut [A], &mut [B]) -> R,
) -> R {
    let lines_a = (first * size_of::<A>()).div_ceil(size_of::<Line>());
    let lines_b = (second * size_of::<B>()).div_ceil(size_of::<Line>());
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < lines_a + lines_b {
            scratch.resize(lines_a + lines_b, Line([0; 64]));
        }
        let (a, rest) = scratch.split_at_mut(lines_a);
        let b = &mut rest[..lines_b];
        f(bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b))
    })
}

/// A raw output pointer shared by tiles that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

// SAFETY: tiles write pairwise disjoint elements of the buffer behind the pointer, which
// outlives the parallel loop (it is borrowed mutably by the caller for its duration).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// A block of the output: rows `row0..row0 + rows` × panels `panel0..panel0 + panels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    /// First row.
    pub(crate) row0: usize,
    /// Number of rows.
    pub(crate) rows: usize,
    /// First panel of [`NR`] columns.
    pub(crate) panel0: usize,
    /// Number of panels.
    pub(crate) panels: usize,
}

/// Splits a `rows × n` (reduction length `k`) product into tiles for `threads` threads.
///
/// Row blocks hold at most `mc` rows (a multiple of the microkernel height `mr`); when
/// there are too few row blocks for about three tiles per thread, the panels are split
/// too (small batches: every thread then streams a share of the weights once), into
/// exactly `threads` chunks when all rows form one block.
pub(crate) fn split(
    rows: usize,
    n: usize,
    k: usize,
    threads: usize,
    mr: usize,
    mc: usize,
) -> Vec<Tile> {
    let panels = n.div_ceil(NR);
    if rows == 0 || panels == 0 {
        return Vec::new();
    }
    if threads <= 1 || rows * n * k < PARALLEL_MIN_MACS {
        return vec![Tile {
            row0: 0,
            rows,
            panel0: 0,
            panels,
        }];
    }
    let target = 3 * threads;
    let row_blocks = rows.div_ceil(mc);
    // Even row blocks, rounded up to whole microkernel strips.
    let block = rows.div_ceil(row_blocks).div_ceil(mr) * mr;
    // One row block (up to `mc` rows, e.g. one text at a time): one tile per thread. Every
    // tile packs (int8: quantizes) all the rows, so more tiles only repeated that work and
    // added hand-offs: 3 tiles per thread cost 6 % (f32) and 22 % (int8) at 26 rows.
    let col_chunks = if row_blocks == 1 {
        threads
    } else {
        target.div_ceil(row_blocks)
    }
    .min(panels);
    let mut tiles = Vec::with_capacity(row_blocks * col_chunks);
    for row0 in (0..rows).step_by(block) {
        let block_rows = block.min(rows - row0);
        for chunk in 0..col_chunks {
            let panel0 = chunk * panels / col_chunks;
            let panel1 = (chunk + 1) * panels / col_chunks;
            if panel1 > panel0 {
                tiles.push(Tile {
                    row0,
                    rows: block_rows,
                    panel0,
                    panels: panel1 - panel0,
                });
            }
        }
    }
    tiles
}

/// Runs `f` on every tile: on the calling thread when `threads <= 1` or there is one tile,
/// otherwise as tasks of the rayon global pool.
pub(crate) fn for_each_tile(tiles: &[Tile], threads: usize, f: impl Fn(&Tile) + Send + Sync) {
    if threads <= 1 || tiles.len() <= 1 {
        tiles.iter().for_each(f);
    } else {
        tiles.par_iter().for_each(f);
    }
}

/// Interleaves `m` rows of 32-bit values for a microkernel strip:
/// `dst[s·m + r] = src[r·stride + s] ^ flip` for `r < m`, `s < count`, and `dst[s·m + r] = 0`
/// for the padding steps `count ≤ s < dst.len() / m`.
///
/// With `avx512` (the caller vouches that the CPU has AVX-512 F), 16 × 16 blocks are
/// transposed in registers (64 shuffles per block); otherwise plain loops.
pub(crate) fn interleave(
    src: &[u32],
    stride: usize,
    m: usize,
    count: usize,
    flip: u32,
    dst: &mut [u32],
    avx512: bool,
) {
    assert!((1..=16).contains(&m), "strip height {m}");
    let steps = dst.len() / m;
    assert!(count <= steps, "{count} values for {steps} steps");
    assert!(
        src.len() >= (m - 1) * stride + count,
        "source rows out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: the bounds were checked above; the caller vouches for AVX-512 F.
        unsafe { x86::interleave_avx512(src, stride, m, count, flip, &mut dst[..steps * m]) };
        return;
    }
    let _ = avx512;
    dst[count * m..].fill(0);
    for r in 0..m {
        let row = &src[r * stride..][..count];
        for (step, &v) in dst.chunks_exact_mut(m).zip(row) {
            step[r] = v ^ flip;
        }
    }
}

/// How far ahead of the step it multiplies a microkernel asks for its weight panel:
/// 64 steps of a 32-column panel (128 bytes each, in every precision's layout). The packed
/// weights of a whole model (32 MB in f32) come from L3 or memory at small batches, and the
/// hardware prefetchers alone left the FMA units waiting: at 26 rows, 2 threads, the f32
/// products of one MiniLM text took 1.3–1.5× longer without this (A/B in
/// `docs/PERFORMANCE.md`). The address may lie past the panel (the next panel, or past the
/// buffer): a prefetch is a hint and never faults.
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_BYTES: usize = 64 * 128;

/// Asks for the 128 bytes (two cache lines) [`PREFETCH_BYTES`] past `p` to be loaded
/// into L1. Any address is allowed: nothing is read through it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(p: *const T) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let p = p.cast::<i8>().wrapping_add(PREFETCH_BYTES);
    // SAFETY: a prefetch is a hint that never faults and reads nothing into the program;
    // SSE is part of x86-64.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
    }
}

/// Like [`prefetch_ahead`], one cache line (for kernels that walk a panel's halves or
/// quarters in separate passes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_line_ahead<T>(p: *const T) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: as in `prefetch_ahead`.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(PREFETCH_BYTES)) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512 strip interleaving.

    use std::arch::x86_64::*;

    /// [`interleave`](super::interleave) by 16 × 16 register transposes.
    ///
    /// # Safety
    /// `src` must hold `(m − 1)·stride + count` values, `m ≤ 16`, `count ≤ dst.len() / m`;
    /// the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn interleave_avx512(
        src: &[u32],
        stride: usize,
        m: usize,
        count: usize,
        flip: u32,
        dst: &mut [u32],
    ) {
        let steps = dst.len() / m;
        let row_mask: __mmask16 = ((1u32 << m) - 1) as __mmask16;
        let flip = _mm512_set1_epi32(flip as i32);
        let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
        for s in (0..steps).step_by(16) {
            let left = count.saturating_sub(s);
            let lanes: __mmask16 = if left >= 16 {
                u16::MAX
            } else {
                ((1u32 << left) - 1) as u16
            };
            let mut v = [_mm512_setzero_si512(); 16];
            for (r, v) in v.iter_mut().enumerate() {
                let mask = if r < m { lanes } else { 0 };
                // SAFETY: enabled lanes are values s.. s + left of row r < m, in bounds by
                // the contract; with mask 0 nothing is read (the pointer is never used).
                *v = unsafe {
                    _mm512_maskz_loadu_epi32(mask, src.wrapping_add(r * stride + s).cast())
                };
                *v = _mm512_xor_si512(*v, flip);
            }
            let v = transpose(v);
            for (j, v) in v.iter().enumerate().take(steps - s) {
                // Lanes of steps past `count` hold `0 ^ flip`; padding must be zero.
                let v = if j < left { *v } else { _mm512_setzero_si512() };
                // SAFETY: step s + j < steps, so its m values lie in dst.
                unsafe { _mm512_mask_storeu_epi32(dst.add((s + j) * m).cast(), row_mask, v) };
            }
        }
    }

    /// Transposes a 16 × 16 matrix of 32-bit values held as 16 row vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[inline]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        // Per 128-bit lane L: t[2g] / t[2g+1] interleave rows (2g, 2g+1) at columns
        // 4L, 4L+1 / 4L+2, 4L+3.
        let mut t = [_mm512_setzero_si512(); 16];
        for g in 0..8 {
            t[2 * g] = _mm512_unpacklo_epi32(r[2 * g], r[2 * g + 1]);
            t[2 * g + 1] = _mm512_unpackhi_epi32(r[2 * g], r[2 * g + 1]);
        }
        // u[4g + c], lane L: column 4L + c of rows 4g..4g+4.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(a, c);
            u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
            u[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
            u[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
        }
        // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
        let mut out = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
            let lo_ab = _mm512_shuffle_i32x4::<0x44>(a, b);
            let hi_ab = _mm512_shuffle_i32x4::<0xEE>(a, b);
            let lo_cd = _mm512_shuffle_i32x4::<0x44>(cc, d);
            let hi_cd = _mm512_shuffle_i32x4::<0xEE>(cc, d);
            out[c] = _mm512_shuffle_i32x4::<0x88>(lo_ab, lo_cd);
            out[4 + c] = _mm512_shuffle_i32x4::<0xDD>(lo_ab, lo_cd);
            out[8 + c] = _mm512_shuffle_i32x4::<0x88>(hi_ab, hi_cd);
            out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(hi_ab, hi_cd);
        }
        out
    }
}

/// Checks the slice lengths every dense kernel relies on.
pub(crate) fn check_shapes(
    x: &[f32],
    bias: Option<&[f32]>,
    out: &[f32],
    rows: usize,
    n: usize,
    k: usize,
) {
    assert!(
        x.len() >= rows * k,
        "x holds {} values, needs {rows} × {k}",
        x.len()
    );
    assert!(
        out.len() >= rows * n,
        "out holds {} values, needs {rows} × {n}",
        out.len()
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "bias length");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_output_once() {
        for &(rows, n, threads) in &[
            (1, 1000, 2),
            (40, 384, 2),
            (40, 1152, 2),
            (129, 385, 2),
            (1300, 1536, 2),
            (1300, 384, 1),
            (7, 33, 4),
        ] {
            let tiles = split(rows, n, 384, threads, 14, 112);
            let panels = n.div_ceil(NR);
            let mut seen = vec![0u8; rows * panels];
            for t in &tiles {
                for r in t.row0..t.row0 + t.rows {
                    for p in t.panel0..t.panel0 + t.panels {
                        seen[r * panels + p] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&s| s == 1),
                "{rows} {n} {threads}: {tiles:?}"
            );
        }
    }

    #[test]
    fn one_row_block_is_one_tile_per_thread() {
        for (rows, n, threads) in [(26, 384, 2), (26, 1152, 2), (112, 1536, 2), (33, 416, 3)] {
            let tiles = split(rows, n, 384, threads, 14, 112);
            assert_eq!(tiles.len(), threads, "{rows} {n} {threads}: {tiles:?}");
            assert!(tiles.iter().all(|t| t.row0 == 0 && t.rows == rows));
        }
        // Two row blocks: about three tiles per thread, as before.
        assert_eq!(split(113, 1536, 384, 2, 14, 112).len(), 6);
    }

    #[test]
    fn interleave_matches_loops() {
        let src: Vec<u32> = (0..40 * 100).map(|v| v as u32 * 2654435761).collect();
        let avx512 = super::super::isa::detected() >= super::super::isa::Isa::Avx512;
        for m in [1, 3, 14, 16] {
            for (stride, count, steps) in [(100, 100, 100), (100, 37, 40), (57, 16, 16), (40, 3, 4)]
            {
                let mut want = vec![7; steps * m];
                for s in 0..steps {
                    for r in 0..m {
                        want[s * m + r] = if s < count {
                            src[r * stride + s] ^ 0x8080_8080
                        } else {
                            0
                        };
                    }
                }
                for simd in [false, avx512] {
                    let mut got = vec![7; steps * m];
                    interleave(&src, stride, m, count, 0x8080_8080, &mut got, simd);
                    assert_eq!(got, want, "m {m} stride {stride} count {count} simd {simd}");
                }
            }
        }
    }

    #[test]
    fn scratch_and_aligned_are_aligned() {
        let buf = Aligned::<f32>::zeroed(100);
        assert_eq!(buf.as_slice().as_ptr() as usize % 64, 0);
        assert_eq!(buf.as_slice().len(), 100);
        with_scratch::<f32, u32, _>(10, 20, |a, b| {
            assert!(a.len() >= 10 && b.len() >= 20);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            assert_eq!(b.as_ptr() as usize % 64, 0);
        });
    }
}
