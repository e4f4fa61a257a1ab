//! Why a model operation failed, with the hint an operator needs to fix it.

use std::io;
use std::path::PathBuf;

use rbee_protocol::{ErrorCode, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("`{spec}` is not a model id: {reason}")]
    InvalidSpec { spec: String, reason: &'static str },

    #[error("no model matches `{spec}` on this hive")]
    NotFound { spec: String, held: Vec<String> },

    #[error("`{spec}` matches more than one model: {}", candidates.join(", "))]
    Ambiguous {
        spec: String,
        candidates: Vec<String>,
    },

    #[error("{id} is in use by worker(s) {}", workers.join(", "))]
    InUse { id: String, workers: Vec<String> },

    #[error("{id} is being downloaded or received right now")]
    Busy { id: String },

    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot reach the hub at {url}")]
    Hub {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    #[error("the hub answered {status} for {url}")]
    HubStatus { url: String, status: u16 },

    #[error("the hub's answer for {url} is not what this agent expects: {reason}")]
    HubAnswer { url: String, reason: String },

    #[error("{repo} has no GGUF file (it holds {})", if files.is_empty() { "nothing".to_owned() } else { files.join(", ") })]
    NoGguf { repo: String, files: Vec<String> },

    #[error(
        "the transfer of {file} broke off {attempts} time(s); the last time after {received} of {expected} bytes"
    )]
    Interrupted {
        file: String,
        attempts: u32,
        received: u64,
        expected: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "the disk holding {} is full: {file} stopped after {written} of {expected} bytes; the partial file was deleted",
        dir.display()
    )]
    DiskFull {
        file: String,
        dir: PathBuf,
        written: u64,
        expected: String,
        #[source]
        source: io::Error,
    },

    #[error("{file}: expected {expected} bytes, got {actual}; the partial file was deleted")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{file}: checksum mismatch: the sha256 announced is {expected}, the bytes received hash to {actual}; the partial file was deleted"
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
}

impl ModelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io {
            action,
            path,
            source,
        }
    }

    /// The `error` event's body: code, message with causes, and a hint.
    pub fn to_detail(&self) -> ErrorDetail {
        let message = crate::causes::message_with_causes(self);
        let (code, hint): (ErrorCode, Option<String>) = match self {
            ModelError::InvalidSpec { .. } => (
                ErrorCode::BadRequest,
                Some("name a hub repository as `org/repo` or `org/repo:file.gguf`".to_owned()),
            ),
            ModelError::NotFound { held, .. } => (
                ErrorCode::ModelNotFound,
                Some(if held.is_empty() {
                    "this hive holds no models; add one with `rbee-keeper model download` or `model push`".to_owned()
                } else {
                    format!("this hive holds: {}", held.join(", "))
                }),
            ),
            ModelError::Ambiguous { .. } => (
                ErrorCode::BadRequest,
                Some("name the model by its full id (`rbee-keeper model list` shows them)".to_owned()),
            ),
            ModelError::InUse { .. } => (
                ErrorCode::Conflict,
                Some("stop the worker(s) first with `rbee-keeper worker stop`".to_owned()),
            ),
            ModelError::Busy { .. } => (
                ErrorCode::Conflict,
                Some("wait for the transfer to end, then try again".to_owned()),
            ),
            ModelError::HubStatus { status: 401 | 403, .. } => (
                ErrorCode::Unauthorized,
                Some("gated or private repository: set HF_TOKEN for the queen, with access granted on the hub".to_owned()),
            ),
            ModelError::HubStatus { status: 404, .. } => (
                ErrorCode::NotFound,
                Some("check the repository and file name; without a file name the agent picks a GGUF file itself".to_owned()),
            ),
            ModelError::Hub { .. } | ModelError::HubStatus { .. } | ModelError::Interrupted { .. } => (
                ErrorCode::Unreachable,
                Some("check the hive's network and HF_ENDPOINT; running the download again resumes where it stopped".to_owned()),
            ),
            ModelError::ChecksumMismatch { .. } | ModelError::SizeMismatch { .. } => (
                ErrorCode::AgentFailed,
                Some("the bytes were corrupted in transit or at the source; run the transfer again".to_owned()),
            ),
            ModelError::DiskFull { dir, .. } => (
                ErrorCode::AgentFailed,
                Some(format!(
                    "free space on the hive (`df -h {}` shows it) or set its install_dir to a larger disk, then run the transfer again",
                    dir.display()
                )),
            ),
            ModelError::NoGguf { .. } => (
                ErrorCode::NotFound,
                Some("rbee runs GGUF models: pick a repository that has `.gguf` files".to_owned()),
            ),
            ModelError::Io { .. } | ModelError::HubAnswer { .. } => (ErrorCode::AgentFailed, None),
        };
        let mut detail = ErrorDetail::new(code, message);
        if let ModelError::Ambiguous { candidates, .. } = self {
            detail = detail.with_choices(candidates.clone());
        }
        match hint {
            Some(hint) => detail.with_hint(hint),
            None => detail,
        }
    }
}
