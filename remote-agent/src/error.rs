//! Why an agent operation failed, and how that failure reads on the wire and in the
//! exit status.

use std::io;
use std::path::PathBuf;

use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent};

/// Exit status of an operation that failed (an `error` event was printed).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a command line the agent does not accept.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of an operation cancelled by stdin EOF or SIGHUP (a `cancelled` event
/// was printed).
pub const EXIT_CANCELLED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Usage(#[from] UsageError),

    #[error("cancelled")]
    Cancelled,

    #[error("cannot find the home directory to expand `~` in {path}")]
    NoHome { path: PathBuf },

    #[error("cannot read {path}")]
    ReadSystemFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot understand {path}: {reason}")]
    BadSystemFile { path: PathBuf, reason: &'static str },

    #[error("cannot measure free disk space under {path}")]
    DiskSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot encode the result")]
    Serialize(#[source] serde_json::Error),

    /// A refusal with its own code and hint, e.g. a device this hive does not have.
    #[error("{}", .0.message)]
    Refused(ErrorDetail),

    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Model(#[from] crate::models::error::ModelError),

    #[error("cannot list worker state files in {path}")]
    ListWorkers {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl AgentError {
    pub fn refused(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        AgentError::Refused(ErrorDetail::new(code, message).with_hint(hint))
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Usage(_) => EXIT_USAGE,
            AgentError::Cancelled => EXIT_CANCELLED,
            _ => EXIT_FAILED,
        }
    }

    /// The terminal event that reports this failure: `cancelled` for a cancellation,
    /// an `error` with code, message (with its causes) and hint otherwise.
    pub fn to_event(&self) -> JobEvent {
        match self {
            AgentError::Cancelled => JobEvent::Cancelled {
                reason: "stdin closed or SIGHUP received".to_owned(),
            },
            AgentError::Usage(usage) => JobEvent::Error(usage.to_detail()),
            AgentError::Refused(detail) => JobEvent::Error(detail.clone()),
            AgentError::Model(model) => JobEvent::Error(model.to_detail()),
            AgentError::NoHome { .. } => JobEvent::Error(
                ErrorDetail::new(ErrorCode::AgentFailed, self.to_string())
                    .with_hint("set HOME for the SSH user or pass an absolute --install-dir"),
            ),
            other => JobEvent::Error(ErrorDetail::new(
                ErrorCode::AgentFailed,
                message_with_causes(other),
            )),
        }
    }
}

pub(crate) use crate::causes::message_with_causes;

/// A command line the agent does not accept (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("no command given")]
    MissingCommand,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error(
        "`infer` is not a hive command: inference goes from the queen to a worker, never through the hive agent"
    )]
    InferOnHive,
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    #[error("flag `{0}` needs a value")]
    MissingValue(String),
    #[error("`{0}` is not a valid hive id (letters, digits, `-`, `_`, `.`)")]
    InvalidHiveId(String),
    #[error("`{command}` needs `{flag}`")]
    MissingFlag { command: String, flag: String },
    #[error("`{value}` is not a valid value for `{flag}`")]
    BadValue { flag: String, value: String },
    #[error("`{command}` takes no argument `{argument}`")]
    UnexpectedArgument { command: String, argument: String },
    #[error("`{command}` takes {expected}")]
    BadArguments {
        command: String,
        expected: &'static str,
    },
    #[error("argument `{0}` is not valid UTF-8")]
    NotUtf8(String),
}

impl UsageError {
    pub fn to_detail(&self) -> ErrorDetail {
        let hint = match self {
            UsageError::InferOnHive => {
                "send prompts with `rbee-keeper infer`; the queen routes them to a worker"
            }
            _ => {
                "run `rbee-hive help` for the commands this agent knows; a queen newer than its agent reinstalls it with `rbee-keeper hive install`"
            }
        };
        ErrorDetail::new(ErrorCode::BadRequest, self.to_string()).with_hint(hint)
    }
}
