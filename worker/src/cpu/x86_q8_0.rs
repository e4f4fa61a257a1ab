//! AVX-512's Q8_0 tiles for several tokens at once (a batched decode step, a prompt):
//! four rows by up to eight tokens, two tokens to a 512-bit register.
//!
//! Each register holds one weight block (the same 32 values in both halves) against one
//! activation block of each of two tokens, so that one `vpdpbusd`, one conversion, one
//! multiply and one fused add cover 64 products. A half's lanes add exactly as
//! `dot_q8_0` adds one token's: the block's eight lane sums times `d · a.d` (rounded
//! once), block after block, then [`hsum`]; so tiles equal single rows bit for bit.
//!
//! What a token pair's block needs is prepared once per product ([`prepare`], shared by
//! the product's tasks): both tokens' values side by side, the bias that turns sums of
//! `(q + 128) · y` into `q · y`, and the two scales; the inner loop then reads them
//! straight from memory.

use super::*;

/// Bytes of a Q8_0 block: a half-precision scale, then 32 signed values.
const BLOCK: usize = 34;

/// Rows of a tile.
pub(super) const ROWS: usize = 4;

/// One block of two tokens as the tiles read it: both tokens' 32 values, -128 times the
/// sum of each lane's four (the lane sums of `(q + 128) · y` start there), and each
/// token's scale in its eight lanes.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct PairBlock {
    values: [i8; 64],
    bias: [i32; 16],
    scales: [f32; 16],
}

/// Prepares the first `tokens` (even) of the tokens in `x` (`blocks` blocks each) into
/// `pairs`: pair `p`'s block `b` at `p * blocks + b`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn prepare(x: &[Q8Block], blocks: usize, tokens: usize, pairs: &mut Vec<PairBlock>) {
    let flip = _mm512_set1_epi8(i8::MIN);
    pairs.clear();
    pairs.reserve(tokens / 2 * blocks);
    for two in x[..tokens * blocks].chunks_exact(2 * blocks) {
        let (first, second) = two.split_at(blocks);
        for (a0, a1) in first.iter().zip(second) {
            let mut pair = PairBlock {
                values: [0; 64],
                bias: [0; 16],
                scales: [0.0; 16],
            };
            // SAFETY: each `qs` is 32 bytes and each of `pair`'s fields 64; this
            // function has the features.
            unsafe {
                let y = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load_act(a0)), load_act(a1));
                let bias = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, y),
                );
                let scales = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castps_pd(_mm512_set1_ps(a0.d)),
                    _mm256_castps_pd(_mm256_set1_ps(a1.d)),
                ));
                _mm512_store_si512(pair.values.as_mut_ptr().cast(), y);
                _mm512_store_si512(pair.bias.as_mut_ptr().cast(), bias);
                _mm512_store_ps(pair.scales.as_mut_ptr(), scales);
            }
            pairs.push(pair);
        }
    }
}

/// A tile of `ROWS` rows by `2 · P` tokens: `acts[p]` is token pair `p`'s prepared
/// blocks, and `out[r][2p + i]` gets row `r` times the pair's token `i`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn tile<const P: usize>(
    rows: [&[u8]; ROWS],
    acts: [&[PairBlock]; P],
    out: &mut [[f32; 8]; ROWS],
) {
    let blocks = acts[0].len();
    assert!(rows.iter().all(|row| row.len() >= blocks * BLOCK));
    assert!(acts.iter().all(|a| a.len() >= blocks));
    // Raw pointers from here, checked above: bounds checks would take the inner loop's
    // registers. (`map` holds no intrinsics: a closure does not inherit this function's
    // target features.)
    let weights = rows.map(<[u8]>::as_ptr);
    let acts = acts.map(<[PairBlock]>::as_ptr);
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = [[_mm512_setzero_ps(); P]; ROWS];
    for b in 0..blocks {
        let mut q = [_mm512_setzero_si512(); ROWS];
        let mut d = [_mm512_setzero_ps(); ROWS];
        for r in 0..ROWS {
            // SAFETY: block `b` is inside the row; this function has the features.
            unsafe {
                let w = weights[r].add(b * BLOCK);
                // The block's values in both halves, made unsigned (q + 128).
                let values = _mm256_loadu_si256(w.add(2).cast());
                q[r] = _mm512_xor_si512(_mm512_broadcast_i64x4(values), flip);
                let scale = w.cast::<i16>().read_unaligned();
                d[r] = _mm512_cvtph_ps(_mm256_set1_epi16(scale));
            }
        }
        for p in 0..P {
            // SAFETY: block `b` is inside each pair's blocks, 64-byte aligned.
            let (y, bias, ad) = unsafe {
                let a = &*acts[p].add(b);
                (
                    _mm512_load_si512(a.values.as_ptr().cast()),
                    _mm512_load_si512(a.bias.as_ptr().cast()),
                    _mm512_load_ps(a.scales.as_ptr()),
                )
            };
            for r in 0..ROWS {
                let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(bias, q[r], y));
                // `d · a.d` rounded once, as `dot_q8_0` computes it.
                acc[r][p] = _mm512_fmadd_ps(sums, _mm512_mul_ps(d[r], ad), acc[r][p]);
            }
        }
    }
    for r in 0..ROWS {
        for p in 0..P {
            let low = _mm512_castps512_ps256(acc[r][p]);
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r][p])));
            out[r][2 * p] = hsum(low);
            out[r][2 * p + 1] = hsum(high);
        }
    }
}
