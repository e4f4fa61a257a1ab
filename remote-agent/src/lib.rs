//! The hive agent: the small program the queen pushes to every hive and runs over an
//! SSH exec channel: one invocation per long operation, and one `serve` process per
//! connection answering the quick ones (`serve.rs`). Also a library, so the queen's
//! `local-hive` feature runs the same operations in-process.
//!
//! The contract, for both uses: a command reports through job events (narrations,
//! then one `result`); failure is an [`AgentError`]; long work stops when its
//! [`CancelFlag`] is set. The binary adds the process rules: one JSON event per stdout
//! line, log on stderr, exit status as outcome, stdin EOF or SIGHUP cancels. The agent
//! never serves HTTP and never sits on the inference path.

mod binaries;
pub mod cancel;
mod causes;
pub mod cli;
pub mod command;
mod detect;
pub mod error;
pub mod events;
mod fit;
pub mod models;
mod report;
pub mod serve;
mod status;
mod worker_state;
pub mod workers;

use rbee_protocol::agent::AgentStatus;
use rbee_protocol::{JobEvent, Level, OperationResult};

pub use cancel::CancelFlag;
pub use command::{AgentCommand, AgentContext, CommandLine, Invocation, SpawnRequest};
pub use error::{AgentError, UsageError};

use report::Reporter;

/// Runs one command, sending its narrations and its result to `out` as they happen.
///
/// Returns once the command has finished; the caller writes the terminal event
/// ([`AgentError::to_event`] on failure). Blocking: async callers run it on a blocking
/// thread.
pub fn execute(
    command: &AgentCommand,
    ctx: &AgentContext,
    out: &mut dyn FnMut(JobEvent),
    cancel: &CancelFlag,
) -> Result<(), AgentError> {
    execute_with_input(command, ctx, None, out, cancel)
}

/// [`execute`] for a command that reads bytes (`model-receive`): `input` is the
/// process's stdin, or the file itself when the queen runs the agent in-process.
pub fn execute_with_input(
    command: &AgentCommand,
    ctx: &AgentContext,
    input: Option<&mut dyn std::io::Read>,
    out: &mut dyn FnMut(JobEvent),
    cancel: &CancelFlag,
) -> Result<(), AgentError> {
    let mut report = Reporter::new(ctx.hive_id.clone(), out);
    match command {
        AgentCommand::Model(model) => {
            let install_dir = ctx.resolved_install_dir()?;
            models::execute(model, &install_dir, input, &mut report, cancel)
        }
        AgentCommand::Version => {
            report.result(OperationResult::AgentVersion(detect::agent_version()));
            Ok(())
        }
        AgentCommand::Detect => {
            let install_dir = ctx.resolved_install_dir()?;
            report.narrate(Level::Info, "detect", "detecting devices, memory and disk");
            let capabilities = detect::detect_capabilities(&install_dir, &mut report, cancel)?;
            report.result(OperationResult::Capabilities(capabilities));
            Ok(())
        }
        AgentCommand::Status => {
            let install_dir = ctx.resolved_install_dir()?;
            let capabilities = detect::detect_capabilities(&install_dir, &mut report, cancel)?;
            let workers = status::known_workers(&install_dir.join("workers"))?;
            report.narrate(
                Level::Info,
                "status",
                format!("{} known worker(s)", workers.len()),
            );
            let status = AgentStatus {
                version: detect::agent_version(),
                install_dir: install_dir.display().to_string(),
                capabilities,
                workers,
            };
            report.result(OperationResult::AgentStatus(status));
            Ok(())
        }
        AgentCommand::WorkerSpawn(request) => {
            let install_dir = ctx.resolved_install_dir()?;
            workers::spawn(&install_dir, hive_name(ctx), request, &mut report, cancel)
        }
        AgentCommand::WorkerStop {
            worker_id,
            timeout_s,
        } => {
            let install_dir = ctx.resolved_install_dir()?;
            let timeout = std::time::Duration::from_secs(*timeout_s);
            workers::stop(
                &install_dir,
                hive_name(ctx),
                worker_id,
                timeout,
                &mut report,
            )
        }
        AgentCommand::WorkerList => workers::list(&ctx.resolved_install_dir()?, &mut report),
        AgentCommand::Binaries => {
            let installed = binaries::installed(&ctx.resolved_install_dir()?.join("bin"))?;
            report.result(OperationResult::Binaries(installed));
            Ok(())
        }
        AgentCommand::WorkerLogs {
            worker_id,
            lines,
            follow,
        } => {
            let install_dir = ctx.resolved_install_dir()?;
            let hive = hive_name(ctx);
            workers::logs(
                &install_dir,
                hive,
                worker_id,
                *lines,
                *follow,
                &mut report,
                cancel,
            )
        }
    }
}

/// The hive's name for messages: its alias, or `this hive` when run by hand.
fn hive_name(ctx: &AgentContext) -> &str {
    ctx.hive_id.as_deref().unwrap_or("this hive")
}
