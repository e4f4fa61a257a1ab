//! NVIDIA GPUs through NVML, loaded at run time: a hive without the NVIDIA driver
//! simply has no GPUs.

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use rbee_protocol::{DeviceInfo, DeviceKind};

/// What NVML found, and what the operator should hear about it.
pub struct GpuScan {
    pub devices: Vec<DeviceInfo>,
    /// One line each: why there are no GPUs, or a GPU that could not be read.
    pub notes: Vec<String>,
}

pub fn scan() -> GpuScan {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(NvmlError::LibloadingError(_)) => {
            return GpuScan {
                devices: Vec::new(),
                notes: vec!["no NVIDIA driver library (libnvidia-ml.so.1): CPU only".to_owned()],
            };
        }
        Err(error) => {
            return GpuScan {
                devices: Vec::new(),
                notes: vec![format!(
                    "NVIDIA library found but not usable ({error}): CPU only"
                )],
            };
        }
    };
    let mut notes = Vec::new();
    let count = nvml.device_count().unwrap_or_else(|error| {
        notes.push(format!("cannot count NVIDIA GPUs ({error}): CPU only"));
        0
    });
    let driver = nvml.sys_driver_version().ok();
    let mut devices = Vec::new();
    for index in 0..count {
        match read_device(&nvml, index, driver.clone()) {
            Ok(device) => devices.push(device),
            Err(error) => notes.push(format!("GPU {index} skipped: {error}")),
        }
    }
    GpuScan { devices, notes }
}

fn read_device(nvml: &Nvml, index: u32, driver: Option<String>) -> Result<DeviceInfo, NvmlError> {
    let device = nvml.device_by_index(index)?;
    let memory = device.memory_info()?;
    // Compute capability is informative only; some virtual GPUs do not report it.
    let compute_capability = device
        .cuda_compute_capability()
        .ok()
        .map(|cc| format!("{}.{}", cc.major, cc.minor));
    Ok(DeviceInfo {
        id: format!("GPU-{index}"),
        kind: DeviceKind::Cuda,
        index,
        name: device.name()?,
        memory_total: memory.total,
        memory_free: memory.free,
        compute_capability,
        driver,
        cores: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hive_without_gpus_says_why() {
        let scan = scan();
        if scan.devices.is_empty() {
            assert!(
                !scan.notes.is_empty(),
                "a CPU-only result must explain itself"
            );
        }
        for (position, device) in scan.devices.iter().enumerate() {
            assert_eq!(device.id, format!("GPU-{position}"));
            assert!(device.memory_free <= device.memory_total);
        }
    }
}
