//! The worker's own CPU engine for llama-architecture GGUF models: weights stay in their
//! quantized blocks, each activation row is quantized once to Q8 blocks, and the dot
//! products run on kernels picked at start from the CPU's features.
//!
//! The rest of the worker sees only [`CpuLlama`] (load, forward) and [`Kernels`]; the
//! candle path still runs every other device, architecture and quantization type.

#[cfg(target_arch = "aarch64")]
mod arm;
mod interleaved;
mod llama;
mod matrix;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use llama::{CpuLlama, CpuLoadError, ForwardError, SequenceChunk};
pub use matrix::{FileBytes, QMatrix};

use quant::{Q8Block, QuantType};

/// The dot-product kernels, chosen once per process from the CPU's features.
#[derive(Debug, Clone, Copy)]
pub enum Kernels {
    /// Plain Rust, for any CPU.
    Portable,
    /// AVX2, or AVX-512 with VNNI.
    #[cfg(target_arch = "x86_64")]
    X86(x86::Simd),
    #[cfg(target_arch = "aarch64")]
    Neon(arm::Neon),
}

impl Kernels {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Kernels {
        Kernels::supported().pop().unwrap_or(Kernels::Portable)
    }

    /// Every kernel set this CPU runs, the portable one first and the fastest last.
    pub fn supported() -> Vec<Kernels> {
        let mut sets = vec![Kernels::Portable];
        #[cfg(target_arch = "x86_64")]
        sets.extend(x86::Simd::supported().into_iter().map(Kernels::X86));
        #[cfg(target_arch = "aarch64")]
        sets.extend(arm::Neon::detect().map(Kernels::Neon));
        sets
    }

    /// The kernel set called `name` (`portable`, `avx2`, `avx512`, `neon`), if this CPU
    /// runs it.
    pub fn named(name: &str) -> Option<Kernels> {
        Kernels::supported().into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) => simd.name(),
            #[cfg(target_arch = "aarch64")]
            Kernels::Neon(_) => "neon",
        }
    }

    /// Dot products of consecutive rows (`row_bytes` each) with the same activations,
    /// one per element of `out`.
    pub fn dot_rows(
        self,
        ty: QuantType,
        rows: &[u8],
        row_bytes: usize,
        x: &[Q8Block],
        out: &mut [f32],
    ) {
        let rows = rows.chunks_exact(row_bytes);
        #[cfg(target_arch = "x86_64")]
        if let Kernels::X86(simd) = self {
            let mut rows = rows;
            let mut groups = out.chunks_exact_mut(x86::ROWS_AT_ONCE);
            for values in &mut groups {
                let group = [(); x86::ROWS_AT_ONCE].map(|()| rows.next().unwrap_or_default());
                if !simd.dot_rows(ty, group, x, values) {
                    for (value, row) in values.iter_mut().zip(group) {
                        *value = simd.dot(ty, row, x);
                    }
                }
            }
            for (value, row) in groups.into_remainder().iter_mut().zip(rows) {
                *value = simd.dot(ty, row, x);
            }
            return;
        }
        for (value, row) in out.iter_mut().zip(rows) {
            *value = self.dot(ty, row, x);
        }
    }

    /// Whether this set reads Q8_0, Q4_0, Q5_0, Q4_K and Q6_K matrices faster
    /// interleaved ([`interleaved`]: AVX2's and AVX-512's products), so that loading them
    /// should interleave them.
    pub fn interleaves(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(_) => true,
            _ => false,
        }
    }

    /// Prepares activations `x` for the products of interleaved matrices, once for
    /// every task of a product: each block's sum and correction
    /// ([`interleaved::sums`], [`interleaved::correction`]) and its halves' sums
    /// ([`interleaved::half_sums`]).
    pub fn prepare(self, x: &[Q8Block], into: &mut Prepared) {
        interleaved::sums(x, &mut into.sums);
        interleaved::correction(&into.sums, &mut into.corrections);
        interleaved::half_sums(x, &mut into.halves);
    }

    /// Prepares activations `x` for a product of several tokens with F16, BF16 or F32
    /// rows, once for every task: the values as floats, where this set's tiles read
    /// them (empty otherwise).
    pub fn prepare_floats(self, x: &[Q8Block], into: &mut Prepared) {
        into.floats.clear();
        #[cfg(target_arch = "x86_64")]
        if let Kernels::X86(_) = self {
            x86::float_activations(x, &mut into.floats);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x; // no tile of another architecture reads floats
    }

    /// Interleaved groups of `ty` rows ([`interleaved`]) times `tokens` tokens'
    /// activations (`x` holds exactly those, one after another; `prepared` is what
    /// [`Kernels::prepare`] made of them): `out[t * stride + i]` is row `i` times token
    /// `t`. Every set gives [`interleaved::dot`]'s bits; AVX2's and AVX-512's kernels are
    /// the fast ones (the portable code runs only where a test asks for it).
    #[allow(clippy::too_many_arguments)]
    pub fn dot_interleaved(
        self,
        ty: QuantType,
        groups: &[u8],
        x: &[Q8Block],
        tokens: usize,
        prepared: &Prepared,
        out: &mut [f32],
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Kernels::X86(simd) = self {
            return simd.dot_interleaved(ty, groups, x, tokens, prepared, out, stride);
        }
        let blocks = x.len() / tokens;
        let group_bytes = interleaved::ROWS * interleaved::row_bytes(ty, blocks);
        let mut values = [0.0; interleaved::ROWS];
        for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
            for t in 0..tokens {
                let token = prepared.token(x, blocks, t);
                interleaved::dot(ty, group, token, &mut values);
                let at = t * stride + g * interleaved::ROWS;
                out[at..at + interleaved::ROWS].copy_from_slice(&values);
            }
        }
    }

    /// Dot products of consecutive rows (`row_bytes` each) with `tokens` tokens'
    /// activations (`x` holds exactly those, one after another; `prepared` is what
    /// [`Kernels::prepare_floats`] made of them, or empty): `out[i * tokens + t]` is row
    /// `i` times token `t`. Equal, bit for bit, to `dot_rows` token by token; faster
    /// where a tile kernel unpacks each weight block once for several tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn dot_rows_tokens(
        self,
        ty: QuantType,
        rows: &[u8],
        row_bytes: usize,
        x: &[Q8Block],
        tokens: usize,
        prepared: &Prepared,
        out: &mut [f32],
    ) {
        if tokens == 1 {
            return self.dot_rows(ty, rows, row_bytes, x, out);
        }
        let count = out.len() / tokens;
        let blocks = x.len() / tokens;
        let token = |t: usize| &x[t * blocks..(t + 1) * blocks];
        #[cfg(target_arch = "x86_64")]
        let (done_rows, done_tokens) = match self {
            Kernels::X86(simd)
                if tokens >= x86::TILE_TOKENS
                    && ty.is_float()
                    && prepared.floats.len() == x.len() * quant::QK =>
            {
                float_tiles(simd, ty, rows, row_bytes, tokens, &prepared.floats, out)
            }
            Kernels::X86(simd) if tokens >= x86::TILE_TOKENS => UNPACKED
                .with_borrow_mut(|unpacked| {
                    unpacked_tiles(simd, ty, rows, row_bytes, x, tokens, out, unpacked)
                })
                .unwrap_or_else(|| packed_tiles(simd, ty, rows, row_bytes, x, tokens, out)),
            Kernels::X86(_) => (0, 0),
            Kernels::Portable => (0, 0),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (done_rows, done_tokens) = {
            let _ = prepared; // only x86's float tiles read the prepared floats
            (0, 0)
        };
        // What the tiles left: whole columns of tokens past the tiles' for the rows they
        // covered, and every token for the rows after them. Rows go in groups that stay
        // in cache while every token passes over them, so weights are read from memory
        // once per product however many tokens share it.
        // A stack buffer, so that a prompt allocates nothing here.
        let mut column = [0.0; 64];
        for group in (0..count).step_by(column.len()) {
            let end = (group + column.len()).min(count);
            for t in 0..tokens {
                let from = if t < done_tokens {
                    group.max(done_rows)
                } else {
                    group
                };
                if from >= end {
                    continue;
                }
                let values = &mut column[..end - from];
                self.dot_rows(
                    ty,
                    &rows[from * row_bytes..end * row_bytes],
                    row_bytes,
                    token(t),
                    values,
                );
                for (i, value) in values.iter().enumerate() {
                    out[(from + i) * tokens + t] = *value;
                }
            }
        }
    }

    /// Quantizes activations `x` (a multiple of 32 long, of 256 for super-block
    /// scales) into `out`, one block per 32 values; every set gives
    /// [`quant::quantize_row`]'s results exactly.
    pub fn quantize_row(self, x: &[f32], out: &mut [Q8Block], scales: quant::Scales) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) => simd.quantize_row(x, out, scales),
            _ => quant::quantize_row(x, out, scales),
        }
    }

    /// `a · b` over f32, for attention scores.
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) if a.len().is_multiple_of(8) => simd.dot_f32(a, b),
            #[cfg(target_arch = "aarch64")]
            Kernels::Neon(neon) if a.len().is_multiple_of(4) => neon.dot_f32(a, b),
            _ => a.iter().zip(b).map(|(a, b)| a * b).sum(),
        }
    }

    /// `out += w * v` over f32, for attention's weighted sum of values.
    pub fn axpy(self, w: f32, v: &[f32], out: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) if v.len().is_multiple_of(8) => simd.axpy(w, v, out),
            #[cfg(target_arch = "aarch64")]
            Kernels::Neon(neon) if v.len().is_multiple_of(4) => neon.axpy(w, v, out),
            _ => {
                for (o, v) in out.iter_mut().zip(v) {
                    *o += w * v;
                }
            }
        }
    }

    /// Attention's scores of `count` queries against the same run of cached keys, in
    /// IEEE half precision as the cache keeps them, one key's `hd` halves after
    /// another (the query heads of one key head for a token, or one head for several
    /// tokens): `scores[g · n + j] = queries[g · query_stride..][..hd] · keys[j · hd..][..hd]`,
    /// `n` being `scores.len() / count`, each score as [`Kernels::dot_f32`] gives it.
    /// The SIMD kernels read each key once for all the queries (reading it again for
    /// every query cost more than the products at a long context).
    pub fn group_dots(
        self,
        queries: &[f32],
        count: usize,
        query_stride: usize,
        hd: usize,
        keys: &[u16],
        scores: &mut [f32],
    ) {
        debug_assert!(count > 0 && scores.len().is_multiple_of(count));
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) if hd.is_multiple_of(8) => {
                simd.group_dots(queries, count, query_stride, hd, keys, scores)
            }
            _ => {
                let n = scores.len() / count;
                with_floats(&keys[..n * hd], |keys| {
                    for (i, score) in scores.iter_mut().enumerate() {
                        let (query, key) = (i / n * query_stride, i % n * hd);
                        *score = self.dot_f32(&queries[query..][..hd], &keys[key..][..hd]);
                    }
                });
            }
        }
    }

    /// Attention's weighted sums of the same run of cached values (halves, one
    /// position's `hd` after another) for `count` queries:
    /// `out[g · out_stride..][..hd] = Σ_j weights[g · n + j] · values[j · hd..][..hd]`,
    /// `n` being `weights.len() / count`, added position by position as
    /// [`Kernels::axpy`] adds them into zeros. The SIMD kernels read each value once for
    /// all the queries and keep the sums in registers across positions.
    pub fn group_sums(
        self,
        weights: &[f32],
        values: &[u16],
        out: &mut [f32],
        count: usize,
        out_stride: usize,
        hd: usize,
    ) {
        debug_assert!(count > 0 && weights.len().is_multiple_of(count));
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) if hd.is_multiple_of(8) => {
                simd.group_sums(weights, values, out, count, out_stride, hd)
            }
            _ => {
                let n = weights.len() / count;
                with_floats(&values[..n * hd], |values| {
                    for g in 0..count {
                        let out = &mut out[g * out_stride..][..hd];
                        out.fill(0.0);
                        for (j, &w) in weights[g * n..][..n].iter().enumerate() {
                            self.axpy(w, &values[j * hd..][..hd], out);
                        }
                    }
                });
            }
        }
    }

    /// The dot product of one `ty` weight row with the activation blocks covering it.
    pub fn dot(self, ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
        match self {
            Kernels::Portable => quant::dot_portable(ty, row, x),
            #[cfg(target_arch = "x86_64")]
            Kernels::X86(simd) => simd.dot(ty, row, x),
            #[cfg(target_arch = "aarch64")]
            Kernels::Neon(neon) => neon.dot(ty, row, x),
        }
    }
}

thread_local! {
    /// Each thread's run of cached halves as floats, for the kernels without a
    /// half-precision load: kept between calls so that a decode step does not allocate.
    static FLOATS: std::cell::RefCell<Vec<f32>> = std::cell::RefCell::default();
}

/// Calls `f` with `halves` as floats, converted into the thread's buffer.
fn with_floats<R>(halves: &[u16], f: impl FnOnce(&[f32]) -> R) -> R {
    FLOATS.with_borrow_mut(|floats| {
        floats.clear();
        floats.extend(halves.iter().map(|&h| quant::f16_to_f32(h)));
        f(floats)
    })
}

/// What the kernels read of a product's activations besides their blocks, made once
/// per product by [`Kernels::prepare`] or [`Kernels::prepare_floats`] and shared by
/// its tasks: the corrections the interleaved products start from, or the values
/// as floats that tiles of float weights read; empty where no kernel needs them.
#[derive(Debug, Default)]
pub struct Prepared {
    sums: Vec<i16>,
    corrections: Vec<i32>,
    halves: Vec<[i16; 2]>,
    floats: Vec<f32>,
}

impl Prepared {
    /// Token `t`'s activations among `x` (`blocks` a token) and what was prepared of
    /// them.
    fn token<'a>(&'a self, x: &'a [Q8Block], blocks: usize, t: usize) -> interleaved::Token<'a> {
        let at = t * blocks..(t + 1) * blocks;
        interleaved::Token {
            x: &x[at.clone()],
            sums: &self.sums[at.clone()],
            corrections: &self.corrections[at.clone()],
            halves: &self.halves[at],
        }
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Each engine thread's buffer of unpacked rows, kept between products so that a
    /// prompt allocates only on its first matrices.
    static UNPACKED: std::cell::RefCell<x86::Unpacked> = std::cell::RefCell::default();
}

/// The whole tiles of `dot_rows_tokens` over rows unpacked once (`None` when `ty` has
/// no unpacked form); returns the rows and tokens they covered.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn unpacked_tiles(
    simd: x86::Simd,
    ty: QuantType,
    rows: &[u8],
    row_bytes: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
    unpacked: &mut x86::Unpacked,
) -> Option<(usize, usize)> {
    let full_rows = out.len() / tokens / x86::TILE_ROWS * x86::TILE_ROWS;
    let blocks = x.len() / tokens;
    let whole = &rows[..full_rows * row_bytes];
    if !simd.unpack(ty, whole, row_bytes, blocks, unpacked) {
        return None;
    }
    Some(each_tile(x, tokens, out, |first, xs, tile| {
        simd.dot_tile_unpacked(unpacked, first, xs, tile)
    }))
}

/// The whole tiles of `dot_rows_tokens` over packed Q6_K rows; returns the rows and
/// tokens they covered.
#[cfg(target_arch = "x86_64")]
fn packed_tiles(
    simd: x86::Simd,
    ty: QuantType,
    rows: &[u8],
    row_bytes: usize,
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
) -> (usize, usize) {
    let kernel = match ty {
        QuantType::Q6K => x86::Simd::dot_tile_q6k,
        QuantType::Q8_0 => x86::Simd::dot_tile_q8_0,
        _ => return (0, 0),
    };
    each_tile(x, tokens, out, |first, xs, tile| {
        let group = std::array::from_fn(|r| &rows[(first + r) * row_bytes..][..row_bytes]);
        kernel(simd, group, xs, tile);
    })
}

/// The whole tiles of `dot_rows_tokens` over F16, BF16 or F32 rows, against the
/// tokens' activations as floats (`floats`, made once per product); returns the rows
/// and tokens they covered. Tokens go in the outer loop: a tile's four tokens of floats
/// stay in L1 while the task's rows pass, rather than every token's floats passing
/// through L1 for each pair of rows.
#[cfg(target_arch = "x86_64")]
fn float_tiles(
    simd: x86::Simd,
    ty: QuantType,
    rows: &[u8],
    row_bytes: usize,
    tokens: usize,
    floats: &[f32],
    out: &mut [f32],
) -> (usize, usize) {
    use x86::{TILE_ROWS, TILE_TOKENS as T};
    let cols = floats.len() / tokens;
    let count = out.len() / tokens;
    let full_rows = count - count % TILE_ROWS;
    let full_tokens = tokens - tokens % T;
    let mut tile = [[0.0; T]; TILE_ROWS];
    for t0 in (0..full_tokens).step_by(T) {
        let xs = std::array::from_fn(|t| &floats[(t0 + t) * cols..(t0 + t + 1) * cols]);
        for first in (0..full_rows).step_by(TILE_ROWS) {
            let group = std::array::from_fn(|r| &rows[(first + r) * row_bytes..][..row_bytes]);
            simd.dot_tile_float(ty, group, xs, &mut tile);
            for (r, values) in tile.iter().enumerate() {
                for (t, value) in values.iter().enumerate() {
                    out[(first + r) * tokens + t0 + t] = *value;
                }
            }
        }
    }
    (full_rows, full_tokens)
}

/// Runs `kernel(first_row, tokens' activations, tile)` over every whole tile of
/// `TILE_ROWS` rows by `TILE_TOKENS` tokens and scatters each tile into `out`
/// (`out[row * tokens + token]`); returns the rows and tokens the tiles covered.
#[cfg(target_arch = "x86_64")]
fn each_tile(
    x: &[Q8Block],
    tokens: usize,
    out: &mut [f32],
    mut kernel: impl FnMut(
        usize,
        [&[Q8Block]; x86::TILE_TOKENS],
        &mut [[f32; x86::TILE_TOKENS]; x86::TILE_ROWS],
    ),
) -> (usize, usize) {
    use x86::{TILE_ROWS, TILE_TOKENS as T};
    let count = out.len() / tokens;
    let blocks = x.len() / tokens;
    let full_rows = count - count % TILE_ROWS;
    let full_tokens = tokens - tokens % T;
    let mut tile = [[0.0; T]; TILE_ROWS];
    for first in (0..full_rows).step_by(TILE_ROWS) {
        for t0 in (0..full_tokens).step_by(T) {
            let xs = std::array::from_fn(|t| &x[(t0 + t) * blocks..(t0 + t + 1) * blocks]);
            kernel(first, xs, &mut tile);
            for (r, values) in tile.iter().enumerate() {
                for (t, value) in values.iter().enumerate() {
                    out[(first + r) * tokens + t0 + t] = *value;
                }
            }
        }
    }
    (full_rows, full_tokens)
}

/// The number of threads the engine computes with: `RAYON_NUM_THREADS` if set (the
/// variable candle's CPU path also honours), otherwise one per core.
pub fn thread_count() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests;
