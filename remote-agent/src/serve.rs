//! `rbee-hive serve`: one agent process answering many quick commands over one SSH
//! channel, so the queen pays the remote shell's start-up once per connection instead
//! of once per operation.
//!
//! Each stdin line is a request, `{"id": N, "args": [...]}`, with the same arguments
//! as a single run; each stdout line is a reply, `{"id": N, "event": {...}}`, and every
//! request's replies end with its terminal event (`done`, `error` or `cancelled`).
//! Requests run one at a time. Stdin EOF or SIGHUP ends the process. Commands that
//! read stdin or run long (`worker-spawn`, `worker-stop`, `model-download`,
//! `model-receive`, followed logs) are refused: the queen runs those as single
//! invocations, where closing the channel cancels them.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};

use rbee_protocol::serve::{ServeReply, ServeRequest};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent};

use crate::cancel::CancelFlag;
use crate::command::{AgentCommand, CommandLine};
use crate::models::ModelCommand;

/// Whether a command may run in a session: it neither reads stdin nor runs for long.
pub fn is_served(command: &AgentCommand) -> bool {
    match command {
        AgentCommand::Version
        | AgentCommand::Detect
        | AgentCommand::Status
        | AgentCommand::WorkerList
        | AgentCommand::Binaries => true,
        AgentCommand::WorkerLogs { follow, .. } => !follow,
        AgentCommand::Model(model) => matches!(
            model,
            ModelCommand::List | ModelCommand::Get { .. } | ModelCommand::Has { .. }
        ),
        AgentCommand::WorkerSpawn(_) | AgentCommand::WorkerStop { .. } => false,
    }
}

/// Serves requests from `input` until it ends; replies go to `output`.
pub fn serve(input: impl BufRead, output: impl Write, cancel: &CancelFlag) -> u8 {
    let mut output = output;
    let mut write = |reply: &ServeReply| -> io::Result<()> {
        serde_json::to_writer(&mut output, reply)?;
        output.write_all(b"\n")?;
        output.flush()
    };
    for line in input.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request: ServeRequest = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => {
                let detail = ErrorDetail::new(
                    ErrorCode::BadRequest,
                    format!("a serve request is not {{\"id\": N, \"args\": [...]}}: {e}"),
                );
                if write(&ServeReply {
                    id: 0,
                    event: JobEvent::Error(detail),
                })
                .is_err()
                {
                    return 1;
                }
                continue;
            }
        };
        let id = request.id;
        let mut failed_write = false;
        let mut emit = |event: JobEvent| {
            if write(&ServeReply { id, event }).is_err() {
                failed_write = true;
                cancel.cancel();
            }
        };
        run_one(&request.args, &mut emit, cancel);
        if failed_write || cancel.is_cancelled() {
            return 1;
        }
    }
    0
}

fn run_one(args: &[String], emit: &mut dyn FnMut(JobEvent), cancel: &CancelFlag) {
    let invocation = match CommandLine::parse(args.iter().map(OsString::from)) {
        Ok(CommandLine::Run(invocation)) => invocation,
        Ok(CommandLine::Help) => {
            emit(JobEvent::Error(ErrorDetail::new(
                ErrorCode::BadRequest,
                "help is not a request",
            )));
            return;
        }
        Err(usage) => {
            emit(JobEvent::Error(usage.to_detail()));
            return;
        }
    };
    if !is_served(&invocation.command) {
        let name = invocation
            .command
            .to_args()
            .first()
            .cloned()
            .unwrap_or_default();
        emit(JobEvent::Error(
            ErrorDetail::new(
                ErrorCode::BadRequest,
                format!("`{name}` is not answered in a serve session"),
            )
            .with_hint("run it as its own `rbee-hive` invocation, where closing stdin cancels it"),
        ));
        return;
    }
    match crate::execute(&invocation.command, &invocation.context, emit, cancel) {
        Ok(()) => emit(JobEvent::Done),
        Err(error) => emit(error.to_event()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(input: &str) -> Vec<ServeReply> {
        let mut out = Vec::new();
        let code = serve(input.as_bytes(), &mut out, &CancelFlag::new());
        assert_eq!(code, 0);
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a reply per line"))
            .collect()
    }

    #[test]
    fn each_request_ends_with_its_own_terminal_event() {
        let dir = tempfile::tempdir().expect("dir");
        let install = dir.path().display().to_string();
        let request = |id: u64, words: &[&str]| {
            let mut args = vec!["--install-dir".to_owned(), install.clone()];
            args.extend(words.iter().map(|w| (*w).to_owned()));
            serde_json::to_string(&ServeRequest { id, args }).expect("json")
        };
        let input = [
            request(1, &["version"]),
            "not json".to_owned(),
            request(2, &["worker-list"]),
            request(3, &["worker-stop", "--worker-id", "w", "--timeout", "1"]),
            request(4, &["frobnicate"]),
        ]
        .join("\n");
        let replies = replies(&input);
        let terminal = |id: u64| {
            replies
                .iter()
                .filter(|r| r.id == id && r.event.is_terminal())
                .map(|r| r.event.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(terminal(1), [JobEvent::Done]);
        assert!(replies.iter().any(|r| r.id == 1
            && matches!(
                &r.event,
                JobEvent::Result {
                    result: rbee_protocol::OperationResult::AgentVersion(_),
                    ..
                }
            )));
        assert!(
            matches!(terminal(0).as_slice(), [JobEvent::Error(e)] if e.message.contains("serve request"))
        );
        assert_eq!(terminal(2), [JobEvent::Done]);
        assert!(
            matches!(terminal(3).as_slice(), [JobEvent::Error(e)] if e.message.contains("not answered"))
        );
        assert!(
            matches!(terminal(4).as_slice(), [JobEvent::Error(e)] if e.message.contains("frobnicate"))
        );
    }
}
