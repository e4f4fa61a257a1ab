//! aarch64 NEON dot products of quantized weight rows with Q8 activation blocks.
//!
//! NEON computes each block's integer sums, 16 byte products at a time; the
//! floating-point rest is `quant::dot_blocks`, the portable kernels' own, so the results
//! equal the portable kernels' bit for bit. NEON is part of every AArch64 Linux CPU, so
//! detection only confirms it.

use std::arch::aarch64::*;

use super::quant::{self, BlockSums, Q8Block, QK, QuantType};

/// Proof that this CPU has NEON: the only way to reach the kernels.
#[derive(Debug, Clone, Copy)]
pub struct Neon(());

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }

    /// The dot product of one `ty` row with its activations (`x` covers the row).
    pub fn dot(self, ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
        // SAFETY: a `Neon` exists only once detection saw NEON; the loads stay inside
        // the blocks `dot_blocks` hands out.
        unsafe { dot(ty, row, x) }
    }

    /// `a · b` over f32 (equal lengths, a multiple of 4).
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as in `dot`; the loads stay inside `chunks_exact` chunks.
        unsafe { dot_f32(a, b) }
    }

    /// `out += w * v` over f32 (equal lengths, a multiple of 4).
    pub fn axpy(self, w: f32, v: &[f32], out: &mut [f32]) {
        // SAFETY: as in `dot`; loads and stores stay inside `chunks_exact` chunks.
        unsafe { axpy(w, v, out) }
    }
}

#[target_feature(enable = "neon")]
fn dot(ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
    quant::dot_blocks::<Sums>(ty, row, x)
}

#[target_feature(enable = "neon")]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    for (a, b) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        // SAFETY: each chunk is 4 floats.
        acc = unsafe { vfmaq_f32(acc, vld1q_f32(a.as_ptr()), vld1q_f32(b.as_ptr())) };
    }
    vaddvq_f32(acc)
}

#[target_feature(enable = "neon")]
fn axpy(w: f32, v: &[f32], out: &mut [f32]) {
    let w = vdupq_n_f32(w);
    for (v, out) in v.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
        // SAFETY: each chunk is 4 floats.
        unsafe {
            let sum = vfmaq_f32(vld1q_f32(out.as_ptr()), w, vld1q_f32(v.as_ptr()));
            vst1q_f32(out.as_mut_ptr(), sum);
        }
    }
}

/// [`BlockSums`] with NEON. Every product of a weight value and an activation fits i8 by
/// i8, and two of them summed fit i16 (at most 2 * 128 * 127).
struct Sums;

impl BlockSums for Sums {
    #[inline(always)]
    fn q4_0(w: &[u8], y: &[i8; QK]) -> i32 {
        // SAFETY: NEON is part of the target; the block holds 16 value bytes after 2.
        unsafe {
            let q = load_u8(&w[2..18]);
            let offset = vdupq_n_s8(8);
            let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
            block_sum(vsubq_s8(lo, offset), vsubq_s8(hi, offset), y)
        }
    }

    #[inline(always)]
    fn q5_1(w: &[u8], y: &[i8; QK]) -> i32 {
        // SAFETY: as in `q4_0`; the block holds 16 value bytes after 8.
        unsafe {
            let qh = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
            let q = load_u8(&w[8..24]);
            let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0f)), fifth_bits(qh as u16));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), fifth_bits((qh >> 16) as u16));
            block_sum(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi), y)
        }
    }

    #[inline(always)]
    fn q5k(w: &[u8], group: usize, y: &[i8; QK]) -> i32 {
        let qs = &w[48 + (group / 2) * 32..][..32];
        let qh = &w[16..48];
        // SAFETY: as in `q4_0`; `qs` and `qh` are 32 long.
        unsafe {
            let bit = vdupq_n_u8(1 << group);
            let value = |at: usize| {
                let q = load_u8(&qs[at..at + 16]);
                let nibbles = if group.is_multiple_of(2) {
                    vandq_u8(q, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(q)
                };
                let fifth = vandq_u8(vtstq_u8(load_u8(&qh[at..at + 16]), bit), vdupq_n_u8(0x10));
                vreinterpretq_s8_u8(vorrq_u8(nibbles, fifth))
            };
            block_sum(value(0), value(16), y)
        }
    }

    #[inline(always)]
    fn q4_1(w: &[u8], y: &[i8; QK]) -> i32 {
        // SAFETY: NEON is part of the target; the block holds 16 value bytes after 4.
        unsafe {
            let q = load_u8(&w[4..20]);
            let lo = vandq_u8(q, vdupq_n_u8(0x0f));
            let hi = vshrq_n_u8::<4>(q);
            block_sum(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi), y)
        }
    }

    #[inline(always)]
    fn q5_0(w: &[u8], y: &[i8; QK]) -> i32 {
        // SAFETY: as in `q4_1`; the block holds 16 value bytes after 6.
        unsafe {
            let qh = u32::from_le_bytes([w[2], w[3], w[4], w[5]]);
            let q = load_u8(&w[6..22]);
            let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0f)), fifth_bits(qh as u16));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), fifth_bits((qh >> 16) as u16));
            let offset = vdupq_n_s8(16);
            block_sum(
                vsubq_s8(vreinterpretq_s8_u8(lo), offset),
                vsubq_s8(vreinterpretq_s8_u8(hi), offset),
                y,
            )
        }
    }

    #[inline(always)]
    fn q8_0(w: &[u8], y: &[i8; QK]) -> i32 {
        // SAFETY: as in `q4_1`; the block holds 32 value bytes after 2.
        unsafe {
            let lo = vreinterpretq_s8_u8(load_u8(&w[2..18]));
            let hi = vreinterpretq_s8_u8(load_u8(&w[18..34]));
            block_sum(lo, hi, y)
        }
    }

    #[inline(always)]
    fn q4k(bytes: &[u8], high: bool, y: &[i8; QK]) -> i32 {
        // SAFETY: as in `q4_1`; `bytes` is 32 long.
        unsafe {
            let (a, b) = (load_u8(&bytes[..16]), load_u8(&bytes[16..32]));
            let nibbles = |v| {
                if high {
                    vshrq_n_u8::<4>(v)
                } else {
                    vandq_u8(v, vdupq_n_u8(0x0f))
                }
            };
            block_sum(
                vreinterpretq_s8_u8(nibbles(a)),
                vreinterpretq_s8_u8(nibbles(b)),
                y,
            )
        }
    }

    #[inline(always)]
    fn q6k(w: &[u8], group: usize, y: &[i8; QK]) -> [i32; 2] {
        let (half, quarter) = (group / 4, group % 4);
        let ql = &w[half * 64 + (quarter % 2) * 32..][..32];
        let qh = &w[128 + half * 32..][..32];
        // SAFETY: as in `q4_1`; `ql` and `qh` are 32 long.
        unsafe {
            let high_shift = vdupq_n_s8(-2 * quarter as i8);
            let value = |at: usize| {
                let low = load_u8(&ql[at..at + 16]);
                let low = if quarter < 2 {
                    vandq_u8(low, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(low)
                };
                let high = vandq_u8(
                    vshlq_u8(load_u8(&qh[at..at + 16]), high_shift),
                    vdupq_n_u8(3),
                );
                let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
                vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32))
            };
            [
                vaddvq_s32(sums16(value(0), load_i8(&y[..16]))),
                vaddvq_s32(sums16(value(16), load_i8(&y[16..]))),
            ]
        }
    }
}

/// 16 bytes from the start of `bytes`.
#[inline(always)]
unsafe fn load_u8(bytes: &[u8]) -> uint8x16_t {
    assert!(bytes.len() >= 16);
    // SAFETY: 16 bytes are there, checked above.
    unsafe { vld1q_u8(bytes.as_ptr()) }
}

#[inline(always)]
unsafe fn load_i8(bytes: &[i8]) -> int8x16_t {
    assert!(bytes.len() >= 16);
    // SAFETY: 16 bytes are there, checked above.
    unsafe { vld1q_s8(bytes.as_ptr()) }
}

/// The sum of `lo * y[..16] + hi * y[16..]`, byte by byte.
#[inline(always)]
unsafe fn block_sum(lo: int8x16_t, hi: int8x16_t, y: &[i8; QK]) -> i32 {
    // SAFETY: NEON is part of the target; `y` is 32 bytes.
    unsafe {
        let sums = vaddq_s32(sums16(lo, load_i8(&y[..16])), sums16(hi, load_i8(&y[16..])));
        vaddvq_s32(sums)
    }
}

/// Products of 16 signed byte pairs, summed four to a lane.
#[inline(always)]
unsafe fn sums16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: NEON is part of the target.
    unsafe {
        let products = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        vpaddlq_s16(vmlal_high_s8(products, a, b))
    }
}

/// 0x10 in byte `j` where bit `j` of `bits` is set: Q5_0's fifth bits for 16 values.
#[inline(always)]
unsafe fn fifth_bits(bits: u16) -> uint8x16_t {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: NEON is part of the target; `BIT` is 16 bytes.
    unsafe {
        let bytes = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
        let set = vtstq_u8(bytes, vld1q_u8(BIT.as_ptr()));
        vandq_u8(set, vdupq_n_u8(0x10))
    }
}
