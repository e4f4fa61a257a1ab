//! `Operation`: the one typed command the keeper submits to the queen as a job.
//!
//! Tagged JSON, e.g. `{"operation":"hive_status","hive_id":"gpu-a"}`. Wherever an
//! operation names hives (`hive_id`), the value is a host pattern: an alias, a group,
//! a glob, or `all`.

use serde::{Deserialize, Serialize};

use crate::capabilities::DeviceSpec;
use crate::inference::InferenceRequest;
use crate::inventory::HiveSpec;
use crate::keep_alive::KeepAlive;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    /// The whole cluster: hives, workers, queen.
    Status,

    /// Push the agent and worker binaries (idempotent by checksum).
    HiveInstall {
        hive_id: String,
        #[serde(default)]
        accept_new_host_keys: bool,
    },
    HiveUninstall {
        hive_id: String,
    },
    /// Reach the hive, check the agent's version, detect devices, mark online.
    HiveStart {
        hive_id: String,
        #[serde(default)]
        accept_new_host_keys: bool,
    },
    HiveStop {
        hive_id: String,
    },
    HiveStatus {
        hive_id: String,
    },
    HiveList,
    HiveRefresh {
        hive_id: String,
    },
    /// Reach a hive that is not in the inventory yet, as the inventory would reach it
    /// with `hive` added: check its host key (trusting and recording a new one only
    /// with `accept_new_host_keys`), platform, free disk and install directory.
    HiveProbe {
        alias: String,
        #[serde(flatten)]
        hive: HiveSpec,
        #[serde(default)]
        accept_new_host_keys: bool,
    },
    /// Write `hive` into the queen's inventory file (its comments and order kept) and
    /// reload the inventory.
    HiveAdd {
        alias: String,
        #[serde(flatten)]
        hive: HiveSpec,
    },
    /// Take a hive out of the queen's inventory file and reload the inventory.
    HiveRemove {
        alias: String,
    },

    /// Download `repo` or `repo:file.gguf` from Hugging Face on the hive.
    ModelDownload {
        hive_id: String,
        model: String,
    },
    /// Stream a model file from the operator's machine to the hive.
    ModelPush {
        hive_id: String,
        path: String,
    },
    ModelList {
        hive_id: String,
    },
    ModelGet {
        hive_id: String,
        model: String,
    },
    ModelDelete {
        hive_id: String,
        model: String,
    },

    WorkerSpawn {
        hive_id: String,
        model: String,
        #[serde(default = "default_device")]
        device: DeviceSpec,
        /// The worker's sequence slots (its `--parallel`); its default (4 on the CPU
        /// engine) when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parallel: Option<u32>,
        /// Key/value positions of all its slots together (its `--ctx-size`); its default
        /// when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctx_size: Option<u32>,
        /// Unload the worker after this long without requests; a worker started by
        /// hand is never unloaded for idleness when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_alive: Option<KeepAlive>,
    },
    WorkerList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hive_id: Option<String>,
    },
    WorkerGet {
        worker_id: String,
    },
    WorkerStop {
        worker_id: String,
    },
    WorkerLogs {
        worker_id: String,
        #[serde(default = "default_log_lines")]
        lines: u32,
        #[serde(default)]
        follow: bool,
    },
    /// Wait until a ready worker serves `model` (on `hive_id`, when given).
    WaitReady {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hive_id: Option<String>,
        #[serde(default = "default_wait_timeout_s")]
        timeout_s: u64,
    },

    /// Generate tokens with the best ready worker serving `model`.
    Infer {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hive_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
        /// Spawn a worker when none serves the model and a hive holds it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        spawn: bool,
        /// How long the worker that serves this request stays loaded without requests
        /// (Ollama's `keep_alive`); the queen's `keep_alive` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_alive: Option<KeepAlive>,
        #[serde(flatten)]
        request: InferenceRequest,
    },
    /// Start a worker for `model` where it fits best (on `hive_id`, when given) unless
    /// one already serves it or is being started; returns once it is ready.
    ModelLoad {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hive_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_alive: Option<KeepAlive>,
    },

    InventoryList,
    InventoryCheck {
        #[serde(default = "default_all")]
        hive_id: String,
    },
    /// Read the inventory file again; hives whose settings did not change keep their
    /// connection and state.
    InventoryReload,

    /// Run a playbook (its TOML text) against the inventory.
    PlaybookRun {
        name: String,
        content: String,
        #[serde(default)]
        check: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<String>,
        /// The playbook's directory, where its relative paths start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
    },
}

/// The most sequence slots one worker may be asked for.
pub const MAX_PARALLEL: u32 = 256;
/// The fewest key/value positions a slot may have (the worker's own limit too).
pub const MIN_SLOT_CONTEXT: u32 = 64;

fn default_device() -> DeviceSpec {
    DeviceSpec::Cpu
}

fn default_log_lines() -> u32 {
    100
}

fn default_wait_timeout_s() -> u64 {
    300
}

fn default_all() -> String {
    "all".to_owned()
}

impl Operation {
    /// Checks the fields whose ranges the types cannot say (an `infer`'s sampling);
    /// the queen calls it where an operation enters, before a job exists.
    pub fn validate(&self) -> Result<(), crate::inference::InvalidField> {
        use crate::inference::InvalidField;
        match self {
            Operation::Infer { request, .. } => request.validate(),
            Operation::WorkerSpawn {
                parallel, ctx_size, ..
            } => {
                if let Some(n) = parallel.filter(|n| !(1..=MAX_PARALLEL).contains(n)) {
                    return Err(InvalidField {
                        field: "parallel",
                        allowed: "between 1 and 256",
                        got: n.to_string(),
                    });
                }
                let slots = parallel.unwrap_or(1);
                if let Some(n) = ctx_size.filter(|&n| n / slots < MIN_SLOT_CONTEXT) {
                    return Err(InvalidField {
                        field: "ctx_size",
                        allowed: "at least 64 positions for each slot",
                        got: n.to_string(),
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The operation's tag, as it appears in JSON, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Status => "status",
            Operation::HiveInstall { .. } => "hive_install",
            Operation::HiveUninstall { .. } => "hive_uninstall",
            Operation::HiveStart { .. } => "hive_start",
            Operation::HiveStop { .. } => "hive_stop",
            Operation::HiveStatus { .. } => "hive_status",
            Operation::HiveList => "hive_list",
            Operation::HiveRefresh { .. } => "hive_refresh",
            Operation::HiveProbe { .. } => "hive_probe",
            Operation::HiveAdd { .. } => "hive_add",
            Operation::HiveRemove { .. } => "hive_remove",
            Operation::ModelDownload { .. } => "model_download",
            Operation::ModelPush { .. } => "model_push",
            Operation::ModelList { .. } => "model_list",
            Operation::ModelGet { .. } => "model_get",
            Operation::ModelDelete { .. } => "model_delete",
            Operation::ModelLoad { .. } => "model_load",
            Operation::WorkerSpawn { .. } => "worker_spawn",
            Operation::WorkerList { .. } => "worker_list",
            Operation::WorkerGet { .. } => "worker_get",
            Operation::WorkerStop { .. } => "worker_stop",
            Operation::WorkerLogs { .. } => "worker_logs",
            Operation::WaitReady { .. } => "wait_ready",
            Operation::Infer { .. } => "infer",
            Operation::InventoryList => "inventory_list",
            Operation::InventoryCheck { .. } => "inventory_check",
            Operation::InventoryReload => "inventory_reload",
            Operation::PlaybookRun { .. } => "playbook_run",
        }
    }
}
