//! The one way an operation talks to a hive's agent: [`HiveClient`] picks the path
//! (in-process for localhost with the `local-hive` feature, else the hive's pooled SSH
//! connection), hands the agent what it reads on stdin (the hub settings, a pushed
//! file), records the latency metric of every command, and returns the agent's typed
//! answer. Operations call it, never `agent.rs` or the SSH pool directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbee_hive::AgentCommand;
use rbee_hive::models::ProgressMeter;
use rbee_protocol::models::HubAccess;
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent};

use super::agent;
use super::fan_out::HostContext;
use crate::fake_hive::AgentAnswer;
use crate::ssh::{SshConnection, Stdin, Upload};

/// What the agent reads on stdin besides the cancel signal.
pub enum Input {
    None,
    /// The hub settings, one JSON line (the token never goes on a command line).
    Hub(HubAccess),
    /// A file to push, streamed after the command starts, with progress events.
    File {
        path: PathBuf,
        label: String,
    },
}

/// One hive's agent, as one operation on one hive sees it.
pub struct HiveClient<'a> {
    host: &'a HostContext,
    accept_new_host_keys: bool,
}

impl<'a> HiveClient<'a> {
    pub fn new(host: &'a HostContext) -> Self {
        HiveClient {
            host,
            accept_new_host_keys: false,
        }
    }

    /// Trusts an unknown host key (and records it) when this client connects.
    pub fn accepting_new_host_keys(mut self, accept: bool) -> Self {
        self.accept_new_host_keys = accept;
        self
    }

    /// Whether this hive's commands run in this process.
    pub fn in_process(&self) -> bool {
        agent::runs_in_process(self.host)
    }

    /// The hive's pooled SSH connection, opened when there is none.
    pub async fn connection(&self) -> Result<Arc<SshConnection>, ErrorDetail> {
        self.host
            .job
            .state
            .ssh
            .connect(&self.host.hive, self.accept_new_host_keys)
            .await
            .map_err(|e| e.to_detail())
    }

    /// Runs `command` and returns its answer.
    pub async fn call(&self, command: AgentCommand) -> AgentAnswer {
        self.call_with(command, Input::None).await
    }

    /// Runs `command` with `input` on its stdin and returns its answer.
    pub async fn call_with(&self, command: AgentCommand, input: Input) -> AgentAnswer {
        let started = std::time::Instant::now();
        let name = command.to_args().first().cloned().unwrap_or_default();
        let fake = self.host.job.state.fake_hives.as_ref();
        if let Some(answer) = fake.and_then(|f| f.answer(&self.host.hive.alias, &command)) {
            self.host
                .job
                .state
                .metrics
                .ssh_operation(&name, "fake", started.elapsed());
            return self.relayed(answer);
        }
        let (answer, path) = if self.in_process() {
            (self.in_process_call(command, input).await, "in_process")
        } else {
            (self.ssh_call(command, input).await, "ssh")
        };
        self.host
            .job
            .state
            .metrics
            .ssh_operation(&name, path, started.elapsed());
        answer
    }

    /// A fake's answer reaches the job as a real agent's would: as a `result` event of
    /// the hive, unless the operation reports its own.
    fn relayed(&self, answer: AgentAnswer) -> AgentAnswer {
        if let Ok(result) = &answer
            && self.host.job.relay_agent_results
        {
            self.host.job.emit(JobEvent::Result {
                hive: Some(self.host.hive.alias.clone()),
                result: result.clone(),
            });
        }
        answer
    }

    #[cfg(feature = "local-hive")]
    async fn in_process_call(&self, command: AgentCommand, input: Input) -> AgentAnswer {
        let host = self.host;
        let (command, reader): (AgentCommand, Option<Box<dyn std::io::Read + Send>>) = match input {
            Input::None => (command, None),
            Input::Hub(access) => (with_hub(command, access), None),
            Input::File { path, label } => {
                let file = std::fs::File::open(&path).map_err(|e| unreadable(&path, e))?;
                let total = file.metadata().map_err(|e| unreadable(&path, e))?.len();
                let reader = MeteredReader {
                    inner: std::io::BufReader::new(file),
                    read: 0,
                    meter: ProgressMeter::new(label, Some(total)),
                    host: host.clone(),
                };
                (command, Some(Box::new(reader)))
            }
        };
        agent::run_in_process_with_input(host, command, reader).await
    }

    /// Without `local-hive` nothing runs in-process; `in_process` is never true.
    #[cfg(not(feature = "local-hive"))]
    async fn in_process_call(&self, command: AgentCommand, input: Input) -> AgentAnswer {
        self.ssh_call(command, input).await
    }

    async fn ssh_call(&self, command: AgentCommand, input: Input) -> AgentAnswer {
        let host = self.host;
        let connection = self.connection().await?;
        match input {
            Input::None => agent::run_over_ssh(host, &connection, command).await,
            Input::Hub(access) => {
                let mut line = serde_json::to_vec(&access).map_err(|e| {
                    ErrorDetail::new(
                        ErrorCode::Internal,
                        format!("cannot encode the hub settings: {e}"),
                    )
                })?;
                line.push(b'\n');
                agent::run_over_ssh_with(host, &connection, command, Stdin::Preamble(&line)).await
            }
            Input::File { path, label } => {
                let (job, alias) = (host.job.clone(), host.hive.alias.clone());
                let mut meter: Option<ProgressMeter> = None;
                let mut on_progress = move |sent: u64, total: u64| {
                    let meter =
                        meter.get_or_insert_with(|| ProgressMeter::new(label.clone(), Some(total)));
                    if let Some(mut progress) = meter.update(sent) {
                        progress.hive = Some(alias.clone());
                        job.emit(JobEvent::Progress(progress));
                    }
                };
                let upload = Upload {
                    path: &path,
                    on_progress: &mut on_progress,
                };
                agent::run_over_ssh_with(host, &connection, command, Stdin::Upload(upload)).await
            }
        }
    }
}

/// Whether an agent error means there is no usable agent (missing, broken or foreign),
/// as opposed to a hive that cannot be reached.
pub fn no_usable_agent(error: &ErrorDetail) -> bool {
    matches!(
        error.code,
        ErrorCode::AgentFailed | ErrorCode::AgentProtocol
    )
}

/// A local file the queen cannot read (a model to push).
pub fn unreadable(path: &Path, error: std::io::Error) -> ErrorDetail {
    ErrorDetail::new(
        ErrorCode::NotFound,
        format!("cannot read {}: {error}", path.display()),
    )
    .with_hint("push a model file the queen's machine can read")
}

/// A pushed file read by the in-process agent, reporting progress as it goes.
#[cfg(feature = "local-hive")]
struct MeteredReader<R> {
    inner: R,
    read: u64,
    meter: ProgressMeter,
    host: HostContext,
}

#[cfg(feature = "local-hive")]
impl<R: std::io::Read> std::io::Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(mut progress) = self.meter.update(self.read) {
            progress.hive = Some(self.host.hive.alias.clone());
            self.host.job.emit(JobEvent::Progress(progress));
        }
        Ok(n)
    }
}

/// The in-process agent takes the hub settings in its command instead of on stdin.
#[cfg(feature = "local-hive")]
fn with_hub(command: AgentCommand, access: HubAccess) -> AgentCommand {
    use rbee_hive::models::ModelCommand;
    match command {
        AgentCommand::Model(ModelCommand::Download { model, .. }) => {
            AgentCommand::Model(ModelCommand::Download { model, hub: access })
        }
        other => other,
    }
}
