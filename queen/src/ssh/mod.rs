//! SSH transport to the hives (only the queen speaks SSH): one pooled connection per
//! hive carrying many exec channels, host keys checked against known_hosts.

pub mod shell;
pub mod ssh_config;

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

/// Where and as whom to connect, after `~/.ssh/config` is applied to the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` from `~/.ssh/config`: the host to tunnel through, resolved alike.
    pub jump: Option<Box<SshTarget>>,
}

impl SshTarget {
    /// Inventory settings win over `~/.ssh/config`, which wins over ssh's defaults.
    pub fn resolve(hive: &Hive, settings: &SshSettings) -> SshTarget {
        let from_config = ssh_config::lookup(&settings.ssh_config, &hive.host);
        let jump = from_config
            .proxy_jump
            .as_deref()
            .and_then(|spec| jump_target(spec, settings))
            .map(Box::new);
        let identity_files = match &hive.identity_file {
            Some(file) => vec![file.clone()],
            None if !from_config.identity_files.is_empty() => from_config.identity_files,
            None => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| rbee_config::paths::expand_home(&format!("~/.ssh/{name}")))
                .collect(),
        };
        SshTarget {
            host: from_config.hostname.unwrap_or_else(|| hive.host.clone()),
            port: hive.ssh_port.or(from_config.port).unwrap_or(22),
            user: hive
                .ssh_user
                .clone()
                .or(from_config.user)
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".to_owned()),
            identity_files,
            jump,
        }
    }
}

/// A `ProxyJump` value (`[user@]host[:port]`, the first of a list) as a target, with
/// `~/.ssh/config` applied to that host in turn; one hop.
fn jump_target(spec: &str, settings: &SshSettings) -> Option<SshTarget> {
    let first = spec.split(',').next()?.trim();
    if first.is_empty() || first.eq_ignore_ascii_case("none") {
        return None;
    }
    let (user, rest) = match first.split_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, first),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (rest, None),
    };
    let hop = Hive {
        alias: host.to_owned(),
        host: host.to_owned(),
        ssh_user: user,
        ssh_port: port,
        identity_file: None,
        install_dir: String::new(),
        groups: Default::default(),
        vars: Default::default(),
    };
    let mut target = SshTarget::resolve(&hop, settings);
    target.jump = None;
    Some(target)
}

/// Checks the server's key against known_hosts; what it found is kept for the error.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    verdict: Arc<Mutex<Option<SshError>>>,
}

impl HostKeyCheck {
    fn refuse(&self, error: SshError) -> Result<bool, russh::Error> {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        Ok(false)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                let reason = format!(
                    "host certificates are not supported (key id {})",
                    cert.key_id()
                );
                return self.refuse(SshError::Unreachable {
                    host: self.host.clone(),
                    port: self.port,
                    reason,
                });
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.accept_new => {
                tracing::warn!(host = %self.host, port = self.port, %fingerprint, "trusting a new host key");
                match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.known_hosts,
                ) {
                    Ok(()) => Ok(true),
                    Err(e) => self.refuse(SshError::Unreachable {
                        host: self.host.clone(),
                        port: self.port,
                        reason: format!(
                            "cannot record its key in {}: {e}",
                            self.known_hosts.display()
                        ),
                    }),
                }
            }
            Ok(false) => self.refuse(SshError::HostKeyUnknown {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            }),
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(SshError::HostKeyChanged {
                host: self.host.clone(),
                port: self.port,
                line,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            }),
            Err(e) => self.refuse(SshError::Unreachable {
                host: self.host.clone(),
                port: self.port,
                reason: format!("cannot read {}: {e}", self.known_hosts.display()),
            }),
        }
    }
}

/// One authenticated connection to a hive.
pub struct SshConnection {
    handle: client::Handle<HostKeyCheck>,
    channels: Semaphore,
    pub target: SshTarget,
    /// This end's address of the TCP connection: the address the hive sees the queen
    /// at. `None` when tunnelled through a jump host.
    pub local_addr: Option<std::net::SocketAddr>,
    /// The jump host's connection, kept open as long as this one tunnels through it.
    _jump: Option<Arc<SshConnection>>,
    /// A long-running command answering request lines (the agent's `serve`).
    session: tokio::sync::Mutex<Session>,
}

/// The state of a connection's long-running line session.
#[derive(Default)]
struct Session {
    open: Option<OpenSession>,
    /// The session command exited before answering anything (an agent without
    /// `serve`, or none): callers use single execs until [`SshConnection::end_session`].
    unsupported: bool,
}

struct OpenSession {
    reader: russh::ChannelReadHalf,
    writer: ClosingChannel,
    pending: Vec<u8>,
    /// Set while a request waits for its reply. A caller dropped mid-request leaves it
    /// set, and the next caller then starts a fresh session rather than read the
    /// rest of someone else's reply.
    busy: bool,
    answered: bool,
}

/// Why a session call did not get its reply.
#[derive(Debug)]
pub enum SessionError {
    /// No session here (not supported, or it ended): run the command on its own.
    Unavailable(String),
    Ssh(SshError),
}

/// A byte stream an SSH session runs over: a TCP socket, or a jump host's channel.
trait Tunnel: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Tunnel for T {}

/// What a remote command left behind once its channel closed.
#[derive(Debug)]
pub struct ExecOutcome {
    pub exit_status: Option<u32>,
    pub stderr: String,
}

impl ExecOutcome {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// Bytes to send to a command's stdin, with a callback told how many went so far.
pub struct Upload<'a> {
    pub path: &'a Path,
    pub on_progress: &'a mut (dyn FnMut(u64, u64) + Send),
}

/// A channel's sending half that closes the channel when dropped: a job cancelled
/// mid-command drops `exec`'s future, and the remote command must then see its stdin
/// end (the agent's cancel signal) instead of running on over a pooled connection.
struct ClosingChannel(Arc<russh::ChannelWriteHalf<client::Msg>>);

impl Drop for ClosingChannel {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let writer = self.0.clone();
        runtime.spawn(async move {
            let _ = writer.close().await;
        });
    }
}

/// What a command reads on stdin.
pub enum Stdin<'a> {
    /// Nothing; stdin stays open until the command exits.
    Open,
    /// These bytes (the secrets a command needs, never put on its command line);
    /// stdin stays open after them.
    Preamble(&'a [u8]),
    /// A file, streamed; stdin is closed after it.
    Upload(Upload<'a>),
}

impl SshConnection {
    async fn open(
        target: SshTarget,
        settings: &SshSettings,
        accept_new: bool,
    ) -> Result<SshConnection, SshError> {
        let unreachable = |reason: String| SshError::Unreachable {
            host: target.host.clone(),
            port: target.port,
            reason,
        };
        let timeout = settings.connect_timeout;
        let mut local_addr = None;
        let (jump, stream): (Option<Arc<SshConnection>>, Box<dyn Tunnel>) = match &target.jump {
            Some(hop) => {
                let jump =
                    Box::pin(SshConnection::open((**hop).clone(), settings, accept_new)).await?;
                let channel = tokio::time::timeout(
                    timeout,
                    jump.handle.channel_open_direct_tcpip(
                        target.host.clone(),
                        u32::from(target.port),
                        "127.0.0.1",
                        0,
                    ),
                )
                .await
                .map_err(|_| {
                    unreachable(format!(
                        "no answer through {} within {}s",
                        hop.host,
                        timeout.as_secs()
                    ))
                })?
                .map_err(|e| unreachable(format!("through {}: {e}", hop.host)))?;
                (Some(Arc::new(jump)), Box::new(channel.into_stream()))
            }
            None => {
                let socket = tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
                )
                .await
                .map_err(|_| unreachable(format!("no answer within {}s", timeout.as_secs())))?
                .map_err(|e| unreachable(e.to_string()))?;
                let _ = socket.set_nodelay(true);
                local_addr = socket.local_addr().ok();
                (None, Box::new(socket))
            }
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(settings.keepalive),
            keepalive_max: 3,
            ..client::Config::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let check = HostKeyCheck {
            host: target.host.clone(),
            port: target.port,
            known_hosts: settings.known_hosts.clone(),
            accept_new,
            verdict: verdict.clone(),
        };
        let handshake = tokio::time::timeout(
            settings.connect_timeout,
            client::connect_stream(config, stream, check),
        )
        .await;
        let mut handle = match handshake {
            Err(_) => {
                return Err(unreachable(
                    "the SSH handshake did not finish in time".to_owned(),
                ));
            }
            Ok(Ok(handle)) => handle,
            Ok(Err(source)) => {
                if let Some(refusal) = verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    return Err(refusal);
                }
                return Err(SshError::Protocol {
                    host: target.host.clone(),
                    source,
                });
            }
        };
        authenticate(&mut handle, &target).await?;
        Ok(SshConnection {
            handle,
            channels: Semaphore::new(CHANNELS_PER_CONNECTION),
            target,
            local_addr,
            _jump: jump,
            session: Default::default(),
        })
    }

    /// Sends `request` (one line) to the long-running command `start`, starting it on
    /// first use, and passes each line it prints to `on_line` until that returns true
    /// (the reply's last line). The session holds one of the connection's channels.
    /// A call never waits for another one's reply: while the session serves a request,
    /// others are told it is unavailable and run as single execs, so one slow or stuck
    /// reply cannot stall every quick command to the hive.
    pub async fn call(
        &self,
        start: &shell::Line,
        request: &str,
        on_line: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<(), SessionError> {
        let protocol = |source| {
            SessionError::Ssh(SshError::Protocol {
                host: self.target.host.clone(),
                source,
            })
        };
        let Ok(mut session) = self.session.try_lock() else {
            return Err(SessionError::Unavailable(
                "the session is answering another request".into(),
            ));
        };
        if session.unsupported {
            return Err(SessionError::Unavailable(
                "no session on this connection".into(),
            ));
        }
        if session.open.as_ref().is_some_and(|open| open.busy) {
            self.close(&mut session);
        }
        if session.open.is_none() {
            let permit = self.channels.acquire().await.map_err(|_| {
                SessionError::Ssh(SshError::Unreachable {
                    host: self.target.host.clone(),
                    port: self.target.port,
                    reason: "connection closed".to_owned(),
                })
            })?;
            let (reader, writer) = self
                .handle
                .channel_open_session()
                .await
                .map_err(protocol)?
                .split();
            let writer = ClosingChannel(Arc::new(writer));
            tracing::debug!(host = %self.target.host, command = %start, "session");
            writer
                .0
                .exec(true, start.as_str())
                .await
                .map_err(protocol)?;
            // The session keeps its channel until it closes (see `close`).
            permit.forget();
            session.open = Some(OpenSession {
                reader,
                writer,
                pending: Vec::new(),
                busy: false,
                answered: false,
            });
        }
        let Some(open) = session.open.as_mut() else {
            return Err(SessionError::Unavailable(
                "the session did not start".into(),
            ));
        };
        open.busy = true;
        let mut line = request.to_owned();
        line.push('\n');
        if let Err(e) = open.writer.0.data(line.as_bytes()).await {
            self.close(&mut session);
            return Err(SessionError::Unavailable(format!(
                "cannot write to the session: {e}"
            )));
        }
        loop {
            while let Some(end) = open.pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = open.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw[..raw.len() - 1]);
                if on_line(text.trim_end_matches('\r')) {
                    open.busy = false;
                    open.answered = true;
                    return Ok(());
                }
            }
            match open.reader.wait().await {
                Some(ChannelMsg::Data { data }) => open.pending.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    tracing::debug!(host = %self.target.host, stderr = %String::from_utf8_lossy(&data), "session stderr");
                }
                Some(ChannelMsg::Eof | ChannelMsg::ExitStatus { .. } | ChannelMsg::Close)
                | None => {
                    let never_answered = !open.answered;
                    self.close(&mut session);
                    session.unsupported = never_answered;
                    return Err(SessionError::Unavailable(
                        "the session's command ended".into(),
                    ));
                }
                Some(_) => {}
            }
        }
    }

    /// Ends the line session (its channel closes, so the command sees stdin end), and
    /// lets the next call start a new one: after the agent binary was replaced.
    pub async fn end_session(&self) {
        let mut session = self.session.lock().await;
        self.close(&mut session);
        session.unsupported = false;
    }

    fn close(&self, session: &mut Session) {
        if session.open.take().is_some() {
            self.channels.add_permits(1);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command`, calling `on_line` with each stdout line as it arrives. Stdin
    /// stays open until the command exits (the agent treats EOF as cancel), unless an
    /// upload is given: then the file is streamed and stdin closed after it.
    pub async fn exec(
        &self,
        command: &shell::Line,
        upload: Option<Upload<'_>>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ExecOutcome, SshError> {
        let stdin = match upload {
            Some(upload) => Stdin::Upload(upload),
            None => Stdin::Open,
        };
        self.exec_with(command, stdin, on_line).await
    }

    /// [`SshConnection::exec`] with the command's stdin spelled out.
    pub async fn exec_with(
        &self,
        command: &shell::Line,
        stdin: Stdin<'_>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ExecOutcome, SshError> {
        let protocol = |source| SshError::Protocol {
            host: self.target.host.clone(),
            source,
        };
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::Unreachable {
                host: self.target.host.clone(),
                port: self.target.port,
                reason: "connection closed".to_owned(),
            })?;
        let (mut reader, writer) = self
            .handle
            .channel_open_session()
            .await
            .map_err(protocol)?
            .split();
        let guard = ClosingChannel(Arc::new(writer));
        let channel = &*guard.0;
        tracing::debug!(host = %self.target.host, %command, "exec");
        channel
            .exec(true, command.as_str())
            .await
            .map_err(protocol)?;
        let upload = match stdin {
            Stdin::Open => None,
            Stdin::Preamble(bytes) => {
                channel.data(bytes).await.map_err(protocol)?;
                None
            }
            Stdin::Upload(upload) => Some(upload),
        };
        if let Some(upload) = upload {
            let mut file =
                tokio::fs::File::open(upload.path)
                    .await
                    .map_err(|e| SshError::Local {
                        host: self.target.host.clone(),
                        reason: format!("cannot read {}: {e}", upload.path.display()),
                    })?;
            let total = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let mut sent = 0u64;
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buffer).await.map_err(|e| SshError::Local {
                    host: self.target.host.clone(),
                    reason: format!("reading {}: {e}", upload.path.display()),
                })?;
                if n == 0 {
                    break;
                }
                channel.data(&buffer[..n]).await.map_err(protocol)?;
                sent += n as u64;
                (upload.on_progress)(sent, total);
            }
            channel.eof().await.map_err(protocol)?;
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit_status = None;
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    stdout.extend_from_slice(&data);
                    while let Some(end) = stdout.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = stdout.drain(..=end).collect();
                        on_line(
                            String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'),
                        );
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    stderr.extend_from_slice(&data);
                    if stderr.len() > STDERR_TAIL * 2 {
                        stderr.drain(..stderr.len() - STDERR_TAIL);
                    }
                }
                ChannelMsg::ExitStatus {
                    exit_status: status,
                } => exit_status = Some(status),
                ChannelMsg::Close => break,
                ChannelMsg::Eof if exit_status.is_some() => break,
                _ => {}
            }
        }
        if !stdout.is_empty() {
            on_line(String::from_utf8_lossy(&stdout).trim_end());
        }
        let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
        if !stderr.is_empty() {
            tracing::debug!(host = %self.target.host, %stderr, "remote stderr");
        }
        Ok(ExecOutcome {
            exit_status,
            stderr,
        })
    }

    /// Runs a short command and returns its whole stdout.
    pub async fn output(&self, command: &shell::Line) -> Result<(ExecOutcome, String), SshError> {
        let mut out = String::new();
        let outcome = self
            .exec(command, None, &mut |line| {
                out.push_str(line);
                out.push('\n');
            })
            .await?;
        Ok((outcome, out))
    }
}

async fn authenticate(
    handle: &mut client::Handle<HostKeyCheck>,
    target: &SshTarget,
) -> Result<(), SshError> {
    let protocol = |source| SshError::Protocol {
        host: target.host.clone(),
        source,
    };
    let mut tried = Vec::new();
    for path in &target.identity_files {
        if !path.is_file() {
            continue;
        }
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(key) => key,
            Err(e) => {
                tried.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .flatten();
        let result = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(protocol)?;
        if result.success() {
            return Ok(());
        }
        tried.push(path.display().to_string());
    }
    if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await
        && let Ok(identities) = agent.request_identities().await
    {
        for identity in identities {
            let key = identity.public_key().into_owned();
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(protocol)?
                .flatten();
            if let Ok(result) = handle
                .authenticate_publickey_with(target.user.clone(), key, hash, &mut agent)
                .await
                && result.success()
            {
                return Ok(());
            }
            tried.push("an ssh-agent key".to_owned());
        }
    }
    Err(SshError::AuthFailed {
        user: target.user.clone(),
        host: target.host.clone(),
        tried: if tried.is_empty() {
            "no key: none found".to_owned()
        } else {
            tried.join(", ")
        },
    })
}

/// A hive's place in the pool; its async lock makes concurrent users share one connect.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<SshConnection>>>>;

/// One connection per hive, opened on first use and reopened when it has died.
pub struct SshPool {
    slots: Mutex<HashMap<String, Slot>>,
    pub settings: SshSettings,
}

impl SshPool {
    pub fn new(settings: SshSettings) -> Self {
        SshPool {
            slots: Mutex::new(HashMap::new()),
            settings,
        }
    }

    fn slot(&self, alias: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(alias.to_owned())
            .or_default()
            .clone()
    }

    /// The hive's pooled connection, connecting when there is none or it died.
    pub async fn connect(
        &self,
        hive: &Hive,
        accept_new_host_keys: bool,
    ) -> Result<Arc<SshConnection>, SshError> {
        let slot = self.slot(&hive.alias);
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        // `~/.ssh/config` is a file read: off the runtime's threads.
        let (owned, settings) = (hive.clone(), self.settings.clone());
        let target = tokio::task::spawn_blocking(move || SshTarget::resolve(&owned, &settings))
            .await
            .map_err(|e| SshError::Local {
                host: hive.host.clone(),
                reason: format!("reading the SSH client configuration failed: {e}"),
            })?;
        let connection =
            Arc::new(SshConnection::open(target, &self.settings, accept_new_host_keys).await?);
        *guard = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a hive's connection (after a fault), so the next use reconnects.
    pub async fn forget(&self, alias: &str) {
        let slot = self.slot(alias);
        if let Some(connection) = slot.lock().await.take() {
            let _ = connection
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
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
