//! The worker's own CPU engine for llama-architecture GGUF models: weights stay in their
//! quantized blocks, each activation row is quantized once to Q8 blocks, and the dot
//! products run on kernels picked at start from the CPU's features.
//!
//! The rest of the worker sees only [`CpuLlama`] (load, forward) and [`Kernels`]; the
//! candle path still runs every other device, architecture and quantization type.

mod llama;
mod matrix;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use llama::{CpuLlama, CpuLoadError, ForwardError};
pub use matrix::QMatrix;

use quant::{Q8Block, QuantType};

/// The dot-product kernels, chosen once per process from the CPU's features.
#[derive(Debug, Clone, Copy)]
pub enum Kernels {
    /// Plain Rust, for any CPU.
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
}

impl Kernels {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = x86::Avx2::detect() {
            return Kernels::Avx2(avx2);
        }
        Kernels::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(_) => "avx2",
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
        let mut rows = rows.chunks_exact(row_bytes);
        #[cfg(target_arch = "x86_64")]
        if let Kernels::Avx2(avx2) = self {
            let mut groups = out.chunks_exact_mut(x86::ROWS_AT_ONCE);
            for values in &mut groups {
                let group = [(); x86::ROWS_AT_ONCE].map(|()| rows.next().unwrap_or_default());
                if !avx2.dot_rows(ty, group, x, values) {
                    for (value, row) in values.iter_mut().zip(group) {
                        *value = avx2.dot(ty, row, x);
                    }
                }
            }
            for (value, row) in groups.into_remainder().iter_mut().zip(rows) {
                *value = avx2.dot(ty, row, x);
            }
            return;
        }
        for (value, row) in out.iter_mut().zip(rows) {
            *value = self.dot(ty, row, x);
        }
    }

    /// `a · b` over f32, for attention scores.
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(avx2) if a.len().is_multiple_of(8) => avx2.dot_f32(a, b),
            _ => a.iter().zip(b).map(|(a, b)| a * b).sum(),
        }
    }

    /// `out += w * v` over f32, for attention's weighted sum of values.
    pub fn axpy(self, w: f32, v: &[f32], out: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(avx2) if v.len().is_multiple_of(8) => avx2.axpy(w, v, out),
            _ => {
                for (o, v) in out.iter_mut().zip(v) {
                    *o += w * v;
                }
            }
        }
    }

    /// The dot product of one `ty` weight row with the activation blocks covering it.
    pub fn dot(self, ty: QuantType, row: &[u8], x: &[Q8Block]) -> f32 {
        match self {
            Kernels::Portable => quant::dot_portable(ty, row, x),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(avx2) => avx2.dot(ty, row, x),
        }
    }
}

/// The number of threads the engine computes with: `RAYON_NUM_THREADS` if set (the
/// variable candle's CPU path also honours), otherwise one per core.
pub fn thread_count() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests;
