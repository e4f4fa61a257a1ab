//! SSH transport to the hives (only the queen speaks SSH): one pooled connection per
//! hive carrying many exec channels, host keys checked against known_hosts.

mod connection;
mod host_key;
mod pool;
pub mod shell;
pub mod ssh_config;
mod target;

pub use connection::{ExecOutcome, SessionError, SshConnection, Stdin, Upload};
use host_key::HostKeyCheck;
pub use pool::SshPool;
pub use target::SshTarget;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rbee_config::Hive;
use rbee_protocol::{ErrorCode, ErrorDetail};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, client};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// Channels open at once on one connection, below sshd's default MaxSessions of 10.
const CHANNELS_PER_CONNECTION: usize = 8;
/// Bytes of a command's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

#[derive(Debug, Clone)]
pub struct SshSettings {
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    /// known_hosts file; `~/.ssh/known_hosts` unless the inventory names another.
    pub known_hosts: PathBuf,
    pub ssh_config: PathBuf,
}

impl SshSettings {
    pub fn new(known_hosts: Option<PathBuf>, ssh_config: Option<PathBuf>) -> Self {
        SshSettings {
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            known_hosts: known_hosts
                .unwrap_or_else(|| rbee_config::paths::expand_home("~/.ssh/known_hosts")),
            ssh_config: ssh_config.unwrap_or_else(ssh_config::default_path),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}:{port} is unreachable: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("the host key of {host}:{port} is not known ({fingerprint})")]
    HostKeyUnknown {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "the host key of {host}:{port} has CHANGED: it does not match line {line} of {known_hosts} (offered {fingerprint})"
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        line: usize,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error("authentication as {user}@{host} failed (tried {tried})")]
    AuthFailed {
        user: String,
        host: String,
        tried: String,
    },
    /// Something on the queen's own side failed (a file it was to send, its SSH client
    /// configuration): the hive is not to blame and stays reachable.
    #[error("on the queen, for {host}: {reason}")]
    Local { host: String, reason: String },
    #[error("ssh to {host}: {source}")]
    Protocol {
        host: String,
        #[source]
        source: russh::Error,
    },
}

impl SshError {
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SshError::Unreachable { .. } | SshError::Protocol { .. }
        )
    }

    pub fn to_detail(&self) -> ErrorDetail {
        let message = self.to_string();
        match self {
            SshError::Unreachable { .. } => ErrorDetail::new(ErrorCode::Unreachable, message)
                .with_hint("check that the host is up and sshd listens; `rbee-keeper inventory check` tests every hive"),
            SshError::HostKeyUnknown { known_hosts, .. } => ErrorDetail::new(ErrorCode::HostKeyUnknown, message).with_hint(format!(
                "if the fingerprint is right, trust it with --accept-new-host-keys (recorded in {})",
                known_hosts.display()
            )),
            SshError::HostKeyChanged { host, known_hosts, .. } => ErrorDetail::new(ErrorCode::HostKeyChanged, message).with_hint(format!(
                "someone may be intercepting the connection; if {host} was really reinstalled, remove its old key from {}",
                known_hosts.display()
            )),
            SshError::AuthFailed { .. } => ErrorDetail::new(ErrorCode::Unreachable, message)
                .with_hint("set identity_file in the inventory, load the key into ssh-agent, or authorize the key on the hive"),
            SshError::Protocol { .. } => ErrorDetail::new(ErrorCode::Unreachable, message),
            SshError::Local { .. } => ErrorDetail::new(ErrorCode::Internal, message)
                .with_hint("the queen could not do its part; the hive was not reached for it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_on_the_queens_side_does_not_make_the_hive_unreachable() {
        let local = SshError::Local {
            host: "h".into(),
            reason: "cannot read /x: gone".into(),
        };
        assert!(!local.is_unreachable());
        let detail = local.to_detail();
        // The code the fan-out reads to mark a hive unreachable is not given.
        assert_eq!(detail.code, ErrorCode::Internal);
        let unreachable = SshError::Unreachable {
            host: "h".into(),
            port: 22,
            reason: "refused".into(),
        };
        assert!(unreachable.is_unreachable());
        assert_eq!(unreachable.to_detail().code, ErrorCode::Unreachable);
    }
}
