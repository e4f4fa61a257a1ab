//! One authenticated connection to a hive: exec channels (with stdin, uploads and
//! cancellation) and the long-running line session of the agent's `serve`.

use super::*;

/// One authenticated connection to a hive.
pub struct SshConnection {
    handle: client::Handle<HostKeyCheck>,
    channels: Semaphore,
    pub target: SshTarget,
    /// This end's address of the TCP connection: the address the hive sees the queen
    /// at. `None` when tunnelled through a jump host.
    pub local_addr: Option<std::net::SocketAddr>,
    /// The SHA256 fingerprint of the host key this connection was made with.
    pub host_key_fingerprint: String,
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
pub(super) trait Tunnel:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
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
    /// Where in the file to start: the bytes before it are already on the other side
    /// (a resumed transfer).
    pub offset: u64,
    /// Told the file's position so far and its size, from `offset` on.
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
    /// Ends the connection (the pool forgets it after a fault).
    pub(super) async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    pub(super) async fn open(
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
        let offered = Arc::new(Mutex::new(None));
        let check = HostKeyCheck {
            host: target.host.clone(),
            port: target.port,
            known_hosts: settings.known_hosts.clone(),
            accept_new,
            verdict: verdict.clone(),
            offered: offered.clone(),
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
        let host_key_fingerprint = offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        Ok(SshConnection {
            handle,
            channels: Semaphore::new(CHANNELS_PER_CONNECTION),
            target,
            local_addr,
            host_key_fingerprint,
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
            let (permit, reader, writer) = self.open_channel().await.map_err(SessionError::Ssh)?;
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

    /// A new channel on this connection, within its limit of channels at once (the
    /// permit returns when dropped), split into its reading and closing halves.
    async fn open_channel(
        &self,
    ) -> Result<
        (
            tokio::sync::SemaphorePermit<'_>,
            russh::ChannelReadHalf,
            ClosingChannel,
        ),
        SshError,
    > {
        let permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::Unreachable {
                host: self.target.host.clone(),
                port: self.target.port,
                reason: "connection closed".to_owned(),
            })?;
        let (reader, writer) = self
            .handle
            .channel_open_session()
            .await
            .map_err(|source| SshError::Protocol {
                host: self.target.host.clone(),
                source,
            })?
            .split();
        Ok((permit, reader, ClosingChannel(Arc::new(writer))))
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
        let (_permit, mut reader, guard) = self.open_channel().await?;
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
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(upload.offset))
                .await
                .map_err(|e| SshError::Local {
                    host: self.target.host.clone(),
                    reason: format!("seeking in {}: {e}", upload.path.display()),
                })?;
            let mut sent = upload.offset;
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

pub(super) async fn authenticate(
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
