//! The answers of the hive agent (`rbee-hive`) that are not capabilities: what the
//! queen reads from the `result` event of `version` and `status`.

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

/// A worker the agent knows from its state file under `<install_dir>/workers/`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KnownWorker {
    /// The state file's name without `.json`.
    pub id: String,
    /// The file's JSON as written by the agent that spawned the worker; `None` when it
    /// could not be read or parsed (see `problem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
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
