//! Q8_0, Q4_0, Q5_0, Q4_K and Q6_K rows interleaved sixteen at a time, the layout
//! AVX-512's and AVX2's products of those types read (AVX2 as two halves of eight rows,
//! `vpmaddubsw` and `vpmaddwd` in place of `vpdpbusd`: `x86_groups_avx2.rs`).
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
//! blocks, twice ([`pair_bytes`]: 1,088 bytes for Q8_0, 704 for Q5_0, 576 for Q4_0,
//! whole cache lines either way):
//!
//! - `values[h][k][r][j]` (512, 320 or 256 bytes a block): byte `4k + j` of the values
//!   of row `r`'s block `2p + h`. Q8_0's bytes get 128 added, so that they are the
//!   unsigned operand `vpdpbusd` takes; Q4_0's are GGML's, value `4k + j` in the low
//!   nibble and value `16 + 4k + j` in the high one (each value plus 8); Q5_0's (each
//!   value plus 16) are its low four bits packed as Q4_0's (`k` < 4), then a line of
//!   its fifth bits (`k` = 4): byte `j` holds in bit `k` the fifth bit of value
//!   `4k + j` and in bit `4 + k` that of value `16 + 4k + j`, so that one shift and a
//!   mask put each register's fifth bits at bit 4 of its bytes;
//! - `scales[h][r]` (32 bytes a block): the blocks' half-precision scales, by row.
//!
//! Every 512-bit load of values is aligned when the group is. A group of Q8_0, Q5_0 or
//! Q4_0 rows takes the bytes its sixteen rows took, and row ranges that start and end
//! on group boundaries keep their byte offsets ([`row_bytes`] a row for every type).
//!
//! The sum of `(q + 128) · y` less `128 · Σ y` is `q · y` exactly (`(q + 8) · y` less
//! `8 · Σ y` for Q4_0, `(q + 16) · y` less `16 · Σ y` for Q5_0); `128 · Σ y` is the
//! activations' ([`correction`]), computed once per product, and the others a
//! sixteenth and an eighth of it. Each row's result is
//! `Σ_b float(q_b · y_b) × (d_b · y.d_b)`, the product of scales rounded once and each
//! block added with one fused multiply-add, in block order; [`dot`] computes exactly
//! that, so every kernel over this layout gives the same bits.
//!
//! Q4_K's 256-weight blocks interleave as eight Q4_0-like blocks of 32 with their
//! scales beside them, one super-block of sixteen rows at a time ([`Q4K_GROUP_BYTES`],
//! 2,368 bytes, 37 cache lines: four bytes a row more than GGML's 2,304):
//!
//! - `values[j][k][r][i]` (2,048 bytes): group `j`'s values of row `r` packed as Q4_0
//!   packs a block, value `4k + i` in the low nibble and `16 + 4k + i` in the high one;
//! - `scales[j][r]`, then `mins[j][r]` (128 bytes each): the groups' six-bit scales and
//!   minimums, a byte each;
//! - `d[r]`, then `dmin[r]` (32 bytes each): the super-block's half-precision scales.
//!
//! A Q4_K product reads activations quantized with one scale a super-block
//! ([`quant::Scales::PerSuperBlock`], GGML's Q8_K), so that its groups add in integers:
//! row `r`'s super-block is `float(Σ_j scale_j · (q_j · y_j)) × (d · y.d)` less
//! `float(Σ_j min_j · Σ y_j) × (dmin · y.d)`, each with one fused multiply-add, super-
//! block by super-block in one accumulator. The integer sums are exact (at most
//! 8 · 63 · 32 · 15 · 127 in magnitude), so the kernels may add them in any order;
//! the portable [`dot`] defines the rest here too.
//!
//! Q6_K's super-blocks interleave as Q4_K's do, each six-bit value (0..64, 32 more
//! than the weight) split into its low four bits, packed as Q4_K's nibbles, and its
//! high two, four values to a byte beside them; the kernels put each value back
//! together in a byte of its own ([`Q6K_GROUP_BYTES`], 3,392 bytes, 53 cache lines:
//! 212 bytes a row, against GGML's 210; a byte a value took 276, and decode reads every
//! weight once a token):
//!
//! - per group `j` of 32 values, 384 bytes: `low[k][r][i]` (256 bytes), value `32j +
//!   4k + i`'s low four bits in the low nibble and value `32j + 16 + 4k + i`'s in the
//!   high one; then `high[h][r][i]` (128 bytes), bits `2k..2k + 2` holding the top two
//!   bits of value `32j + 16h + 4k + i`;
//! - `scales[m][r]` (256 bytes): the signed scale of values `16m..16m + 16`;
//! - `d[r]` (32 bytes), then 32 bytes of padding.
//!
//! Q6_K's products read activations under one scale a super-block too: row `r`'s
//! super-block is `float(Σ_m scale_m · ((q + 32) · y_m) - 32 · Σ_m scale_m · Σ y_m) ×
//! (d · y.d)`, `m` the sixteen halves of its groups (their sums [`half_sums`]), one
//! fused multiply-add a super-block; the integers are exact (at most 2^29 in magnitude),
//! so the kernels may add them in any order.

use super::quant::{self, Q8Block, QK, QuantType};

/// Rows of a group.
pub const ROWS: usize = 16;
/// Bytes of the scales of one block of sixteen rows.
const SCALES: usize = ROWS * 2;

/// Bytes of a super-block of sixteen Q4_K rows, interleaved.
pub const Q4K_GROUP_BYTES: usize = 2368;
/// Where a Q4_K super-block's scales, minimums, `d` and `dmin` start.
pub const Q4K_SCALES: usize = 2048;
pub const Q4K_MINS: usize = Q4K_SCALES + 8 * ROWS;
pub const Q4K_D: usize = Q4K_MINS + 8 * ROWS;
pub const Q4K_DMIN: usize = Q4K_D + 2 * ROWS;

/// Bytes of a super-block of sixteen Q6_K rows, interleaved.
pub const Q6K_GROUP_BYTES: usize = 3392;
/// Bytes of one group of 32 values of a Q6_K super-block of sixteen rows, and where
/// its high bits start.
pub const Q6K_GROUP: usize = 384;
pub const Q6K_HIGH: usize = 256;
/// Where a Q6_K super-block's scales and `d` start.
pub const Q6K_SCALES: usize = 8 * Q6K_GROUP;
pub const Q6K_D: usize = Q6K_SCALES + 16 * ROWS;

/// Bytes one row of `blocks` 32-weight blocks of `ty` takes interleaved: GGML's, but
/// Q4_K's 148 a super-block and Q6_K's 212.
pub fn row_bytes(ty: QuantType, blocks: usize) -> usize {
    match ty {
        QuantType::Q4K => blocks / 8 * Q4K_GROUP_BYTES / ROWS,
        QuantType::Q6K => blocks / 8 * Q6K_GROUP_BYTES / ROWS,
        _ => blocks * ty.block_bytes(),
    }
}

/// Bytes of one row's values in one block: Q8_0's 32, Q5_0's 20, Q4_0's 16.
fn value_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_0 => QK / 2,
        QuantType::Q5_0 => QK / 2 + QK / 8,
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

/// The bytes of values interleaving stores for a GGML block of `ty`: Q8_0's values
/// plus 128, Q4_0's bytes as they are, Q5_0's four low bits as they are and then its
/// fifth bits, four bytes ([`fifth_bits`]).
fn stored(ty: QuantType, block: &[u8]) -> [u8; QK] {
    let mut out = [0; QK];
    match ty {
        QuantType::Q5_0 => {
            out[..QK / 2].copy_from_slice(&block[6..6 + QK / 2]);
            let qh = u32::from_le_bytes(*block[2..].first_chunk().expect("four bytes"));
            for j in 0..4 {
                out[QK / 2 + j] = fifth_bits(qh, j);
            }
        }
        QuantType::Q4_0 => out[..QK / 2].copy_from_slice(&block[2..2 + QK / 2]),
        _ => {
            for (value, &q) in out.iter_mut().zip(&block[2..]) {
                *value = q ^ 0x80;
            }
        }
    }
    out
}

/// Bytes `at..at + 8` of `bytes` (which holds them), as a little-endian word.
fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(*bytes[at..].first_chunk().expect("eight bytes"))
}

/// Byte `j` of a Q5_0 block's fifth bits as the layout stores them, from GGML's `qh`
/// (bit `i` the fifth bit of value `i`): bits `j`, `j + 4`, `j + 8`, `j + 12` of `qh` in
/// bits 0 to 3, and bits `16 + j`, … `28 + j` in bits 4 to 7.
fn fifth_bits(qh: u32, j: usize) -> u8 {
    let spread = (qh >> j) & 0x1111_1111;
    let pairs = (spread | spread >> 3) & 0x0303_0303;
    let nibbles = (pairs | pairs >> 6) & 0x000f_000f;
    (nibbles | nibbles >> 12) as u8
}

/// [`stored`] undone: the values of a GGML block of `ty` (after its scale) from what
/// interleaving stored.
fn restore(ty: QuantType, stored: &[u8; QK], block: &mut [u8]) {
    match ty {
        QuantType::Q5_0 => {
            block[6..6 + QK / 2].copy_from_slice(&stored[..QK / 2]);
            let mut qh = 0u32;
            for (j, &bits) in stored[QK / 2..][..4].iter().enumerate() {
                for k in 0..4 {
                    qh |= u32::from(bits >> k & 1) << (4 * k + j);
                    qh |= u32::from(bits >> (4 + k) & 1) << (16 + 4 * k + j);
                }
            }
            block[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        QuantType::Q4_0 => block[2..2 + QK / 2].copy_from_slice(&stored[..QK / 2]),
        _ => {
            for (q, &value) in block[2..].iter_mut().zip(stored) {
                *q = value ^ 0x80;
            }
        }
    }
}

/// Whether `rows` rows of `blocks` 32-weight blocks of `ty` can be interleaved: Q8_0,
/// Q4_0, Q5_0, Q4_K or Q6_K, whole groups and whole pairs of blocks.
pub fn fits(ty: QuantType, rows: usize, blocks: usize) -> bool {
    matches!(
        ty,
        QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q4K | QuantType::Q6K
    ) && rows.is_multiple_of(ROWS)
        && blocks.is_multiple_of(2)
        && rows > 0
}

/// `rows` rows of `ty` (one [`fits`] takes) of `blocks` 32-weight blocks each (GGML's
/// layout, `data`) interleaved, into `out` (`rows` × [`row_bytes`]).
pub fn interleave(ty: QuantType, data: &[u8], blocks: usize, out: &mut [u8]) {
    match ty {
        QuantType::Q4K => return interleave_q4k(data, blocks, out),
        QuantType::Q6K => return interleave_q6k(data, blocks, out),
        _ => {}
    }
    let block_bytes = ty.block_bytes();
    let ggml_row = blocks * block_bytes;
    assert!(data.len().is_multiple_of(ROWS * ggml_row) && blocks.is_multiple_of(2));
    assert_eq!(out.len(), data.len() / ggml_row * row_bytes(ty, blocks));
    for (rows, group) in data
        .chunks_exact(ROWS * ggml_row)
        .zip(out.chunks_exact_mut(ROWS * row_bytes(ty, blocks)))
    {
        // Pair by pair, each written front to back a cache line at a time: sixteen
        // rows' four bytes (one line) from the sixteen rows' stored values. Written row
        // by row, each row's four bytes went to another line and the stores waited on
        // them (Q8_0 files' loading was half this loop).
        for (p, pair) in group.chunks_exact_mut(pair_bytes(ty)).enumerate() {
            for h in 0..2 {
                let (values, scales) = offsets(ty, h);
                let mut by_row = [[0; QK]; ROWS];
                for (r, stored_values) in by_row.iter_mut().enumerate() {
                    let block = &rows[r * ggml_row + (2 * p + h) * block_bytes..][..block_bytes];
                    pair[scales + 2 * r..][..2].copy_from_slice(&block[..2]);
                    *stored_values = stored(ty, block);
                }
                write_lines(&by_row, &mut pair[values..][..ROWS * value_bytes(ty)]);
            }
        }
    }
}

/// Sixteen rows' values (`by_row`, each row's in order) into `lines` front to back, a
/// cache line at a time: line `k` holds bytes `4k..4k + 4` of each row in turn, the
/// layout every type's values take here. Written row by row instead, each row's four
/// bytes went to another line and the stores waited on them.
fn write_lines<const N: usize>(by_row: &[[u8; N]; ROWS], lines: &mut [u8]) {
    for (k, line) in lines.chunks_exact_mut(4 * ROWS).enumerate() {
        for (four, row) in line.chunks_exact_mut(4).zip(by_row) {
            four.copy_from_slice(&row[4 * k..][..4]);
        }
    }
}

/// [`interleave`] for Q4_K.
fn interleave_q4k(data: &[u8], blocks: usize, out: &mut [u8]) {
    let supers = blocks / 8;
    let ggml_row = supers * 144;
    assert!(data.len().is_multiple_of(ROWS * ggml_row));
    assert_eq!(
        out.len(),
        data.len() / ggml_row * row_bytes(QuantType::Q4K, blocks)
    );
    for (rows, group) in data
        .chunks_exact(ROWS * ggml_row)
        .zip(out.chunks_exact_mut(supers * Q4K_GROUP_BYTES))
    {
        // Super-block by super-block: each row's values packed a word at a time, then
        // written front to back a cache line at a time, as for the other types (a byte
        // at a time, row by row, was most of a Q4_K_M file's loading).
        for (s, into) in group.chunks_exact_mut(Q4K_GROUP_BYTES).enumerate() {
            let mut packed = [[0; 8 * QK / 2]; ROWS];
            for (r, packed) in packed.iter_mut().enumerate() {
                let block = &rows[r * ggml_row + s * 144..][..144];
                into[Q4K_D + 2 * r..][..2].copy_from_slice(&block[..2]);
                into[Q4K_DMIN + 2 * r..][..2].copy_from_slice(&block[2..4]);
                for j in 0..8 {
                    let (scale, min) = quant::q4k_scale_min(&block[4..16], j);
                    into[Q4K_SCALES + j * ROWS + r] = scale;
                    into[Q4K_MINS + j * ROWS + r] = min;
                }
                q4k_values(&block[16..], packed);
            }
            write_lines(&packed, &mut into[..Q4K_SCALES]);
        }
    }
}

/// The 256 four-bit values of a GGML Q4_K block (`qs`, its last 128 bytes) packed
/// group by group as Q4_0 packs a block: byte `16j + i` holds value `i` of group `j`
/// in its low nibble and value `16 + i` in its high one. Group `2p` is the low nibbles
/// of the 32 bytes of pair `p`, group `2p + 1` their high nibbles; a word at a time.
fn q4k_values(qs: &[u8], packed: &mut [u8; 8 * QK / 2]) {
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    for (p, bytes) in qs.chunks_exact(QK).enumerate() {
        for w in 0..2 {
            let (first, second) = (word(bytes, 8 * w), word(bytes, QK / 2 + 8 * w));
            let even = first & LOW | (second & LOW) << 4;
            let odd = (first >> 4) & LOW | second & !LOW;
            packed[QK * p + 8 * w..][..8].copy_from_slice(&even.to_le_bytes());
            packed[QK * p + QK / 2 + 8 * w..][..8].copy_from_slice(&odd.to_le_bytes());
        }
    }
}

/// Row `r` of an interleaved group of `ty` rows (`group`, `blocks` 32-weight blocks)
/// back in GGML's layout.
pub fn row(ty: QuantType, group: &[u8], r: usize, blocks: usize) -> Vec<u8> {
    match ty {
        QuantType::Q4K => return row_q4k(group, r, blocks / 8),
        QuantType::Q6K => return row_q6k(group, r, blocks / 8),
        _ => {}
    }
    let block_bytes = ty.block_bytes();
    let mut out = vec![0; blocks * block_bytes];
    for (b, block) in out.chunks_exact_mut(block_bytes).enumerate() {
        let pair = &group[b / 2 * pair_bytes(ty)..][..pair_bytes(ty)];
        let (values, scales) = offsets(ty, b % 2);
        block[..2].copy_from_slice(&pair[scales + 2 * r..][..2]);
        let mut values_of_row = [0; QK];
        for (i, q) in values_of_row[..value_bytes(ty)].iter_mut().enumerate() {
            *q = pair[values + i / 4 * 4 * ROWS + 4 * r + i % 4];
        }
        restore(ty, &values_of_row, block);
    }
    out
}

/// [`row`] for Q4_K, `supers` super-blocks.
fn row_q4k(group: &[u8], r: usize, supers: usize) -> Vec<u8> {
    let mut out = vec![0; supers * 144];
    for (block, from) in out
        .chunks_exact_mut(144)
        .zip(group.chunks_exact(Q4K_GROUP_BYTES))
    {
        block[..2].copy_from_slice(&from[Q4K_D + 2 * r..][..2]);
        block[2..4].copy_from_slice(&from[Q4K_DMIN + 2 * r..][..2]);
        let scales = &mut block[4..16];
        for j in 0..8 {
            let (scale, min) = (
                from[Q4K_SCALES + j * ROWS + r],
                from[Q4K_MINS + j * ROWS + r],
            );
            if j < 4 {
                scales[j] |= scale & 63;
                scales[j + 4] |= min & 63;
            } else {
                scales[j + 4] = (scale & 15) | (min & 15) << 4;
                scales[j - 4] |= (scale >> 4) << 6;
                scales[j] |= (min >> 4) << 6;
            }
        }
        for j in 0..8 {
            for l in 0..QK {
                let byte = from[j * 256 + l % 16 / 4 * 4 * ROWS + 4 * r + l % 4];
                let value = if l < 16 { byte & 15 } else { byte >> 4 };
                block[16 + j / 2 * 32 + l] |= if j % 2 == 0 { value } else { value << 4 };
            }
        }
    }
    out
}

/// `Σ y` of each activation block (at most 32 · 127 in magnitude): what Q4_K's
/// minimums are taken against, read two blocks at a time as one 32-bit word.
pub fn sums(x: &[Q8Block], into: &mut Vec<i16>) {
    into.clear();
    into.extend(
        x.iter()
            .map(|a| a.qs.iter().map(|&q| i16::from(q)).sum::<i16>()),
    );
}

/// `-128 · Σ y` of each activation block from its [`sums`]: what turns the sums of
/// `(q + 128) · y` into `q · y` (a sixteenth of it, for Q4_0's `(q + 8) · y`).
pub fn correction(sums: &[i16], into: &mut Vec<i32>) {
    into.clear();
    into.extend(sums.iter().map(|&sum| -128 * i32::from(sum)));
}

/// `Σ y` of each half (sixteen values) of each activation block, at most 16 · 127 in
/// magnitude: 32 times it is what turns Q6_K's sums of `(q + 32) · y` into `q · y`.
pub fn half_sums(x: &[Q8Block], into: &mut Vec<[i16; 2]>) {
    into.clear();
    into.extend(x.iter().map(|a| {
        let half = |h: usize| a.qs[16 * h..][..16].iter().map(|&q| i16::from(q)).sum();
        [half(0), half(1)]
    }));
}

/// The correction of a block of `ty` rows from the block's [`correction`]: a sixteenth
/// for Q4_0's `+ 8`, an eighth for Q5_0's `+ 16` (a multiple of 128, so the shift is
/// exact).
pub fn correction_for(ty: QuantType, correction: i32) -> i32 {
    match ty {
        QuantType::Q4_0 => correction >> 4,
        QuantType::Q5_0 => correction >> 3,
        _ => correction,
    }
}

/// The activations of one token as the products over this layout read them: the
/// blocks, and what [`sums`], [`correction`] and [`half_sums`] made of them.
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub x: &'a [Q8Block],
    pub sums: &'a [i16],
    pub corrections: &'a [i32],
    pub halves: &'a [[i16; 2]],
}

/// The sixteen rows of `group` (of `ty`) times one token's activations, in the order
/// every kernel over this layout adds.
pub fn dot(ty: QuantType, group: &[u8], token: Token, out: &mut [f32; ROWS]) {
    let Token {
        x,
        sums,
        corrections,
        halves,
    } = token;
    match ty {
        QuantType::Q4K => return dot_q4k(group, x, sums, out),
        QuantType::Q6K => return dot_q6k(group, x, halves, out),
        _ => {}
    }
    *out = [0.0; ROWS];
    for (b, (a, &c)) in x.iter().zip(corrections).enumerate() {
        let pair = &group[b / 2 * pair_bytes(ty)..][..pair_bytes(ty)];
        let (values, scales) = offsets(ty, b % 2);
        for (r, value) in out.iter_mut().enumerate() {
            let mut sum = correction_for(ty, c);
            let byte = |i: usize| i32::from(pair[values + i / 4 * 4 * ROWS + 4 * r + i % 4]);
            let y = |at: usize| i32::from(a.qs[at]);
            for i in 0..value_bytes(ty) {
                let q = byte(i);
                sum += match ty {
                    QuantType::Q4_0 => (q & 15) * y(i) + (q >> 4) * y(i + QK / 2),
                    QuantType::Q5_0 if i < QK / 2 => {
                        let (fifths, k) = (byte(QK / 2 + i % 4), i / 4);
                        let low = q & 15 | (fifths >> k & 1) << 4;
                        let high = q >> 4 | (fifths >> (4 + k) & 1) << 4;
                        low * y(i) + high * y(i + QK / 2)
                    }
                    QuantType::Q5_0 => 0,
                    _ => q * y(i),
                };
            }
            let at = scales + 2 * r;
            let d = quant::f16_to_f32(u16::from_le_bytes([pair[at], pair[at + 1]]));
            *value = (sum as f32).mul_add(d * a.d, *value);
        }
    }
}

/// [`dot`] for Q4_K: `x` under one scale a super-block.
fn dot_q4k(group: &[u8], x: &[Q8Block], sums: &[i16], out: &mut [f32; ROWS]) {
    *out = [0.0; ROWS];
    for ((from, a), sums) in group
        .chunks_exact(Q4K_GROUP_BYTES)
        .zip(x.chunks_exact(8))
        .zip(sums.chunks_exact(8))
    {
        for (r, value) in out.iter_mut().enumerate() {
            let half = |at: usize| quant::f16_to_f32(u16::from_le_bytes([from[at], from[at + 1]]));
            let (d, dmin) = (half(Q4K_D + 2 * r), half(Q4K_DMIN + 2 * r));
            let (mut products, mut mins) = (0i32, 0i32);
            for (j, a) in a.iter().enumerate() {
                let mut sum = 0;
                for i in 0..QK / 2 {
                    let q = i32::from(from[j * 256 + i / 4 * 4 * ROWS + 4 * r + i % 4]);
                    sum += (q & 15) * i32::from(a.qs[i]) + (q >> 4) * i32::from(a.qs[i + QK / 2]);
                }
                products += i32::from(from[Q4K_SCALES + j * ROWS + r]) * sum;
                mins += i32::from(from[Q4K_MINS + j * ROWS + r]) * i32::from(sums[j]);
            }
            *value = (products as f32).mul_add(d * a[0].d, *value);
            *value = (-(mins as f32)).mul_add(dmin * a[0].d, *value);
        }
    }
}

/// [`interleave`] for Q6_K.
fn interleave_q6k(data: &[u8], blocks: usize, out: &mut [u8]) {
    let supers = blocks / 8;
    let ggml_row = supers * 210;
    assert!(data.len().is_multiple_of(ROWS * ggml_row));
    assert_eq!(
        out.len(),
        data.len() / ggml_row * row_bytes(QuantType::Q6K, blocks)
    );
    for (rows, group) in data
        .chunks_exact(ROWS * ggml_row)
        .zip(out.chunks_exact_mut(supers * Q6K_GROUP_BYTES))
    {
        // Super-block by super-block, each row's values a word at a time, then written
        // front to back a cache line at a time, as for the other types.
        for (s, into) in group.chunks_exact_mut(Q6K_GROUP_BYTES).enumerate() {
            let mut packed = [[0; 8 * Q6K_GROUP / ROWS]; ROWS];
            for (r, packed) in packed.iter_mut().enumerate() {
                let block = &rows[r * ggml_row + s * 210..][..210];
                into[Q6K_D + 2 * r..][..2].copy_from_slice(&block[208..210]);
                for m in 0..16 {
                    into[Q6K_SCALES + m * ROWS + r] = block[192 + m];
                }
                let mut values = [0; 256];
                q6k_values(block, &mut values);
                q6k_pack(&values, packed);
            }
            write_lines(&packed, &mut into[..Q6K_SCALES]);
        }
    }
}

/// The 256 six-bit values of GGML's Q6_K `block` (each its weight plus 32) in order,
/// eight at a time: group `j` of 32 takes its low four bits from `ql` (low or high
/// nibbles) and its top two from `qh`, as [`quant::q6k_value`] reads them one by one.
fn q6k_values(block: &[u8], values: &mut [u8; 256]) {
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const TWO: u64 = 0x0303_0303_0303_0303;
    let word = |at: usize| word(block, at);
    for (j, group) in values.chunks_exact_mut(QK).enumerate() {
        let (half, quarter) = (j / 4, j % 4);
        let ql = half * 64 + 32 * (quarter % 2);
        let qh = 128 + half * 32;
        for (w, eight) in group.chunks_exact_mut(8).enumerate() {
            let low = (word(ql + 8 * w) >> (4 * (quarter / 2))) & LOW;
            let high = (word(qh + 8 * w) >> (2 * quarter)) & TWO;
            eight.copy_from_slice(&(low | high << 4).to_le_bytes());
        }
    }
}

/// One row's 256 values as the layout keeps them, by group: for each `j`, the bytes of
/// `low[k][i]` (sixteen), then of `high[h][i]` (eight), in the order [`write_lines`]
/// spreads four at a time over the group's six lines.
fn q6k_pack(values: &[u8; 256], packed: &mut [u8; 8 * Q6K_GROUP / ROWS]) {
    for (group, out) in values
        .chunks_exact(QK)
        .zip(packed.chunks_exact_mut(Q6K_GROUP / ROWS))
    {
        for i in 0..16 {
            out[i] = group[i] & 15 | (group[16 + i] & 15) << 4;
        }
        for h in 0..2 {
            for i in 0..4 {
                out[16 + 4 * h + i] = (0..4)
                    .map(|k| (group[16 * h + 4 * k + i] >> 4) << (2 * k))
                    .fold(0, |byte, bits| byte | bits);
            }
        }
    }
}

/// Value `i` (0..256, the weight plus 32) of row `r` of an interleaved Q6_K super-block.
fn q6k_value_at(from: &[u8], i: usize, r: usize) -> u8 {
    let (j, v) = (i / QK, i % QK);
    let (h, k, lane) = (v / 16, v % 16 / 4, v % 4);
    let low = from[j * Q6K_GROUP + k * 4 * ROWS + 4 * r + lane] >> (4 * h) & 15;
    let high = from[j * Q6K_GROUP + Q6K_HIGH + h * 4 * ROWS + 4 * r + lane] >> (2 * k) & 3;
    low | high << 4
}

/// [`row`] for Q6_K, `supers` super-blocks.
fn row_q6k(group: &[u8], r: usize, supers: usize) -> Vec<u8> {
    let mut out = vec![0; supers * 210];
    for (block, from) in out
        .chunks_exact_mut(210)
        .zip(group.chunks_exact(Q6K_GROUP_BYTES))
    {
        block[208..210].copy_from_slice(&from[Q6K_D + 2 * r..][..2]);
        for m in 0..16 {
            block[192 + m] = from[Q6K_SCALES + m * ROWS + r];
        }
        for i in 0..256 {
            let q = q6k_value_at(from, i, r);
            let (half, rest) = (i / 128, i % 128);
            let (quarter, l) = (rest / 32, rest % 32);
            let low = if quarter < 2 { q & 15 } else { (q & 15) << 4 };
            block[half * 64 + l + 32 * (quarter % 2)] |= low;
            block[128 + half * 32 + l] |= (q >> 4) << (2 * quarter);
        }
    }
    out
}

/// [`dot`] for Q6_K: `x` under one scale a super-block, `halves` its [`half_sums`].
fn dot_q6k(group: &[u8], x: &[Q8Block], halves: &[[i16; 2]], out: &mut [f32; ROWS]) {
    *out = [0.0; ROWS];
    for ((from, a), halves) in group
        .chunks_exact(Q6K_GROUP_BYTES)
        .zip(x.chunks_exact(8))
        .zip(halves.chunks_exact(8))
    {
        for (r, value) in out.iter_mut().enumerate() {
            let d = quant::f16_to_f32(u16::from_le_bytes([
                from[Q6K_D + 2 * r],
                from[Q6K_D + 2 * r + 1],
            ]));
            let (mut products, mut sums) = (0i32, 0i32);
            for (j, (a, half)) in a.iter().zip(halves).enumerate() {
                for h in 0..2 {
                    let scale = i32::from(from[Q6K_SCALES + (2 * j + h) * ROWS + r] as i8);
                    let mut sum = 0;
                    for i in 16 * h..16 * h + 16 {
                        sum += i32::from(q6k_value_at(from, 32 * j + i, r)) * i32::from(a.qs[i]);
                    }
                    products += scale * sum;
                    sums += scale * i32::from(half[h]);
                }
            }
            *value = ((products - 32 * sums) as f32).mul_add(d * a[0].d, *value);
        }
    }
}
