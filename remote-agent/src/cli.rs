//! The process around [`crate::execute`]: argv in, JSON event lines out, exit status,
//! and the cancellation watchers on stdin and SIGHUP.

use std::ffi::OsString;
use std::io;

use rbee_protocol::JobEvent;

use crate::cancel::{self, CancelFlag};
use crate::command::{CommandLine, USAGE};
use crate::error::{AgentError, EXIT_USAGE, message_with_causes};
use crate::events::EventWriter;

/// Runs the agent as a process and returns its exit status. Must be called on the
/// main thread before any other thread starts (see [`cancel::cancel_on_sighup`]).
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> u8 {
    let cancel = CancelFlag::new();
    if let Err(error) = cancel::cancel_on_sighup(cancel.clone()) {
        eprintln!("rbee-hive: cannot watch for SIGHUP, only stdin EOF cancels: {error}");
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

    if stdin_is_a_channel() {
        if invocation.command.reads_secret() {
            // The queen writes the secret before anything else; std's stdin buffer is
            // shared, so the EOF watcher below reads on after this line.
            let mut line = String::new();
            if let Err(error) = io::stdin().read_line(&mut line) {
                eprintln!("rbee-hive: cannot read the secret line from stdin: {error}");
            }
            invocation.command.set_secret(line.trim_end().to_owned());
        }
        cancel::cancel_on_eof(io::stdin(), cancel.clone());
    }

    let mut emit = |event: JobEvent| {
        if let Err(error) = writer.write(&event) {
            // Nobody reads the events any more: the queen went away. Stop the work.
            eprintln!("rbee-hive: cannot write to stdout, cancelling: {error}");
            cancel.cancel();
        }
    };
    let outcome = crate::execute(&invocation.command, &invocation.context, &mut emit, &cancel);
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
