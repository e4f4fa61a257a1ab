//! GGML's weight formats as bytes: dequantisation (the reference), activation
//! quantisation to Q8 blocks, and the portable dot products every fast path must match.
//!
//! Unquantized weights (F16, BF16, F32) are read as "blocks" of 32 values too, so that
//! every type meets the same Q8 activation blocks: llama.cpp multiplies them by f16,
//! bf16 or f32 activations instead, but here each activation row is quantized once for
//! every matrix it meets, whatever their types, and 8-bit activations keep the
//! engine's one invariant (the dequantised weights' result up to activation rounding).

/// Elements in one activation block and in the smallest weight block.
pub const QK: usize = 32;

/// The weight formats this engine reads, with GGML's byte layout per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// 32 weights: f16 scale, 16 bytes of 4-bit values; value - 8.
    Q4_0,
    /// 32 weights: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit values.
    Q4_1,
    /// 32 weights: f16 scale, 32-bit high bits, 16 bytes of low nibbles; value - 16.
    Q5_0,
    /// 32 weights: f16 scale `d`, f16 minimum `m`, 32-bit high bits, 16 bytes of low
    /// nibbles.
    Q5_1,
    /// 32 weights: f16 scale, 32 signed bytes.
    Q8_0,
    /// 256 weights: f16 `d` and `dmin`, 12 bytes of packed 6-bit scales and minimums
    /// for eight 32-weight groups, 128 bytes of 4-bit values.
    Q4K,
    /// 256 weights: Q4_K's `d`, `dmin` and scales, 32 bytes of fifth bits (bit `j` of
    /// byte `l` for weight `l` of group `j`), 128 bytes of low nibbles.
    Q5K,
    /// 256 weights: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, sixteen
    /// signed 8-bit scales (one per 16 weights), f16 `d`; value - 32.
    Q6K,
    /// IEEE half precision, taken 32 weights to a block.
    F16,
    /// bfloat16 (the upper half of an f32), 32 weights to a block.
    BF16,
    /// f32, 32 weights to a block.
    F32,
}

impl QuantType {
    /// The GGML type named in a GGUF file, if this engine can run it.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<QuantType> {
        use candle_core::quantized::GgmlDType;
        match dtype {
            GgmlDType::Q4_0 => Some(QuantType::Q4_0),
            GgmlDType::Q4_1 => Some(QuantType::Q4_1),
            GgmlDType::Q5_0 => Some(QuantType::Q5_0),
            GgmlDType::Q5_1 => Some(QuantType::Q5_1),
            GgmlDType::Q8_0 => Some(QuantType::Q8_0),
            GgmlDType::Q4K => Some(QuantType::Q4K),
            GgmlDType::Q5K => Some(QuantType::Q5K),
            GgmlDType::Q6K => Some(QuantType::Q6K),
            GgmlDType::F16 => Some(QuantType::F16),
            GgmlDType::BF16 => Some(QuantType::BF16),
            GgmlDType::F32 => Some(QuantType::F32),
            _ => None,
        }
    }

    pub const ALL: [QuantType; 11] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::F16,
        QuantType::BF16,
        QuantType::F32,
    ];

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
            QuantType::F16 | QuantType::BF16 => 64,
            QuantType::F32 => 128,
        }
    }

    /// Whether this is a K-quant, in super-blocks of 256 weights (Q4_K, Q5_K, Q6_K).
    pub fn is_k_quant(self) -> bool {
        self.block_elems() == 256
    }

    /// Whether the weights are unquantized floats (F16, BF16, F32).
    pub fn is_float(self) -> bool {
        matches!(self, QuantType::F16 | QuantType::BF16 | QuantType::F32)
    }

    /// Bytes of one row of `cols` weights; `None` when `cols` is not whole blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        (cols.is_multiple_of(self.block_elems()))
            .then(|| cols / self.block_elems() * self.block_bytes())
    }
}

/// One activation block: 32 values as `d * qs[i]`, with `s = d * sum(qs)` kept so that
/// formats with an offset (minimum or bias) need no second pass over the values.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// How many activation blocks share one scale: each its own, or the eight of a
/// K-quant's 256-weight super-block, as GGML's Q8_K activations do, so that a K-quant's
/// product can add its super-block's groups in integers and scale the sum once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scales {
    PerBlock,
    PerSuperBlock,
}

impl Scales {
    /// Blocks of 32 values under one scale.
    pub fn blocks(self) -> usize {
        match self {
            Scales::PerBlock => 1,
            Scales::PerSuperBlock => 8,
        }
    }

    /// Whether the blocks of `x` (whole spans of [`Scales::blocks`]) share their scales
    /// as this asks: per-block scales hold for any blocks.
    pub fn hold_for(self, x: &[Q8Block]) -> bool {
        x.len().is_multiple_of(self.blocks())
            && x.chunks_exact(self.blocks())
                .all(|span| span.iter().all(|b| b.d.to_bits() == span[0].d.to_bits()))
    }
}

/// Quantizes `x` (a multiple of 32 long, of 256 for super-block scales) into `out`,
/// one block per 32 values, each span of `scales` blocks under the span's largest
/// magnitude over 127.
pub fn quantize_row(x: &[f32], out: &mut [Q8Block], scales: Scales) {
    let span = scales.blocks() * QK;
    for (chunk, blocks) in x
        .chunks_exact(span)
        .zip(out.chunks_exact_mut(scales.blocks()))
    {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (chunk, block) in chunk.chunks_exact(QK).zip(blocks) {
            let mut sum = 0i32;
            for (q, v) in block.qs.iter_mut().zip(chunk) {
                *q = round_to_i8(v * inv);
                sum += i32::from(*q);
            }
            block.d = d;
            block.s = d * sum as f32;
        }
    }
}

/// `y.round() as i8` for |y| <= 127 (half away from zero), without `roundf`: the
/// default x86-64 target has no rounding instruction, so `round` is a library call per
/// value, while this is a truncating conversion and a compare, which vectorise.
pub(super) fn round_to_i8(y: f32) -> i8 {
    // |y| <= 127, so the truncation is exact and `y - whole` is the exact fraction.
    let whole = y as i32;
    let fraction = y - whole as f32;
    let rounded = if fraction >= 0.5 {
        whole + 1
    } else if fraction <= -0.5 {
        whole - 1
    } else {
        whole
    };
    rounded as i8
}

/// IEEE half to single precision, for the per-block scales.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from((bits >> 10) & 0x1f);
    let mant = u32::from(bits & 0x3ff);
    let magnitude = match (exp, mant) {
        (0, 0) => 0,
        // A subnormal half is mant * 2^-24, a normal single.
        (0, _) => {
            let value = mant as f32 / 16_777_216.0;
            return if sign == 0 { value } else { -value };
        }
        (0x1f, _) => 0x7f80_0000 | (mant << 13),
        _ => ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(sign | magnitude)
}

pub fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// The 32 weights of an F16, BF16 or F32 block as f32.
pub fn float_block(ty: QuantType, block: &[u8]) -> [f32; QK] {
    std::array::from_fn(|i| match ty {
        QuantType::F16 => read_f16(block, 2 * i),
        QuantType::BF16 => {
            f32::from_bits(u32::from(u16::from_le_bytes([block[2 * i], block[2 * i + 1]])) << 16)
        }
        _ => f32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ]),
    })
}

/// The fifth bits of a Q5_0 or Q5_1 block's 32 values (`qh`, little-endian) and its 16
/// bytes of nibbles `qs`: value `j` (0..32), 0..32.
fn q5_value(qh: u32, qs: &[u8], j: usize) -> i32 {
    let nibble = if j < 16 { qs[j] & 0xf } else { qs[j - 16] >> 4 };
    i32::from(nibble) | (((qh >> j) & 1) << 4) as i32
}

/// Weight `l` (0..32) of group `group` (0..8) of a Q5_K block, 0..32.
fn q5k_value(block: &[u8], group: usize, l: usize) -> i32 {
    let byte = block[48 + (group / 2) * 32 + l];
    let nibble = if group.is_multiple_of(2) {
        byte & 0xf
    } else {
        byte >> 4
    };
    i32::from(nibble) | ((i32::from(block[16 + l] >> group) & 1) << 4)
}

/// The six-bit scale and minimum of group `j` (0..8) of a Q4_K block.
pub fn q4k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// The 6-bit value (0..64) of weight `i` (0..256) of a Q6_K block and its scale index.
pub(super) fn q6k_value(block: &[u8], i: usize) -> (i32, usize) {
    let (half, rest) = (i / 128, i % 128);
    let (quarter, l) = (rest / 32, rest % 32);
    let ql = &block[half * 64..];
    let qh = block[128 + half * 32 + l];
    let low = match quarter {
        0 => ql[l] & 0xf,
        1 => ql[l + 32] & 0xf,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    let high = (qh >> (2 * quarter)) & 3;
    (
        i32::from(low | (high << 4)),
        half * 8 + quarter * 2 + l / 16,
    )
}

/// Decodes one row of `ty` weights to f32: the reference every dot product is checked
/// against.
pub fn dequantize_row(ty: QuantType, row: &[u8], out: &mut [f32]) {
    let per = ty.block_elems();
    for (block, y) in row
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(per))
    {
        match ty {
            QuantType::Q4_0 => {
                let d = read_f16(block, 0);
                for j in 0..16 {
                    y[j] = (f32::from(block[2 + j] & 0xf) - 8.0) * d;
                    y[j + 16] = (f32::from(block[2 + j] >> 4) - 8.0) * d;
                }
            }
            QuantType::Q5_1 => {
                let (d, m) = (read_f16(block, 0), read_f16(block, 2));
                let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                for (j, v) in y.iter_mut().enumerate() {
                    *v = q5_value(qh, &block[8..24], j) as f32 * d + m;
                }
            }
            QuantType::Q5K => {
                let (d, dmin) = (read_f16(block, 0), read_f16(block, 2));
                for (i, v) in y.iter_mut().enumerate() {
                    let (group, l) = (i / 32, i % 32);
                    let (sc, m) = q4k_scale_min(&block[4..16], group);
                    let q = q5k_value(block, group, l) as f32;
                    *v = d * f32::from(sc) * q - dmin * f32::from(m);
                }
            }
            QuantType::F16 | QuantType::BF16 | QuantType::F32 => {
                y.copy_from_slice(&float_block(ty, block));
            }
            QuantType::Q4_1 => {
                let (d, m) = (read_f16(block, 0), read_f16(block, 2));
                for j in 0..16 {
                    y[j] = d * f32::from(block[4 + j] & 0xf) + m;
                    y[j + 16] = d * f32::from(block[4 + j] >> 4) + m;
                }
            }
            QuantType::Q5_0 => {
                let d = read_f16(block, 0);
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                for j in 0..16 {
                    let lo = u32::from(block[6 + j] & 0xf) | (((qh >> j) & 1) << 4);
                    let hi = u32::from(block[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    y[j] = d * (lo as f32 - 16.0);
                    y[j + 16] = d * (hi as f32 - 16.0);
                }
            }
            QuantType::Q8_0 => {
                let d = read_f16(block, 0);
                for (v, q) in y.iter_mut().zip(&block[2..34]) {
                    *v = d * f32::from(*q as i8);
                }
            }
            QuantType::Q4K => {
                let (d, dmin) = (read_f16(block, 0), read_f16(block, 2));
                let scales = &block[4..16];
                for (i, v) in y.iter_mut().enumerate() {
                    let (group, l) = (i / 32, i % 32);
                    let byte = block[16 + (group / 2) * 32 + l];
                    let q = if group % 2 == 0 {
                        byte & 0xf
                    } else {
                        byte >> 4
                    };
                    let (sc, m) = q4k_scale_min(scales, group);
                    *v = d * f32::from(sc) * f32::from(q) - dmin * f32::from(m);
                }
            }
            QuantType::Q6K => {
                let d = read_f16(block, 208);
                for (i, v) in y.iter_mut().enumerate() {
                    let (q, scale) = q6k_value(block, i);
                    *v = d * f32::from(block[192 + scale] as i8) * (q - 32) as f32;
                }
            }
        }
    }
}

/// Portable dot product of one weight row with quantized activations.
pub fn dot_portable(ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
    dot_blocks::<Scalar>(ty, row, x)
}

/// The integer part of a dot product: one block's sums of weight value times activation
/// byte. [`dot_blocks`] does the floating-point rest, so kernels that differ only here
/// give equal results bit for bit.
pub trait BlockSums {
    /// A Q4_0 block (18 bytes): the sum of (value - 8) * y.
    fn q4_0(w: &[u8], y: &[i8; QK]) -> i32;
    /// A Q4_1 block (20 bytes): the sum of value * y.
    fn q4_1(w: &[u8], y: &[i8; QK]) -> i32;
    /// A Q5_0 block (22 bytes): the sum of (value - 16) * y.
    fn q5_0(w: &[u8], y: &[i8; QK]) -> i32;
    /// A Q5_1 block (24 bytes): the sum of value * y.
    fn q5_1(w: &[u8], y: &[i8; QK]) -> i32;
    /// A Q8_0 block (34 bytes): the sum of value * y.
    fn q8_0(w: &[u8], y: &[i8; QK]) -> i32;
    /// One group of a Q4_K block: the sum of value * y over the low nibbles of `bytes`
    /// (32 of them), or their high nibbles when `high`.
    fn q4k(bytes: &[u8], high: bool, y: &[i8; QK]) -> i32;
    /// Group `group` (0..8) of a Q5_K block (176 bytes): the sum of value * y.
    fn q5k(w: &[u8], group: usize, y: &[i8; QK]) -> i32;
    /// Group `group` (0..8) of a Q6_K block (210 bytes): the sums of (value - 32) * y
    /// over its two halves of 16, which have a scale each.
    fn q6k(w: &[u8], group: usize, y: &[i8; QK]) -> [i32; 2];
}

/// [`BlockSums`] one value at a time, for any CPU.
pub struct Scalar;

impl BlockSums for Scalar {
    fn q4_0(w: &[u8], y: &[i8; QK]) -> i32 {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += (i32::from(w[2 + j] & 0xf) - 8) * i32::from(y[j]);
            sum += (i32::from(w[2 + j] >> 4) - 8) * i32::from(y[j + 16]);
        }
        sum
    }

    fn q5_1(w: &[u8], y: &[i8; QK]) -> i32 {
        let qh = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        y.iter()
            .enumerate()
            .map(|(j, y)| q5_value(qh, &w[8..24], j) * i32::from(*y))
            .sum()
    }

    fn q5k(w: &[u8], group: usize, y: &[i8; QK]) -> i32 {
        y.iter()
            .enumerate()
            .map(|(l, y)| q5k_value(w, group, l) * i32::from(*y))
            .sum()
    }

    fn q4_1(w: &[u8], y: &[i8; QK]) -> i32 {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += i32::from(w[4 + j] & 0xf) * i32::from(y[j]);
            sum += i32::from(w[4 + j] >> 4) * i32::from(y[j + 16]);
        }
        sum
    }

    fn q5_0(w: &[u8], y: &[i8; QK]) -> i32 {
        let qh = u32::from_le_bytes([w[2], w[3], w[4], w[5]]);
        let mut sum = 0i32;
        for j in 0..16 {
            let lo = i32::from(w[6 + j] & 0xf) | ((((qh >> j) & 1) << 4) as i32);
            let hi = i32::from(w[6 + j] >> 4) | ((((qh >> (j + 16)) & 1) << 4) as i32);
            sum += (lo - 16) * i32::from(y[j]) + (hi - 16) * i32::from(y[j + 16]);
        }
        sum
    }

    fn q8_0(w: &[u8], y: &[i8; QK]) -> i32 {
        w[2..34]
            .iter()
            .zip(y)
            .map(|(q, y)| i32::from(*q as i8) * i32::from(*y))
            .sum()
    }

    fn q4k(bytes: &[u8], high: bool, y: &[i8; QK]) -> i32 {
        let shift = if high { 4 } else { 0 };
        bytes
            .iter()
            .zip(y)
            .map(|(q, y)| i32::from((q >> shift) & 0xf) * i32::from(*y))
            .sum()
    }

    fn q6k(w: &[u8], group: usize, y: &[i8; QK]) -> [i32; 2] {
        let mut sums = [0i32; 2];
        for (l, y) in y.iter().enumerate() {
            let (q, _) = q6k_value(w, group * 32 + l);
            sums[l / 16] += (q - 32) * i32::from(*y);
        }
        sums
    }
}

/// The dot product of one weight row with quantized activations, the blocks' integer
/// sums from `S`.
#[inline(always)]
pub fn dot_blocks<S: BlockSums>(ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
    match ty {
        QuantType::Q4_0 => row
            .chunks_exact(18)
            .zip(x)
            .map(|(w, a)| read_f16(w, 0) * a.d * S::q4_0(w, &a.qs) as f32)
            .sum(),
        QuantType::Q5_1 => row
            .chunks_exact(24)
            .zip(x)
            .map(|(w, a)| {
                let sum = S::q5_1(w, &a.qs);
                read_f16(w, 0) * a.d * sum as f32 + read_f16(w, 2) * a.s
            })
            .sum(),
        QuantType::Q5K => row
            .chunks_exact(176)
            .zip(x.chunks_exact(8))
            .map(|(w, a)| {
                let (d, dmin) = (read_f16(w, 0), read_f16(w, 2));
                let mut total = 0.0;
                for (group, block) in a.iter().enumerate() {
                    let sum = S::q5k(w, group, &block.qs);
                    let (sc, m) = q4k_scale_min(&w[4..16], group);
                    total +=
                        d * f32::from(sc) * block.d * sum as f32 - dmin * f32::from(m) * block.s;
                }
                total
            })
            .sum(),
        QuantType::F16 | QuantType::BF16 | QuantType::F32 => row
            .chunks_exact(ty.block_bytes())
            .zip(x)
            .map(|(w, a)| a.d * dot_float_block(&float_block(ty, w), &a.qs))
            .sum(),
        QuantType::Q4_1 => row
            .chunks_exact(20)
            .zip(x)
            .map(|(w, a)| {
                let sum = S::q4_1(w, &a.qs);
                read_f16(w, 0) * a.d * sum as f32 + read_f16(w, 2) * a.s
            })
            .sum(),
        QuantType::Q5_0 => row
            .chunks_exact(22)
            .zip(x)
            .map(|(w, a)| read_f16(w, 0) * a.d * S::q5_0(w, &a.qs) as f32)
            .sum(),
        QuantType::Q8_0 => row
            .chunks_exact(34)
            .zip(x)
            .map(|(w, a)| read_f16(w, 0) * a.d * S::q8_0(w, &a.qs) as f32)
            .sum(),
        QuantType::Q4K => row
            .chunks_exact(144)
            .zip(x.chunks_exact(8))
            .map(|(w, a)| {
                let (d, dmin) = (read_f16(w, 0), read_f16(w, 2));
                let mut total = 0.0;
                for (group, block) in a.iter().enumerate() {
                    let bytes = &w[16 + (group / 2) * 32..][..32];
                    let sum = S::q4k(bytes, group % 2 == 1, &block.qs);
                    let (sc, m) = q4k_scale_min(&w[4..16], group);
                    total +=
                        d * f32::from(sc) * block.d * sum as f32 - dmin * f32::from(m) * block.s;
                }
                total
            })
            .sum(),
        QuantType::Q6K => row
            .chunks_exact(210)
            .zip(x.chunks_exact(8))
            .map(|(w, a)| {
                let d = read_f16(w, 208);
                let mut total = 0.0;
                for (group, block) in a.iter().enumerate() {
                    let sums = S::q6k(w, group, &block.qs);
                    let (_, scale) = q6k_value(w, group * 32);
                    let sc0 = f32::from(w[192 + scale] as i8);
                    let sc1 = f32::from(w[192 + scale + 1] as i8);
                    total += d * block.d * (sc0 * sums[0] as f32 + sc1 * sums[1] as f32);
                }
                total
            })
            .sum(),
    }
}

/// `w · q` over one block of 32, in eight running sums (lane `i % 8`) added pairwise at
/// the end: an order a compiler can keep in vector registers.
fn dot_float_block(w: &[f32; QK], q: &[i8; QK]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (w, q) in w.chunks_exact(8).zip(q.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += w[i] * f32::from(q[i]);
        }
    }
    let quads: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    (quads[0] + quads[2]) + (quads[1] + quads[3])
}
