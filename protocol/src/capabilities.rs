//! What a hive has: devices, memory and disk, as detected by the agent.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
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
    pub fn worker_device(&self) -> String {
        match self.kind {
            DeviceKind::Cpu => "cpu".to_owned(),
            DeviceKind::Cuda => format!("cuda:{}", self.index),
            DeviceKind::Metal => "metal".to_owned(),
        }
    }
}

/// Everything `hive start` / `hive refresh` learn about a hive.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HiveCapabilities {
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    pub hostname: String,
    pub devices: Vec<DeviceInfo>,
    pub ram_total: u64,
    pub ram_available: u64,
    /// Free bytes on the file system holding the model cache.
    pub disk_free: u64,
}
