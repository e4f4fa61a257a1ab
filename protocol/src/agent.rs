//! The answers of the hive agent (`rbee-hive`) that are not capabilities: what the
//! queen reads from the `result` event of `version` and `status`. (The lines of its
//! `serve` session are in the `serve` module.)

use serde::{Deserialize, Serialize};

use crate::capabilities::HiveCapabilities;

/// The agent's build and the system it runs on; the queen compares `version` with its
/// own and `os`/`arch` with the binaries it would push.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentVersion {
    pub version: String,
    /// Kernel name, lower case, as Rust names it (`linux`, `macos`).
    pub os: String,
    /// Machine, as Rust names it (`x86_64`, `aarch64`).
    pub arch: String,
}

/// The files under `<install_dir>/bin` with their sha256, and the platform (machine
/// and C library): what `hive install` compares with the binaries it would push.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InstalledBinaries {
    pub os: String,
    pub arch: String,
    /// The hive's C library; `None` from an agent that predates the field (the queen
    /// then asks the shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libc: Option<crate::platform::Libc>,
    pub sha256: std::collections::BTreeMap<String, String>,
}

/// A worker the agent knows from its state file under `<install_dir>/workers/`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KnownWorker {
    /// The state file's name without `.json`.
    pub id: String,
    /// The file as written by the agent that spawned the worker; `None` when it could
    /// not be read or is not a worker record (see `problem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkerRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The agent's `status`: its version, the hive's capabilities, where it is installed
/// and which workers it has state for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AgentStatus {
    pub version: AgentVersion,
    /// The install directory with `~` expanded on the hive.
    pub install_dir: String,
    pub capabilities: HiveCapabilities,
    pub workers: Vec<KnownWorker>,
}

/// A worker's state file, `<install_dir>/workers/<worker_id>.json`, written by the
/// agent that spawned it. It outlives the agent, so any later agent run (and a
/// restarted queen) can find, list and stop the worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub worker_id: String,
    pub pid: u32,
    /// The model as the operator named it.
    pub model: String,
    /// The GGUF file the worker loads, absolute.
    pub model_path: String,
    pub device: String,
    pub port: u16,
    /// Where the queen reaches the worker.
    pub url: String,
    /// The worker's combined stdout and stderr, absolute.
    pub log: String,
    pub queen_url: String,
    pub started_unix_s: u64,
    /// The memory the agent estimated the worker to need when it started it (0 when
    /// the device reports none).
    #[serde(default)]
    pub memory_bytes: u64,
}

/// One entry of the agent's `worker-list`: the state file and whether its process runs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HiveWorker {
    #[serde(flatten)]
    pub record: WorkerRecord,
    pub alive: bool,
}
