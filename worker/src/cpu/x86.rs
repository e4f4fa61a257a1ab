//! x86-64 dot products of quantized weight rows with Q8 activation blocks, in two kernel
//! sets: AVX2 (with FMA and F16C), and AVX-512 with VNNI, whose `vpdpbusd` multiplies and
//! sums bytes in one instruction where AVX2 takes two.
//!
//! Each kernel computes exactly what `quant::dot_portable` computes for its type; only
//! the order of the floating-point additions differs. The two sets share every kernel
//! body (generic over [`Products`]) and add in the same order, and their integer sums are
//! exact, so AVX-512's results equal AVX2's bit for bit.

use std::arch::x86_64::*;

use super::interleaved;
use super::quant::{self, Q8Block, QuantType, q4k_scale_min};

#[path = "x86_groups_avx2.rs"]
mod avx2_groups;
#[path = "x86_groups_avx512.rs"]
mod avx512_groups;

/// Proof that this CPU runs a kernel set: the only way to reach the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simd(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// AVX2, FMA and F16C.
    Avx2,
    /// Those and AVX-512 F, BW, VL and VNNI.
    Avx512,
}

impl Simd {
    /// Every kernel set this CPU runs, fastest last.
    pub fn supported() -> Vec<Simd> {
        let mut sets = Vec::new();
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            sets.push(Simd(Level::Avx2));
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                sets.push(Simd(Level::Avx512));
            }
        }
        sets
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The dot product of one `ty` row with its activations (`x` covers the row).
    pub fn dot(self, ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
        // SAFETY: a `Simd` exists only for a set whose features `supported` saw, and
        // every kernel reads only inside the blocks `chunks_exact` hands it.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::dot(ty, row, x),
                Level::Avx512 => avx512::dot(ty, row, x),
            }
        }
    }
}

/// Rows computed together by the multi-row kernels: each activation block is loaded
/// once for all of them, and their sums form independent dependency chains.
pub const ROWS_AT_ONCE: usize = 4;

impl Simd {
    /// `a · b` over f32 (equal lengths, a multiple of 8).
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: every set has AVX2, FMA and F16C; the loads stay inside
        // `chunks_exact` chunks.
        unsafe { dot_f32(a, b) }
    }

    /// `out += w * v` over f32 (equal lengths, a multiple of 8).
    pub fn axpy(self, w: f32, v: &[f32], out: &mut [f32]) {
        // SAFETY: every set has AVX2, FMA and F16C; loads and stores stay inside
        // `chunks_exact` chunks.
        unsafe { axpy(w, v, out) }
    }

    /// [`super::Kernels::group_dots`] (`hd` a multiple of 8).
    pub fn group_dots(
        self,
        queries: &[f32],
        count: usize,
        query_stride: usize,
        hd: usize,
        keys: &[u16],
        scores: &mut [f32],
    ) {
        let wide = self.0 == Level::Avx512;
        // SAFETY: every set has AVX2, FMA and F16C, and `wide` only where this CPU has
        // AVX-512; the tiles check their slices.
        unsafe { group_dots(queries, count, query_stride, hd, keys, scores, wide) }
    }

    /// [`super::Kernels::group_sums`] (`hd` a multiple of 8).
    pub fn group_sums(
        self,
        weights: &[f32],
        values: &[u16],
        out: &mut [f32],
        count: usize,
        out_stride: usize,
        hd: usize,
    ) {
        let wide = self.0 == Level::Avx512;
        // SAFETY: every set has AVX2, FMA and F16C, and `wide` only where this CPU has
        // AVX-512; the tiles check their slices.
        unsafe { group_sums(weights, values, out, count, out_stride, hd, wide) }
    }

    /// Dot products of `ROWS_AT_ONCE` rows of `ty` with the same activations, or `false`
    /// when `ty` has no multi-row kernel (the caller then takes the rows one by one).
    pub fn dot_rows(
        self,
        ty: QuantType,
        rows: [&[u8]; ROWS_AT_ONCE],
        x: &[Q8Block],
        out: &mut [f32],
    ) -> bool {
        // SAFETY: as in `dot`.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::dot_rows(ty, rows, x, out),
                Level::Avx512 => avx512::dot_rows(ty, rows, x, out),
            }
        }
    }
}

/// Rows of the prompt kernels' tiles: each weight block serves a tile's tokens, each
/// activation block its rows. The kernels are written for two rows.
pub const TILE_ROWS: usize = 2;

impl Simd {
    /// Dot products of `TILE_ROWS` Q6_K rows with `TILE_TOKENS` tokens' activations
    /// (each covering the rows), on the packed blocks: Q6_K's two scales per block of 32
    /// have no place in `Unpacked`. `out[r][t]` is row `r` times token `t`, computed in
    /// the same order as `dot_rows` computes it, so a prompt's results equal a single
    /// token's bit for bit.
    pub fn dot_tile_q6k(
        self,
        rows: [&[u8]; TILE_ROWS],
        xs: [&[Q8Block]; TILE_TOKENS],
        out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
    ) {
        // SAFETY: as in `dot`.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::tile_q6k(rows, xs, out),
                Level::Avx512 => avx512::tile_q6k(rows, xs, out),
            }
        }
    }
}

impl Simd {
    /// Dot products of `TILE_ROWS` rows of F16, BF16 or F32 weights (`ty`) with
    /// `TILE_TOKENS` tokens' activations as [`float_activations`] writes them. Computed
    /// in the order `dot_rows` uses, so equal to it bit for bit.
    pub fn dot_tile_float(
        self,
        ty: QuantType,
        rows: [&[u8]; TILE_ROWS],
        xs: [&[f32]; TILE_TOKENS],
        out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
    ) {
        // SAFETY: as in `dot`.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::tile_float(ty, rows, xs, out),
                Level::Avx512 => avx512::tile_float(ty, rows, xs, out),
            }
        }
    }

    /// Dot products of `TILE_ROWS` Q8_0 rows with `TILE_TOKENS` tokens' activations, on
    /// the packed blocks: each weight block is loaded, made unsigned and its scale
    /// converted once for the tile's tokens. Computed in the order `dot_rows` uses, so
    /// equal to it bit for bit.
    pub fn dot_tile_q8_0(
        self,
        rows: [&[u8]; TILE_ROWS],
        xs: [&[Q8Block]; TILE_TOKENS],
        out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
    ) {
        // SAFETY: as in `dot`.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::tile_q8_0(rows, xs, out),
                Level::Avx512 => avx512::tile_q8_0(rows, xs, out),
            }
        }
    }
}

/// Tokens of a prompt's chunk in the interleaved products: their blocks stay in L2
/// while a group of rows passes over them, and a group's rows (139 KB for an 8192-wide
/// Q8_0 row) stay there while the chunk's tiles pass over them.
const TOKENS_PER_CHUNK: usize = 32;

impl Simd {
    /// Interleaved groups of `ty` rows (`groups`, whole groups of [`interleaved::ROWS`]
    /// rows) times `tokens` tokens' activations (`x`, one token after another, with
    /// what [`super::Kernels::prepare`] made of them) into `out` (`out[token * stride +
    /// row]`), equal bit for bit to [`interleaved::dot`].
    #[allow(clippy::too_many_arguments)]
    pub fn dot_interleaved(
        self,
        ty: QuantType,
        groups: &[u8],
        x: &[Q8Block],
        tokens: usize,
        prepared: &super::Prepared,
        out: &mut [f32],
        stride: usize,
    ) {
        let products = match (self.0, ty) {
            (Level::Avx512, QuantType::Q4_0) => interleaved_products::<Avx512, Q4_0_ROWS>,
            (Level::Avx512, QuantType::Q4K) => interleaved_products::<Avx512, Q4K_ROWS>,
            (Level::Avx512, QuantType::Q6K) => interleaved_products::<Avx512, Q6K_ROWS>,
            (Level::Avx512, QuantType::Q5_0) => interleaved_products::<Avx512, Q5_0_ROWS>,
            (Level::Avx512, _) => interleaved_products::<Avx512, Q8_0_ROWS>,
            (Level::Avx2, QuantType::Q4_0) => interleaved_products::<Avx2, Q4_0_ROWS>,
            (Level::Avx2, QuantType::Q4K) => interleaved_products::<Avx2, Q4K_ROWS>,
            (Level::Avx2, QuantType::Q6K) => interleaved_products::<Avx2, Q6K_ROWS>,
            (Level::Avx2, QuantType::Q5_0) => interleaved_products::<Avx2, Q5_0_ROWS>,
            (Level::Avx2, _) => interleaved_products::<Avx2, Q8_0_ROWS>,
        };
        // SAFETY: `self` proves the CPU has the chosen set's features.
        unsafe { products(groups, x, tokens, prepared, out, stride) };
    }
}

/// The layouts [`interleaved_products`] reads (a const parameter).
const Q8_0_ROWS: u8 = 0;
const Q4_0_ROWS: u8 = 1;
const Q4K_ROWS: u8 = 2;
const Q6K_ROWS: u8 = 3;
const Q5_0_ROWS: u8 = 4;

/// Cache lines of one block's values (half a pair) where a value takes `bits` (Q8_0's
/// 8, Q5_0's 5, Q4_0's 4): sixteen rows of 32 values, `bits` lines.
const fn half_lines(bits: u32) -> usize {
    bits as usize
}

/// Bytes of a pair of blocks: both halves' values, then a line of scales.
const fn pair_bytes(bits: u32) -> usize {
    (2 * half_lines(bits) + 1) * 64
}

/// A block's correction for the layout of `bits`-bit values
/// ([`interleaved::correction_for`]): exact, the correction being a multiple of 128.
const fn correction_of<const BITS: u32>(c: i32) -> i32 {
    c >> (8 - BITS)
}

/// Pairs ahead that a block's loads fetch for later: the tiles' arithmetic fills the
/// core's window so that few of a group's loads are in flight at once, and the
/// hardware's prefetchers alone leave them waiting on memory.
const PREFETCH_PAIRS: usize = 3;

/// Asks for the cache lines of half `h` of the pair `PREFETCH_PAIRS` after `pair` (and
/// its scales, with the second half). Prefetches never fault, so past the group's end
/// they are harmless. `in_order` as for [`prefetch_eighth`] (AVX2's one-token Q8_0
/// decode, 10–17% faster with it).
#[inline(always)]
fn prefetch_ahead<const BITS: u32>(pair: *const u8, h: usize, in_order: bool) {
    let ahead = pair.wrapping_add(PREFETCH_PAIRS * pair_bytes(BITS));
    for k in 0..half_lines(BITS) {
        prefetch(
            ahead.wrapping_add((h * half_lines(BITS) + k) * 64),
            in_order,
        );
    }
    if h == 1 {
        prefetch(ahead.wrapping_add(2 * half_lines(BITS) * 64), in_order);
    }
}

/// Asks for the cache line at `line`, in the code where it stands when `in_order` (an
/// `asm!` block, which the compiler may not move loads above), or where the compiler
/// schedules it.
#[inline(always)]
fn prefetch(line: *const u8, in_order: bool) {
    // SAFETY: SSE is part of every x86-64 CPU; a prefetch reads nothing the program
    // sees and never faults.
    unsafe {
        if in_order {
            std::arch::asm!("prefetcht0 [{}]", in(reg) line, options(nostack, preserves_flags));
        } else {
            _mm_prefetch::<_MM_HINT_T0>(line.cast());
        }
    }
}

/// Asks for the `j`th eighth (`j` in 0..8) of the cache lines of the super-block after
/// `block`, of `BYTES` bytes: spread over a super-block's groups, since a burst of
/// prefetches waits for the core's few line-fill buffers. Each eighth is the same
/// whole number of lines, so the prefetches unroll with no arithmetic of their own
/// (ranges of `j · lines / 8` took a loop a group); the last eighth may reach a few
/// lines into the super-block after, which is read next anyway. Prefetches never
/// fault, so past the end they are harmless.
///
/// `in_order` keeps the prefetches ahead of the group's loads in the code (an `asm!`
/// block the compiler may not move loads above). One token's pass waits on memory:
/// AVX2's, left to the compiler, had its prefetches after the group's loads and
/// decoded 10–15% slower than with them first. Passes of several tokens do arithmetic,
/// which the compiler schedules better without the barrier (prompts 7% faster), and
/// AVX-512's one-token passes measured the same either way, so only AVX2's one-token
/// passes ask for it.
#[inline(always)]
fn prefetch_eighth<const BYTES: usize>(block: *const u8, j: usize, in_order: bool) {
    let per_eighth = BYTES.div_ceil(64 * 8);
    let first = block.wrapping_add(BYTES + j * per_eighth * 64);
    for line in 0..per_eighth {
        prefetch(first.wrapping_add(line * 64), in_order);
    }
}

/// One kernel set's products over the interleaved layouts: AVX-512's
/// (`x86_groups_avx512.rs`) or AVX2's (`x86_groups_avx2.rs`), with one contract.
///
/// - `tile::<T, BITS>`: the sixteen rows of a group of Q8_0 (`BITS` 8), Q4_0 (4) or
///   Q5_0 (5) times `T` ≤ 8 tokens, with their blocks' corrections
///   ([`interleaved::correction`], as [`correction_of`] makes it the type's), into
///   `out[t]`;
/// - `two_groups::<BITS>`: one token against two groups (`groups` holds both),
///   into `out[..32]`;
/// - the `_q4k` and `_q6k` kernels the same for Q4_K and Q6_K, with the activations
///   under one scale a super-block (Q4_K's with their blocks' sums, Q6_K's with their
///   halves').
///
/// Each gives [`interleaved::dot`]'s bits. Safety: the CPU has the set's features.
trait Groups {
    unsafe fn tile<const T: usize, const BITS: u32>(
        group: &[u8],
        acts: [&[Q8Block]; T],
        corrections: [&[i32]; T],
        out: &mut [[f32; interleaved::ROWS]; T],
    );
    unsafe fn two_groups<const BITS: u32>(
        groups: &[u8],
        x: &[Q8Block],
        corrections: &[i32],
        out: &mut [f32],
    );
    unsafe fn tile_q4k<const T: usize>(
        group: &[u8],
        acts: [&[Q8Block]; T],
        sums: [&[i16]; T],
        out: &mut [[f32; interleaved::ROWS]; T],
    );
    unsafe fn two_groups_q4k(groups: &[u8], x: &[Q8Block], sums: &[i16], out: &mut [f32]);
    unsafe fn tile_q6k<const T: usize>(
        group: &[u8],
        acts: [&[Q8Block]; T],
        halves: [&[[i16; 2]]; T],
        out: &mut [[f32; interleaved::ROWS]; T],
    );
    unsafe fn two_groups_q6k(groups: &[u8], x: &[Q8Block], halves: &[[i16; 2]], out: &mut [f32]);
}

macro_rules! groups_of {
    ($set:ident, $module:ident) => {
        struct $set;

        // SAFETY (every body): the caller vouches for the features, the kernels check
        // their slices.
        impl Groups for $set {
            unsafe fn tile<const T: usize, const BITS: u32>(
                group: &[u8],
                acts: [&[Q8Block]; T],
                corrections: [&[i32]; T],
                out: &mut [[f32; interleaved::ROWS]; T],
            ) {
                unsafe { $module::tile::<T, BITS>(group, acts, corrections, out) }
            }
            unsafe fn two_groups<const BITS: u32>(
                groups: &[u8],
                x: &[Q8Block],
                corrections: &[i32],
                out: &mut [f32],
            ) {
                unsafe { $module::two_groups::<BITS>(groups, x, corrections, out) }
            }
            unsafe fn tile_q4k<const T: usize>(
                group: &[u8],
                acts: [&[Q8Block]; T],
                sums: [&[i16]; T],
                out: &mut [[f32; interleaved::ROWS]; T],
            ) {
                unsafe { $module::tile_q4k::<T>(group, acts, sums, out) }
            }
            unsafe fn two_groups_q4k(groups: &[u8], x: &[Q8Block], sums: &[i16], out: &mut [f32]) {
                unsafe { $module::two_groups_q4k(groups, x, sums, out) }
            }
            unsafe fn tile_q6k<const T: usize>(
                group: &[u8],
                acts: [&[Q8Block]; T],
                halves: [&[[i16; 2]]; T],
                out: &mut [[f32; interleaved::ROWS]; T],
            ) {
                unsafe { $module::tile_q6k::<T>(group, acts, halves, out) }
            }
            unsafe fn two_groups_q6k(
                groups: &[u8],
                x: &[Q8Block],
                halves: &[[i16; 2]],
                out: &mut [f32],
            ) {
                unsafe { $module::two_groups_q6k(groups, x, halves, out) }
            }
        }
    };
}

groups_of!(Avx2, avx2_groups);
groups_of!(Avx512, avx512_groups);

/// Tokens of a tile of [`interleaved_products`].
const GROUP_TOKENS: usize = 8;

/// [`Simd::dot_interleaved`] on set `K`, for the layout `LAYOUT` names.
///
/// # Safety
///
/// The CPU has `K`'s features.
unsafe fn interleaved_products<K: Groups, const LAYOUT: u8>(
    groups: &[u8],
    x: &[Q8Block],
    tokens: usize,
    prepared: &super::Prepared,
    out: &mut [f32],
    stride: usize,
) {
    use interleaved::ROWS;
    let (sums, corrections, halves) = (&prepared.sums, &prepared.corrections, &prepared.halves);
    let blocks = x.len() / tokens;
    let ty = match LAYOUT {
        Q4_0_ROWS => QuantType::Q4_0,
        Q4K_ROWS => QuantType::Q4K,
        Q6K_ROWS => QuantType::Q6K,
        Q5_0_ROWS => QuantType::Q5_0,
        _ => QuantType::Q8_0,
    };
    let group_bytes = ROWS * interleaved::row_bytes(ty, blocks);
    let count = groups.len() / group_bytes;
    assert!(out.len() >= (tokens - 1) * stride + count * ROWS);
    // SAFETY (every call below): the caller vouches for `K`'s features; the kernels
    // check their slices.
    if tokens == 1 {
        let mut pairs = groups.chunks_exact(2 * group_bytes);
        let mut outs = out[..count * ROWS].chunks_exact_mut(2 * ROWS);
        for (two, values) in (&mut pairs).zip(&mut outs) {
            match LAYOUT {
                Q4K_ROWS => unsafe { K::two_groups_q4k(two, x, sums, values) },
                Q6K_ROWS => unsafe { K::two_groups_q6k(two, x, halves, values) },
                Q4_0_ROWS => unsafe { K::two_groups::<4>(two, x, corrections, values) },
                Q5_0_ROWS => unsafe { K::two_groups::<5>(two, x, corrections, values) },
                _ => unsafe { K::two_groups::<8>(two, x, corrections, values) },
            }
        }
        if let Some(values) = outs.into_remainder().first_chunk_mut::<ROWS>() {
            let one = pairs.remainder();
            let mut tile = [[0.0; ROWS]; 1];
            match LAYOUT {
                Q4K_ROWS => unsafe { K::tile_q4k::<1>(one, [x], [sums], &mut tile) },
                Q6K_ROWS => unsafe { K::tile_q6k::<1>(one, [x], [halves], &mut tile) },
                Q4_0_ROWS => unsafe { K::tile::<1, 4>(one, [x], [corrections], &mut tile) },
                Q5_0_ROWS => unsafe { K::tile::<1, 5>(one, [x], [corrections], &mut tile) },
                _ => unsafe { K::tile::<1, 8>(one, [x], [corrections], &mut tile) },
            }
            *values = tile[0];
        }
        return;
    }
    let token = |t: usize| &x[t * blocks..(t + 1) * blocks];
    let correction = |t: usize| &corrections[t * blocks..(t + 1) * blocks];
    let half = |t: usize| &halves[t * blocks..(t + 1) * blocks];
    let sum = |t: usize| &sums[t * blocks..(t + 1) * blocks];
    let mut tile = [[0.0; ROWS]; GROUP_TOKENS];
    for chunk in (0..tokens).step_by(TOKENS_PER_CHUNK) {
        let chunk_end = (chunk + TOKENS_PER_CHUNK).min(tokens);
        for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
            for t0 in (chunk..chunk_end).step_by(GROUP_TOKENS) {
                let n = (chunk_end - t0).min(GROUP_TOKENS);
                macro_rules! tile {
                    ($n:literal) => {{
                        let tile = tile.first_chunk_mut::<$n>().expect("eight tokens");
                        let acts = std::array::from_fn(|i| token(t0 + i));
                        let corrections = std::array::from_fn(|i| correction(t0 + i));
                        match LAYOUT {
                            Q4K_ROWS => unsafe {
                                let sums = std::array::from_fn(|i| sum(t0 + i));
                                K::tile_q4k::<$n>(group, acts, sums, tile)
                            },
                            Q6K_ROWS => unsafe {
                                let halves = std::array::from_fn(|i| half(t0 + i));
                                K::tile_q6k::<$n>(group, acts, halves, tile)
                            },
                            Q4_0_ROWS => unsafe {
                                K::tile::<$n, 4>(group, acts, corrections, tile)
                            },
                            Q5_0_ROWS => unsafe {
                                K::tile::<$n, 5>(group, acts, corrections, tile)
                            },
                            _ => unsafe { K::tile::<$n, 8>(group, acts, corrections, tile) },
                        }
                    }};
                }
                match n {
                    8 => tile!(8),
                    7 => tile!(7),
                    6 => tile!(6),
                    5 => tile!(5),
                    4 => tile!(4),
                    3 => tile!(3),
                    2 => tile!(2),
                    _ => tile!(1),
                }
                for (i, values) in tile[..n].iter().enumerate() {
                    let at = (t0 + i) * stride + g * ROWS;
                    out[at..at + ROWS].copy_from_slice(values);
                }
            }
        }
    }
}

// Block `b` of every token is indexed in the same loop, not one slice walked.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_q8_0<P: Products>(
    rows: [&[u8]; TILE_ROWS],
    xs: [&[Q8Block]; TILE_TOKENS],
    out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        const T: usize = TILE_TOKENS;
        let mut acc = [[_mm256_setzero_ps(); T]; TILE_ROWS];
        let [w0s, w1s] = rows.map(|r| r.chunks_exact(34));
        for (b, (w0, w1)) in w0s.zip(w1s).enumerate() {
            // In bounds: each block holds 32 value bytes after its 2-byte scale.
            let (q0, q1) = (
                _mm256_loadu_si256(w0[2..34].as_ptr().cast()),
                _mm256_loadu_si256(w1[2..34].as_ptr().cast()),
            );
            let (p0, p1) = (P::q8_0_weights(q0), P::q8_0_weights(q1));
            let (d0, d1) = (_mm256_set1_ps(half(w0, 0)), _mm256_set1_ps(half(w1, 0)));
            for t in 0..T {
                let a = &xs[t][b];
                let y = load_act(a);
                let bias = P::q8_0_bias(y);
                let ad = _mm256_set1_ps(a.d);
                let sums0 = _mm256_cvtepi32_ps(P::q8_0_sums(p0, q0, y, bias));
                let sums1 = _mm256_cvtepi32_ps(P::q8_0_sums(p1, q1, y, bias));
                // The scale is `d · a.d` rounded once, as `dot_q8_0` computes it.
                acc[0][t] = _mm256_fmadd_ps(sums0, _mm256_mul_ps(d0, ad), acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(sums1, _mm256_mul_ps(d1, ad), acc[1][t]);
            }
        }
        for r in 0..TILE_ROWS {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
    }
}

// Block `b` of every token is indexed in the same loop, not one slice walked.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_q6k<P: Products>(
    rows: [&[u8]; TILE_ROWS],
    xs: [&[Q8Block]; TILE_TOKENS],
    out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        const T: usize = TILE_TOKENS;
        let mut acc = [[_mm256_setzero_ps(); T]; TILE_ROWS];
        let mut weights = rows.map(|r| r.chunks_exact(210));
        for b in 0..xs[0].len() / 8 {
            let (Some(w0), Some(w1)) = (weights[0].next(), weights[1].next()) else {
                break;
            };
            let (d0, d1) = (half(w0, 208), half(w1, 208));
            for h in 0..2 {
                let (q0, q1) = (q6k_quarters(w0, h), q6k_quarters(w1, h));
                for quarter in 0..4 {
                    let s = 192 + h * 8 + quarter * 2;
                    let (scales0, scales1) = (P::q6k_scales(w0, s), P::q6k_scales(w1, s));
                    for t in 0..T {
                        let block = &xs[t][b * 8 + h * 4 + quarter];
                        let y = load_act(block);
                        let bias = P::q6k_bias(y);
                        let sums0 = _mm256_cvtepi32_ps(P::q6k_sums(q0[quarter], y, bias, scales0));
                        let sums1 = _mm256_cvtepi32_ps(P::q6k_sums(q1[quarter], y, bias, scales1));
                        acc[0][t] = _mm256_fmadd_ps(sums0, _mm256_set1_ps(d0 * block.d), acc[0][t]);
                        acc[1][t] = _mm256_fmadd_ps(sums1, _mm256_set1_ps(d1 * block.d), acc[1][t]);
                    }
                }
            }
        }
        for r in 0..TILE_ROWS {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
    }
}

/// Rows unpacked once for a prompt's tiles: per block of 32 weights, the 32 values as
/// unsigned bytes, the block's scale, and the coefficient of the activations' sum that
/// the format's offset contributes (subtracted when `subtract`). Unpacking a block once
/// instead of once per tile of tokens takes the shifts, masks and shuffles out of the
/// prompt's inner loop.
#[derive(Debug, Default)]
pub struct Unpacked {
    values: Vec<u8>,
    scales: Vec<f32>,
    coefs: Vec<f32>,
    blocks: usize,
    subtract: bool,
}

/// Tokens per tile: two rows by four tokens keep eight accumulators, two weight blocks
/// and an activation block in registers.
pub const TILE_TOKENS: usize = 4;

impl Simd {
    /// Unpacks `rows` (`row_bytes` each, `blocks` blocks of 32 weights) of `ty` into
    /// `into`, or returns `false` when `ty` has no unpacked form.
    pub fn unpack(
        self,
        ty: QuantType,
        rows: &[u8],
        row_bytes: usize,
        blocks: usize,
        into: &mut Unpacked,
    ) -> bool {
        into.subtract = match ty {
            QuantType::Q4_1 | QuantType::Q5_1 => false,
            QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q4K | QuantType::Q5K => true,
            _ => return false,
        };
        let count = rows.len() / row_bytes;
        into.blocks = blocks;
        into.values.resize(count * blocks * 32, 0);
        into.scales.resize(count * blocks, 0.0);
        into.coefs.resize(count * blocks, 0.0);
        // SAFETY: every set has AVX2, FMA and F16C; every store is to a 32-byte slice
        // of `values`.
        unsafe {
            match ty {
                QuantType::Q4_0 => unpack_q4_0(rows, row_bytes, into),
                QuantType::Q4_1 => unpack_q4_1(rows, row_bytes, into),
                QuantType::Q5_0 => unpack_q5_0(rows, row_bytes, into),
                QuantType::Q5_1 => unpack_q5_1(rows, row_bytes, into),
                QuantType::Q5K => unpack_q5k(rows, row_bytes, into),
                _ => unpack_q4k(rows, row_bytes, into),
            }
        }
        true
    }

    /// The products of unpacked rows `first` and `first + 1`: `out[r][t]` is
    /// row `first + r` times token `t`, equal bit for bit to `dot_rows`'s result.
    pub fn dot_tile_unpacked(
        self,
        rows: &Unpacked,
        first: usize,
        xs: [&[Q8Block]; TILE_TOKENS],
        out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
    ) {
        // SAFETY: as in `dot`; loads are of 32-byte slices of `values`.
        unsafe {
            match self.0 {
                Level::Avx2 => avx2::tile_unpacked(rows, first, xs, out),
                Level::Avx512 => avx512::tile_unpacked(rows, first, xs, out),
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn store32(values: &mut [u8], at: usize, v: __m256i) {
    let slot = &mut values[at * 32..at * 32 + 32];
    // SAFETY: `slot` is 32 bytes.
    unsafe { _mm256_storeu_si256(slot.as_mut_ptr().cast(), v) };
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4_0(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(18));
    for (k, w) in blocks.enumerate() {
        store32(&mut into.values, k, nibbles16(&w[2..]));
        let d = half(w, 0);
        into.scales[k] = d;
        into.coefs[k] = 8.0 * d;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q5_1(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(24));
    for (k, w) in blocks.enumerate() {
        store32(&mut into.values, k, q5_0_values(&w[2..]));
        into.scales[k] = half(w, 0);
        into.coefs[k] = half(w, 2);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q5k(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(176));
    for (n, w) in blocks.enumerate() {
        let (d, dmin) = (half(w, 0), half(w, 2));
        for (group, values) in q5k_groups(w).into_iter().enumerate() {
            let (sc, m) = q4k_scale_min(&w[4..16], group);
            let k = n * 8 + group;
            store32(&mut into.values, k, values);
            into.scales[k] = d * f32::from(sc);
            into.coefs[k] = dmin * f32::from(m);
        }
    }
}

/// The eight groups of 32 values (0..32) of a Q5_K block (176 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
fn q5k_groups(w: &[u8]) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0x0f);
    let fifth = _mm256_set1_epi8(0x10);
    let (qh, qs) = (&w[16..48], &w[48..176]);
    // SAFETY: `qh` is 32 bytes and `qs` 128.
    let qh = unsafe { _mm256_loadu_si256(qh.as_ptr().cast()) };
    std::array::from_fn(|group| {
        let at = (group / 2) * 32;
        // SAFETY: `at + 32 <= 128`.
        let q = unsafe { _mm256_loadu_si256(qs[at..at + 32].as_ptr().cast()) };
        let nibbles = if group.is_multiple_of(2) {
            _mm256_and_si256(q, m4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)
        };
        // Bit `group` of each byte of `qh`, as 0x10 where set.
        let bit = _mm256_set1_epi8((1u8 << group) as i8);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        _mm256_or_si256(nibbles, _mm256_and_si256(set, fifth))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4_1(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(20));
    for (k, w) in blocks.enumerate() {
        store32(&mut into.values, k, nibbles16(&w[4..]));
        into.scales[k] = half(w, 0);
        into.coefs[k] = half(w, 2);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q5_0(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(22));
    for (k, w) in blocks.enumerate() {
        store32(&mut into.values, k, q5_0_values(w));
        let d = half(w, 0);
        into.scales[k] = d;
        into.coefs[k] = 16.0 * d;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4k(rows: &[u8], row_bytes: usize, into: &mut Unpacked) {
    let m4 = _mm256_set1_epi8(0x0f);
    let blocks = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row.chunks_exact(144));
    for (n, w) in blocks.enumerate() {
        let (d, dmin) = (half(w, 0), half(w, 2));
        for pair in 0..4 {
            let at = 16 + pair * 32;
            // SAFETY: each block is 144 bytes, so `at..at + 32` is inside it.
            let q = unsafe { _mm256_loadu_si256(w[at..at + 32].as_ptr().cast()) };
            for (shift, group) in [(0, 2 * pair), (4, 2 * pair + 1)] {
                let nib = if shift == 0 {
                    _mm256_and_si256(q, m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)
                };
                let (sc, m) = q4k_scale_min(&w[4..16], group);
                let k = n * 8 + group;
                store32(&mut into.values, k, nib);
                into.scales[k] = d * f32::from(sc);
                into.coefs[k] = dmin * f32::from(m);
            }
        }
    }
}

// Block `b` of every token is indexed in the same loop, not one slice walked.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_unpacked<P: Products>(
    rows: &Unpacked,
    first: usize,
    xs: [&[Q8Block]; TILE_TOKENS],
    out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        const T: usize = TILE_TOKENS;
        let blocks = rows.blocks;
        let values = &rows.values[first * blocks * 32..(first + 2) * blocks * 32];
        let (v0, v1) = values.split_at(blocks * 32);
        let scales = &rows.scales[first * blocks..(first + 2) * blocks];
        let (s0, s1) = scales.split_at(blocks);
        let mut acc = [[_mm256_setzero_ps(); T]; TILE_ROWS];
        for b in 0..blocks {
            // The loads are in bounds: `v0` and `v1` hold `blocks` blocks of 32 bytes.
            let (q0, q1) = (
                _mm256_loadu_si256(v0[b * 32..b * 32 + 32].as_ptr().cast()),
                _mm256_loadu_si256(v1[b * 32..b * 32 + 32].as_ptr().cast()),
            );
            let (d0, d1) = (_mm256_set1_ps(s0[b]), _mm256_set1_ps(s1[b]));
            for t in 0..T {
                let a = &xs[t][b];
                let y = load_act(a);
                // `d · a.d` rounded once, in a vector multiply rather than a scalar one
                // and a broadcast per row: the same value.
                let ad = _mm256_set1_ps(a.d);
                acc[0][t] = _mm256_fmadd_ps(products::<P>(q0, y), _mm256_mul_ps(d0, ad), acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(products::<P>(q1, y), _mm256_mul_ps(d1, ad), acc[1][t]);
            }
        }
        for r in 0..TILE_ROWS {
            let coefs = &rows.coefs[(first + r) * blocks..(first + r + 1) * blocks];
            for t in 0..T {
                let mut offset = 0.0f32;
                for (b, coef) in coefs.iter().enumerate() {
                    offset += coef * xs[t][b].s;
                }
                let sum = hsum(acc[r][t]);
                out[r][t] = if rows.subtract {
                    sum - offset
                } else {
                    sum + offset
                };
            }
        }
    }
}

/// Asks for the same blocks of the next `ROWS_AT_ONCE` rows (`row_bytes` apart), which
/// the matrix stores right after these: the hardware prefetcher alone falls behind on
/// rows this short.
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_next_group(block: &[u8], row_bytes: usize) {
    let ahead = block.as_ptr().wrapping_add(ROWS_AT_ONCE * row_bytes);
    for r in 0..ROWS_AT_ONCE {
        // A prefetch never faults, so the address may run past the matrix.
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(r * row_bytes).cast());
    }
}

#[inline(always)]
unsafe fn dot4_q4_1<P: Products>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let mut offsets = [0.0f32; ROWS_AT_ONCE];
        let blocks = rows.map(|r| r.chunks_exact(20));
        let [mut b0, mut b1, mut b2, mut b3] = blocks;
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = load_act(a);
            prefetch_next_group(w0, 20 * x.len());
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                let sums = products::<P>(nibbles16(&w[4..]), y);
                acc[r] = _mm256_fmadd_ps(sums, _mm256_set1_ps(half(w, 0) * a.d), acc[r]);
                offsets[r] += half(w, 2) * a.s;
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]) + offsets[r];
        }
    }
}

#[inline(always)]
unsafe fn dot4_q4_0<P: Products>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let mut offsets = [0.0f32; ROWS_AT_ONCE];
        let [mut b0, mut b1, mut b2, mut b3] = rows.map(|r| r.chunks_exact(18));
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = load_act(a);
            prefetch_next_group(w0, 18 * x.len());
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                let d = half(w, 0);
                acc[r] = _mm256_fmadd_ps(
                    products::<P>(nibbles16(&w[2..]), y),
                    _mm256_set1_ps(d * a.d),
                    acc[r],
                );
                offsets[r] += 8.0 * d * a.s;
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]) - offsets[r];
        }
    }
}

#[inline(always)]
unsafe fn dot4_q5_1<P: Products>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let mut offsets = [0.0f32; ROWS_AT_ONCE];
        let [mut b0, mut b1, mut b2, mut b3] = rows.map(|r| r.chunks_exact(24));
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = load_act(a);
            prefetch_next_group(w0, 24 * x.len());
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                let sums = products::<P>(q5_0_values(&w[2..]), y);
                acc[r] = _mm256_fmadd_ps(sums, _mm256_set1_ps(half(w, 0) * a.d), acc[r]);
                offsets[r] += half(w, 2) * a.s;
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]) + offsets[r];
        }
    }
}

/// Four rows of F16, BF16 or F32 weights (`F`) at once, in `dot_float`'s order: each
/// activation block is converted to floats once for the four.
#[inline(always)]
unsafe fn dot4_float<F: FloatWeights>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let [mut b0, mut b1, mut b2, mut b3] = rows.map(|r| r.chunks_exact(F::BYTES));
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = float_act(a);
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                for (i, y) in y.iter().enumerate() {
                    acc[r] = _mm256_fmadd_ps(F::load(w, i), *y, acc[r]);
                }
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]);
        }
    }
}

#[inline(always)]
unsafe fn dot4_q5_0<P: Products>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let mut offsets = [0.0f32; ROWS_AT_ONCE];
        let [mut b0, mut b1, mut b2, mut b3] = rows.map(|r| r.chunks_exact(22));
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = load_act(a);
            prefetch_next_group(w0, 22 * x.len());
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                let d = half(w, 0);
                acc[r] = _mm256_fmadd_ps(
                    products::<P>(q5_0_values(w), y),
                    _mm256_set1_ps(d * a.d),
                    acc[r],
                );
                offsets[r] += 16.0 * d * a.s;
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]) - offsets[r];
        }
    }
}

#[inline(always)]
unsafe fn dot4_q8_0<P: Products>(rows: [&[u8]; ROWS_AT_ONCE], x: &[Q8Block], out: &mut [f32]) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); ROWS_AT_ONCE];
        let [mut b0, mut b1, mut b2, mut b3] = rows.map(|r| r.chunks_exact(34));
        for a in x {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (b0.next(), b1.next(), b2.next(), b3.next())
            else {
                break;
            };
            let y = load_act(a);
            let bias = P::q8_0_bias(y);
            prefetch_next_group(w0, 34 * x.len());
            for (r, w) in [w0, w1, w2, w3].into_iter().enumerate() {
                // In bounds: the block holds 32 value bytes after its 2-byte scale.
                let q = _mm256_loadu_si256(w[2..34].as_ptr().cast());
                let sums = _mm256_cvtepi32_ps(P::q8_0_sums(P::q8_0_weights(q), q, y, bias));
                acc[r] = _mm256_fmadd_ps(sums, _mm256_set1_ps(half(w, 0) * a.d), acc[r]);
            }
        }
        for r in 0..ROWS_AT_ONCE {
            out[r] = hsum(acc[r]);
        }
    }
}

impl Simd {
    /// [`quant::quantize_row`] with the same results, eight values at a time.
    pub fn quantize_row(self, x: &[f32], out: &mut [Q8Block], scales: quant::Scales) {
        // SAFETY: every set has AVX2, FMA and F16C; loads are of 8-float chunks.
        unsafe { quantize_row(x, out, scales) }
    }
}

/// Quantizes each span of blocks as the portable code does: the span's largest
/// magnitude over 127 as the scale, each value times the scale's inverse rounded half
/// away from zero (truncation and a comparison of the exact fraction, as
/// `round_to_i8`), and each block's values' sum times the scale.
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row(x: &[f32], out: &mut [Q8Block], scales: quant::Scales) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let (half, minus_half, one) = (
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(-0.5),
        _mm256_set1_ps(1.0),
    );
    let span = scales.blocks() * quant::QK;
    for (chunk, blocks) in x
        .chunks_exact(span)
        .zip(out.chunks_exact_mut(scales.blocks()))
    {
        let mut amax = _mm256_setzero_ps();
        for eight in chunk.chunks_exact(8) {
            // SAFETY: `eight` is eight floats.
            let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
            amax = _mm256_max_ps(amax, _mm256_and_ps(v, abs_mask));
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` is eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), amax) };
        let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        for (chunk, block) in chunk.chunks_exact(quant::QK).zip(blocks) {
            let mut sum = _mm256_setzero_si256();
            let mut q = [0i32; 32];
            for (i, eight) in chunk.chunks_exact(8).enumerate() {
                // SAFETY: `eight` is eight floats.
                let y = _mm256_mul_ps(unsafe { _mm256_loadu_ps(eight.as_ptr()) }, inv);
                let whole = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let fraction = _mm256_sub_ps(y, whole);
                let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(fraction, half), one);
                let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(fraction, minus_half), one);
                let rounded = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(whole, up), down));
                sum = _mm256_add_epi32(sum, rounded);
                // SAFETY: eight i32 slots of `q`.
                unsafe { _mm256_storeu_si256(q[i * 8..].as_mut_ptr().cast(), rounded) };
            }
            for (out, &value) in block.qs.iter_mut().zip(&q) {
                *out = value as i8;
            }
            let mut sums = [0i32; 8];
            // SAFETY: `sums` is eight i32.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), sum) };
            block.d = d;
            block.s = d * sums.iter().sum::<i32>() as f32;
        }
    }
}

/// [`super::Kernels::group_dots`]: the queries in tiles of at most eight. `wide`
/// (AVX-512) takes two keys a register: each half is one key's eight sums, as
/// [`dot_f32`] keeps them, so the scores are the same, bit for bit. Safety: `wide`
/// only where the CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_dots(
    queries: &[f32],
    count: usize,
    query_stride: usize,
    hd: usize,
    keys: &[u16],
    scores: &mut [f32],
    wide: bool,
) {
    let n = scores.len() / count;
    for first in (0..count).step_by(8) {
        let queries = &queries[first * query_stride..];
        let scores = &mut scores[first * n..];
        let q = (query_stride, hd);
        if wide {
            // SAFETY: the caller's.
            unsafe {
                match (count - first).min(8) {
                    1 => dots_tile_wide::<1, 4>(queries, q, keys, scores, n),
                    2 => dots_tile_wide::<2, 4>(queries, q, keys, scores, n),
                    3 => dots_tile_wide::<3, 4>(queries, q, keys, scores, n),
                    4 => dots_tile_wide::<4, 4>(queries, q, keys, scores, n),
                    5 => dots_tile_wide::<5, 2>(queries, q, keys, scores, n),
                    6 => dots_tile_wide::<6, 2>(queries, q, keys, scores, n),
                    7 => dots_tile_wide::<7, 2>(queries, q, keys, scores, n),
                    _ => dots_tile_wide::<8, 2>(queries, q, keys, scores, n),
                }
            }
        } else {
            match (count - first).min(8) {
                1 => dots_tile::<1, 4>(queries, q, keys, scores, n),
                2 => dots_tile::<2, 2>(queries, q, keys, scores, n),
                3 => dots_tile::<3, 2>(queries, q, keys, scores, n),
                4 => dots_tile::<4, 2>(queries, q, keys, scores, n),
                5 => dots_tile::<5, 1>(queries, q, keys, scores, n),
                6 => dots_tile::<6, 1>(queries, q, keys, scores, n),
                7 => dots_tile::<7, 1>(queries, q, keys, scores, n),
                _ => dots_tile::<8, 1>(queries, q, keys, scores, n),
            }
        }
    }
}

/// [`dots_tile`] with two keys a register (AVX-512), `2 · P` keys at a time: register
/// `[g][p]` holds query `g`'s eight sums with key `2p` in its low half and key `2p + 1`
/// in its high half, each half added as [`dot_f32`] adds and summed as [`hsum`] sums.
/// The last keys of an odd run go through [`dots_at`]. Safety: the CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn dots_tile_wide<const Q: usize, const P: usize>(
    queries: &[f32],
    (query_stride, hd): (usize, usize),
    keys: &[u16],
    scores: &mut [f32],
    n: usize,
) {
    assert!(hd.is_multiple_of(8) && queries.len() >= (Q - 1) * query_stride + hd);
    assert!(scores.len() >= Q * n && keys.len() >= n * hd);
    let (qp, kp) = (queries.as_ptr(), keys.as_ptr());
    let mut j = 0;
    while j + 2 * P <= n {
        for key in j + AHEAD_POSITIONS..j + AHEAD_POSITIONS + 2 * P {
            prefetch_row(kp.wrapping_add(key * hd), hd);
        }
        let mut acc = [[_mm512_setzero_ps(); P]; Q];
        for c in (0..hd).step_by(8) {
            let pairs: [__m512; P] = std::array::from_fn(|p| {
                let key = |i: usize| kp.wrapping_add((j + 2 * p + i) * hd + c);
                // SAFETY: keys `j..j + 2P` lie inside `keys`, and `c + 8 <= hd`.
                let (low, high) = unsafe {
                    (
                        _mm_loadu_si128(key(0).cast()),
                        _mm_loadu_si128(key(1).cast()),
                    )
                };
                _mm512_cvtph_ps(_mm256_set_m128i(high, low))
            });
            for (g, acc) in acc.iter_mut().enumerate() {
                // SAFETY: query `g < Q` lies inside `queries`, and `c + 8 <= hd`.
                let query = unsafe { _mm256_loadu_ps(qp.add(g * query_stride + c)) };
                let query = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(query)));
                for (acc, &pair) in acc.iter_mut().zip(&pairs) {
                    *acc = _mm512_fmadd_ps(query, pair, *acc);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (p, &acc) in acc.iter().enumerate() {
                let (low, high) = hsum_halves(acc);
                scores[g * n + j + 2 * p] = low;
                scores[g * n + j + 2 * p + 1] = high;
            }
        }
        j += 2 * P;
    }
    let q = (queries, query_stride, hd);
    for j in j..n {
        // SAFETY: key `j < n` lies inside `keys`.
        unsafe { dots_at::<Q, 1>(q, keys, scores, n, j) };
    }
}

/// [`hsum`] of each half of `v`, in its order: lanes `i` and `i + 4` first, then those
/// sums two apart, then the last two.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn hsum_halves(v: __m512) -> (f32, f32) {
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_00_11_10>(v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b10_11_00_01>(v));
    (
        _mm512_cvtss_f32(v),
        _mm_cvtss_f32(_mm512_extractf32x4_ps::<2>(v)),
    )
}

/// [`super::Kernels::group_sums`]: a block of [`SUM_POSITIONS`] positions at a time,
/// the queries in tiles of at most four within it, so that a block's values are read
/// from memory once for all the queries, and again only from the first-level cache
/// (a tile of more queries holds fewer floats of its sums in registers, and loads
/// every weight again for each eight of them). Four queries take 24 floats of their
/// sums at a time with AVX2 (twelve registers of sums, three of values): against 16,
/// each weight broadcast serves half as many products again, and the sums of four
/// queries against 2,048 positions of 128 took 22.3–22.6 µs rather than 24.6–25.3 on an
/// AMD EPYC (of 96, 15.5–15.8 rather than 19.3–19.7; BENCHMARKS.md). `wide` takes sixteen floats of the sums a register (AVX-512): each float
/// still adds its products in the same order, so the sums are the same, bit for bit.
/// Safety: `wide` only where the CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_sums(
    weights: &[f32],
    values: &[u16],
    out: &mut [f32],
    count: usize,
    out_stride: usize,
    hd: usize,
    wide: bool,
) {
    let n = weights.len() / count;
    assert!(hd.is_multiple_of(8) && weights.len() >= count * n);
    assert!(out.len() >= (count - 1) * out_stride + hd);
    assert!(n == 0 || values.len() >= n * hd);
    for g in 0..count {
        out[g * out_stride..][..hd].fill(0.0);
    }
    let o = (out_stride, hd);
    for start in (0..n).step_by(SUM_POSITIONS) {
        let positions = start..(start + SUM_POSITIONS).min(n);
        for first in (0..count).step_by(4) {
            let weights = &weights[first * n..];
            let out = &mut out[first * out_stride..];
            let ahead = first == 0;
            let p = positions.clone();
            // SAFETY: the lengths are checked above, and `positions` lies in `0..n`;
            // the caller's for `wide`.
            unsafe {
                match (count - first).min(4) {
                    1 if wide => sums_block_wide::<1, 4>(weights, n, values, out, o, p, ahead),
                    2 if wide => sums_block_wide::<2, 4>(weights, n, values, out, o, p, ahead),
                    3 if wide => sums_block_wide::<3, 4>(weights, n, values, out, o, p, ahead),
                    _ if wide => sums_block_wide::<4, 4>(weights, n, values, out, o, p, ahead),
                    1 => sums_block::<1, 4>(weights, n, values, out, o, p, ahead),
                    2 => sums_block::<2, 4>(weights, n, values, out, o, p, ahead),
                    3 => sums_block::<3, 2>(weights, n, values, out, o, p, ahead),
                    _ => sums_block::<4, 3>(weights, n, values, out, o, p, ahead),
                }
            }
        }
    }
}

/// Attention's scores of `Q` queries (`queries[g · query_stride..][..hd]`, with
/// `(query_stride, hd)` as `q`) against `n` keys (`keys[j · hd..][..hd]`, one after
/// another as the cache keeps them), into `scores[g · n + j]`, `K` keys at a time: every
/// key is read once for all `Q` queries, and the `Q · K` sums are independent chains.
#[target_feature(enable = "avx2,fma,f16c")]
fn dots_tile<const Q: usize, const K: usize>(
    queries: &[f32],
    (query_stride, hd): (usize, usize),
    keys: &[u16],
    scores: &mut [f32],
    n: usize,
) {
    assert!(hd.is_multiple_of(8) && queries.len() >= (Q - 1) * query_stride + hd);
    assert!(scores.len() >= Q * n && keys.len() >= n * hd);
    let q = (queries, query_stride, hd);
    let mut j = 0;
    while j + K <= n {
        for key in j + AHEAD_POSITIONS..j + AHEAD_POSITIONS + K {
            prefetch_row(keys.as_ptr().wrapping_add(key * hd), hd);
        }
        // SAFETY: keys `j..j + K` lie inside `keys`, as checked above.
        unsafe { dots_at::<Q, K>(q, keys, scores, n, j) };
        j += K;
    }
    for j in j..n {
        // SAFETY: as above, for key `j`.
        unsafe { dots_at::<Q, 1>(q, keys, scores, n, j) };
    }
}

/// The scores of keys `j..j + K` for [`dots_tile`]. Each adds its products in
/// [`dot_f32`]'s order and ends in the same [`hsum`], so a score is the same, bit for
/// bit, whatever the tile. Safety: the caller has checked the slices' lengths as
/// [`dots_tile`] does, and `j + K <= n`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dots_at<const Q: usize, const K: usize>(
    (queries, query_stride, hd): (&[f32], usize, usize),
    keys: &[u16],
    scores: &mut [f32],
    n: usize,
    j: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); K]; Q];
    for c in (0..hd).step_by(8) {
        for k in 0..K {
            // SAFETY: key `j + k < n` lies inside `keys`, and `c + 8 <= hd`.
            let key = unsafe { halves(keys.as_ptr().add((j + k) * hd + c)) };
            for (g, acc) in acc.iter_mut().enumerate() {
                // SAFETY: query `g < Q` lies inside `queries`.
                let query = unsafe { _mm256_loadu_ps(queries.as_ptr().add(g * query_stride + c)) };
                acc[k] = _mm256_fmadd_ps(query, key, acc[k]);
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        for (k, &acc) in acc.iter().enumerate() {
            scores[g * n + j + k] = hsum(acc);
        }
    }
}

/// Eight halves from `at` as floats. Safety: `at..at + 8` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn halves(at: *const u16) -> __m256 {
    // SAFETY: the caller's.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(at.cast()) })
}

/// Positions whose values [`sums_block`] adds before it moves on to the next floats of
/// the sums: their rows stay in the first-level cache meanwhile.
const SUM_POSITIONS: usize = 32;

/// How many positions ahead the attention tiles ask for the cached rows they read
/// next. A long context's cache is read from memory at every decode step (the
/// weights pass through the caches in between), and left to the hardware's
/// prefetchers each key waited on its load: at 8,000 positions, 86 ns a key, a
/// twentieth of the memory's speed.
const AHEAD_POSITIONS: usize = 16;

/// Asks for the cache lines of one cached row of `hd` halves at `row`. Prefetches
/// never fault, so past the cache's end they are harmless.
#[inline(always)]
fn prefetch_row(row: *const u16, hd: usize) {
    for line in (0..hd * 2).step_by(64) {
        prefetch(row.cast::<u8>().wrapping_add(line), false);
    }
}

/// A register of floats of attention's sums, as one kernel set holds them: eight
/// (AVX2) or sixteen (AVX-512).
trait SumLanes {
    type Reg: Copy;
    /// Floats a register.
    const LANES: usize;

    unsafe fn zero() -> Self::Reg;
    unsafe fn load(at: *const f32) -> Self::Reg;
    unsafe fn store(at: *mut f32, v: Self::Reg);
    /// `LANES` halves from `at` as floats.
    unsafe fn halves(at: *const u16) -> Self::Reg;
    unsafe fn splat(w: f32) -> Self::Reg;
    /// `a · b + c`, each lane rounded once.
    unsafe fn fmadd(a: Self::Reg, b: Self::Reg, c: Self::Reg) -> Self::Reg;
}

/// Eight floats a register (AVX2, and the last eight of AVX-512's sums).
struct Ymm;

impl SumLanes for Ymm {
    type Reg = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: called only from an entry point compiled with AVX2.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> __m256 {
        // SAFETY: as in `zero`, and the caller's for `at..at + 8`.
        unsafe { _mm256_loadu_ps(at) }
    }

    #[inline(always)]
    unsafe fn store(at: *mut f32, v: __m256) {
        // SAFETY: as in `load`.
        unsafe { _mm256_storeu_ps(at, v) }
    }

    #[inline(always)]
    unsafe fn halves(at: *const u16) -> __m256 {
        // SAFETY: as in `load`.
        unsafe { halves(at) }
    }

    #[inline(always)]
    unsafe fn splat(w: f32) -> __m256 {
        // SAFETY: as in `zero`.
        unsafe { _mm256_set1_ps(w) }
    }

    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: as in `zero`.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
}

/// Sixteen floats a register (AVX-512).
struct Zmm;

impl SumLanes for Zmm {
    type Reg = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: called only from an entry point compiled with AVX-512 F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(at: *const f32) -> __m512 {
        // SAFETY: as in `zero`, and the caller's for `at..at + 16`.
        unsafe { _mm512_loadu_ps(at) }
    }

    #[inline(always)]
    unsafe fn store(at: *mut f32, v: __m512) {
        // SAFETY: as in `load`.
        unsafe { _mm512_storeu_ps(at, v) }
    }

    #[inline(always)]
    unsafe fn halves(at: *const u16) -> __m512 {
        // SAFETY: as in `load`.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(at.cast())) }
    }

    #[inline(always)]
    unsafe fn splat(w: f32) -> __m512 {
        // SAFETY: as in `zero`.
        unsafe { _mm512_set1_ps(w) }
    }

    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: as in `zero`.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
}

/// Adds `positions`' products into the sums of `Q` queries (`out[g · out_stride..][..hd]`,
/// with `(out_stride, hd)` as `o`), `8 · C` floats of the sums at a time: each value is
/// read once for all `Q` sums. With `ahead`, the first floats' pass asks for the rows of
/// the next block. Safety: the caller has checked the slices' lengths as
/// [`group_sums`] does (values one position's `hd` halves after another), `Q` queries
/// from `weights` and `out` lie inside them, and `positions` lies in `0..n`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sums_block<const Q: usize, const C: usize>(
    weights: &[f32],
    n: usize,
    values: &[u16],
    out: &mut [f32],
    o: (usize, usize),
    positions: std::ops::Range<usize>,
    ahead: bool,
) {
    // SAFETY: the caller's; this entry point has AVX2.
    unsafe { sums_block_in::<Ymm, Q, C>(weights, n, values, out, o, positions, ahead) }
}

/// [`sums_block`] with sixteen floats of the sums a register (AVX-512), `16 · C` at a
/// time. Safety: as [`sums_block`]'s, and the CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn sums_block_wide<const Q: usize, const C: usize>(
    weights: &[f32],
    n: usize,
    values: &[u16],
    out: &mut [f32],
    o: (usize, usize),
    positions: std::ops::Range<usize>,
    ahead: bool,
) {
    // SAFETY: the caller's; this entry point has AVX-512 F.
    unsafe { sums_block_in::<Zmm, Q, C>(weights, n, values, out, o, positions, ahead) }
}

/// The body of [`sums_block`] and [`sums_block_wide`]: `L::LANES · C` floats at a time,
/// then a register at a time, then (sixteen lanes only) the last eight floats where
/// `hd` is not a multiple of sixteen. Safety: as theirs, from an entry point compiled
/// with `L`'s instructions.
#[inline(always)]
unsafe fn sums_block_in<L: SumLanes, const Q: usize, const C: usize>(
    weights: &[f32],
    n: usize,
    values: &[u16],
    out: &mut [f32],
    o: (usize, usize),
    positions: std::ops::Range<usize>,
    ahead: bool,
) {
    let hd = o.1;
    let mut c = 0;
    while c + L::LANES * C <= hd {
        let (p, ahead) = (positions.clone(), ahead && c == 0);
        // SAFETY: the caller's, and `c + LANES · C <= hd`.
        unsafe { sums_at::<L, Q, C>(weights, n, values, out, o, p, c, ahead) };
        c += L::LANES * C;
    }
    while c + L::LANES <= hd {
        let (p, ahead) = (positions.clone(), ahead && c == 0);
        // SAFETY: as above, with `c + LANES <= hd`.
        unsafe { sums_at::<L, Q, 1>(weights, n, values, out, o, p, c, ahead) };
        c += L::LANES;
    }
    if c < hd {
        // SAFETY: as above; `hd` is a multiple of eight, so `c + 8 <= hd`.
        unsafe { sums_at::<Ymm, Q, 1>(weights, n, values, out, o, positions, c, ahead && c == 0) };
    }
}

/// Adds `positions`' products into floats `c..c + L::LANES · C` of [`sums_block_in`]'s
/// sums. Every float adds its products position by position from zero, as [`axpy`]
/// into zeros would, so the sums are the same, bit for bit, whatever the tile or the
/// register's width. Safety: as [`sums_block_in`]'s, and `c + L::LANES · C <= hd`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sums_at<L: SumLanes, const Q: usize, const C: usize>(
    weights: &[f32],
    n: usize,
    values: &[u16],
    out: &mut [f32],
    (out_stride, hd): (usize, usize),
    positions: std::ops::Range<usize>,
    c: usize,
    ahead: bool,
) {
    let o = out.as_mut_ptr();
    // SAFETY (every call below): `g < Q`, `j` in `positions` and `c + L::LANES · C <= hd`
    // keep each access inside `out`, `weights` and `values`, as the caller has checked.
    let mut acc = [[unsafe { L::zero() }; C]; Q];
    for (g, acc) in acc.iter_mut().enumerate() {
        for (i, acc) in acc.iter_mut().enumerate() {
            *acc = unsafe { L::load(o.add(g * out_stride + c + L::LANES * i)) };
        }
    }
    for j in positions {
        if ahead {
            prefetch_row(values.as_ptr().wrapping_add((j + SUM_POSITIONS) * hd), hd);
        }
        let value: [L::Reg; C] = std::array::from_fn(|i| unsafe {
            L::halves(values.as_ptr().add(j * hd + c + L::LANES * i))
        });
        for (g, acc) in acc.iter_mut().enumerate() {
            let weight = unsafe { L::splat(*weights.as_ptr().add(g * n + j)) };
            for (acc, &value) in acc.iter_mut().zip(&value) {
                *acc = unsafe { L::fmadd(weight, value, *acc) };
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        for (i, &acc) in acc.iter().enumerate() {
            unsafe { L::store(o.add(g * out_stride + c + L::LANES * i), acc) };
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        // SAFETY: each chunk is 8 floats.
        let (a, b) = unsafe { (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr())) };
        acc = _mm256_fmadd_ps(a, b, acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy(w: f32, v: &[f32], out: &mut [f32]) {
    let w = _mm256_set1_ps(w);
    for (v, out) in v.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        // SAFETY: each chunk is 8 floats.
        unsafe {
            let sum = _mm256_fmadd_ps(
                w,
                _mm256_loadu_ps(v.as_ptr()),
                _mm256_loadu_ps(out.as_ptr()),
            );
            _mm256_storeu_ps(out.as_mut_ptr(), sum);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn half(bytes: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 32 signed activation bytes of one block.
#[target_feature(enable = "avx2,fma,f16c")]
fn load_act(a: &Q8Block) -> __m256i {
    // SAFETY: `qs` is 32 bytes; unaligned loads are allowed.
    unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) }
}

/// The 32 nibbles of 16 bytes, low nibbles first, as 32 unsigned bytes.
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles16(bytes: &[u8]) -> __m256i {
    assert!(bytes.len() >= 16);
    // SAFETY: 16 bytes are available, checked above.
    let q = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Sums of four unsigned-by-signed byte products, as eight i32 lanes as floats.
#[inline(always)]
unsafe fn products<P: Products>(unsigned: __m256i, signed: __m256i) -> __m256 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe { _mm256_cvtepi32_ps(P::sums(unsigned, signed)) }
}

#[inline(always)]
unsafe fn dot_q4_1<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        for (w, a) in row.chunks_exact(20).zip(x) {
            let sums = products::<P>(nibbles16(&w[4..]), load_act(a));
            acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(half(w, 0) * a.d), acc);
            offsets += half(w, 2) * a.s;
        }
        hsum(acc) + offsets
    }
}

#[inline(always)]
unsafe fn dot_q4_0<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        for (w, a) in row.chunks_exact(18).zip(x) {
            let d = half(w, 0);
            let sums = products::<P>(nibbles16(&w[2..]), load_act(a));
            acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(d * a.d), acc);
            // The stored values are offset by 8: subtract 8 * d * sum(activations).
            offsets += 8.0 * d * a.s;
        }
        hsum(acc) - offsets
    }
}

#[inline(always)]
unsafe fn dot_q5_1<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        for (w, a) in row.chunks_exact(24).zip(x) {
            // From byte 2 on, a Q5_1 block is laid out as a Q5_0 one.
            let sums = products::<P>(q5_0_values(&w[2..]), load_act(a));
            acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(half(w, 0) * a.d), acc);
            offsets += half(w, 2) * a.s;
        }
        hsum(acc) + offsets
    }
}

#[inline(always)]
unsafe fn dot_q5k<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        for (w, a) in row.chunks_exact(176).zip(x.chunks_exact(8)) {
            let (d, dmin) = (half(w, 0), half(w, 2));
            for (group, values) in q5k_groups(w).into_iter().enumerate() {
                let (sc, m) = q4k_scale_min(&w[4..16], group);
                let block = &a[group];
                let scale = d * f32::from(sc) * block.d;
                acc = _mm256_fmadd_ps(
                    products::<P>(values, load_act(block)),
                    _mm256_set1_ps(scale),
                    acc,
                );
                offsets += dmin * f32::from(m) * block.s;
            }
        }
        hsum(acc) - offsets
    }
}

/// F16, BF16 or F32 weights (`F`) times Q8 activations taken as floats (each value
/// times its block's scale, as [`float_activations`] writes them): one fused add per
/// eight weights into one sum of eight lanes, in weight order. `dot4_float` and
/// `tile_float` add in the same order, so a prompt's results equal one token's.
#[inline(always)]
unsafe fn dot_float<F: FloatWeights>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (w, a) in row.chunks_exact(F::BYTES).zip(x) {
            for (i, y) in float_act(a).into_iter().enumerate() {
                acc = _mm256_fmadd_ps(F::load(w, i), y, acc);
            }
        }
        hsum(acc)
    }
}

/// An activation block as four vectors of eight floats, each value times the block's
/// scale: the values [`float_activations`] writes.
#[target_feature(enable = "avx2,fma,f16c")]
fn float_act(a: &Q8Block) -> [__m256; 4] {
    let d = _mm256_set1_ps(a.d);
    std::array::from_fn(|i| {
        // SAFETY: `qs` is 32 bytes, so `8 * i..8 * i + 8` is inside it.
        let bytes = unsafe { _mm_loadl_epi64(a.qs[8 * i..].as_ptr().cast()) };
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), d)
    })
}

/// Activations `x` as floats for `tile_float`, into `out`: each value times its block's
/// scale, one rounding, the same values `float_act` makes.
pub fn float_activations(x: &[Q8Block], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        x.iter()
            .flat_map(|a| a.qs.iter().map(move |&q| f32::from(q) * a.d)),
    );
}

/// Two rows of F16, BF16 or F32 weights by four tokens' float activations (each
/// covering the rows): each group of eight weights is converted once for the four
/// tokens, and every product is added in `dot_float`'s order.
// Block `b` of every token is indexed in the same loop, not one slice walked.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_float<F: FloatWeights>(
    rows: [&[u8]; TILE_ROWS],
    xs: [&[f32]; TILE_TOKENS],
    out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
) {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        const T: usize = TILE_TOKENS;
        let mut acc = [[_mm256_setzero_ps(); T]; TILE_ROWS];
        let [w0s, w1s] = rows.map(|r| r.chunks_exact(F::BYTES));
        for (b, (w0, w1)) in w0s.zip(w1s).enumerate() {
            for i in 0..4 {
                let (v0, v1) = (F::load(w0, i), F::load(w1, i));
                let at = b * 32 + i * 8;
                for t in 0..T {
                    let y = &xs[t][at..at + 8];
                    // In bounds: `y` is eight floats.
                    let y = _mm256_loadu_ps(y.as_ptr());
                    acc[0][t] = _mm256_fmadd_ps(v0, y, acc[0][t]);
                    acc[1][t] = _mm256_fmadd_ps(v1, y, acc[1][t]);
                }
            }
        }
        for r in 0..TILE_ROWS {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
    }
}

/// How a block of 32 unquantized weights becomes floats, eight at a time.
trait FloatWeights {
    /// Bytes of a block.
    const BYTES: usize;

    /// Weights `8 * i..8 * i + 8` (`i` < 4) of the block starting `w`.
    unsafe fn load(w: &[u8], i: usize) -> __m256;
}

struct Halves;

impl FloatWeights for Halves {
    const BYTES: usize = 64;

    #[inline(always)]
    unsafe fn load(w: &[u8], i: usize) -> __m256 {
        let eight = &w[16 * i..16 * i + 16];
        // SAFETY: `eight` is 16 bytes; F16C is in every set.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(eight.as_ptr().cast())) }
    }
}

struct Bfloats;

impl FloatWeights for Bfloats {
    const BYTES: usize = 64;

    #[inline(always)]
    unsafe fn load(w: &[u8], i: usize) -> __m256 {
        let eight = &w[16 * i..16 * i + 16];
        // SAFETY: as in `Halves`; a bfloat16 is an f32's upper 16 bits.
        unsafe {
            let bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(eight.as_ptr().cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16))
        }
    }
}

struct Singles;

impl FloatWeights for Singles {
    const BYTES: usize = 128;

    #[inline(always)]
    unsafe fn load(w: &[u8], i: usize) -> __m256 {
        let eight = &w[32 * i..32 * i + 32];
        // SAFETY: `eight` is 32 bytes.
        unsafe { _mm256_loadu_ps(eight.as_ptr().cast()) }
    }
}

#[inline(always)]
unsafe fn dot_q5_0<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        for (w, a) in row.chunks_exact(22).zip(x) {
            let q = q5_0_values(w);
            let d = half(w, 0);
            acc = _mm256_fmadd_ps(products::<P>(q, load_act(a)), _mm256_set1_ps(d * a.d), acc);
            // The stored values are offset by 16: subtract 16 * d * sum(activations).
            offsets += 16.0 * d * a.s;
        }
        hsum(acc) - offsets
    }
}

/// The 32 values of a Q5_0 block (22 bytes: scale, 4 bytes of high bits, 16 of
/// nibbles) as unsigned bytes 0..32, still offset by 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_values(w: &[u8]) -> __m256i {
    // Byte i of the high-bit vector tests bit i of `qh`: each lane picks the qh byte
    // holding its bits, then one bit of it.
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let qh = u32::from_le_bytes([w[2], w[3], w[4], w[5]]);
    let spread_bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), spread);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread_bytes, bit), bit);
    _mm256_or_si256(
        nibbles16(&w[6..]),
        _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
    )
}

#[inline(always)]
unsafe fn dot_q8_0<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (w, a) in row.chunks_exact(34).zip(x) {
            // In bounds: the block holds 32 value bytes after its 2-byte scale.
            let q = _mm256_loadu_si256(w[2..34].as_ptr().cast());
            let y = load_act(a);
            let sums = P::q8_0_sums(P::q8_0_weights(q), q, y, P::q8_0_bias(y));
            acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sums),
                _mm256_set1_ps(half(w, 0) * a.d),
                acc,
            );
        }
        hsum(acc)
    }
}

#[inline(always)]
unsafe fn dot_q4k<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0;
        let m4 = _mm256_set1_epi8(0x0f);
        for (w, a) in row.chunks_exact(144).zip(x.chunks_exact(8)) {
            let (d, dmin) = (half(w, 0), half(w, 2));
            for pair in 0..4 {
                let bytes = &w[16 + pair * 32..16 + pair * 32 + 32];
                // In bounds: `bytes` is 32 long.
                let q = _mm256_loadu_si256(bytes.as_ptr().cast());
                for (shift, group) in [(0, 2 * pair), (4, 2 * pair + 1)] {
                    let nib = if shift == 0 {
                        _mm256_and_si256(q, m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)
                    };
                    let (sc, m) = q4k_scale_min(&w[4..16], group);
                    let block = &a[group];
                    let scale = d * f32::from(sc) * block.d;
                    acc = _mm256_fmadd_ps(
                        products::<P>(nib, load_act(block)),
                        _mm256_set1_ps(scale),
                        acc,
                    );
                    offsets += dmin * f32::from(m) * block.s;
                }
            }
        }
        hsum(acc) - offsets
    }
}

#[inline(always)]
unsafe fn dot_q6k<P: Products>(row: &[u8], x: &[Q8Block]) -> f32 {
    // SAFETY: called only from an entry point compiled with its set's features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (w, a) in row.chunks_exact(210).zip(x.chunks_exact(8)) {
            let d = half(w, 208);
            for h in 0..2 {
                let quarters = q6k_quarters(w, h);
                for (quarter, q) in quarters.into_iter().enumerate() {
                    let block = &a[h * 4 + quarter];
                    let y = load_act(block);
                    let scales = P::q6k_scales(w, 192 + h * 8 + quarter * 2);
                    let sums = _mm256_cvtepi32_ps(P::q6k_sums(q, y, P::q6k_bias(y), scales));
                    acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(d * block.d), acc);
                }
            }
        }
        hsum(acc)
    }
}

/// Half `h` of a Q6_K block (210 bytes: 128 of low nibbles, 64 of high bit pairs, 16
/// scales, the f16 scale) as its four groups of 32 values 0..64, still offset by 32.
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_quarters(w: &[u8], h: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let ql = &w[h * 64..h * 64 + 64];
    let qh = &w[128 + h * 32..128 + h * 32 + 32];
    // SAFETY: `ql` is 64 bytes and `qh` 32.
    let (ql0, ql1, qhv) = unsafe {
        (
            _mm256_loadu_si256(ql.as_ptr().cast()),
            _mm256_loadu_si256(ql[32..].as_ptr().cast()),
            _mm256_loadu_si256(qh.as_ptr().cast()),
        )
    };
    let lows = [
        _mm256_and_si256(ql0, m4),
        _mm256_and_si256(ql1, m4),
        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
    ];
    let highs = [
        _mm256_and_si256(qhv, m2),
        _mm256_and_si256(_mm256_srli_epi16(qhv, 2), m2),
        _mm256_and_si256(_mm256_srli_epi16(qhv, 4), m2),
        _mm256_and_si256(_mm256_srli_epi16(qhv, 6), m2),
    ];
    let mut quarters = lows;
    for (q, high) in quarters.iter_mut().zip(highs) {
        *q = _mm256_or_si256(*q, _mm256_slli_epi16(high, 4));
    }
    quarters
}

/// How a kernel set multiplies bytes: 32 unsigned ones by 32 signed ones, four products
/// summed into each of eight i32 lanes. The sums are exact integers, so every set gives
/// the same ones.
trait Products {
    /// The sums (unsigned values below 128, so that AVX2's 16-bit pair sums cannot
    /// saturate).
    unsafe fn sums(unsigned: __m256i, signed: __m256i) -> __m256i;

    /// A Q8_0 block's 32 signed values `q` in the form `q8_0_sums` takes.
    unsafe fn q8_0_weights(q: __m256i) -> __m256i;

    /// What `q8_0_sums` needs of activations `y`, once for every row they meet.
    unsafe fn q8_0_bias(y: __m256i) -> __m256i;

    /// `q · y` of a Q8_0 block in four-product lane sums, exactly: the same integers
    /// whatever the set, from `q8_0_weights(q)`, `q` itself and `q8_0_bias(y)`.
    unsafe fn q8_0_sums(weights: __m256i, q: __m256i, y: __m256i, bias: __m256i) -> __m256i;

    /// What Q6_K's offset of 32 contributes for activations `y`, for `q6k_sums`.
    unsafe fn q6k_bias(y: __m256i) -> __m256i;

    /// The two i8 scales at `w[s]` and `w[s + 1]` of a Q6_K block, one per 16 values of
    /// a group, in the form `q6k_sums` takes.
    unsafe fn q6k_scales(w: &[u8], s: usize) -> __m256i;

    /// `scale * (q - 32) * y` for a Q6_K group of values `q` (0..64), four products
    /// summed into each lane.
    unsafe fn q6k_sums(q: __m256i, y: __m256i, bias: __m256i, scales: __m256i) -> __m256i;
}

/// AVX2: `maddubs` into 16-bit pair sums, `madd` on to 32 bits.
struct Maddubs;

impl Products for Maddubs {
    #[inline(always)]
    unsafe fn sums(unsigned: __m256i, signed: __m256i) -> __m256i {
        // SAFETY: called only from an entry point compiled with AVX2.
        unsafe {
            let pairs = _mm256_maddubs_epi16(unsigned, signed);
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        }
    }

    #[inline(always)]
    unsafe fn q8_0_weights(q: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { _mm256_sign_epi8(q, q) }
    }

    #[inline(always)]
    unsafe fn q8_0_bias(_y: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn q8_0_sums(weights: __m256i, q: __m256i, y: __m256i, _bias: __m256i) -> __m256i {
        // One side must be unsigned: |q| times y with q's sign.
        // SAFETY: as in `sums`.
        unsafe { Maddubs::sums(weights, _mm256_sign_epi8(y, q)) }
    }

    #[inline(always)]
    unsafe fn q6k_bias(y: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { _mm256_maddubs_epi16(_mm256_set1_epi8(32), y) }
    }

    #[inline(always)]
    unsafe fn q6k_scales(w: &[u8], s: usize) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe {
            _mm256_set_m128i(
                _mm_set1_epi16(i16::from(w[s + 1] as i8)),
                _mm_set1_epi16(i16::from(w[s] as i8)),
            )
        }
    }

    #[inline(always)]
    unsafe fn q6k_sums(q: __m256i, y: __m256i, bias: __m256i, scales: __m256i) -> __m256i {
        // SAFETY: as in `sums`. Both pair sums stay in i16 range (63 * 127 * 2).
        unsafe { _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(q, y), bias), scales) }
    }
}

/// AVX-512 VNNI: `vpdpbusd` straight to 32 bits.
struct Vnni;

impl Products for Vnni {
    #[inline(always)]
    unsafe fn sums(unsigned: __m256i, signed: __m256i) -> __m256i {
        // SAFETY: called only from an entry point compiled with AVX-512 VL and VNNI.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned, signed) }
    }

    #[inline(always)]
    unsafe fn q8_0_weights(q: __m256i) -> __m256i {
        // q + 128 as unsigned bytes: 32 bits of lane sums cannot saturate.
        // SAFETY: as in `sums`.
        unsafe { _mm256_xor_si256(q, _mm256_set1_epi8(i8::MIN)) }
    }

    #[inline(always)]
    unsafe fn q8_0_bias(y: __m256i) -> __m256i {
        // -128 · y, which the sums start from to take the 128 back out.
        // SAFETY: as in `sums`.
        unsafe {
            _mm256_sub_epi32(
                _mm256_setzero_si256(),
                Vnni::sums(_mm256_set1_epi8(i8::MIN), y),
            )
        }
    }

    #[inline(always)]
    unsafe fn q8_0_sums(weights: __m256i, _q: __m256i, y: __m256i, bias: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { _mm256_dpbusd_epi32(bias, weights, y) }
    }

    #[inline(always)]
    unsafe fn q6k_bias(y: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { Vnni::sums(_mm256_set1_epi8(32), y) }
    }

    #[inline(always)]
    unsafe fn q6k_scales(w: &[u8], s: usize) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe {
            _mm256_set_m128i(
                _mm_set1_epi32(i32::from(w[s + 1] as i8)),
                _mm_set1_epi32(i32::from(w[s] as i8)),
            )
        }
    }

    #[inline(always)]
    unsafe fn q6k_sums(q: __m256i, y: __m256i, bias: __m256i, scales: __m256i) -> __m256i {
        // SAFETY: as in `sums`.
        unsafe { _mm256_mullo_epi32(_mm256_sub_epi32(Vnni::sums(q, y), bias), scales) }
    }
}

/// One kernel set's entry points: the only functions compiled with its target features,
/// into which the generic kernel bodies above are inlined.
macro_rules! entry_points {
    ($set:ident, $features:literal, $products:ty) => {
        mod $set {
            use super::*;

            #[target_feature(enable = $features)]
            pub fn dot(ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
                // SAFETY: the bodies need no features beyond this function's.
                unsafe {
                    match ty {
                        QuantType::Q4_0 => dot_q4_0::<$products>(row, x),
                        QuantType::Q4_1 => dot_q4_1::<$products>(row, x),
                        QuantType::Q5_0 => dot_q5_0::<$products>(row, x),
                        QuantType::Q5_1 => dot_q5_1::<$products>(row, x),
                        QuantType::Q8_0 => dot_q8_0::<$products>(row, x),
                        QuantType::Q4K => dot_q4k::<$products>(row, x),
                        QuantType::Q5K => dot_q5k::<$products>(row, x),
                        QuantType::Q6K => dot_q6k::<$products>(row, x),
                        QuantType::F16 => dot_float::<Halves>(row, x),
                        QuantType::BF16 => dot_float::<Bfloats>(row, x),
                        QuantType::F32 => dot_float::<Singles>(row, x),
                    }
                }
            }

            /// `false` when `ty` has no multi-row kernel.
            #[target_feature(enable = $features)]
            pub fn dot_rows(
                ty: QuantType,
                rows: [&[u8]; ROWS_AT_ONCE],
                x: &[Q8Block],
                out: &mut [f32],
            ) -> bool {
                // SAFETY: as in `dot`.
                unsafe {
                    match ty {
                        QuantType::Q4_0 => dot4_q4_0::<$products>(rows, x, out),
                        QuantType::Q4_1 => dot4_q4_1::<$products>(rows, x, out),
                        QuantType::Q5_0 => dot4_q5_0::<$products>(rows, x, out),
                        QuantType::Q5_1 => dot4_q5_1::<$products>(rows, x, out),
                        QuantType::Q8_0 => dot4_q8_0::<$products>(rows, x, out),
                        QuantType::F16 => dot4_float::<Halves>(rows, x, out),
                        QuantType::BF16 => dot4_float::<Bfloats>(rows, x, out),
                        QuantType::F32 => dot4_float::<Singles>(rows, x, out),
                        _ => return false,
                    }
                }
                true
            }

            #[target_feature(enable = $features)]
            pub fn tile_unpacked(
                rows: &Unpacked,
                first: usize,
                xs: [&[Q8Block]; TILE_TOKENS],
                out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
            ) {
                // SAFETY: as in `dot`.
                unsafe { super::tile_unpacked::<$products>(rows, first, xs, out) }
            }

            #[target_feature(enable = $features)]
            pub fn tile_q8_0(
                rows: [&[u8]; TILE_ROWS],
                xs: [&[Q8Block]; TILE_TOKENS],
                out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
            ) {
                // SAFETY: as in `dot`.
                unsafe { super::tile_q8_0::<$products>(rows, xs, out) }
            }

            #[target_feature(enable = $features)]
            pub fn tile_float(
                ty: QuantType,
                rows: [&[u8]; TILE_ROWS],
                xs: [&[f32]; TILE_TOKENS],
                out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
            ) {
                // SAFETY: as in `dot`.
                unsafe {
                    match ty {
                        QuantType::F16 => super::tile_float::<Halves>(rows, xs, out),
                        QuantType::BF16 => super::tile_float::<Bfloats>(rows, xs, out),
                        _ => super::tile_float::<Singles>(rows, xs, out),
                    }
                }
            }

            #[target_feature(enable = $features)]
            pub fn tile_q6k(
                rows: [&[u8]; TILE_ROWS],
                xs: [&[Q8Block]; TILE_TOKENS],
                out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
            ) {
                // SAFETY: as in `dot`.
                unsafe { super::tile_q6k::<$products>(rows, xs, out) }
            }
        }
    };
}

entry_points!(avx2, "avx2,fma,f16c", Maddubs);
entry_points!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    Vnni
);
