//! The `--device` argument: which candle backend runs the model.

use std::str::FromStr;

use candle_core::Device;

pub use rbee_protocol::DeviceSpec;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open device {spec}: {source} (was the worker built with the `cuda` or `metal` feature?)"
)]
pub struct DeviceError {
    spec: DeviceSpec,
    source: candle_core::Error,
}

/// The candle device `spec` names.
pub fn open(spec: DeviceSpec) -> Result<Device, DeviceError> {
    let opened = match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => Device::new_cuda(n as usize),
        DeviceSpec::Metal => Device::new_metal(0),
    };
    opened.map_err(|source| DeviceError { spec, source })
}

/// How candle multiplies by quantized weights on a CUDA device (`--gpu-matmul`).
///
/// candle's default CUDA kernels quantize the activations to 8 bits (Q8_1) before the
/// dot products; on the test model (Q4_1) that path answered the capital-of-France
/// check with nonsense on an H200, while the others answered it right (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMatmul {
    /// Weights stay quantized; each product dequantizes them against f32 activations
    /// (one kernel per token, a dequantized copy and cuBLAS for a prompt).
    Dmmv,
    /// candle's kernels with activations quantized to Q8_1.
    Q8,
    /// Weights dequantized to f16 at load: 2 bytes a weight.
    F16,
    /// Weights dequantized to f32 at load: 4 bytes a weight.
    F32,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown GPU matmul `{0}` (expected dmmv, q8, f16 or f32)")]
pub struct UnknownGpuMatmul(String);

impl FromStr for GpuMatmul {
    type Err = UnknownGpuMatmul;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dmmv" => Ok(GpuMatmul::Dmmv),
            "q8" => Ok(GpuMatmul::Q8),
            "f16" => Ok(GpuMatmul::F16),
            "f32" => Ok(GpuMatmul::F32),
            _ => Err(UnknownGpuMatmul(s.to_owned())),
        }
    }
}

impl GpuMatmul {
    /// Sets candle up for this mode. candle reads its dequantize-at-load switches from
    /// the environment when a thread first loads a quantized matrix, so this must run
    /// before any other thread starts (the worker's `main` calls it first thing).
    ///
    /// # Safety
    /// No other thread may be running: it writes the process environment.
    pub unsafe fn configure(self, device: DeviceSpec) {
        if !matches!(device, DeviceSpec::Cuda(_)) {
            return;
        }
        #[cfg(feature = "cuda")]
        candle_core::quantized::cuda::set_force_dmmv(self == GpuMatmul::Dmmv);
        let switch = match self {
            GpuMatmul::F16 => Some("CANDLE_DEQUANTIZE_ALL_F16"),
            GpuMatmul::F32 => Some("CANDLE_DEQUANTIZE_ALL"),
            GpuMatmul::Dmmv | GpuMatmul::Q8 => None,
        };
        if let Some(switch) = switch {
            // SAFETY: the caller guarantees no other thread runs.
            unsafe { std::env::set_var(switch, "1") };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_matmul_modes_parse() {
        for (text, mode) in [
            ("dmmv", GpuMatmul::Dmmv),
            ("q8", GpuMatmul::Q8),
            ("f16", GpuMatmul::F16),
            ("f32", GpuMatmul::F32),
        ] {
            assert_eq!(text.parse::<GpuMatmul>().ok(), Some(mode));
        }
        let error = "int4"
            .parse::<GpuMatmul>()
            .expect_err("int4 is no mode")
            .to_string();
        assert!(error.contains("dmmv, q8, f16 or f32"), "{error}");
    }
}
