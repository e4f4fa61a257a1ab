//! Q8_0 and Q4_0 rows interleaved sixteen at a time, the layout AVX-512's products of
//! those types read.
//!
//! In GGML's layout a row's blocks follow one another, so a 512-bit register holds one
//! block of one row against one token, and every block's 32 products end in a sum
//! across lanes. Interleaved, each 32-bit lane belongs to one row: a register holds
//! four values of each of sixteen rows (eight of Q4_0's, two to a byte), one
//! `vpdpbusd` against four of a token's values (broadcast) adds four products to each
//! row's lane, and eight of them sum a whole block for sixteen rows with no shuffle.
//! Each block's sums are scaled once per row and token, so the floating-point work per
//! product is a sixteenth of the row-major tiles'.
//!
//! A group of sixteen rows is stored block pair by block pair, each pair sixteen rows'
//! blocks, twice ([`pair_bytes`]: 1,088 bytes for Q8_0, 576 for Q4_0, whole cache
//! lines either way):
//!
//! - `values[h][k][r][j]` (512 or 256 bytes a block): byte `4k + j` of the values of
//!   row `r`'s block `2p + h`. Q8_0's bytes get 128 added, so that they are the
//!   unsigned operand `vpdpbusd` takes; Q4_0's are GGML's, value `4k + j` in the low
//!   nibble and value `16 + 4k + j` in the high one (each value plus 8);
//! - `scales[h][r]` (32 bytes a block): the blocks' half-precision scales, by row.
//!
//! Every 512-bit load of values is aligned when the group is. A group takes the bytes
//! its sixteen rows took, and row ranges that start and end on group boundaries keep
//! their byte offsets.
//!
//! The sum of `(q + 128) · y` less `128 · Σ y` is `q · y` exactly (`(q + 8) · y` less
//! `8 · Σ y` for Q4_0); `128 · Σ y` is the activations' ([`correction`]), computed once
//! per product, and Q4_0's is a sixteenth of it. Each row's result is
//! `Σ_b float(q_b · y_b) × (d_b · y.d_b)`, the product of scales rounded once and each
//! block added with one fused multiply-add, in block order; [`dot`] computes exactly
//! that, so every kernel over this layout gives the same bits.

use super::quant::{self, Q8Block, QK, QuantType};

/// Rows of a group.
pub const ROWS: usize = 16;
/// Bytes of the scales of one block of sixteen rows.
const SCALES: usize = ROWS * 2;

/// Bytes of one row's values in one block: Q8_0's 32, Q4_0's 16.
fn value_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_0 => QK / 2,
        _ => QK,
    }
}

/// Bytes of a pair of blocks of a group of `ty` rows.
pub fn pair_bytes(ty: QuantType) -> usize {
    2 * ROWS * (value_bytes(ty) + 2)
}

/// Where the values of half `h` of a pair start, and where its scales start.
pub fn offsets(ty: QuantType, h: usize) -> (usize, usize) {
    let values = ROWS * value_bytes(ty);
    (h * values, 2 * values + h * SCALES)
}

/// What interleaving adds to each byte of values: 128 to Q8_0's, nothing to Q4_0's.
fn flip(ty: QuantType) -> u8 {
    if ty == QuantType::Q8_0 { 0x80 } else { 0 }
}

/// Whether `rows` rows of `blocks` blocks of `ty` can be interleaved: Q8_0 or Q4_0,
/// whole groups and whole pairs of blocks.
pub fn fits(ty: QuantType, rows: usize, blocks: usize) -> bool {
    matches!(ty, QuantType::Q8_0 | QuantType::Q4_0)
        && rows.is_multiple_of(ROWS)
        && blocks.is_multiple_of(2)
        && rows > 0
}

/// `rows` rows of `ty` (one [`fits`] takes) of `blocks` blocks each (GGML's layout,
/// `data`) interleaved, into `out` (the same length).
pub fn interleave(ty: QuantType, data: &[u8], blocks: usize, out: &mut [u8]) {
    let block_bytes = ty.block_bytes();
    let row_bytes = blocks * block_bytes;
    assert_eq!(data.len(), out.len());
    assert!(data.len().is_multiple_of(ROWS * row_bytes) && blocks.is_multiple_of(2));
    for (rows, group) in data
        .chunks_exact(ROWS * row_bytes)
        .zip(out.chunks_exact_mut(ROWS * row_bytes))
    {
        for (p, pair) in group.chunks_exact_mut(pair_bytes(ty)).enumerate() {
            for h in 0..2 {
                let b = 2 * p + h;
                let (values, scales) = offsets(ty, h);
                for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
                    let block = &row[b * block_bytes..(b + 1) * block_bytes];
                    pair[scales + 2 * r..][..2].copy_from_slice(&block[..2]);
                    for (i, &q) in block[2..].iter().enumerate() {
                        pair[values + i / 4 * 4 * ROWS + 4 * r + i % 4] = q ^ flip(ty);
                    }
                }
            }
        }
    }
}

/// Row `r` of an interleaved group of `ty` rows (`group`, `blocks` blocks) back in
/// GGML's layout.
pub fn row(ty: QuantType, group: &[u8], r: usize, blocks: usize) -> Vec<u8> {
    let block_bytes = ty.block_bytes();
    let mut out = vec![0; blocks * block_bytes];
    for (b, block) in out.chunks_exact_mut(block_bytes).enumerate() {
        let pair = &group[b / 2 * pair_bytes(ty)..][..pair_bytes(ty)];
        let (values, scales) = offsets(ty, b % 2);
        block[..2].copy_from_slice(&pair[scales + 2 * r..][..2]);
        for (i, q) in block[2..].iter_mut().enumerate() {
            *q = pair[values + i / 4 * 4 * ROWS + 4 * r + i % 4] ^ flip(ty);
        }
    }
    out
}

/// `-128 · Σ y` of each activation block: what turns the sums of `(q + 128) · y` into
/// `q · y` (a sixteenth of it, for Q4_0's `(q + 8) · y`).
pub fn correction(x: &[Q8Block], into: &mut Vec<i32>) {
    into.clear();
    into.extend(
        x.iter()
            .map(|a| -128 * a.qs.iter().map(|&q| i32::from(q)).sum::<i32>()),
    );
}

/// The correction of a block of `ty` rows from the block's [`correction`] (a multiple
/// of 128, so the shift is exact).
pub fn correction_for(ty: QuantType, correction: i32) -> i32 {
    if ty == QuantType::Q4_0 {
        correction >> 4
    } else {
        correction
    }
}

/// The sixteen rows of `group` (of `ty`) times one token's activations `x` (with its
/// [`correction`]s), in the order every kernel over this layout adds.
pub fn dot(ty: QuantType, group: &[u8], x: &[Q8Block], correction: &[i32], out: &mut [f32; ROWS]) {
    *out = [0.0; ROWS];
    for (b, (a, &c)) in x.iter().zip(correction).enumerate() {
        let pair = &group[b / 2 * pair_bytes(ty)..][..pair_bytes(ty)];
        let (values, scales) = offsets(ty, b % 2);
        for (r, value) in out.iter_mut().enumerate() {
            let mut sum = correction_for(ty, c);
            for i in 0..value_bytes(ty) {
                let q = i32::from(pair[values + i / 4 * 4 * ROWS + 4 * r + i % 4]);
                let y = |at: usize| i32::from(a.qs[at]);
                sum += match ty {
                    QuantType::Q4_0 => (q & 15) * y(i) + (q >> 4) * y(i + QK / 2),
                    _ => q * y(i),
                };
            }
            let at = scales + 2 * r;
            let d = quant::f16_to_f32(u16::from_le_bytes([pair[at], pair[at + 1]]));
            *value = (sum as f32).mul_add(d * a.d, *value);
        }
    }
}
