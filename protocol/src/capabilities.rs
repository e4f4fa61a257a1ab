//! What a hive has: devices, memory and disk, as detected by the agent.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

/// The one name of a device a worker runs on, as `--device` and `worker spawn` take it
/// and as hives, the queen and workers print it: `cpu`, `cuda:N` (`cuda` is `cuda:0`)
/// or `metal`. On the wire it is that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceSpec {
    Cpu,
    Cuda(u32),
    Metal,
}

/// A device name that is none of `cpu`, `cuda:N` or `metal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a device name (expected cpu, cuda:N or metal)")]
pub struct UnknownDevice(pub String);

impl std::str::FromStr for DeviceSpec {
    type Err = UnknownDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "metal" => Ok(DeviceSpec::Metal),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| UnknownDevice(s.to_owned())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal => f.write_str("metal"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One device a worker can run on. `id` is the display name (`GPU-0`, `CPU-0`);
/// [`DeviceInfo::worker_device`] is the name a worker is spawned with (`cuda:0`, `cpu`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub id: String,
    pub kind: DeviceKind,
    pub index: u32,
    pub name: String,
    /// Memory of the device in bytes (VRAM for GPUs, RAM for the CPU).
    pub memory_total: u64,
    pub memory_free: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
}

impl DeviceInfo {
    pub fn worker_device(&self) -> DeviceSpec {
        match self.kind {
            DeviceKind::Cpu => DeviceSpec::Cpu,
            DeviceKind::Cuda => DeviceSpec::Cuda(self.index),
            DeviceKind::Metal => DeviceSpec::Metal,
        }
    }
}

/// Everything `hive start` / `hive refresh` learn about a hive.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HiveCapabilities {
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    /// The C library the hive's programs link against (`Unknown` from an agent that
    /// predates the field).
    #[serde(default)]
    pub libc: crate::platform::Libc,
    pub hostname: String,
    pub devices: Vec<DeviceInfo>,
    pub ram_total: u64,
    pub ram_available: u64,
    /// Free bytes on the file system holding the model cache.
    pub disk_free: u64,
}
