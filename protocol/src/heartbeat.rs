//! The worker's heartbeat to the queen: the only way the queen learns about workers.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Loading,
    Ready,
    Busy,
    Draining,
    Stopping,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Loading => "loading",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
            WorkerState::Stopping => "stopping",
        }
    }

    /// Whether the scheduler may send this worker new requests.
    pub fn accepts_requests(self) -> bool {
        matches!(self, WorkerState::Ready | WorkerState::Busy)
    }
}

/// `POST /v1/worker-heartbeat` body, sent every interval from the moment the worker
/// process starts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerHeartbeat {
    pub worker_id: String,
    #[serde(default)]
    pub hive_id: String,
    /// The model as the operator named it when spawning the worker (a model id), or the
    /// file name when it was started by hand.
    pub model: String,
    /// The GGUF file's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_file: Option<String>,
    pub device: String,
    /// Where the queen reaches the worker's HTTP API, e.g. `http://10.0.0.5:9301`.
    pub url: String,
    pub state: WorkerState,
    /// Requests waiting in the worker for a free slot.
    #[serde(default)]
    pub queue_depth: u32,
    /// Requests the worker generates at once (its sequence slots); 0 from a worker that
    /// does not say, which the scheduler takes as 1.
    #[serde(default)]
    pub slots_total: u32,
    /// Slots serving a request.
    #[serde(default)]
    pub slots_busy: u32,
    #[serde(default)]
    pub tokens_generated: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    /// The interval the worker sends at, so the queen can judge staleness per worker.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// While `loading`: how much of the model's weights are read, 0 to 100, where the
    /// engine can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_percent: Option<u8>,
    /// What computes the tokens once the model is loaded: `cpu-` and the kernel set
    /// (`cpu-avx512`, `cpu-neon`, ...) or `candle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

fn default_interval_ms() -> u64 {
    2_000
}
