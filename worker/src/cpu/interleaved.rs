//! Q8_0 rows interleaved sixteen at a time, the layout AVX-512's Q8_0 products read.
//!
//! In GGML's layout a row's blocks follow one another, so a 512-bit register holds one
//! block of one row against one token, and every block's 32 products end in a sum
//! across lanes. Interleaved, each 32-bit lane belongs to one row: a register holds
//! four values of each of sixteen rows, one `vpdpbusd` against four of a token's
//! values (broadcast) adds four products to each row's lane, and eight of them sum a
//! whole block for sixteen rows with no shuffle. Each block's sums are scaled once per
//! row and token, so the floating-point work per product is a sixteenth of the
//! row-major tiles'.
//!
//! A group of sixteen rows is stored block pair by block pair, each pair
//! 1,088 bytes (sixteen rows' 34-byte blocks, twice):
//!
//! - `values[h][k][r][j]` (1,024 bytes): block `2p + h`'s values `4k + j` of row `r`,
//!   plus 128, so that they are the unsigned operand `vpdpbusd` takes;
//! - `scales[h][r]` (64 bytes): the blocks' half-precision scales, by row.
//!
//! A pair is 17 cache lines, so every 512-bit load of values is aligned when the group
//! is. A group takes the bytes its sixteen rows took, and row ranges that start and end
//! on group boundaries keep their byte offsets.
//!
//! The sum of `(q + 128) · y` less `128 · Σ y` is `q · y` exactly; the second term is
//! the activations' ([`correction`]), computed once per product. Each row's result is
//! `Σ_b float(q_b · y_b) × (d_b · y.d_b)`, the product of scales rounded once and each
//! block added with one fused multiply-add, in block order; [`dot`] computes exactly
//! that, so every kernel over this layout gives the same bits.

use super::quant::{self, Q8Block, QK, QuantType};

/// Rows of a group.
pub const ROWS: usize = 16;
/// Bytes of one block of sixteen rows: their values, then their scales.
const VALUES: usize = ROWS * QK;
const SCALES: usize = ROWS * 2;
/// Bytes of a pair of blocks of a group.
pub const PAIR_BYTES: usize = 2 * (VALUES + SCALES);
/// Bytes of a Q8_0 block in GGML's layout.
const BLOCK_BYTES: usize = 2 + QK;

/// Whether `rows` rows of `blocks` Q8_0 blocks can be interleaved: whole groups and
/// whole pairs of blocks.
pub fn fits(ty: QuantType, rows: usize, blocks: usize) -> bool {
    ty == QuantType::Q8_0 && rows.is_multiple_of(ROWS) && blocks.is_multiple_of(2) && rows > 0
}

/// `rows` Q8_0 rows of `blocks` blocks each (GGML's layout, `data`) interleaved, into
/// `out` (the same length).
pub fn interleave(data: &[u8], blocks: usize, out: &mut [u8]) {
    let row_bytes = blocks * BLOCK_BYTES;
    assert_eq!(data.len(), out.len());
    assert!(data.len().is_multiple_of(ROWS * row_bytes) && blocks.is_multiple_of(2));
    for (rows, group) in data
        .chunks_exact(ROWS * row_bytes)
        .zip(out.chunks_exact_mut(ROWS * row_bytes))
    {
        for (p, pair) in group.chunks_exact_mut(PAIR_BYTES).enumerate() {
            for h in 0..2 {
                let b = 2 * p + h;
                for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
                    let block = &row[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
                    let scale = 2 * VALUES + h * SCALES + 2 * r;
                    pair[scale..scale + 2].copy_from_slice(&block[..2]);
                    for k in 0..QK / 4 {
                        for j in 0..4 {
                            let at = h * VALUES + k * 4 * ROWS + 4 * r + j;
                            pair[at] = block[2 + 4 * k + j] ^ 0x80;
                        }
                    }
                }
            }
        }
    }
}

/// Row `r` of an interleaved group (`group`, `blocks` blocks) back in GGML's layout.
pub fn row(group: &[u8], r: usize, blocks: usize) -> Vec<u8> {
    let mut out = vec![0; blocks * BLOCK_BYTES];
    for (b, block) in out.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        let (pair, h) = (&group[b / 2 * PAIR_BYTES..][..PAIR_BYTES], b % 2);
        let scale = 2 * VALUES + h * SCALES + 2 * r;
        block[..2].copy_from_slice(&pair[scale..scale + 2]);
        for k in 0..QK / 4 {
            for j in 0..4 {
                block[2 + 4 * k + j] = pair[h * VALUES + k * 4 * ROWS + 4 * r + j] ^ 0x80;
            }
        }
    }
    out
}

/// `-128 · Σ y` of each activation block: what turns the sums of `(q + 128) · y` into
/// `q · y`.
pub fn correction(x: &[Q8Block], into: &mut Vec<i32>) {
    into.clear();
    into.extend(
        x.iter()
            .map(|a| -128 * a.qs.iter().map(|&q| i32::from(q)).sum::<i32>()),
    );
}

/// The sixteen rows of `group` times one token's activations `x` (with its
/// [`correction`]s), in the order every kernel over this layout adds.
pub fn dot(group: &[u8], x: &[Q8Block], correction: &[i32], out: &mut [f32; ROWS]) {
    *out = [0.0; ROWS];
    for (b, (a, c)) in x.iter().zip(correction).enumerate() {
        let (pair, h) = (&group[b / 2 * PAIR_BYTES..][..PAIR_BYTES], b % 2);
        for (r, value) in out.iter_mut().enumerate() {
            let mut sum = *c;
            for k in 0..QK / 4 {
                for j in 0..4 {
                    let q = pair[h * VALUES + k * 4 * ROWS + 4 * r + j];
                    sum += i32::from(q) * i32::from(a.qs[4 * k + j]);
                }
            }
            let at = 2 * VALUES + h * SCALES + 2 * r;
            let d = quant::f16_to_f32(u16::from_le_bytes([pair[at], pair[at + 1]]));
            *value = (sum as f32).mul_add(d * a.d, *value);
        }
    }
}
