//! The process around [`crate::execute`]: argv in, JSON event lines out, exit status,
//! and the cancellation watchers on stdin and SIGHUP.

use std::ffi::OsString;
use std::io::{self, BufRead, Read};

use rbee_protocol::JobEvent;

use crate::cancel::{self, CancelFlag};
use crate::command::{AgentCommand, CommandLine, USAGE};
use crate::error::{AgentError, EXIT_USAGE, UsageError, message_with_causes};
use crate::events::EventWriter;
use crate::models::ModelCommand;

/// Runs the agent as a process and returns its exit status. Must be called on the
/// main thread before any other thread starts (see [`cancel::cancel_on_sighup`]).
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> u8 {
    let cancel = CancelFlag::new();
    if let Err(error) = cancel::cancel_on_sighup(cancel.clone()) {
        eprintln!("rbee-hive: cannot watch for SIGHUP, only stdin EOF cancels: {error}");
    }

    let args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 1 && args[0] == "serve" {
        return crate::serve::serve(io::stdin().lock(), io::stdout().lock(), &cancel);
    }
    let mut writer = EventWriter::new(io::stdout().lock());
    let mut invocation = match CommandLine::parse(args) {
        Ok(CommandLine::Run(invocation)) => invocation,
        Ok(CommandLine::Help) => {
            eprint!("{USAGE}");
            return 0;
        }
        Err(usage) => {
            eprintln!("rbee-hive: {usage}\n\n{USAGE}");
            // The queen may be past caring (it closed the channel); the exit status
            // still tells it, so a failed write changes nothing.
            let _ = writer.write(&JobEvent::Error(usage.to_detail()));
            return EXIT_USAGE;
        }
    };

    // Stdin is the cancel signal, except where a command reads it: `model-receive`
    // reads the model's bytes (exactly the announced size), `model-download` first
    // reads the hub endpoint and token the queen sends there, `worker-spawn` the
    // worker's token.
    let mut input: Option<Box<dyn Read>> = None;
    match &mut invocation.command {
        AgentCommand::Model(ModelCommand::Receive { .. }) => input = Some(Box::new(io::stdin())),
        AgentCommand::Model(ModelCommand::Download { hub, .. }) if stdin_is_a_channel() => {
            let mut reader = io::BufReader::new(io::stdin());
            let mut line = String::new();
            let parsed = reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    if line.trim().is_empty() {
                        Ok(Default::default())
                    } else {
                        serde_json::from_str(&line).map_err(|e| e.to_string())
                    }
                });
            match parsed {
                Ok(access) => *hub = access,
                Err(reason) => {
                    eprintln!("rbee-hive: cannot read the hub settings from stdin: {reason}");
                    let usage = UsageError::BadArguments {
                        command: "model-download".to_owned(),
                        expected: "the hub settings as one JSON line on stdin",
                    };
                    let _ = writer.write(&JobEvent::Error(usage.to_detail()));
                    return EXIT_USAGE;
                }
            }
            cancel::cancel_on_eof(reader, cancel.clone());
        }
        AgentCommand::WorkerSpawn(spawn) if stdin_is_a_channel() => {
            // The worker token comes first, so it never shows in a process list.
            let mut reader = io::BufReader::new(io::stdin());
            let mut line = String::new();
            if let Err(error) = reader.read_line(&mut line) {
                eprintln!("rbee-hive: cannot read the worker token from stdin: {error}");
            }
            spawn.token = Some(line.trim_end().to_owned()).filter(|t| !t.is_empty());
            cancel::cancel_on_eof(reader, cancel.clone());
        }
        _ if stdin_is_a_channel() => {
            cancel::cancel_on_eof(io::stdin(), cancel.clone());
        }
        _ => {}
    }

    let mut emit = |event: JobEvent| {
        if let Err(error) = writer.write(&event) {
            // Nobody reads the events any more: the queen went away. Stop the work.
            eprintln!("rbee-hive: cannot write to stdout, cancelling: {error}");
            cancel.cancel();
        }
    };
    let outcome = crate::execute_with_input(
        &invocation.command,
        &invocation.context,
        input.as_deref_mut().map(|i| i as &mut dyn Read),
        &mut emit,
        &cancel,
    );
    match outcome {
        Ok(()) => 0,
        Err(error) => {
            if !matches!(error, AgentError::Cancelled) {
                eprintln!("rbee-hive: {}", message_with_causes(&error));
            }
            emit(error.to_event());
            error.exit_code()
        }
    }
}

/// Stdin EOF means "the queen closed the channel" only when stdin is a pipe or socket,
/// as sshd and the queen's local runs provide. A terminal, a file or `/dev/null`
/// carries no such meaning, and `/dev/null` would cancel every run at once.
fn stdin_is_a_channel() -> bool {
    // SAFETY: `stat` is plain old data filled by fstat on success; fd 0 may be closed,
    // which fstat reports as an error.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDIN_FILENO, &mut stat) } != 0 {
        return false;
    }
    let kind = stat.st_mode & libc::S_IFMT;
    kind == libc::S_IFIFO || kind == libc::S_IFSOCK
}
