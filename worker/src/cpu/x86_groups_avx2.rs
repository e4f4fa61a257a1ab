//! AVX2's products of interleaved Q8_0, Q4_0, Q5_0, Q4_K and Q6_K rows
//! ([`crate::cpu::interleaved`]): the layout AVX-512 reads sixteen rows at a time, read
//! here as two halves of eight rows, a 256-bit register holding four values of each.
//!
//! AVX2 has no `vpdpbusd`: `vpmaddubsw` multiplies the unsigned values by a token's
//! signed ones (broadcast) and adds them in pairs to sixteen bits, and `vpmaddwd` by
//! ones adds those pairs to each row's 32-bit lane. Sixteen bits hold the pairs' sums
//! only while they stay below 2^15, so the kernels add as many pairs before widening as
//! each type allows (|y| ≤ 127):
//!
//! - Q4_0's and Q4_K's nibbles (0..16): a whole block, 16 · 15 · 127 = 30,480;
//! - Q5_0's values (0..32): half a block, 8 · 31 · 127 = 31,496;
//! - Q6_K's (0..64): a quarter of a block, 4 · 63 · 127 = 32,004;
//! - Q8_0's (0..256, the weight plus 128) not even one pair: the kernels take the
//!   weight's sign onto the token's values (`vpsignb`) and multiply its magnitude
//!   (at most 128), so the sum is `q · y` itself and starts from zero, not from the
//!   correction. The integer is the same either way, and so are the results.
//!
//! Every block's integer sum is exact, and the floating-point work is
//! [`crate::cpu::interleaved::dot`]'s in its order, row by row and token by token, so
//! these kernels give its bits, as AVX-512's do.
//!
//! A pass computes a group's sixteen rows for up to four tokens, half by half within
//! each block, the values of a half loaded once for all four; a tile of more tokens
//! makes several passes over the group, which stays in the caches between them.

use super::*;
use crate::cpu::interleaved::{
    Q4K_D, Q4K_DMIN, Q4K_GROUP_BYTES, Q4K_MINS, Q4K_SCALES, Q6K_D, Q6K_GROUP, Q6K_GROUP_BYTES,
    Q6K_HIGH, Q6K_SCALES, ROWS,
};

/// Rows of a half group: a 256-bit register's 32-bit lanes.
const HALF: usize = ROWS / 2;

/// Tokens of one pass.
const PASS: usize = 4;

/// Four values of `token`'s block (`y`, its 32 bytes as eight 32-bit words), word `k`,
/// in every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn broadcast(y: *const i32, k: usize) -> __m256i {
    // SAFETY: the caller's `y` is a block's 32 bytes.
    _mm256_set1_epi32(unsafe { y.add(k).read_unaligned() })
}

/// The 32 bytes of half `r` of the 64-byte line at `line`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half_line(line: *const u8, r: usize) -> __m256i {
    // SAFETY: the caller's line is inside its group.
    unsafe { _mm256_loadu_si256(line.add(r * 32).cast()) }
}

/// Q4_0's (or a Q4_K group's) eight registers of values for rows `8r..8r + 8` of the
/// block whose four lines start at `lines`: the low nibbles (values `4k + j`), then the
/// high ones (values `16 + 4k + j`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(lines: *const u8, r: usize) -> [__m256i; 8] {
    let low = _mm256_set1_epi8(0x0f);
    // SAFETY: the caller's block holds its four lines.
    let packed: [__m256i; 4] = std::array::from_fn(|k| unsafe { half_line(lines.add(k * 64), r) });
    std::array::from_fn(|k| match k {
        0..4 => _mm256_and_si256(packed[k], low),
        _ => _mm256_and_si256(_mm256_srli_epi16::<4>(packed[k - 4]), low),
    })
}

/// Q5_0's eight registers of values for rows `8r..8r + 8` of the block whose five
/// lines start at `lines`: [`nibbles`] with each value's fifth bit at bit 4, from
/// bit `k` (low nibbles) or `4 + k` (high ones) of its byte in the fifth line, moved
/// there by a shift within sixteen-bit lanes (the mask keeps only each byte's own).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn five_bits(lines: *const u8, r: usize) -> [__m256i; 8] {
    let bit4 = _mm256_set1_epi8(0x10);
    // SAFETY: the caller's block holds its five lines.
    let (nibbles, fifths) = unsafe { (nibbles(lines, r), half_line(lines.add(4 * 64), r)) };
    std::array::from_fn(|k| {
        let at_bit4 = match k {
            0 => _mm256_slli_epi16::<4>(fifths),
            1 => _mm256_slli_epi16::<3>(fifths),
            2 => _mm256_slli_epi16::<2>(fifths),
            3 => _mm256_slli_epi16::<1>(fifths),
            4 => fifths,
            5 => _mm256_srli_epi16::<1>(fifths),
            6 => _mm256_srli_epi16::<2>(fifths),
            _ => _mm256_srli_epi16::<3>(fifths),
        };
        _mm256_or_si256(nibbles[k], _mm256_and_si256(at_bit4, bit4))
    })
}

/// Eight registers of a byte a value (Q8_0's weights plus 128) for rows
/// `8r..8r + 8`, from the eight lines at `lines`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bytes(lines: *const u8, r: usize) -> [__m256i; 8] {
    // SAFETY: the caller's block holds its eight lines.
    std::array::from_fn(|k| unsafe { half_line(lines.add(k * 64), r) })
}

/// Rows `8r..8r + 8`'s values of the interleaved Q6_K group at `group` (its 384
/// bytes), a byte a value as [`bytes`] reads Q8_0's: each low nibble joined by its two
/// high bits (a shift within sixteen-bit lanes moves bits across a byte, and the masks
/// keep only each byte's own).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q6k_group(group: *const u8, r: usize) -> [__m256i; 8] {
    let (low, two) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    // SAFETY: the caller's group holds its six lines.
    let packed: [__m256i; 4] = std::array::from_fn(|k| unsafe { half_line(group.add(k * 64), r) });
    let high: [__m256i; 2] =
        std::array::from_fn(|h| unsafe { half_line(group.add(Q6K_HIGH + h * 64), r) });
    std::array::from_fn(|k| {
        let (h, k) = (k / 4, k % 4);
        let nibbles = match h {
            0 => packed[k],
            _ => _mm256_srli_epi16::<4>(packed[k]),
        };
        let top = match k {
            0 => _mm256_slli_epi16::<4>(high[h]),
            1 => _mm256_slli_epi16::<2>(high[h]),
            2 => high[h],
            _ => _mm256_srli_epi16::<2>(high[h]),
        };
        _mm256_or_si256(_mm256_and_si256(nibbles, low), _mm256_and_si256(top, two))
    })
}

/// Eight rows' half-precision scales at `at`, as floats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn halves_to_floats(at: *const u8) -> __m256 {
    // SAFETY: the caller's `at` holds eight scales.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(at.cast()) })
}

/// `Σ_k unsigned[k] · y_k` over `k` in `range`, in sixteen bits (the caller keeps the
/// range short enough not to saturate), two chains added at the end.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pairs(unsigned: &[__m256i; 8], y: *const i32, range: std::ops::Range<usize>) -> __m256i {
    let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for k in range {
        // SAFETY: `y` is the caller's block.
        let product = _mm256_maddubs_epi16(unsigned[k], unsafe { broadcast(y, k) });
        if k % 2 == 0 {
            even = _mm256_add_epi16(even, product);
        } else {
            odd = _mm256_add_epi16(odd, product);
        }
    }
    _mm256_add_epi16(even, odd)
}

/// Sixteen-bit pairs widened to each row's 32-bit lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen(pairs: __m256i) -> __m256i {
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// One block's integer sums for eight rows and one token (`y`, with its correction `c`
/// for this layout's offset), as [`crate::cpu::interleaved::dot`] defines them.
/// `values` are the block's unsigned values (Q8_0: the weights' magnitudes) and
/// `signed` Q8_0's weights themselves (unused otherwise).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_sums<const BITS: u32>(
    values: &[__m256i; 8],
    signed: &[__m256i; 8],
    y: *const i32,
    c: i32,
) -> __m256i {
    // SAFETY (the broadcasts): `y` is the caller's block.
    unsafe {
        if BITS == 4 {
            _mm256_add_epi32(
                widen(pairs(values, y, 0..8)),
                _mm256_set1_epi32(correction_of::<BITS>(c)),
            )
        } else if BITS == 8 {
            // Q8_0: |q| · (y with q's sign), a pair at most 2 · 128 · 127.
            let mut sums = [_mm256_setzero_si256(); 2];
            for k in 0..8 {
                let y = _mm256_sign_epi8(broadcast(y, k), signed[k]);
                let product = widen(_mm256_maddubs_epi16(values[k], y));
                sums[k % 2] = _mm256_add_epi32(sums[k % 2], product);
            }
            _mm256_add_epi32(sums[0], sums[1])
        } else {
            let low = widen(pairs(values, y, 0..4));
            let high = widen(pairs(values, y, 4..8));
            _mm256_add_epi32(
                _mm256_add_epi32(low, high),
                _mm256_set1_epi32(correction_of::<BITS>(c)),
            )
        }
    }
}

/// The `ROWS` rows of `group` (interleaved) times `T` tokens (`acts[t]`, with their
/// corrections `corrections[t]`) into `out[t]`: [`super::avx512_groups::tile`]'s
/// contract.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let acts = acts.map(<[Q8Block]>::as_ptr);
    let corrections = corrections.map(<[i32]>::as_ptr);
    for t0 in (0..T).step_by(PASS) {
        let n = (T - t0).min(PASS);
        let out = &mut out[t0..t0 + n];
        // SAFETY: checked above, for every token of the pass.
        unsafe {
            match n {
                4 => pass::<4, BITS>(group.as_ptr(), blocks, &acts[t0..], &corrections[t0..], out),
                3 => pass::<3, BITS>(group.as_ptr(), blocks, &acts[t0..], &corrections[t0..], out),
                2 => pass::<2, BITS>(group.as_ptr(), blocks, &acts[t0..], &corrections[t0..], out),
                _ => pass::<1, BITS>(group.as_ptr(), blocks, &acts[t0..], &corrections[t0..], out),
            }
        }
    }
}

/// [`tile`] for `N` tokens: both halves of the group, block by block.
// Half `r` of every token's accumulators is indexed in the same loop.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass<const N: usize, const BITS: u32>(
    group: *const u8,
    blocks: usize,
    acts: &[*const Q8Block],
    corrections: &[*const i32],
    out: &mut [[f32; ROWS]],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for b in 0..blocks {
        // SAFETY: the caller checked that block `b` is inside the group and each
        // token's blocks and corrections.
        unsafe {
            let pair = group.add(b / 2 * pair_bytes(BITS));
            let h = b % 2;
            prefetch_ahead::<BITS>(pair, h, N == 1);
            let lines = pair.add(h * half_lines(BITS) * 64);
            for r in 0..2 {
                let (values, signed) = if BITS == 4 {
                    (nibbles(lines, r), [_mm256_setzero_si256(); 8])
                } else if BITS == 8 {
                    let signed =
                        bytes(lines, r).map(|v| _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                    (signed.map(|q| _mm256_abs_epi8(q)), signed)
                } else {
                    (five_bits(lines, r), [_mm256_setzero_si256(); 8])
                };
                let scales =
                    halves_to_floats(pair.add(2 * half_lines(BITS) * 64 + h * 32 + r * 16));
                for t in 0..N {
                    let a = &*acts[t].add(b);
                    let y = a.qs.as_ptr().cast::<i32>();
                    let sums = block_sums::<BITS>(&values, &signed, y, *corrections[t].add(b));
                    let scale = _mm256_mul_ps(scales, _mm256_set1_ps(a.d));
                    acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[t][r]);
                }
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        for (r, acc) in acc.into_iter().enumerate() {
            // SAFETY: each half of `out` is eight floats.
            unsafe { _mm256_storeu_ps(out[r * HALF..].as_mut_ptr(), acc) };
        }
    }
}

/// One token against two groups (`groups` holds both, one after the other).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn two_groups<const BITS: u32>(
    groups: &[u8],
    x: &[Q8Block],
    corrections: &[i32],
    out: &mut [f32],
) {
    let group_bytes = x.len() / 2 * pair_bytes(BITS);
    group_by_group(groups, group_bytes, out, |group, values| {
        tile::<1, BITS>(group, [x], [corrections], values);
    });
}

/// What every `two_groups*` does here: the two groups of `group_bytes` each in `groups`
/// one after the other, each by `tile` (one token's tile of the group it is given), into
/// `out`'s first `2 * ROWS` values.
#[inline(always)]
fn group_by_group(
    groups: &[u8],
    group_bytes: usize,
    out: &mut [f32],
    mut tile: impl FnMut(&[u8], &mut [[f32; ROWS]; 1]),
) {
    for (g, out) in out[..2 * ROWS].chunks_exact_mut(ROWS).enumerate() {
        let mut values = [[0.0; ROWS]; 1];
        tile(&groups[g * group_bytes..], &mut values);
        out.copy_from_slice(&values[0]);
    }
}

/// Rows `8r..8r + 8` of the scales at `at` (a byte a row: Q4_K's unsigned, Q6_K's
/// `SIGNED`), each twice, as sixteen-bit words: a row's lane holds its scale in both
/// halves, what `vpmaddwd` multiplies the row's two sixteen-bit sums by.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn doubled<const SIGNED: bool>(at: *const u8, r: usize) -> __m256i {
    // SAFETY: the caller's `at` holds sixteen bytes.
    let eight = unsafe { _mm_loadl_epi64(at.add(r * HALF).cast()) };
    let doubled = _mm_unpacklo_epi8(eight, eight);
    if SIGNED {
        _mm256_cvtepi8_epi16(doubled)
    } else {
        _mm256_cvtepu8_epi16(doubled)
    }
}

/// `Σ_p byte_p · sum_p` of rows `8r..8r + 8` for each of `N` tokens: `PAIRS` pairs of
/// byte rows (`ROWS` bytes each, from `at`; `SIGNED` or not) against each token's
/// sixteen-bit sums at `sums[t]`, two at a time: both bytes of a pair in each row's
/// lane, times both sums at once (`vpmaddwd`). Q4_K's minimums against its blocks'
/// sums, Q6_K's scales against its halves'.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn paired<const N: usize, const PAIRS: usize, const SIGNED: bool>(
    at: *const u8,
    r: usize,
    sums: [*const i16; N],
) -> [__m256i; N] {
    let mut total = [_mm256_setzero_si256(); N];
    for p in 0..PAIRS {
        // SAFETY: the caller's `at` holds the pairs' bytes, and each token `2 · PAIRS`
        // sums.
        unsafe {
            let at = at.add(2 * p * ROWS + r * HALF);
            let both = _mm_unpacklo_epi8(
                _mm_loadl_epi64(at.cast()),
                _mm_loadl_epi64(at.add(ROWS).cast()),
            );
            let bytes = if SIGNED {
                _mm256_cvtepi8_epi16(both)
            } else {
                _mm256_cvtepu8_epi16(both)
            };
            for (total, sums) in total.iter_mut().zip(sums) {
                let two = _mm256_set1_epi32(sums.add(2 * p).cast::<i32>().read_unaligned());
                *total = _mm256_add_epi32(*total, _mm256_madd_epi16(bytes, two));
            }
        }
    }
    total
}

/// `acc` plus a super-block of eight rows: `float(products) × (d · y_d)` less
/// `float(mins) × (dmin · y_d)`, as [`crate::cpu::interleaved::dot`] adds them.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q4k_scaled(
    acc: __m256,
    products: __m256i,
    mins: __m256i,
    (d, dmin): (__m256, __m256),
    y_d: f32,
) -> __m256 {
    let y_d = _mm256_set1_ps(y_d);
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), _mm256_mul_ps(d, y_d), acc);
    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(dmin, y_d), acc)
}

/// Rows `8r..8r + 8`'s `d` and `dmin` of the Q4_K super-block `block`, as floats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q4k_d(block: *const u8, r: usize) -> (__m256, __m256) {
    // SAFETY: the caller's block holds its `d` and `dmin`.
    unsafe {
        (
            halves_to_floats(block.add(Q4K_D + r * 16)),
            halves_to_floats(block.add(Q4K_DMIN + r * 16)),
        )
    }
}

/// [`tile`] for Q4_K: the `ROWS` rows of `group` times `T` tokens (under one scale a
/// super-block, with their blocks' sums) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let acts = acts.map(<[Q8Block]>::as_ptr);
    let sums = sums.map(<[i16]>::as_ptr);
    for t0 in (0..T).step_by(PASS) {
        let out = &mut out[t0..(t0 + PASS).min(T)];
        let (acts, sums) = (&acts[t0..], &sums[t0..]);
        // SAFETY: checked above, for every token of the pass.
        unsafe {
            match out.len() {
                4 => pass_q4k::<4>(group.as_ptr(), blocks, acts, sums, out),
                3 => pass_q4k::<3>(group.as_ptr(), blocks, acts, sums, out),
                2 => pass_q4k::<2>(group.as_ptr(), blocks, acts, sums, out),
                _ => pass_q4k_whole::<1>(group.as_ptr(), blocks, acts, sums, out),
            }
        }
    }
}

/// [`tile_q4k`] for `N` tokens, half of the rows at a time: four tokens' sums and four
/// registers of values (a group's low nibbles, then its high ones) then fit in AVX2's
/// sixteen registers, where all sixteen rows' and a group's eight registers of values
/// spilled.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass_q4k<const N: usize>(
    group: *const u8,
    blocks: usize,
    acts: &[*const Q8Block],
    sums: &[*const i16],
    out: &mut [[f32; ROWS]],
) {
    let low = _mm256_set1_epi8(0x0f);
    for r in 0..2 {
        let mut acc = [_mm256_setzero_ps(); N];
        for s in 0..blocks / 8 {
            // SAFETY: the caller checked that super-block `s` is inside the group and
            // each token's blocks and sums.
            unsafe {
                let block = group.add(s * Q4K_GROUP_BYTES);
                let mut products = [_mm256_setzero_si256(); N];
                for j in 0..8 {
                    prefetch_eighth::<Q4K_GROUP_BYTES>(block, j, false);
                    let lines = block.add(j * 256);
                    let ys: [*const i32; N] =
                        std::array::from_fn(|t| (*acts[t].add(8 * s + j)).qs.as_ptr().cast());
                    // Values 4k..4k + 4 (low nibbles of line k) against the token's
                    // bytes 4k..4k + 4, then values 16 + 4k.. (high nibbles) against
                    // bytes 16 + 4k..: the sums of [`pairs`] over 0..8, in sixteen bits.
                    let mut group_sums = [_mm256_setzero_si256(); N];
                    for high in 0..2 {
                        let values: [__m256i; 4] = std::array::from_fn(|k| {
                            let packed = half_line(lines.add(k * 64), r);
                            match high {
                                0 => _mm256_and_si256(packed, low),
                                _ => _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low),
                            }
                        });
                        for (sums, y) in group_sums.iter_mut().zip(ys) {
                            for (k, &values) in values.iter().enumerate() {
                                let y = broadcast(y, 4 * high + k);
                                *sums = _mm256_add_epi16(*sums, _mm256_maddubs_epi16(values, y));
                            }
                        }
                    }
                    let scale = doubled::<false>(block.add(Q4K_SCALES + j * ROWS), r);
                    for (products, sums) in products.iter_mut().zip(group_sums) {
                        *products = _mm256_add_epi32(*products, _mm256_madd_epi16(sums, scale));
                    }
                }
                let token_sums = std::array::from_fn(|t| sums[t].add(8 * s));
                let mins = paired::<N, 4, false>(block.add(Q4K_MINS), r, token_sums);
                let d = q4k_d(block, r);
                for t in 0..N {
                    let y_d = (*acts[t].add(8 * s)).d;
                    acc[t] = q4k_scaled(acc[t], products[t], mins[t], d, y_d);
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: each half of `out` is eight floats.
            unsafe { _mm256_storeu_ps(out[r * HALF..].as_mut_ptr(), acc) };
        }
    }
}

/// [`tile_q4k`] for `N` tokens, all sixteen rows at once: each super-block read once,
/// which one token (decode, bound by memory) needs more than the registers
/// [`pass_q4k`] saves (prompts, bound by the arithmetic).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass_q4k_whole<const N: usize>(
    group: *const u8,
    blocks: usize,
    acts: &[*const Q8Block],
    sums: &[*const i16],
    out: &mut [[f32; ROWS]],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for s in 0..blocks / 8 {
        // SAFETY: the caller checked that super-block `s` is inside the group and each
        // token's blocks and sums.
        unsafe {
            let block = group.add(s * Q4K_GROUP_BYTES);
            let mut products = [[_mm256_setzero_si256(); 2]; N];
            for j in 0..8 {
                prefetch_eighth::<Q4K_GROUP_BYTES>(block, j, N == 1);
                for r in 0..2 {
                    let values = nibbles(block.add(j * 256), r);
                    let scale = doubled::<false>(block.add(Q4K_SCALES + j * ROWS), r);
                    for (t, products) in products.iter_mut().enumerate() {
                        let y = (*acts[t].add(8 * s + j)).qs.as_ptr().cast::<i32>();
                        let scaled = _mm256_madd_epi16(pairs(&values, y, 0..8), scale);
                        products[r] = _mm256_add_epi32(products[r], scaled);
                    }
                }
            }
            for r in 0..2 {
                let token_sums = std::array::from_fn(|t| sums[t].add(8 * s));
                let mins = paired::<N, 4, false>(block.add(Q4K_MINS), r, token_sums);
                let d = q4k_d(block, r);
                for t in 0..N {
                    let y_d = (*acts[t].add(8 * s)).d;
                    acc[t][r] = q4k_scaled(acc[t][r], products[t][r], mins[t], d, y_d);
                }
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        for (r, acc) in acc.into_iter().enumerate() {
            // SAFETY: each half of `out` is eight floats.
            unsafe { _mm256_storeu_ps(out[r * HALF..].as_mut_ptr(), acc) };
        }
    }
}

/// [`two_groups`] for Q4_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn two_groups_q4k(groups: &[u8], x: &[Q8Block], sums: &[i16], out: &mut [f32]) {
    let group_bytes = x.len() / 8 * Q4K_GROUP_BYTES;
    group_by_group(groups, group_bytes, out, |group, values| {
        tile_q4k::<1>(group, [x], [sums], values);
    });
}

/// [`tile`] for Q6_K: the `ROWS` rows of `group` times `T` tokens (under one scale a
/// super-block, with their halves' sums) into `out[t]`.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let acts = acts.map(<[Q8Block]>::as_ptr);
    let halves = halves.map(<[[i16; 2]]>::as_ptr);
    for t0 in (0..T).step_by(PASS) {
        let n = (T - t0).min(PASS);
        let out = &mut out[t0..t0 + n];
        let (acts, halves) = (&acts[t0..], &halves[t0..]);
        // SAFETY: checked above, for every token of the pass.
        unsafe {
            match n {
                4 => pass_q6k::<4>(group.as_ptr(), blocks, acts, halves, out),
                3 => pass_q6k::<3>(group.as_ptr(), blocks, acts, halves, out),
                2 => pass_q6k::<2>(group.as_ptr(), blocks, acts, halves, out),
                _ => pass_q6k::<1>(group.as_ptr(), blocks, acts, halves, out),
            }
        }
    }
}

/// [`tile_q6k`] for `N` tokens. Each quarter block's sixteen-bit sums (a quarter is as
/// many of Q6_K's values as sixteen bits hold) are multiplied by their half's scale as
/// they widen (`vpmaddwd`) and add up in integers for the whole super-block; the halves'
/// `32 · Σ y` are taken away once, scaled the same way ([`paired`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass_q6k<const N: usize>(
    group: *const u8,
    blocks: usize,
    acts: &[*const Q8Block],
    halves: &[*const [i16; 2]],
    out: &mut [[f32; ROWS]],
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for s in 0..blocks / 8 {
        // SAFETY: the caller checked that super-block `s` is inside the group and each
        // token's blocks and halves' sums.
        unsafe {
            let block = group.add(s * Q6K_GROUP_BYTES);
            let mut products = [[_mm256_setzero_si256(); 2]; N];
            for j in 0..8 {
                prefetch_eighth::<Q6K_GROUP_BYTES>(block, j, N == 1);
                for r in 0..2 {
                    let values = q6k_group(block.add(j * Q6K_GROUP), r);
                    let scales: [__m256i; 2] = std::array::from_fn(|h| {
                        doubled::<true>(block.add(Q6K_SCALES + (2 * j + h) * ROWS), r)
                    });
                    for (t, products) in products.iter_mut().enumerate() {
                        let y = (*acts[t].add(8 * s + j)).qs.as_ptr().cast::<i32>();
                        for (h, &scale) in scales.iter().enumerate() {
                            let first = pairs(&values, y, 4 * h..4 * h + 2);
                            let second = pairs(&values, y, 4 * h + 2..4 * h + 4);
                            let scaled = _mm256_add_epi32(
                                _mm256_madd_epi16(first, scale),
                                _mm256_madd_epi16(second, scale),
                            );
                            products[r] = _mm256_add_epi32(products[r], scaled);
                        }
                    }
                }
            }
            for r in 0..2 {
                let half_sums = std::array::from_fn(|t| halves[t].add(8 * s).cast::<i16>());
                let sums = paired::<N, 8, true>(block.add(Q6K_SCALES), r, half_sums);
                let d = halves_to_floats(block.add(Q6K_D + r * 16));
                for t in 0..N {
                    let total = _mm256_sub_epi32(products[t][r], _mm256_slli_epi32::<5>(sums[t]));
                    let y_d = _mm256_set1_ps((*acts[t].add(8 * s)).d);
                    acc[t][r] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(total),
                        _mm256_mul_ps(d, y_d),
                        acc[t][r],
                    );
                }
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        for (r, acc) in acc.into_iter().enumerate() {
            // SAFETY: each half of `out` is eight floats.
            unsafe { _mm256_storeu_ps(out[r * HALF..].as_mut_ptr(), acc) };
        }
    }
}

/// [`two_groups`] for Q6_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn two_groups_q6k(groups: &[u8], x: &[Q8Block], halves: &[[i16; 2]], out: &mut [f32]) {
    let group_bytes = x.len() / 8 * Q6K_GROUP_BYTES;
    group_by_group(groups, group_bytes, out, |group, values| {
        tile_q6k::<1>(group, [x], [halves], values);
    });
}
