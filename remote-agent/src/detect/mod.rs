//! Device detection: what a hive offers workers (NVIDIA GPUs, the CPU), its memory and
//! the free space for models.

mod disk;
mod nvidia;
mod proc;
mod uname;

use std::path::Path;
use std::thread;

use rbee_protocol::agent::AgentVersion;
use rbee_protocol::{DeviceInfo, DeviceKind, HiveCapabilities, Level, VERSION};

use crate::cancel::CancelFlag;
use crate::error::AgentError;
use crate::report::Reporter;

/// The agent's version and the machine it runs on.
pub fn agent_version() -> AgentVersion {
    let uname = uname::uname();
    AgentVersion {
        version: VERSION.to_owned(),
        os: uname.os,
        arch: uname.arch,
    }
}

/// The NVIDIA GPUs this machine has; none without a driver.
pub fn gpu_devices() -> Vec<DeviceInfo> {
    nvidia::scan().devices
}

/// Detects everything `hive start` and `hive refresh` record, narrating what it finds.
pub fn detect_capabilities(
    install_dir: &Path,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<HiveCapabilities, AgentError> {
    let uname = uname::uname();
    let memory = proc::read_meminfo()?;
    let cpu = proc::read_cpuinfo()?;
    let disk_free = disk::model_cache_free(install_dir)?;

    // Initialising NVML takes seconds on a machine with many GPUs: the one step of
    // detection worth stopping after.
    let gpus = nvidia::scan();
    cancel.check()?;
    for note in &gpus.notes {
        report.narrate(Level::Info, "detect", note.clone());
    }

    // The cores a worker may use: the scheduler's affinity and cgroup limits count,
    // which /proc/cpuinfo does not know about.
    let cores = thread::available_parallelism()
        .ok()
        .and_then(|cores| u32::try_from(cores.get()).ok())
        .unwrap_or(cpu.processors.max(1));
    let cpu_device = DeviceInfo {
        id: "CPU-0".to_owned(),
        kind: DeviceKind::Cpu,
        index: 0,
        name: cpu.model.unwrap_or_else(|| format!("{} CPU", uname.arch)),
        memory_total: memory.total,
        memory_free: memory.available,
        compute_capability: None,
        driver: None,
        cores: Some(cores),
    };

    let mut devices = gpus.devices;
    devices.push(cpu_device);
    report.narrate(
        Level::Info,
        "detect",
        format!(
            "{}: {}; {} GiB RAM, {} GiB free for models",
            uname.hostname,
            devices
                .iter()
                .map(|d| format!("{} {}", d.id, d.name))
                .collect::<Vec<_>>()
                .join(", "),
            memory.total >> 30,
            disk_free >> 30,
        ),
    );

    Ok(HiveCapabilities {
        agent_version: VERSION.to_owned(),
        os: uname.os,
        arch: uname.arch,
        hostname: uname.hostname,
        devices,
        ram_total: memory.total,
        ram_available: memory.available,
        disk_free,
    })
}
