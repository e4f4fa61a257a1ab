//! The one error body every HTTP route and every failed job uses.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes. Clients match on these, so a code, once
/// published, keeps its meaning. Codes this build does not know parse as `Other`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    Unauthorized,
    NotFound,
    /// The hive (or every hive asked) does not hold the model: the model is missing,
    /// not a device, a worker or a binary (those are `not_found`).
    ModelNotFound,
    Conflict,
    NotImplemented,
    Unreachable,
    HostKeyUnknown,
    HostKeyChanged,
    AgentFailed,
    AgentProtocol,
    NoWorker,
    WorkerFailed,
    QueueFull,
    /// A worker would not fit in the chosen device's free memory.
    InsufficientMemory,
    /// The hive cannot run the binaries the queen holds (another architecture, an
    /// older glibc, another C library): refused before anything is pushed.
    UnsupportedPlatform,
    Timeout,
    ShuttingDown,
    Internal,
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Unreachable => "unreachable",
            ErrorCode::HostKeyUnknown => "host_key_unknown",
            ErrorCode::HostKeyChanged => "host_key_changed",
            ErrorCode::AgentFailed => "agent_failed",
            ErrorCode::AgentProtocol => "agent_protocol",
            ErrorCode::NoWorker => "no_worker",
            ErrorCode::WorkerFailed => "worker_failed",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::InsufficientMemory => "insufficient_memory",
            ErrorCode::UnsupportedPlatform => "unsupported_platform",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, and what the operator can do about it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The names that would do, when the request named something ambiguously (a model
    /// stem matching several files): a client at a terminal offers them as a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl ErrorDetail {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorDetail {
            code,
            message: message.into(),
            hint: None,
            choices: Vec::new(),
        }
    }

    pub fn with_choices(mut self, choices: Vec<String>) -> Self {
        self.choices = choices;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorDetail {}

/// The HTTP error body: `{"error":{"code","message","hint"}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl From<ErrorDetail> for ErrorBody {
    fn from(error: ErrorDetail) -> Self {
        ErrorBody { error }
    }
}
