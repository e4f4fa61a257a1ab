//! AVX-512's products of interleaved Q8_0, Q4_0, Q5_0, Q4_K and Q6_K rows
//! ([`crate::cpu::interleaved`]) with up to eight tokens at once: a decode step of
//! several sequences, or a prompt's tokens. `BITS`, a value's bits (Q8_0's 8, Q5_0's 5,
//! Q4_0's 4), picks the layout (a byte a value, nibbles, or nibbles and a line of fifth
//! bits) and the type's correction ([`crate::cpu::interleaved::correction_for`]);
//! the `_q4k` kernels read Q4_K's, whose 32-weight groups are Q4_0's blocks with a
//! scale and a minimum each, the `_q6k` kernels Q6_K's, each value's low nibble and top
//! two bits put back together in a byte, two scales a group. Both take activations
//! under one scale a super-block and add its groups in integers.
//!
//! A block of sixteen rows is eight 512-bit registers of values (Q4_0's four, each
//! split into its low and high nibbles; Q5_0's five, the fifth bits added to the
//! nibbles), loaded once for every token of the tile. Per
//! token, eight `vpdpbusd` against four of its values each (a broadcast operand read
//! from memory) sum the block for all sixteen rows, starting from the token's
//! correction; then one conversion, one multiply (the rows' scales by the token's) and
//! one fused add, as [`crate::cpu::interleaved::dot`] adds, so results equal it bit for
//! bit.

use super::*;
use crate::cpu::interleaved::{
    Q4K_D, Q4K_DMIN, Q4K_GROUP_BYTES, Q4K_MINS, Q4K_SCALES, Q6K_D, Q6K_GROUP, Q6K_GROUP_BYTES,
    Q6K_HIGH, Q6K_SCALES, ROWS,
};

/// The values of half `h` of `pair`, register `k` against the token's values
/// `4k..4k + 4`: Q8_0's eight registers as stored, Q4_0's low nibbles (values
/// `4k + j`) then its high ones (values `16 + 4k + j`), and Q5_0's as Q4_0's with 16
/// added to each byte whose fifth bit is set (bit `k` of its byte in the fifth line
/// for the low nibbles, bit `4 + k` for the high ones: a `vptestmb` and a masked
/// `vpaddb`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn values<const BITS: u32>(pair: *const u8, h: usize) -> [__m512i; 8] {
    let line = |k: usize| pair.wrapping_add((h * half_lines(BITS) + k) * 64);
    // SAFETY (the loads): the caller's pair holds both halves.
    if BITS <= 5 {
        let low = _mm512_set1_epi8(0x0f);
        let packed: [__m512i; 4] =
            std::array::from_fn(|k| unsafe { _mm512_loadu_si512(line(k).cast()) });
        let nibbles: [__m512i; 8] = std::array::from_fn(|k| match k {
            0..4 => _mm512_and_si512(packed[k], low),
            _ => _mm512_and_si512(_mm512_srli_epi16::<4>(packed[k - 4]), low),
        });
        if BITS == 4 {
            return nibbles;
        }
        let fifths = unsafe { _mm512_loadu_si512(line(4).cast()) };
        let sixteen = _mm512_set1_epi8(16);
        std::array::from_fn(|k| {
            let bit = (1u8 << (k % 4 + 4 * (k / 4))) as i8;
            let set = _mm512_test_epi8_mask(fifths, _mm512_set1_epi8(bit));
            _mm512_mask_add_epi8(nibbles[k], set, nibbles[k], sixteen)
        })
    } else {
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(line(k).cast()) })
    }
}

/// The sixteen rows' scales of half `h` of `pair`, as floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn scales<const BITS: u32>(pair: *const u8, h: usize) -> __m512 {
    let at = 2 * half_lines(BITS) * 64 + h * 32;
    // SAFETY: the caller's pair holds its line of scales.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(pair.add(at).cast::<__m256i>()) })
}

/// The `ROWS` rows of `group` (interleaved) times `T` tokens (`acts[t]`, with their
/// corrections `corrections[t]`) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn tile<const T: usize, const BITS: u32>(
    group: &[u8],
    acts: [&[Q8Block]; T],
    corrections: [&[i32]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let blocks = acts[0].len();
    assert!(blocks.is_multiple_of(2) && group.len() >= blocks / 2 * pair_bytes(BITS));
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
            let pair = group.add(b / 2 * pair_bytes(BITS));
            let h = b % 2;
            prefetch_ahead::<BITS>(pair, h, false);
            let values = values::<BITS>(pair, h);
            let scales = scales::<BITS>(pair, h);
            for t in 0..T {
                let a = &*acts[t].add(b);
                let y = a.qs.as_ptr().cast::<i32>();
                let mut sums = _mm512_set1_epi32(correction_of::<BITS>(*corrections[t].add(b)));
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

/// One token against two groups (`groups` holds both, one after the other): a decode
/// step of one sequence. The sums of each block are split in two halves (integers, so
/// exactly), two chains of four `vpdpbusd` rather than one of eight. The groups go one
/// after the other, so memory is read as one stream whose prefetches run on into the
/// next group: read side by side, block by block, the second group's first blocks were
/// asked for by nothing, and on an AMD EPYC decode was 10–25% slower than AVX2's, which
/// goes group by group (see BENCHMARKS.md).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_groups<const BITS: u32>(
    groups: &[u8],
    x: &[Q8Block],
    corrections: &[i32],
    out: &mut [f32],
) {
    let blocks = x.len();
    let group_bytes = blocks / 2 * pair_bytes(BITS);
    assert!(blocks.is_multiple_of(2) && groups.len() >= 2 * group_bytes);
    assert!(corrections.len() >= blocks && out.len() >= 2 * ROWS);
    let base = groups.as_ptr();
    let x = x.as_ptr();
    let corrections = corrections.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 2];
    for (g, acc) in acc.iter_mut().enumerate() {
        for b in 0..blocks {
            // SAFETY: block `b` is inside both groups and the token's blocks; this
            // function has the features.
            unsafe {
                let a = &*x.add(b);
                let y = a.qs.as_ptr().cast::<i32>();
                let ad = _mm512_set1_ps(a.d);
                let start = _mm512_set1_epi32(correction_of::<BITS>(*corrections.add(b)));
                let pair = base.add(g * group_bytes + b / 2 * pair_bytes(BITS));
                let h = b % 2;
                prefetch_ahead::<BITS>(pair, h, false);
                let v = values::<BITS>(pair, h);
                let mut low = start;
                let mut high = _mm512_setzero_si512();
                for k in 0..4 {
                    let y = |k: usize| _mm512_set1_epi32(y.add(k).read_unaligned());
                    low = _mm512_dpbusd_epi32(low, v[k], y(k));
                    high = _mm512_dpbusd_epi32(high, v[k + 4], y(k + 4));
                }
                let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(low, high));
                *acc = _mm512_fmadd_ps(sums, _mm512_mul_ps(scales::<BITS>(pair, h), ad), *acc);
            }
        }
    }
    // SAFETY: `out` holds both groups' rows.
    unsafe {
        _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(ROWS), acc[1]);
    }
}

/// The sixteen rows' six-bit scales of group `j` of the Q4_K super-block `block`, a
/// row's in its 32-bit lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q4k_scales(block: *const u8, j: usize) -> __m512i {
    // SAFETY: the caller's block holds its scales.
    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(block.add(Q4K_SCALES + j * ROWS).cast()) })
}

/// `Σ_j min_j · Σ y_j` of the sixteen rows of the Q4_K super-block `block` for each of
/// `T` tokens (`sums[t]`: the sums of its eight activation blocks): the minimums of
/// groups `2p` and `2p + 1` paired in each row's lane, times both groups' sums at once.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q4k_minimums<const T: usize>(block: *const u8, sums: [*const i16; T]) -> [__m512i; T] {
    let mut total = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        // SAFETY: the caller's block holds its minimums, and each token eight sums.
        unsafe {
            let at = block.add(Q4K_MINS + 2 * p * ROWS);
            let (even, odd) = (
                _mm_loadu_si128(at.cast()),
                _mm_loadu_si128(at.add(ROWS).cast()),
            );
            let paired =
                _mm256_set_m128i(_mm_unpackhi_epi8(even, odd), _mm_unpacklo_epi8(even, odd));
            let mins = _mm512_cvtepu8_epi16(paired);
            for (total, sums) in total.iter_mut().zip(sums) {
                let both = _mm512_set1_epi32(sums.add(2 * p).cast::<i32>().read_unaligned());
                *total = _mm512_dpwssd_epi32(*total, mins, both);
            }
        }
    }
    total
}

/// The sixteen rows' `d` and `dmin` of `block`, as floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q4k_d(block: *const u8) -> (__m512, __m512) {
    // SAFETY: the caller's block holds its `d` and `dmin`, one after the other.
    let both =
        |at: usize| unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(block.add(at).cast::<__m256i>())) };
    (both(Q4K_D), both(Q4K_DMIN))
}

/// Adds the Q4_K super-block `block`'s sixteen rows times `T` tokens to `acc[t]`:
/// `ys[t]` and `sums[t]` are the token's eight activation blocks (under one scale) and
/// their sums. Each group's sums of products (eight `vpdpbusd`) times the rows' scales
/// add up in integers; then `float(products) × (d · y.d)` less `float(mins) × (dmin ·
/// y.d)`, as [`crate::cpu::interleaved::dot`] adds them.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q4k_super_block<const T: usize>(
    block: *const u8,
    ys: [*const Q8Block; T],
    sums: [*const i16; T],
    acc: &mut [__m512; T],
) {
    let mut products = [_mm512_setzero_si512(); T];
    // SAFETY (every block below): the caller's block is a whole super-block, and each
    // token's pointers hold eight blocks and eight sums.
    for j in 0..8 {
        prefetch_eighth::<Q4K_GROUP_BYTES>(block, j, false);
        let values = unsafe { values::<4>(block.add(j * 256), 0) };
        let scale = unsafe { q4k_scales(block, j) };
        for (products, y) in products.iter_mut().zip(ys) {
            let y = unsafe { (*y.add(j)).qs.as_ptr().cast::<i32>() };
            let mut group = _mm512_setzero_si512();
            for (k, v) in values.iter().enumerate() {
                let y = unsafe { y.add(k).read_unaligned() };
                group = _mm512_dpbusd_epi32(group, *v, _mm512_set1_epi32(y));
            }
            *products = _mm512_add_epi32(*products, _mm512_mullo_epi32(group, scale));
        }
    }
    let mins = unsafe { q4k_minimums::<T>(block, sums) };
    let (d, dmin) = unsafe { q4k_d(block) };
    for t in 0..T {
        let y_d = _mm512_set1_ps(unsafe { (*ys[t]).d });
        let products = _mm512_cvtepi32_ps(products[t]);
        acc[t] = _mm512_fmadd_ps(products, _mm512_mul_ps(d, y_d), acc[t]);
        let mins = _mm512_cvtepi32_ps(mins[t]);
        acc[t] = _mm512_fnmadd_ps(mins, _mm512_mul_ps(dmin, y_d), acc[t]);
    }
}

/// [`tile`] for Q4_K: the `ROWS` rows of `group` times `T` tokens (under one scale a
/// super-block, with their blocks' sums) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn tile_q4k<const T: usize>(
    group: &[u8],
    acts: [&[Q8Block]; T],
    sums: [&[i16]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let blocks = acts[0].len();
    assert!(blocks.is_multiple_of(8) && group.len() >= blocks / 8 * Q4K_GROUP_BYTES);
    assert!(acts.iter().all(|a| a.len() >= blocks));
    assert!(sums.iter().all(|s| s.len() >= blocks));
    let group = group.as_ptr();
    let mut acc = [_mm512_setzero_ps(); T];
    for s in 0..blocks / 8 {
        // SAFETY: super-block `s` is inside the group and each token's blocks and sums;
        // this function has the features.
        unsafe {
            q4k_super_block::<T>(
                group.add(s * Q4K_GROUP_BYTES),
                acts.map(|a| a.as_ptr().add(8 * s)),
                sums.map(|a| a.as_ptr().add(8 * s)),
                &mut acc,
            );
        }
    }
    for t in 0..T {
        // SAFETY: each `out[t]` is sixteen floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
}

/// [`two_groups`] for Q4_K: one token against two groups (`groups` holds both), one
/// after the other.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_groups_q4k(groups: &[u8], x: &[Q8Block], sums: &[i16], out: &mut [f32]) {
    let blocks = x.len();
    let group_bytes = blocks / 8 * Q4K_GROUP_BYTES;
    assert!(blocks.is_multiple_of(8) && groups.len() >= 2 * group_bytes);
    assert!(sums.len() >= blocks && out.len() >= 2 * ROWS);
    let base = groups.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 1]; 2];
    for (g, acc) in acc.iter_mut().enumerate() {
        for s in 0..blocks / 8 {
            // SAFETY: super-block `s` is inside both groups and the token's blocks and
            // sums; this function has the features.
            unsafe {
                let block = base.add(g * group_bytes + s * Q4K_GROUP_BYTES);
                let ys = [x.as_ptr().add(8 * s)];
                q4k_super_block::<1>(block, ys, [sums.as_ptr().add(8 * s)], acc);
            }
        }
    }
    // SAFETY: `out` holds both groups' rows.
    unsafe {
        _mm512_storeu_ps(out.as_mut_ptr(), acc[0][0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(ROWS), acc[1][0]);
    }
}

/// The sixteen rows' signed scales of both halves of group `j` of the Q6_K super-block
/// `block`, a row's in its 32-bit lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q6k_scales(block: *const u8, j: usize) -> [__m512i; 2] {
    std::array::from_fn(|h| {
        // SAFETY: the caller's block holds its scales.
        let sixteen = unsafe { _mm_loadu_si128(block.add(Q6K_SCALES + (2 * j + h) * ROWS).cast()) };
        _mm512_cvtepi8_epi32(sixteen)
    })
}

/// The values of group `j` of `block`, a byte a value: register `k` against the
/// token's values `4k..4k + 4`, each low nibble joined by its two high bits (a shift
/// within sixteen-bit lanes moves bits across a byte, and the masks keep only each
/// byte's own).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q6k_values(block: *const u8, j: usize) -> [__m512i; 8] {
    let group = block.wrapping_add(j * Q6K_GROUP);
    let (low, two) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
    // SAFETY: the caller's block holds group `j`, six lines.
    let packed: [__m512i; 4] =
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(group.add(k * 64).cast()) });
    let high: [__m512i; 2] =
        std::array::from_fn(|h| unsafe { _mm512_loadu_si512(group.add(Q6K_HIGH + h * 64).cast()) });
    std::array::from_fn(|k| {
        let (h, k) = (k / 4, k % 4);
        let nibbles = match h {
            0 => packed[k],
            _ => _mm512_srli_epi16::<4>(packed[k]),
        };
        let top = match k {
            0 => _mm512_slli_epi16::<4>(high[h]),
            1 => _mm512_slli_epi16::<2>(high[h]),
            2 => high[h],
            _ => _mm512_srli_epi16::<2>(high[h]),
        };
        _mm512_or_si512(_mm512_and_si512(nibbles, low), _mm512_and_si512(top, two))
    })
}

/// Adds the Q6_K super-block `block`'s sixteen rows times `T` tokens to `acc[t]`:
/// `ys[t]` and `halves[t]` are the token's eight activation blocks (under one scale)
/// and their halves' sums. Each half's sums of products start from `-32 · Σ y` of the
/// half, are multiplied by the half's scale and add up in integers for the super-block;
/// then one conversion and one fused add, as [`crate::cpu::interleaved::dot`] adds.
// The registers of each half are indexed (see the loop).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q6k_super_block<const T: usize>(
    block: *const u8,
    ys: [*const Q8Block; T],
    halves: [*const [i16; 2]; T],
    acc: &mut [__m512; T],
) {
    let mut products = [_mm512_setzero_si512(); T];
    // SAFETY (every block below): the caller's block is a whole super-block, and each
    // token's pointers hold eight blocks and eight pairs of sums.
    for j in 0..8 {
        prefetch_eighth::<Q6K_GROUP_BYTES>(block, j, false);
        let values = unsafe { q6k_values(block, j) };
        let scales = unsafe { q6k_scales(block, j) };
        for t in 0..T {
            let y = unsafe { (*ys[t].add(j)).qs.as_ptr().cast::<i32>() };
            let half = unsafe { *halves[t].add(j) };
            for h in 0..2 {
                let mut sums = _mm512_set1_epi32(-32 * i32::from(half[h]));
                // An index, not an iterator: `Take::next` over registers was not
                // inlined here, and cost a call per product.
                for k in 4 * h..4 * h + 4 {
                    let y = unsafe { y.add(k).read_unaligned() };
                    sums = _mm512_dpbusd_epi32(sums, values[k], _mm512_set1_epi32(y));
                }
                products[t] = _mm512_add_epi32(products[t], _mm512_mullo_epi32(sums, scales[h]));
            }
        }
    }
    // SAFETY: the caller's block holds its `d`.
    let d = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(block.add(Q6K_D).cast::<__m256i>())) };
    for t in 0..T {
        let y_d = _mm512_set1_ps(unsafe { (*ys[t]).d });
        let products = _mm512_cvtepi32_ps(products[t]);
        acc[t] = _mm512_fmadd_ps(products, _mm512_mul_ps(d, y_d), acc[t]);
    }
}

/// [`tile`] for Q6_K: the `ROWS` rows of `group` times `T` tokens (under one scale a
/// super-block, with their halves' sums) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn tile_q6k<const T: usize>(
    group: &[u8],
    acts: [&[Q8Block]; T],
    halves: [&[[i16; 2]]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let blocks = acts[0].len();
    assert!(blocks.is_multiple_of(8) && group.len() >= blocks / 8 * Q6K_GROUP_BYTES);
    assert!(acts.iter().all(|a| a.len() >= blocks));
    assert!(halves.iter().all(|h| h.len() >= blocks));
    let group = group.as_ptr();
    let mut acc = [_mm512_setzero_ps(); T];
    for s in 0..blocks / 8 {
        // SAFETY: super-block `s` is inside the group and each token's blocks and sums;
        // this function has the features.
        unsafe {
            q6k_super_block::<T>(
                group.add(s * Q6K_GROUP_BYTES),
                acts.map(|a| a.as_ptr().add(8 * s)),
                halves.map(|h| h.as_ptr().add(8 * s)),
                &mut acc,
            );
        }
    }
    for t in 0..T {
        // SAFETY: each `out[t]` is sixteen floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
}

/// [`two_groups`] for Q6_K: one token against two groups (`groups` holds both), one
/// after the other.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_groups_q6k(groups: &[u8], x: &[Q8Block], halves: &[[i16; 2]], out: &mut [f32]) {
    let blocks = x.len();
    let group_bytes = blocks / 8 * Q6K_GROUP_BYTES;
    assert!(blocks.is_multiple_of(8) && groups.len() >= 2 * group_bytes);
    assert!(halves.len() >= blocks && out.len() >= 2 * ROWS);
    let base = groups.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 1]; 2];
    for (g, acc) in acc.iter_mut().enumerate() {
        for s in 0..blocks / 8 {
            // SAFETY: super-block `s` is inside both groups and the token's blocks and
            // sums; this function has the features.
            unsafe {
                let block = base.add(g * group_bytes + s * Q6K_GROUP_BYTES);
                let ys = [x.as_ptr().add(8 * s)];
                q6k_super_block::<1>(block, ys, [halves.as_ptr().add(8 * s)], acc);
            }
        }
    }
    // SAFETY: `out` holds both groups' rows.
    unsafe {
        _mm512_storeu_ps(out.as_mut_ptr(), acc[0][0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(ROWS), acc[1][0]);
    }
}
