//! f32 dense layers `out = x · Wᵀ (+ bias)` with weights packed once at load.
//!
//! `W` (`[n, k]`, PyTorch `Linear` layout) is packed into panels of [`NR`] = 32 output
//! columns, each panel `[k][32]` contiguous and 64-byte aligned, the last one zero padded.
//! Per tile (see [`dense_plan`]) the activations are packed per
//! block of `kc` reduction steps into strips of `mr` rows interleaved per step
//! (`[kc][mr]`, by 16 × 16 register transposes with AVX-512), and a register-blocked
//! microkernel computes `mr × 32` outputs, broadcasting one activation per row and step
//! against two (AVX-512) or four (AVX2) vectors of a panel:
//!
//! * AVX-512: 14 rows × 32 columns, 28 `zmm` accumulators.
//! * AVX2 + FMA: 6 rows × 16 columns, run over both halves of a panel.
//! * Portable: plain loops over the same layout (what LLVM vectorises for the target).
//!
//! Loop nest per tile: row blocks of `mc` rows, then reduction blocks of `kc` (activation
//! block packed once, in L2), then column groups of [`NC_PANELS`] panels (weight block in L2),
//! then strips (one strip in L1), then panels (streamed from L2). The same nest runs bf16
//! weights widened in registers ([`PanelSource`], used by `dense_bf16`).

use super::dense_plan::{self, Aligned, NR, SendPtr, Tile};
use super::isa::{self, Isa};

/// Panels per column group: a `kc × 640` f32 weight block is 960 KiB at `kc = 384`, half of
/// a 2 MiB L2.
pub(crate) const NC_PANELS: usize = 20;

/// Weights packed for [`dense_f32_with`]: panels of [`NR`] output columns, each `[k][NR]`.
#[derive(Debug)]
pub(crate) struct PackedF32 {
    data: Aligned<f32>,
    n: usize,
    k: usize,
}

impl PackedF32 {
    /// Packs `w` (`[n, k]` row-major: one row per output feature).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weights must be n × k");
        let panels = n.div_ceil(NR);
        let mut data = Aligned::zeroed(panels * k * NR);
        let packed = data.as_mut_slice();
        if k > 0 {
            for (col, row) in w.chunks_exact(k).enumerate() {
                let panel = &mut packed[(col / NR) * k * NR..][..k * NR];
                for (step, &v) in panel.chunks_exact_mut(NR).zip(row) {
                    step[col % NR] = v;
                }
            }
        }
        PackedF32 { data, n, k }
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
}

/// `out[rows × n] = x[rows × k] · Wᵀ (+ bias)` at level `isa`, lowered to what this CPU
/// supports, on up to `threads` threads of the current rayon pool. `out` is overwritten.
pub(crate) fn dense_f32_with(
    isa: Isa,
    x: &[f32],
    w: &PackedF32,
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    threads: usize,
) {
    run(Level::for_isa(isa), x, w, bias, out, rows, threads);
}

/// The f32 microkernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Plain loops.
    Portable,
    /// AVX2 + FMA, 6 × 16.
    Avx2,
    /// AVX-512, 14 × 32.
    Avx512,
}

impl Level {
    /// The best family for `isa`, lowered to what this CPU supports.
    pub(crate) fn for_isa(isa: Isa) -> Level {
        match isa.min(isa::detected()) {
            Isa::Portable => Level::Portable,
            Isa::Avx2 => Level::Avx2,
            Isa::Avx512 | Isa::Avx512Vnni | Isa::Avx512Bf16 => Level::Avx512,
        }
    }

    /// Rows per microkernel strip.
    pub(crate) fn mr(self) -> usize {
        match self {
            Level::Portable => 4,
            Level::Avx2 => 6,
            Level::Avx512 => 14,
        }
    }

    /// Reduction steps per packed block (a strip of `mr × kc` f32 stays in L1).
    pub(crate) fn kc(self) -> usize {
        match self {
            Level::Portable | Level::Avx2 => 512,
            Level::Avx512 => 384,
        }
    }

    /// Rows per packed activation block.
    pub(crate) fn mc(self) -> usize {
        8 * self.mr()
    }
}

/// What a microkernel does with the existing output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// Overwrite it.
    Zero,
    /// Overwrite it with the product plus the bias, read from this pointer (the bias of the
    /// tile's first column; `cols` values are valid).
    Bias(*const f32),
    /// Add the product to it (later reduction blocks).
    Add,
}

impl Init {
    /// The same action for columns starting `by` later.
    pub(crate) fn offset(self, by: usize) -> Init {
        match self {
            Init::Bias(bias) => Init::Bias(bias.wrapping_add(by)),
            other => other,
        }
    }

    /// The action of reduction block `pc` for the panel starting at column `col0`.
    pub(crate) fn for_block(pc: usize, bias: Option<&[f32]>, col0: usize) -> Init {
        match (pc, bias) {
            (0, Some(bias)) => Init::Bias(bias[col0..].as_ptr()),
            (0, None) => Init::Zero,
            _ => Init::Add,
        }
    }
}

/// A microkernel of the f32 loop nest: `m` rows (the strip height it was instantiated for)
/// × one panel.
///
/// Arguments: `m`, `kc` (steps, a multiple of the source's [`PanelSource::STEP`]), `a`
/// (packed f32 strip `[kc][m]`), `b` (the panel block in the source's format, 64-byte
/// aligned: f32 `[kc][NR]` for [`PackedF32`]), `c` (the strip's first output, row stride
/// `ldc`), `cols` (valid columns, 1..=NR), `init`.
///
/// # Safety
/// The pointers must be valid for those extents, `c` for `m` rows of `cols` values, the
/// CPU must support the kernel's level, and nothing else may access those outputs.
pub(crate) type KernelF32 =
    unsafe fn(usize, usize, *const f32, *const u8, *mut f32, usize, usize, Init);

/// Instantiates a const-generic microkernel for a strip height known at run time.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! by_height {
    ($module:ident :: $kernel:ident, $ty:ty, $m:expr, $($h:literal)*) => {
        match $m {
            $($h => $module::$kernel::<$h> as $ty,)*
            m => unreachable!("strip height {m}"),
        }
    };
}
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use by_height;

/// Packed weights the f32 loop nest ([`run`]) can multiply: f32 panels, or bf16 panels
/// widened in registers.
pub(crate) trait PanelSource: Sync {
    /// Kernel calls cover a multiple of this many reduction steps (activation strips are
    /// zero padded up to it).
    const STEP: usize;
    /// Output features.
    fn n(&self) -> usize;
    /// Input features.
    fn k(&self) -> usize;
    /// Panel `p` from reduction step `pc` (a multiple of [`PanelSource::STEP`]) on, in the
    /// format of [`PanelSource::kernel`], 64-byte aligned.
    fn panel(&self, p: usize, pc: usize) -> *const u8;
    /// The microkernel of `level` for strips of `m` rows (`1..=level.mr()`).
    fn kernel(level: Level, m: usize) -> KernelF32;
}

impl PanelSource for PackedF32 {
    const STEP: usize = 1;

    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize, pc: usize) -> *const u8 {
        self.data.as_slice()[(p * self.k + pc) * NR..]
            .as_ptr()
            .cast()
    }

    fn kernel(level: Level, m: usize) -> KernelF32 {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = m;
        match level {
            Level::Portable => kernel_portable,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => by_height!(x86::kernel_avx2, KernelF32, m, 1 2 3 4 5 6),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                by_height!(x86::kernel_avx512, KernelF32, m, 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => kernel_portable,
        }
    }
}

/// Runs the f32 loop nest with the microkernels of `level` over weights from `w`.
pub(crate) fn run<W: PanelSource>(
    level: Level,
    x: &[f32],
    w: &W,
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    threads: usize,
) {
    let (n, k) = (w.n(), w.k());
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
    let tiles = dense_plan::split(rows, n, k, threads, level.mr(), level.mc());
    let ptr = SendPtr(out.as_mut_ptr());
    dense_plan::for_each_tile(&tiles, threads, |tile| {
        // SAFETY: `level` is supported (Level::for_isa clamps to the detected level), `out`
        // holds rows × n values (checked) and tiles are disjoint.
        unsafe { run_tile(level, tile, x, w, bias, ptr) }
    });
}

/// Computes one tile.
///
/// # Safety
/// The CPU must support `level`; `out` must point to `rows × n` values of which this call
/// alone writes the tile's part; `x`, `bias` hold `rows × k` and `n` values.
unsafe fn run_tile<W: PanelSource>(
    level: Level,
    tile: &Tile,
    x: &[f32],
    w: &W,
    bias: Option<&[f32]>,
    out: SendPtr,
) {
    let (n, k) = (w.n(), w.k());
    let (mr, mc) = (level.mr(), level.mc());
    debug_assert_eq!(level.kc() % W::STEP, 0);
    let kc = level.kc().min(k.next_multiple_of(W::STEP));
    dense_plan::with_scratch::<f32, u8, _>(mc.min(tile.rows) * kc, 0, |packed, _| {
        let row_end = tile.row0 + tile.rows;
        let panel_end = tile.panel0 + tile.panels;
        for ic in (tile.row0..row_end).step_by(mc) {
            let block_rows = mc.min(row_end - ic);
            for pc in (0..k).step_by(kc) {
                let kcb = kc.min(k - pc);
                let steps = kcb.next_multiple_of(W::STEP);
                for r0 in (0..block_rows).step_by(mr) {
                    let m = mr.min(block_rows - r0);
                    let dst = &mut packed[r0 * steps..][..m * steps];
                    pack_strip(x, k, ic + r0, m, pc, kcb, dst, level);
                }
                for jc in (tile.panel0..panel_end).step_by(NC_PANELS) {
                    let panels = NC_PANELS.min(panel_end - jc);
                    for r0 in (0..block_rows).step_by(mr) {
                        let m = mr.min(block_rows - r0);
                        let micro = W::kernel(level, m);
                        let a = packed[r0 * steps..].as_ptr();
                        for p in jc..jc + panels {
                            let col0 = p * NR;
                            // SAFETY: the strip holds steps × m values, the panel block
                            // steps × NR (PanelSource contract); the outputs rows ic + r0
                            // .. + m × columns col0 .. + cols lie in this tile (caller's
                            // contract); the CPU supports `level`.
                            unsafe {
                                micro(
                                    m,
                                    steps,
                                    a,
                                    w.panel(p, pc),
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
    });
}

/// Packs rows `row0..row0 + m`, steps `pc..pc + kc` of `x` (row stride `k`) as `[steps][m]`
/// where `steps = dst.len() / m ≥ kc`, the steps past `kc` zero.
#[allow(clippy::too_many_arguments)]
fn pack_strip(
    x: &[f32],
    k: usize,
    row0: usize,
    m: usize,
    pc: usize,
    kc: usize,
    dst: &mut [f32],
    level: Level,
) {
    let src: &[u32] = bytemuck::cast_slice(&x[row0 * k + pc..]);
    let dst: &mut [u32] = bytemuck::cast_slice_mut(dst);
    dense_plan::interleave(src, k, m, kc, 0, dst, level == Level::Avx512);
}

/// Portable microkernel (any strip height).
///
/// # Safety
/// See [`KernelF32`].
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable(
    m: usize,
    kc: usize,
    a: *const f32,
    b: *const u8,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    init: Init,
) {
    let b = b.cast::<f32>();
    // SAFETY: the caller guarantees a holds kc × m values and b kc × NR.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * m),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    for r in 0..m {
        let mut acc = [0.0f32; NR];
        for (step, panel) in a.chunks_exact(m).zip(b.chunks_exact(NR)) {
            let av = step[r];
            for (acc, &bv) in acc.iter_mut().zip(panel) {
                *acc += av * bv;
            }
        }
        // SAFETY: the caller guarantees row r of c holds `cols` values only we access.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        // SAFETY: for `Init::Bias`, the caller guarantees `cols` bias values.
        unsafe { finish_row(row, &acc[..cols], init) };
    }
}

/// Writes one row of results according to `init` (scalar epilogue).
///
/// # Safety
/// For [`Init::Bias`], the pointer must be valid for `row.len()` values.
pub(crate) unsafe fn finish_row(row: &mut [f32], acc: &[f32], init: Init) {
    match init {
        Init::Zero => row.copy_from_slice(acc),
        Init::Bias(bias) => {
            // SAFETY: forwarded from the caller.
            let bias = unsafe { std::slice::from_raw_parts(bias, row.len()) };
            for ((o, &a), &b) in row.iter_mut().zip(acc).zip(bias) {
                *o = a + b;
            }
        }
        Init::Add => {
            for (o, &a) in row.iter_mut().zip(acc) {
                *o += a;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! x86-64 microkernels and their epilogues.

    use std::arch::x86_64::*;

    use super::super::dense_plan::{prefetch_ahead, prefetch_line_ahead};
    use super::{Init, NR};

    /// AVX-512 microkernel: `M` rows × 32 columns, 2·M `zmm` accumulators.
    ///
    /// # Safety
    /// See [`KernelF32`](super::KernelF32); the CPU must support AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn kernel_avx512<const M: usize>(
        _m: usize,
        kc: usize,
        a: *const f32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let b = b.cast::<f32>();
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for p in 0..kc {
            prefetch_ahead(b.wrapping_add(p * NR));
            // SAFETY: b holds kc × NR values from a 64-byte boundary; a holds kc × M.
            unsafe {
                let b0 = _mm512_load_ps(b.add(p * NR));
                let b1 = _mm512_load_ps(b.add(p * NR + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(p * M + r));
                    acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { store_avx512(&acc, c, ldc, cols, init) }
    }

    /// Stores `M` rows × 32 columns of results (masked to `cols`) according to `init`.
    ///
    /// # Safety
    /// `c` must be valid for `M` rows (stride `ldc`) of `cols` values, a bias pointer for
    /// `cols` values; the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[inline]
    pub(crate) unsafe fn store_avx512<const M: usize>(
        acc: &[[__m512; 2]; M],
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let mask = if cols >= NR {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
        let bias = match init {
            // SAFETY: the bias pointer is valid for `cols` values; masked-off lanes are
            // never accessed, so the pointer past them (wrapping_add) is not dereferenced.
            Init::Bias(bias) => unsafe {
                Some((
                    _mm512_maskz_loadu_ps(m0, bias),
                    _mm512_maskz_loadu_ps(m1, bias.wrapping_add(16)),
                ))
            },
            _ => None,
        };
        for (r, acc) in acc.iter().enumerate() {
            let row = c.wrapping_add(r * ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            // SAFETY: row r holds `cols` values; lanes past them are masked off.
            unsafe {
                if let Some((b0, b1)) = bias {
                    v0 = _mm512_add_ps(v0, b0);
                    v1 = _mm512_add_ps(v1, b1);
                } else if let Init::Add = init {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
            }
        }
    }

    /// AVX2 microkernel: `M` rows × 16 columns, run over both halves of the panel.
    ///
    /// # Safety
    /// See [`KernelF32`](super::KernelF32); the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn kernel_avx2<const M: usize>(
        _m: usize,
        kc: usize,
        a: *const f32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let b = b.cast::<f32>();
        for h0 in [0, 16] {
            if cols <= h0 {
                break;
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            for p in 0..kc {
                prefetch_line_ahead(b.wrapping_add(p * NR + h0));
                // SAFETY: b holds kc × NR values from a 64-byte boundary; a holds kc × M.
                unsafe {
                    let b0 = _mm256_load_ps(b.add(p * NR + h0));
                    let b1 = _mm256_load_ps(b.add(p * NR + h0 + 8));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*a.add(p * M + r));
                        acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                    }
                }
            }
            // SAFETY: columns h0.. of the strip's rows are valid for cols - h0 values.
            unsafe { store_avx2(&acc, c.add(h0), ldc, (cols - h0).min(16), init.offset(h0)) }
        }
    }

    /// Stores `M` rows × 16 columns of results (masked to `cols`) according to `init`.
    ///
    /// # Safety
    /// `c` must be valid for `M` rows (stride `ldc`) of `cols` values, a bias pointer for
    /// `cols` values; the CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn store_avx2<const M: usize>(
        acc: &[[__m256; 2]; M],
        c: *mut f32,
        ldc: usize,
        cols: usize,
        init: Init,
    ) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lanes);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32 - 8), lanes);
        let full = cols == 16;
        let bias = match init {
            // SAFETY: the bias pointer is valid for `cols` values (caller's contract).
            Init::Bias(bias) => Some(unsafe { load16(bias, full, m0, m1) }),
            _ => None,
        };
        for (r, acc) in acc.iter().enumerate() {
            let row = c.wrapping_add(r * ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if let Some((b0, b1)) = bias {
                v0 = _mm256_add_ps(v0, b0);
                v1 = _mm256_add_ps(v1, b1);
            } else if let Init::Add = init {
                // SAFETY: row r holds `cols` values (caller's contract).
                let (o0, o1) = unsafe { load16(row, full, m0, m1) };
                v0 = _mm256_add_ps(v0, o0);
                v1 = _mm256_add_ps(v1, o1);
            }
            // SAFETY: row r holds `cols` values; when not `full`, the masked stores touch
            // only lanes below `cols`.
            unsafe {
                if full {
                    _mm256_storeu_ps(row, v0);
                    _mm256_storeu_ps(row.add(8), v1);
                } else {
                    _mm256_maskstore_ps(row, m0, v0);
                    _mm256_maskstore_ps(row.wrapping_add(8), m1, v1);
                }
            }
        }
    }

    /// Loads 16 values from `p`: all of them when `full`, else the lanes enabled in the
    /// masks `m0` (values 0..8) and `m1` (values 8..16).
    ///
    /// # Safety
    /// The enabled values must be readable; the CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load16(p: *const f32, full: bool, m0: __m256i, m1: __m256i) -> (__m256, __m256) {
        // SAFETY: forwarded from the caller; masked-off lanes are not accessed.
        unsafe {
            if full {
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            } else {
                (
                    _mm256_maskload_ps(p, m0),
                    _mm256_maskload_ps(p.wrapping_add(8), m1),
                )
            }
        }
    }
}
