//! The agent's command line: the typed [`AgentCommand`] and the [`AgentContext`] it
//! runs in, parsed from argv and rendered back to argv, so the queen and the agent
//! agree on one format.
//!
//! Shape: `rbee-hive [--install-dir DIR] [--hive-id ID] <command> [command args]`.
//! Global flags come before the command; the words after it belong to the command.

use std::ffi::OsString;
use std::path::PathBuf;

use rbee_protocol::validate;

use crate::error::{AgentError, UsageError};

/// The install directory when the queen passes none, as in the inventory's defaults.
pub const DEFAULT_INSTALL_DIR: &str = "~/.rbee";

/// What the agent can be asked to do. Each variant is one hive-side operation; adding
/// one means a variant here, its words in [`AgentCommand::parse_words`] and
/// [`AgentCommand::to_args`], and one handler in [`crate::execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// The agent's version and the hive's OS and architecture.
    Version,
    /// The hive's devices, memory and free disk.
    Detect,
    /// Version, capabilities, install directory and the workers the agent knows.
    Status,
    /// Start a worker detached from this session and wait until it is ready.
    WorkerSpawn(Box<SpawnRequest>),
    /// Stop a worker: SIGTERM, then SIGKILL after `timeout_s`.
    WorkerStop {
        worker_id: String,
        timeout_s: u64,
    },
    /// The workers this hive has state files for, and whether each runs.
    /// The binaries installed under `<install_dir>/bin` and their sha256.
    Binaries,
    WorkerList,
    /// The last `lines` of a worker's log; with `follow`, new lines until cancelled.
    WorkerLogs {
        worker_id: String,
        lines: u32,
        follow: bool,
    },
    /// The model catalog: list, get, delete, download, receive (`crate::models`).
    Model(crate::models::ModelCommand),
}

/// What `worker-spawn` needs. The worker token is not part of the command line (every
/// user of the hive sees command lines): the queen writes it as the first line of the
/// agent's stdin, and [`AgentCommand::to_args`] leaves it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    pub worker_id: String,
    /// A model id or file name from the hive's model cache.
    pub model: String,
    /// `cpu`, `cuda:N` or `metal`.
    pub device: String,
    /// Where the worker sends heartbeats.
    pub queen_url: String,
    /// The address the worker listens on.
    pub bind: String,
    /// The host name or address the queen reaches this hive at.
    pub advertise_host: String,
    /// Milliseconds between the worker's heartbeats.
    pub heartbeat_interval_ms: u64,
    /// The worker's sequence slots (`--parallel`); its default when `None`.
    pub parallel: Option<u32>,
    /// Key/value positions of all its slots together (`--ctx-size`); its default when
    /// `None`.
    pub ctx_size: Option<u32>,
    pub token: Option<String>,
}

impl AgentCommand {
    /// The command's words as they follow the global flags, e.g. `["detect"]`.
    pub fn to_args(&self) -> Vec<String> {
        let (word, flags): (&str, Vec<(&str, String)>) = match self {
            AgentCommand::Model(model) => return model.to_args(),
            AgentCommand::Version => ("version", vec![]),
            AgentCommand::Detect => ("detect", vec![]),
            AgentCommand::Status => ("status", vec![]),
            AgentCommand::WorkerSpawn(spawn) => (
                "worker-spawn",
                [
                    ("--worker-id", Some(spawn.worker_id.clone())),
                    ("--model", Some(spawn.model.clone())),
                    ("--device", Some(spawn.device.clone())),
                    ("--queen-url", Some(spawn.queen_url.clone())),
                    ("--bind", Some(spawn.bind.clone())),
                    ("--advertise-host", Some(spawn.advertise_host.clone())),
                    (
                        "--heartbeat-interval-ms",
                        Some(spawn.heartbeat_interval_ms.to_string()),
                    ),
                    ("--parallel", spawn.parallel.map(|n| n.to_string())),
                    ("--ctx-size", spawn.ctx_size.map(|n| n.to_string())),
                ]
                .into_iter()
                .filter_map(|(flag, value)| Some((flag, value?)))
                .collect(),
            ),
            AgentCommand::WorkerStop {
                worker_id,
                timeout_s,
            } => (
                "worker-stop",
                vec![
                    ("--worker-id", worker_id.clone()),
                    ("--timeout", timeout_s.to_string()),
                ],
            ),
            AgentCommand::WorkerList => ("worker-list", vec![]),
            AgentCommand::Binaries => ("binaries", vec![]),
            AgentCommand::WorkerLogs {
                worker_id,
                lines,
                follow,
            } => (
                "worker-logs",
                vec![
                    ("--worker-id", worker_id.clone()),
                    ("--lines", lines.to_string()),
                    ("--follow", follow.to_string()),
                ],
            ),
        };
        let mut args = vec![word.to_owned()];
        for (flag, value) in flags {
            args.push(flag.to_owned());
            args.push(value);
        }
        args
    }

    fn parse_words(name: &str, rest: &[String]) -> Result<AgentCommand, UsageError> {
        // Inference goes from the queen straight to a worker; a queen or script that
        // sends it here has a bug worth naming precisely.
        if name == "infer" {
            return Err(UsageError::InferOnHive);
        }
        if let Some(model) = crate::models::ModelCommand::parse(name, rest) {
            return model.map(AgentCommand::Model);
        }
        let mut flags = Flags::parse(name, rest)?;
        let command = match name {
            "version" => AgentCommand::Version,
            "detect" => AgentCommand::Detect,
            "status" => AgentCommand::Status,
            "worker-spawn" => AgentCommand::WorkerSpawn(Box::new(SpawnRequest {
                worker_id: flags.name("--worker-id")?,
                model: flags.required("--model")?,
                device: flags.required("--device")?,
                queen_url: flags.required("--queen-url")?,
                bind: flags.required("--bind")?,
                advertise_host: flags.required("--advertise-host")?,
                heartbeat_interval_ms: flags.number("--heartbeat-interval-ms")?,
                parallel: flags.optional_number("--parallel")?,
                ctx_size: flags.optional_number("--ctx-size")?,
                token: None,
            })),
            "worker-stop" => AgentCommand::WorkerStop {
                worker_id: flags.name("--worker-id")?,
                timeout_s: flags.number("--timeout")?,
            },
            "worker-list" => AgentCommand::WorkerList,
            "binaries" => AgentCommand::Binaries,
            "worker-logs" => AgentCommand::WorkerLogs {
                worker_id: flags.name("--worker-id")?,
                lines: flags.number("--lines")?,
                follow: flags.number("--follow")?,
            },
            other => return Err(UsageError::UnknownCommand(other.to_owned())),
        };
        flags.finish()?;
        Ok(command)
    }
}

/// A command's `--flag value` pairs; every flag is required and used once.
struct Flags<'a> {
    command: &'a str,
    /// A flag at the end without its value keeps `None`, reported only if asked for.
    pairs: Vec<(String, Option<String>)>,
}

impl<'a> Flags<'a> {
    fn parse(command: &'a str, rest: &[String]) -> Result<Flags<'a>, UsageError> {
        let mut pairs = Vec::new();
        let mut words = rest.iter();
        while let Some(word) = words.next() {
            if !word.starts_with("--") {
                return Err(UsageError::UnexpectedArgument {
                    command: command.to_owned(),
                    argument: word.clone(),
                });
            }
            pairs.push((word.clone(), words.next().cloned()));
        }
        Ok(Flags { command, pairs })
    }

    fn required(&mut self, flag: &str) -> Result<String, UsageError> {
        let position = self
            .pairs
            .iter()
            .position(|(name, _)| name == flag)
            .ok_or_else(|| UsageError::MissingFlag {
                command: self.command.to_owned(),
                flag: flag.to_owned(),
            })?;
        self.pairs
            .remove(position)
            .1
            .ok_or_else(|| UsageError::MissingValue(flag.to_owned()))
    }

    /// A worker id: validated here, since it becomes a file name on the hive.
    fn name(&mut self, flag: &str) -> Result<String, UsageError> {
        let value = self.required(flag)?;
        if validate::is_valid_name(&value) {
            Ok(value)
        } else {
            Err(UsageError::BadValue {
                flag: flag.to_owned(),
                value,
            })
        }
    }

    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, UsageError> {
        let value = self.required(flag)?;
        value.parse().map_err(|_| UsageError::BadValue {
            flag: flag.to_owned(),
            value,
        })
    }

    fn optional_number<T: std::str::FromStr>(
        &mut self,
        flag: &str,
    ) -> Result<Option<T>, UsageError> {
        if self.pairs.iter().any(|(name, _)| name == flag) {
            self.number(flag).map(Some)
        } else {
            Ok(None)
        }
    }

    fn finish(self) -> Result<(), UsageError> {
        match self.pairs.into_iter().next() {
            Some((flag, _)) => Err(UsageError::UnexpectedArgument {
                command: self.command.to_owned(),
                argument: flag,
            }),
            None => Ok(()),
        }
    }
}

/// Where the agent runs: its install directory and the hive it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentContext {
    /// As given. A leading `~` is expanded by the agent on the hive, because the queen
    /// escapes every remote argument, so no shell ever expands it.
    pub install_dir: PathBuf,
    /// The inventory alias; copied into the `hive` field of narrations and results.
    pub hive_id: Option<String>,
}

impl Default for AgentContext {
    fn default() -> Self {
        AgentContext {
            install_dir: PathBuf::from(DEFAULT_INSTALL_DIR),
            hive_id: None,
        }
    }
}

impl AgentContext {
    pub fn new(install_dir: impl Into<PathBuf>, hive_id: Option<String>) -> Self {
        AgentContext {
            install_dir: install_dir.into(),
            hive_id,
        }
    }

    /// The install directory with a leading `~` replaced by `$HOME`.
    pub fn resolved_install_dir(&self) -> Result<PathBuf, AgentError> {
        let Ok(rest) = self.install_dir.strip_prefix("~") else {
            return Ok(self.install_dir.clone());
        };
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(rest)),
            _ => Err(AgentError::NoHome {
                path: self.install_dir.clone(),
            }),
        }
    }
}

/// One run of the agent: a command in its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub context: AgentContext,
    pub command: AgentCommand,
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Run(Invocation),
    Help,
}

impl Invocation {
    pub fn new(context: AgentContext, command: AgentCommand) -> Self {
        Invocation { context, command }
    }

    /// The full argument list after the program name; the queen escapes each one for
    /// the remote shell.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--install-dir".to_owned(),
            self.context.install_dir.display().to_string(),
        ];
        if let Some(hive_id) = &self.context.hive_id {
            args.push("--hive-id".to_owned());
            args.push(hive_id.clone());
        }
        args.extend(self.command.to_args());
        args
    }
}

impl CommandLine {
    /// Parses the arguments after the program name.
    pub fn parse<I>(args: I) -> Result<CommandLine, UsageError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let args = args
            .into_iter()
            .map(|arg| {
                arg.into_string()
                    .map_err(|raw| UsageError::NotUtf8(raw.to_string_lossy().into_owned()))
            })
            .collect::<Result<Vec<String>, UsageError>>()?;

        let mut context = AgentContext::default();
        let mut position = 0;
        while let Some(arg) = args.get(position) {
            if !arg.starts_with('-') {
                break;
            }
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if matches!(flag, "-h" | "--help") {
                return Ok(CommandLine::Help);
            }
            if !matches!(flag, "--install-dir" | "--hive-id") {
                return Err(UsageError::UnknownFlag(arg.clone()));
            }
            let value = match inline_value {
                Some(value) => value,
                None => {
                    position += 1;
                    args.get(position)
                        .cloned()
                        .ok_or_else(|| UsageError::MissingValue(flag.to_owned()))?
                }
            };
            if flag == "--install-dir" {
                if value.is_empty() {
                    return Err(UsageError::MissingValue(flag.to_owned()));
                }
                context.install_dir = PathBuf::from(value);
            } else {
                if !validate::is_valid_name(&value) {
                    return Err(UsageError::InvalidHiveId(value));
                }
                context.hive_id = Some(value);
            }
            position += 1;
        }

        let Some(name) = args.get(position) else {
            return Err(UsageError::MissingCommand);
        };
        if name == "help" {
            return Ok(CommandLine::Help);
        }
        let command = AgentCommand::parse_words(name, &args[position + 1..])?;
        Ok(CommandLine::Run(Invocation { context, command }))
    }
}

/// The usage text, printed on stderr for `help` and after a usage error.
pub const USAGE: &str = "\
usage: rbee-hive [--install-dir DIR] [--hive-id ID] <command>

The hive agent. The queen runs it over SSH, one invocation per operation.
Every stdout line is one JSON job event; stderr is log; the exit status is the outcome
(0 ok, 1 failed, 2 usage, 3 cancelled). Closing stdin or SIGHUP cancels long work.

commands:
  version        the agent's version, OS and architecture
  detect         devices (NVIDIA GPUs, CPU), memory and free disk under DIR/models
  status         version, capabilities, install directory and known workers
  worker-spawn   --worker-id ID --model M --device D --queen-url URL --bind ADDR
                 --advertise-host HOST --heartbeat-interval-ms MS
                 [--parallel SLOTS] [--ctx-size POSITIONS]
                 start a worker detached, wait until it is ready; the worker token
                 is the first line of stdin
  worker-stop    --worker-id ID --timeout SECS   SIGTERM, then SIGKILL
  worker-list    the workers with state files here, and whether each runs
  binaries       the files under DIR/bin with their sha256 (cached by size and mtime)
  worker-logs    --worker-id ID --lines N --follow true|false
  model-list                      the models under DIR/models, with GGUF metadata
  model-get MODEL                 one model: full id, `org/repo`, or unique file name
  model-delete MODEL              delete a model no running worker uses
  model-download ORG/REPO[:FILE]  download from the hub (HF_ENDPOINT, HF_TOKEN); a
                                  queen sends them as one JSON line on stdin first
  model-has FILE SIZE SHA256      whether local:FILE is here with that content
  model-receive FILE SIZE SHA256  read SIZE bytes from stdin into local:FILE
  serve          answer requests until stdin ends: one JSON line each on stdin
                 (id and args), replies (id and event) on stdout; only quick
                 commands that do not read stdin

flags:
  --install-dir DIR   where binaries, models and worker state live (default ~/.rbee)
  --hive-id ID        the inventory alias reported in events
";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CommandLine, UsageError> {
        CommandLine::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn every_command_round_trips_through_argv() {
        let contexts = [
            AgentContext::default(),
            AgentContext::new("/srv/rbee dir", Some("gpu-a".to_owned())),
        ];
        for context in contexts {
            for command in [
                AgentCommand::Version,
                AgentCommand::Detect,
                AgentCommand::Status,
                AgentCommand::WorkerSpawn(Box::new(SpawnRequest {
                    worker_id: "w-1".to_owned(),
                    model: "org/repo:file name.gguf".to_owned(),
                    device: "cuda:1".to_owned(),
                    queen_url: "http://10.0.0.1:8500".to_owned(),
                    bind: "0.0.0.0".to_owned(),
                    advertise_host: "gpu-a.lan".to_owned(),
                    heartbeat_interval_ms: 500,
                    parallel: None,
                    ctx_size: None,
                    token: None,
                })),
                AgentCommand::WorkerSpawn(Box::new(SpawnRequest {
                    worker_id: "w-2".to_owned(),
                    model: "m.gguf".to_owned(),
                    device: "cpu".to_owned(),
                    queen_url: "http://10.0.0.1:8500".to_owned(),
                    bind: "127.0.0.1".to_owned(),
                    advertise_host: "localhost".to_owned(),
                    heartbeat_interval_ms: 500,
                    parallel: Some(2),
                    ctx_size: Some(1024),
                    token: None,
                })),
                AgentCommand::WorkerStop {
                    worker_id: "w-1".to_owned(),
                    timeout_s: 7,
                },
                AgentCommand::WorkerList,
                AgentCommand::Binaries,
                AgentCommand::WorkerLogs {
                    worker_id: "w-1".to_owned(),
                    lines: 20,
                    follow: true,
                },
            ] {
                let invocation = Invocation::new(context.clone(), command);
                let args: Vec<OsString> = invocation
                    .to_args()
                    .into_iter()
                    .map(OsString::from)
                    .collect();
                assert_eq!(CommandLine::parse(args), Ok(CommandLine::Run(invocation)));
            }
        }
    }

    #[test]
    fn global_flags_accept_inline_values() {
        let parsed = parse(&["--install-dir=/opt/rbee", "--hive-id=h1", "status"]);
        let expected = Invocation::new(
            AgentContext::new("/opt/rbee", Some("h1".to_owned())),
            AgentCommand::Status,
        );
        assert_eq!(parsed, Ok(CommandLine::Run(expected)));
    }

    #[test]
    fn bad_command_lines_name_the_problem() {
        let cases: &[(&[&str], UsageError)] = &[
            (&[], UsageError::MissingCommand),
            (&["infer"], UsageError::InferOnHive),
            (&["fly"], UsageError::UnknownCommand("fly".to_owned())),
            (
                &["--verbose", "detect"],
                UsageError::UnknownFlag("--verbose".to_owned()),
            ),
            (
                &["--install-dir"],
                UsageError::MissingValue("--install-dir".to_owned()),
            ),
            (
                &["--hive-id", "a b", "detect"],
                UsageError::InvalidHiveId("a b".to_owned()),
            ),
            (
                &["worker-stop", "--worker-id", "../x", "--timeout", "1"],
                UsageError::BadValue {
                    flag: "--worker-id".to_owned(),
                    value: "../x".to_owned(),
                },
            ),
            (
                &["worker-stop", "--worker-id", "w"],
                UsageError::MissingFlag {
                    command: "worker-stop".to_owned(),
                    flag: "--timeout".to_owned(),
                },
            ),
            (
                &["detect", "--all"],
                UsageError::UnexpectedArgument {
                    command: "detect".to_owned(),
                    argument: "--all".to_owned(),
                },
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(parse(args).as_ref(), Err(expected), "args {args:?}");
        }
    }

    #[test]
    fn help_is_recognised_anywhere_before_the_command() {
        for args in [
            &["help"][..],
            &["-h"],
            &["--install-dir", "/x", "--help", "detect"],
        ] {
            assert_eq!(parse(args), Ok(CommandLine::Help), "args {args:?}");
        }
    }

    #[test]
    fn tilde_expands_to_home_only_at_the_start() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let context = AgentContext::new("~/.rbee", None);
        if let Some(home) = home {
            assert_eq!(
                context.resolved_install_dir().ok(),
                Some(home.join(".rbee"))
            );
        }
        let absolute = AgentContext::new("/a/~/b", None);
        assert_eq!(
            absolute.resolved_install_dir().ok(),
            Some(PathBuf::from("/a/~/b"))
        );
    }
}
