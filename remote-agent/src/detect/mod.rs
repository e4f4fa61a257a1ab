//! Device detection: what a hive offers workers (NVIDIA GPUs, the CPU), its memory and
//! the free space for models, and the platform it runs (OS, architecture, C library).

pub mod c_library;
mod disk;
mod nvidia;
mod proc;
mod uname;

use std::path::Path;
use std::thread;

use rbee_protocol::agent::AgentVersion;
use rbee_protocol::{DeviceInfo, DeviceKind, ErrorCode, HiveCapabilities, Level, VERSION};

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

/// A JSON list of devices (`DeviceInfo`, as `detect` reports them) that stands in for
/// the GPUs NVML finds, and for the CPU when it holds a `cpu` device: tests and demos
/// place workers on devices, and memory sizes, that the machine does not have.
pub const DEVICES_ENV: &str = "RBEE_HIVE_DEVICES";
/// The same list in a file, for an agent whose environment is set by sshd (`SetEnv`
/// takes no JSON).
pub const DEVICES_FILE_ENV: &str = "RBEE_HIVE_DEVICES_FILE";

/// Whether the devices are declared (by [`DEVICES_ENV`] or [`DEVICES_FILE_ENV`])
/// instead of detected. A declared device's free memory is what it has with no worker
/// running; the agent takes what its workers hold from it, as a real device's reading
/// would show.
pub fn devices_are_declared() -> bool {
    std::env::var_os(DEVICES_ENV).is_some() || std::env::var_os(DEVICES_FILE_ENV).is_some()
}

/// The devices named in [`DEVICES_ENV`] or the file [`DEVICES_FILE_ENV`] names, if
/// either is set.
fn devices_override() -> Result<Option<Vec<DeviceInfo>>, AgentError> {
    let (json, source) = if let Some(json) = std::env::var_os(DEVICES_ENV) {
        (json.to_string_lossy().into_owned(), DEVICES_ENV.to_owned())
    } else if let Some(path) = std::env::var_os(DEVICES_FILE_ENV) {
        let path = std::path::PathBuf::from(path);
        let json = std::fs::read_to_string(&path).map_err(|e| AgentError::io("read", &path, e))?;
        (json, format!("{} ({DEVICES_FILE_ENV})", path.display()))
    } else {
        return Ok(None);
    };
    serde_json::from_str(&json).map(Some).map_err(|error| {
        AgentError::refused(
            ErrorCode::BadRequest,
            format!("{source} is not a JSON list of devices: {error}"),
            format!("unset {DEVICES_ENV} and {DEVICES_FILE_ENV} to detect the real devices"),
        )
    })
}

/// The NVIDIA GPUs this machine has; none without a driver.
pub fn gpu_devices() -> Result<Vec<DeviceInfo>, AgentError> {
    Ok(match devices_override()? {
        Some(devices) => devices
            .into_iter()
            .filter(|d| d.kind == DeviceKind::Cuda)
            .collect(),
        None => nvidia::scan().devices,
    })
}

/// The CPU as a device: its usable cores, and the RAM as its memory.
pub fn cpu_device() -> Result<DeviceInfo, AgentError> {
    let overridden = devices_override()?
        .and_then(|devices| devices.into_iter().find(|d| d.kind == DeviceKind::Cpu));
    if let Some(cpu) = overridden {
        return Ok(cpu);
    }
    let memory = proc::read_meminfo()?;
    let cpu = proc::read_cpuinfo()?;
    // The cores a worker may use: the scheduler's affinity and cgroup limits count,
    // which /proc/cpuinfo does not know about.
    let cores = thread::available_parallelism()
        .ok()
        .and_then(|cores| u32::try_from(cores.get()).ok())
        .unwrap_or(cpu.processors.max(1));
    Ok(DeviceInfo {
        id: "CPU-0".to_owned(),
        kind: DeviceKind::Cpu,
        index: 0,
        name: cpu
            .model
            .unwrap_or_else(|| format!("{} CPU", uname::uname().arch)),
        memory_total: memory.total,
        memory_free: memory.available,
        compute_capability: None,
        driver: None,
        cores: Some(cores),
    })
}

/// Detects everything `hive start` and `hive refresh` record, narrating what it finds.
pub fn detect_capabilities(
    install_dir: &Path,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<HiveCapabilities, AgentError> {
    let uname = uname::uname();
    let memory = proc::read_meminfo()?;
    let disk_free = disk::model_cache_free(install_dir)?;

    let mut devices = if devices_override()?.is_some() {
        report.narrate(
            Level::Info,
            "detect",
            format!("devices as {DEVICES_ENV} names them, not as detected"),
        );
        gpu_devices()?
    } else {
        // Initialising NVML takes seconds on a machine with many GPUs: the one step
        // of detection worth stopping after.
        let gpus = nvidia::scan();
        cancel.check()?;
        for note in &gpus.notes {
            report.narrate(Level::Info, "detect", note.clone());
        }
        gpus.devices
    };
    devices.push(cpu_device()?);
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
        libc: c_library::detect(),
        hostname: uname.hostname,
        devices,
        ram_total: memory.total,
        ram_available: memory.available,
        disk_free,
    })
}
