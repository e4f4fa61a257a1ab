//! AVX-512's products of interleaved Q8_0 and Q4_0 rows ([`crate::cpu::interleaved`])
//! with up to eight tokens at once: a decode step of several sequences, or a prompt's
//! tokens. `Q4` picks Q4_0's layout, Q8_0's otherwise.
//!
//! A block of sixteen rows is eight 512-bit registers of values (Q4_0's four, each
//! split into its low and high nibbles), loaded once for every token of the tile. Per
//! token, eight `vpdpbusd` against four of its values each (a broadcast operand read
//! from memory) sum the block for all sixteen rows, starting from the token's
//! correction; then one conversion, one multiply (the rows' scales by the token's) and
//! one fused add, as [`crate::cpu::interleaved::dot`] adds, so results equal it bit for
//! bit.

use super::*;
use crate::cpu::interleaved::ROWS;

/// Tokens of a tile: eight registers of values, eight accumulators and a few temporaries
/// of the 32.
pub(super) const TOKENS: usize = 8;

/// Cache lines of one block's values (half a pair).
const fn half_lines(q4: bool) -> usize {
    if q4 { 4 } else { 8 }
}

/// Bytes of a pair of blocks: both halves' values, then a line of scales.
pub(super) const fn pair_bytes(q4: bool) -> usize {
    (2 * half_lines(q4) + 1) * 64
}

/// The values of half `h` of `pair`, register `k` against the token's values
/// `4k..4k + 4`: Q8_0's eight registers as stored, Q4_0's low nibbles (values
/// `4k + j`) then its high ones (values `16 + 4k + j`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn values<const Q4: bool>(pair: *const u8, h: usize) -> [__m512i; 8] {
    let line = |k: usize| pair.wrapping_add((h * half_lines(Q4) + k) * 64);
    // SAFETY (the loads): the caller's pair holds both halves.
    if Q4 {
        let low = _mm512_set1_epi8(0x0f);
        let packed: [__m512i; 4] =
            std::array::from_fn(|k| unsafe { _mm512_loadu_si512(line(k).cast()) });
        std::array::from_fn(|k| match k {
            0..4 => _mm512_and_si512(packed[k], low),
            _ => _mm512_and_si512(_mm512_srli_epi16::<4>(packed[k - 4]), low),
        })
    } else {
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(line(k).cast()) })
    }
}

/// The sixteen rows' scales of half `h` of `pair`, as floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn scales<const Q4: bool>(pair: *const u8, h: usize) -> __m512 {
    let at = 2 * half_lines(Q4) * 64 + h * 32;
    // SAFETY: the caller's pair holds its line of scales.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(pair.add(at).cast::<__m256i>()) })
}

/// A block's correction for this layout ([`crate::cpu::interleaved::correction_for`]).
fn correction<const Q4: bool>(c: i32) -> i32 {
    if Q4 { c >> 4 } else { c }
}

/// The `ROWS` rows of `group` (interleaved) times `T` tokens (`acts[t]`, with their
/// corrections `corrections[t]`) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn tile<const T: usize, const Q4: bool>(
    group: &[u8],
    acts: [&[Q8Block]; T],
    corrections: [&[i32]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let blocks = acts[0].len();
    assert!(blocks.is_multiple_of(2) && group.len() >= blocks / 2 * pair_bytes(Q4));
    assert!(acts.iter().all(|a| a.len() >= blocks));
    assert!(corrections.iter().all(|c| c.len() >= blocks));
    // Raw pointers from here, checked above: bounds checks would take the inner loop's
    // registers. (`map` holds no intrinsics: a closure does not inherit this function's
    // target features.)
    let group = group.as_ptr();
    let acts = acts.map(<[Q8Block]>::as_ptr);
    let corrections = corrections.map(<[i32]>::as_ptr);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..blocks {
        // SAFETY: block `b` is inside the group, each token's blocks and corrections;
        // this function has the features.
        unsafe {
            let pair = group.add(b / 2 * pair_bytes(Q4));
            let h = b % 2;
            prefetch_ahead::<Q4>(pair, h);
            let values = values::<Q4>(pair, h);
            let scales = scales::<Q4>(pair, h);
            for t in 0..T {
                let a = &*acts[t].add(b);
                let y = a.qs.as_ptr().cast::<i32>();
                let mut sums = _mm512_set1_epi32(correction::<Q4>(*corrections[t].add(b)));
                for (k, v) in values.iter().enumerate() {
                    sums =
                        _mm512_dpbusd_epi32(sums, *v, _mm512_set1_epi32(y.add(k).read_unaligned()));
                }
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(a.d));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[t]);
            }
        }
    }
    for (t, sums) in acc.iter().enumerate() {
        // SAFETY: each `out[t]` is sixteen floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), *sums) };
    }
}

/// One token against two groups at once (`groups` holds both, one after the other):
/// a decode step of one sequence, whose eight `vpdpbusd` a block would otherwise wait on
/// one another. The sums of each block are split in two halves (integers, so exactly).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_groups<const Q4: bool>(
    groups: &[u8],
    x: &[Q8Block],
    corrections: &[i32],
    out: &mut [f32],
) {
    let blocks = x.len();
    let group_bytes = blocks / 2 * pair_bytes(Q4);
    assert!(blocks.is_multiple_of(2) && groups.len() >= 2 * group_bytes);
    assert!(corrections.len() >= blocks && out.len() >= 2 * ROWS);
    let base = groups.as_ptr();
    let x = x.as_ptr();
    let corrections = corrections.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 2];
    for b in 0..blocks {
        // SAFETY: block `b` is inside both groups and the token's blocks; this function
        // has the features.
        unsafe {
            let a = &*x.add(b);
            let y = a.qs.as_ptr().cast::<i32>();
            let ad = _mm512_set1_ps(a.d);
            let start = _mm512_set1_epi32(correction::<Q4>(*corrections.add(b)));
            for (g, acc) in acc.iter_mut().enumerate() {
                let pair = base.add(g * group_bytes + b / 2 * pair_bytes(Q4));
                let h = b % 2;
                prefetch_ahead::<Q4>(pair, h);
                let v = values::<Q4>(pair, h);
                let mut low = start;
                let mut high = _mm512_setzero_si512();
                for k in 0..4 {
                    let y = |k: usize| _mm512_set1_epi32(y.add(k).read_unaligned());
                    low = _mm512_dpbusd_epi32(low, v[k], y(k));
                    high = _mm512_dpbusd_epi32(high, v[k + 4], y(k + 4));
                }
                let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(low, high));
                *acc = _mm512_fmadd_ps(sums, _mm512_mul_ps(scales::<Q4>(pair, h), ad), *acc);
            }
        }
    }
    // SAFETY: `out` holds both groups' rows.
    unsafe {
        _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(ROWS), acc[1]);
    }
}

/// [`crate::cpu::interleaved::dot`] for one group and one token.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn one_group<const Q4: bool>(
    group: &[u8],
    x: &[Q8Block],
    corrections: &[i32],
    out: &mut [f32; ROWS],
) {
    let mut values = [[0.0; ROWS]; 1];
    tile::<1, Q4>(group, [x], [corrections], &mut values);
    *out = values[0];
}

/// Pairs ahead that a block's loads fetch for later: the tiles' arithmetic fills the
/// core's window so that few of a group's loads are in flight at once, and the
/// hardware's prefetchers alone leave them waiting on memory.
const PREFETCH_PAIRS: usize = 3;

/// Asks for the cache lines of half `h` of the pair `PREFETCH_PAIRS` after `pair` (and
/// its scales, with the second half). Prefetches never fault, so past the group's end
/// they are harmless.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prefetch_ahead<const Q4: bool>(pair: *const u8, h: usize) {
    let ahead = pair.wrapping_add(PREFETCH_PAIRS * pair_bytes(Q4));
    for k in 0..half_lines(Q4) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add((h * half_lines(Q4) + k) * 64).cast());
    }
    if h == 1 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(2 * half_lines(Q4) * 64).cast());
    }
}
