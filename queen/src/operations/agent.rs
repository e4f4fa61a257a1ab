//! Running the hive agent for one operation: over the hive's pooled SSH connection,
//! or in-process for `localhost` when the queen is built with `local-hive`. Every
//! line the agent prints becomes a job event the moment it arrives.

use std::sync::atomic::{AtomicU64, Ordering};

use rbee_hive::{AgentCommand, AgentContext, Invocation};
use rbee_protocol::serve::{ServeReply, ServeRequest};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, Level, OperationResult};

use super::fan_out::HostContext;
use crate::ssh::{SessionError, SshConnection, Stdin, shell};

pub use crate::fake_hive::AgentAnswer;

/// The error for an answer of another kind than the command gives: an agent of another
/// rbee version.
pub fn unexpected(command: &str, answer: &OperationResult) -> ErrorDetail {
    ErrorDetail::new(
        ErrorCode::AgentProtocol,
        format!(
            "the agent answered {command} with {}, which this queen does not expect",
            answer.kind()
        ),
    )
    .with_hint("reinstall the agent with `rbee-keeper hive install`")
}

/// The payload of one variant of an agent's answer, else [`unexpected`]:
/// `answer_as!(answer, Capabilities, "detect")?`.
macro_rules! answer_as {
    ($answer:expr, $variant:ident, $command:expr) => {
        match $answer {
            rbee_protocol::OperationResult::$variant(value) => Ok(value),
            other => Err(super::agent::unexpected($command, &other)),
        }
    };
}
pub(super) use answer_as;

/// Exit status of `sh` when the program does not exist.
const COMMAND_NOT_FOUND: u32 = 127;

pub fn agent_path(install_dir: &str) -> String {
    shell::join(install_dir, "bin/rbee-hive")
}

/// Whether this hive's operations run in-process instead of over SSH.
pub fn runs_in_process(host: &HostContext) -> bool {
    cfg!(feature = "local-hive") && host.hive.is_localhost()
}

/// Collects the agent's answer from its events, forwarding each with the hive set.
struct Relay<'a> {
    host: &'a HostContext,
    result: Option<OperationResult>,
    failure: Option<ErrorDetail>,
}

impl Relay<'_> {
    fn event(&mut self, event: JobEvent) {
        let hive = Some(self.host.hive.alias.clone());
        match event {
            JobEvent::Narration(mut n) => {
                n.hive = hive;
                self.host.job.emit(JobEvent::Narration(n));
            }
            JobEvent::Progress(mut p) => {
                p.hive = hive;
                self.host.job.emit(JobEvent::Progress(p));
            }
            JobEvent::Token { .. } => self.host.job.emit(event),
            JobEvent::Result { result, .. } => {
                if self.host.job.relay_agent_results {
                    self.host.job.emit(JobEvent::Result {
                        hive,
                        result: result.clone(),
                    });
                }
                self.result = Some(result);
            }
            JobEvent::Error(detail) => self.failure = Some(detail),
            JobEvent::Cancelled { reason } => {
                self.failure = Some(ErrorDetail::new(
                    ErrorCode::AgentFailed,
                    format!("the agent was cancelled: {reason}"),
                ));
            }
            JobEvent::Done => {}
        }
    }

    fn line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<JobEvent>(line) {
            Ok(event) => self.event(event),
            Err(e) => self.host.narrate(
                Level::Warn,
                "agent_output",
                format!(
                    "the agent printed a line that is not an event ({e}): {}",
                    truncate(line, 200)
                ),
            ),
        }
    }

    fn finish(self, ok: bool, fallback: impl FnOnce() -> ErrorDetail) -> AgentAnswer {
        match (ok, self.failure, self.result) {
            (true, None, Some(value)) => Ok(value),
            (true, None, None) => Err(ErrorDetail::new(ErrorCode::AgentProtocol, "the agent finished without a result")
                .with_hint("the agent on this hive may be from another rbee version; reinstall it with `rbee-keeper hive install`")),
            (_, Some(failure), _) => Err(failure),
            (false, None, _) => Err(fallback()),
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Runs one agent command on the hive, over SSH: a quick command through the
/// connection's agent session (`rbee-hive serve`, one process per connection), any
/// other, or any when the hive's agent has no session, as its own exec.
pub async fn run_over_ssh(
    host: &HostContext,
    connection: &SshConnection,
    command: AgentCommand,
) -> AgentAnswer {
    if rbee_hive::serve::is_served(&command) {
        match run_in_session(host, connection, &command).await {
            Ok(answer) => return answer,
            Err(SessionError::Ssh(e)) => return Err(e.to_detail()),
            Err(SessionError::Unavailable(reason)) => {
                tracing::debug!(hive = %host.hive.alias, %reason, "no agent session; one exec");
            }
        }
    }
    // A command that reads a secret line waits for one, so it always gets a line.
    let secret = match &command {
        AgentCommand::WorkerSpawn(spawn) => {
            Some(format!("{}\n", spawn.token.clone().unwrap_or_default()))
        }
        _ => None,
    };
    match secret {
        Some(line) => {
            run_over_ssh_with(host, connection, command, Stdin::Preamble(line.as_bytes())).await
        }
        None => run_over_ssh_with(host, connection, command, Stdin::Open).await,
    }
}

/// Sends `command` to the connection's agent session; `Err` when there is none.
async fn run_in_session(
    host: &HostContext,
    connection: &SshConnection,
    command: &AgentCommand,
) -> Result<AgentAnswer, SessionError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let invocation = Invocation::new(
        AgentContext::new(&host.hive.install_dir, Some(host.hive.alias.clone())),
        command.clone(),
    );
    let request = serde_json::to_string(&ServeRequest {
        id,
        args: invocation.to_args(),
    })
    .map_err(|e| SessionError::Unavailable(e.to_string()))?;
    let start = shell::command(&agent_path(&host.hive.install_dir), &["serve"]);
    let mut relay = Relay {
        host,
        result: None,
        failure: None,
    };
    connection
        .call(
            &start,
            &request,
            &mut |line| match serde_json::from_str::<ServeReply>(line) {
                Ok(reply) if reply.id == id => {
                    let terminal = reply.event.is_terminal();
                    relay.event(reply.event);
                    terminal
                }
                Ok(_) => false,
                Err(e) => {
                    relay.host.narrate(
                        Level::Warn,
                        "agent_output",
                        format!(
                            "the agent session printed a line that is not a reply ({e}): {}",
                            truncate(line, 200)
                        ),
                    );
                    false
                }
            },
        )
        .await?;
    Ok(relay.finish(true, || {
        ErrorDetail::new(ErrorCode::AgentFailed, "the agent session failed")
    }))
}

/// [`run_over_ssh`] for a command that reads stdin (hub settings, a pushed file).
pub async fn run_over_ssh_with(
    host: &HostContext,
    connection: &SshConnection,
    command: AgentCommand,
    stdin: Stdin<'_>,
) -> AgentAnswer {
    let invocation = Invocation::new(
        AgentContext::new(&host.hive.install_dir, Some(host.hive.alias.clone())),
        command,
    );
    let line = shell::command(&agent_path(&host.hive.install_dir), &invocation.to_args());
    let mut relay = Relay {
        host,
        result: None,
        failure: None,
    };
    let outcome = connection
        .exec_with(&line, stdin, &mut |l| relay.line(l))
        .await
        .map_err(|e| e.to_detail())?;
    let alias = host.hive.alias.clone();
    relay.finish(outcome.success(), || match outcome.exit_status {
        Some(COMMAND_NOT_FOUND) => ErrorDetail::new(
            ErrorCode::AgentFailed,
            format!("the agent is not installed on {alias}"),
        )
        .with_hint(format!(
            "install it with `rbee-keeper hive install {alias}`"
        )),
        status => ErrorDetail::new(
            ErrorCode::AgentFailed,
            format!(
                "the agent exited with {}: {}",
                status.map_or("no status".to_owned(), |s| s.to_string()),
                truncate(&outcome.stderr, 500)
            ),
        ),
    })
}

/// Runs one agent command in this process (the `local-hive` feature), with the bytes
/// it reads (a pushed model file) when it reads any.
#[cfg(feature = "local-hive")]
pub async fn run_in_process_with_input(
    host: &HostContext,
    command: AgentCommand,
    mut input: Option<Box<dyn std::io::Read + Send>>,
) -> AgentAnswer {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let cancel = rbee_hive::CancelFlag::new();
    // Dropping this future (the job was cancelled) sets the flag, as stdin EOF would.
    struct CancelOnDrop(rbee_hive::CancelFlag);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let _guard = CancelOnDrop(cancel.clone());
    let context = AgentContext::new(&host.hive.install_dir, Some(host.hive.alias.clone()));
    let work = tokio::task::spawn_blocking(move || {
        rbee_hive::execute_with_input(
            &command,
            &context,
            input.as_deref_mut().map(|i| i as &mut dyn std::io::Read),
            &mut |event| {
                let _ = sender.send(event);
            },
            &cancel,
        )
    });
    let mut relay = Relay {
        host,
        result: None,
        failure: None,
    };
    while let Some(event) = events.recv().await {
        relay.event(event);
    }
    let outcome = work.await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(match e.to_event() {
            JobEvent::Error(detail) => detail,
            other => ErrorDetail::new(ErrorCode::AgentFailed, format!("{other:?}")),
        }),
        Err(e) => Some(ErrorDetail::new(
            ErrorCode::Internal,
            format!("the in-process agent failed: {e}"),
        )),
    };
    let ok = error.is_none();
    if let Some(error) = error {
        relay.failure.get_or_insert(error);
    }
    relay.finish(ok, || {
        ErrorDetail::new(ErrorCode::AgentFailed, "the in-process agent failed")
    })
}
