//! The cluster as the queen sees it: its workers (heartbeats plus what the queen adds),
//! its hives, itself. What `status`, `inventory list` and `worker list|get` answer.

use serde::{Deserialize, Serialize};

use crate::heartbeat::{WorkerHeartbeat, WorkerState};

/// A worker's state as its heartbeats say, or `stale` when they stopped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Loading,
    Ready,
    Busy,
    Draining,
    Stopping,
    Stale,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Stale => "stale",
            WorkerStatus::Loading => WorkerState::Loading.as_str(),
            WorkerStatus::Ready => WorkerState::Ready.as_str(),
            WorkerStatus::Busy => WorkerState::Busy.as_str(),
            WorkerStatus::Draining => WorkerState::Draining.as_str(),
            WorkerStatus::Stopping => WorkerState::Stopping.as_str(),
        }
    }
}

impl From<WorkerState> for WorkerStatus {
    fn from(state: WorkerState) -> Self {
        match state {
            WorkerState::Loading => WorkerStatus::Loading,
            WorkerState::Ready => WorkerStatus::Ready,
            WorkerState::Busy => WorkerStatus::Busy,
            WorkerState::Draining => WorkerStatus::Draining,
            WorkerState::Stopping => WorkerStatus::Stopping,
        }
    }
}

/// A worker as the queen sees it now.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerView {
    #[serde(flatten)]
    pub heartbeat: WorkerHeartbeat,
    pub status: WorkerStatus,
    pub last_seen_ms: u64,
    /// Requests this queen has running on the worker now.
    pub in_flight: u32,
    /// Tokens per second of the last request that ended on this worker, as the worker
    /// measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tokens_per_s: Option<f64>,
}

impl WorkerView {
    /// Requests the worker generates at once: the slots its heartbeat reports, or
    /// `fallback` for a worker that does not report them.
    pub fn capacity(&self, fallback: u32) -> u32 {
        match self.heartbeat.slots_total {
            0 => fallback.max(1),
            slots => slots,
        }
    }

    /// Slots not taken by this queen's requests in flight.
    pub fn free_slots(&self, fallback: u32) -> u32 {
        self.capacity(fallback).saturating_sub(self.in_flight)
    }

    pub fn is_schedulable(&self) -> bool {
        self.status != WorkerStatus::Stale && self.heartbeat.state.accepts_requests()
    }

    /// Whether the worker serves `model`: its model id, its file name, or that name
    /// without `.gguf`.
    pub fn serves(&self, model: &str) -> bool {
        let beat = &self.heartbeat;
        let names = [Some(beat.model.as_str()), beat.model_file.as_deref()];
        names
            .into_iter()
            .flatten()
            .any(|name| name == model || name.strip_suffix(".gguf") == Some(model))
    }
}

/// A hive of the inventory and what the queen last learnt of it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HiveSummary {
    pub alias: String,
    pub host: String,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    pub install_dir: String,
    pub groups: Vec<String>,
    pub online: bool,
    #[serde(default)]
    pub agent_version: Option<String>,
    /// The ids of its devices, once detected.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// The queen → hive direction: how its SSH commands fare.
    #[serde(default)]
    pub ssh: LinkHealth,
}

/// How one direction between the queen and a hive fares, judged without flapping: it
/// turns unhealthy only after several failures in a row and healthy again only after
/// several successes in a row (`[queen] ssh_unhealthy_after`, `ssh_healthy_after`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkHealth {
    /// `None` until it is judged: no command yet, or failures not yet enough.
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub last_success_unix_s: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_unix_s: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueenSummary {
    pub version: String,
    pub uptime_s: u64,
    pub jobs_running: usize,
}

/// The queen's `status`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub queen: QueenSummary,
    pub hives: Vec<HiveSummary>,
    pub workers: Vec<WorkerView>,
}
