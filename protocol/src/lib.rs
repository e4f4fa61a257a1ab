//! The shared vocabulary of rbee: the only types that cross a wire between the keeper,
//! the queen, the hive agent and the workers.
//!
//! Every type here serialises to JSON with `snake_case` names. Adding a field is
//! backwards compatible when it has a default; renaming one is not.

pub mod agent;
pub mod capabilities;
pub mod cluster;
pub mod error;
pub mod event;
pub mod heartbeat;
pub mod inference;
pub mod inventory;
pub mod keep_alive;
pub mod models;
pub mod operation;
pub mod platform;
pub mod result;
pub mod serve;
pub mod sse;
pub mod validate;
pub mod worker_line;

pub use capabilities::{DeviceInfo, DeviceKind, DeviceSpec, HiveCapabilities, UnknownDevice};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{JobEvent, Level, Narration, Progress};
pub use heartbeat::{WorkerHeartbeat, WorkerState};
pub use inference::{
    ChatMessage, InferenceEvent, InferenceRequest, MAX_TOP_LOGPROBS, PromptFormat, StopReason,
    TokenLogprob, TopLogprob,
};
pub use keep_alive::KeepAlive;
pub use operation::Operation;
pub use result::OperationResult;
pub use worker_line::WorkerLine;

/// The version every rbee binary reports; the queen compares the agent's against its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default port of the queen's HTTP API.
pub const DEFAULT_QUEEN_PORT: u16 = 8500;
