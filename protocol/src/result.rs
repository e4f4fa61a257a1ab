//! What an operation answers: the typed payload of a job's `result` event, whoever
//! sends it (the hive agent for its commands, the queen for the operation).
//!
//! On the wire a result is `{"type": "result", "hive": …, "kind": "<variant>",
//! "value": <payload>}`: `kind` says which shape `value` has, so a reader matches a
//! variant instead of guessing from the keys present.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentStatus, AgentVersion, HiveWorker, InstalledBinaries};
use crate::capabilities::HiveCapabilities;
use crate::cluster::{ClusterStatus, HiveSummary, WorkerView};
use crate::error::ErrorCode;
use crate::inference::StopReason;
use crate::inventory::{HiveProbe, InventoryChange};
use crate::models::{ModelEntry, ModelPresence, ModelTransfer};

/// The answer of an operation or of one agent command.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum OperationResult {
    /// The agent's `version`.
    AgentVersion(AgentVersion),
    /// The agent's `detect`.
    Capabilities(HiveCapabilities),
    /// The agent's `status`.
    AgentStatus(AgentStatus),
    /// The agent's `binaries`.
    Binaries(InstalledBinaries),
    /// The agent's `worker-spawn`: the worker it started.
    SpawnedWorker(HiveWorker),
    /// The agent's `worker-stop`.
    WorkerStopped(WorkerStopped),
    /// The agent's `worker-list`: the workers it has state files for.
    HiveWorkers(Vec<HiveWorker>),
    /// The agent's `worker-logs`, after the lines (sent as narration).
    WorkerLogs(WorkerLogs),
    /// `model list` on one hive.
    Models(Vec<ModelEntry>),
    /// A hive's OS, architecture and C library (`model list` names each hive's).
    Platform(crate::platform::Platform),
    /// `model get` and `model delete` on one hive.
    Model(ModelEntry),
    /// `model download` and a pushed file's receipt on one hive.
    ModelTransfer(ModelTransfer),
    /// The agent's `model-has`.
    ModelPresence(ModelPresence),
    /// The queen's `status`.
    ClusterStatus(ClusterStatus),
    /// `inventory list`.
    Inventory(Vec<HiveSummary>),
    /// `hive probe`: a candidate hive reached and checked.
    HiveProbe(HiveProbe),
    /// `hive add`, `hive remove` and `inventory reload`: what changed in the inventory.
    InventoryChange(InventoryChange),
    /// `worker list`.
    Workers(Vec<WorkerView>),
    /// `worker get`, `worker spawn` and `wait-ready`: the worker as the queen sees it.
    Worker(WorkerView),
    /// Every operation that fans out over hives ends with one row per hive.
    Recap(Vec<RecapRow>),
    /// An `infer` run's numbers, after its tokens.
    Inference(InferenceStats),
    /// One playbook task on one hive (the event's `hive` names it).
    PlaybookTask(TaskOutcome),
    /// A playbook run's PLAY RECAP.
    PlaybookRecap(PlaybookRecap),
}

impl OperationResult {
    /// The `kind` this result has on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            OperationResult::AgentVersion(_) => "agent_version",
            OperationResult::Capabilities(_) => "capabilities",
            OperationResult::AgentStatus(_) => "agent_status",
            OperationResult::Binaries(_) => "binaries",
            OperationResult::SpawnedWorker(_) => "spawned_worker",
            OperationResult::WorkerStopped(_) => "worker_stopped",
            OperationResult::HiveWorkers(_) => "hive_workers",
            OperationResult::WorkerLogs(_) => "worker_logs",
            OperationResult::Models(_) => "models",
            OperationResult::Platform(_) => "platform",
            OperationResult::Model(_) => "model",
            OperationResult::ModelTransfer(_) => "model_transfer",
            OperationResult::ModelPresence(_) => "model_presence",
            OperationResult::ClusterStatus(_) => "cluster_status",
            OperationResult::Inventory(_) => "inventory",
            OperationResult::HiveProbe(_) => "hive_probe",
            OperationResult::InventoryChange(_) => "inventory_change",
            OperationResult::Workers(_) => "workers",
            OperationResult::Worker(_) => "worker",
            OperationResult::Recap(_) => "recap",
            OperationResult::Inference(_) => "inference",
            OperationResult::PlaybookTask(_) => "playbook_task",
            OperationResult::PlaybookRecap(_) => "playbook_recap",
        }
    }
}

/// How `worker-stop` ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The process had already gone; only its state file was removed.
    NotRunning,
    /// It exited after SIGTERM.
    Stopped,
    /// It was still running at the timeout and got SIGKILL.
    Killed,
}

impl StopOutcome {
    pub fn describe(self) -> &'static str {
        match self {
            StopOutcome::NotRunning => "was not running",
            StopOutcome::Stopped => "stopped",
            StopOutcome::Killed => "killed after the stop timeout",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WorkerStopped {
    pub worker_id: String,
    pub outcome: StopOutcome,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WorkerLogs {
    pub worker_id: String,
    /// The log file on the hive, absolute.
    pub log: String,
    /// How many lines were shown.
    pub lines: u64,
}

/// How one hive came out of an operation.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Ok,
    Changed,
    Failed,
    Unreachable,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Changed => "changed",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
        }
    }
}

/// One hive's line of a fan-out's recap.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RecapRow {
    pub hive: String,
    pub status: HostStatus,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// What an `infer` run measured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InferenceStats {
    pub worker_id: String,
    pub hive_id: String,
    pub device: String,
    pub stop_reason: StopReason,
    pub prompt_tokens: u32,
    pub tokens: u32,
    /// As the worker measured it.
    pub tokens_per_s: f64,
    /// From the worker's receipt of the request to its first token.
    pub worker_ttft_ms: f64,
    /// From the queen's start of the request to the first token it relayed.
    pub ttft_ms: f64,
    pub total_ms: f64,
}

/// How a playbook task came out on one hive.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Unreachable,
    Skipped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Changed => "changed",
            TaskStatus::Failed => "failed",
            TaskStatus::Unreachable => "unreachable",
            TaskStatus::Skipped => "skipped",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub play: String,
    pub task: String,
    pub status: TaskStatus,
    pub message: String,
}

/// A hive's line of the PLAY RECAP. As in Ansible, `ok` counts changed tasks too.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayTally {
    pub hive: String,
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PlaybookRecap {
    pub play_recap: Vec<PlayTally>,
    /// Whether the run only said what it would do.
    pub check: bool,
    /// Why the run stopped before its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobEvent;

    #[test]
    fn a_result_event_names_its_kind_beside_its_value_and_round_trips() {
        let event = JobEvent::Result {
            hive: Some("h".to_owned()),
            result: OperationResult::WorkerStopped(WorkerStopped {
                worker_id: "w1".to_owned(),
                outcome: StopOutcome::NotRunning,
            }),
        };
        let json: serde_json::Value = serde_json::to_value(&event).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({"type": "result", "hive": "h", "kind": "worker_stopped",
                "value": {"worker_id": "w1", "outcome": "not_running"}})
        );
        assert_eq!(
            serde_json::from_value::<JobEvent>(json).expect("parse"),
            event
        );
        let recap = JobEvent::Result {
            hive: None,
            result: OperationResult::Recap(vec![RecapRow {
                hive: "h".to_owned(),
                status: HostStatus::Unreachable,
                message: "no route".to_owned(),
                code: Some(ErrorCode::Unreachable),
            }]),
        };
        let text = serde_json::to_string(&recap).expect("serialise");
        assert_eq!(
            serde_json::from_str::<JobEvent>(&text).expect("parse"),
            recap
        );
        assert_eq!(recap_kind(&recap), "recap");
    }

    fn recap_kind(event: &JobEvent) -> &'static str {
        match event {
            JobEvent::Result { result, .. } => result.kind(),
            _ => "",
        }
    }

    #[test]
    fn a_result_without_a_kind_or_of_another_shape_is_refused() {
        for line in [
            r#"{"type":"result","value":{"worker_id":"w1","outcome":"stopped"}}"#,
            r#"{"type":"result","kind":"worker_stopped","value":{"worker":"w1","outcome":"stopped"}}"#,
            r#"{"type":"result","kind":"no_such_kind","value":{}}"#,
        ] {
            assert!(serde_json::from_str::<JobEvent>(line).is_err(), "{line}");
        }
    }
}
