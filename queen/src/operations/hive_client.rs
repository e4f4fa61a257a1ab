//! The one way an operation talks to a hive: [`HiveClient`] picks the path (in-process
//! for localhost with the `local-hive` feature, else the hive's pooled SSH connection),
//! hands the agent what it reads on stdin (the hub settings, a pushed file), records
//! the latency metric of every command, and returns the agent's typed answer. The few
//! steps that run before an agent exists or after it is gone (the install probe, a
//! binary push, removing an install) are methods here too, as shell scripts built by
//! `shell::script`. Operations call this and nothing below it.
//!
//! Its failures are a [`HiveError`], by layer (the transport, the agent's own refusal,
//! a file on the queen's side, a shell step), mapped to the wire's `ErrorDetail` in one
//! place: `From<HiveError> for ErrorDetail`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbee_hive::AgentCommand;
use rbee_hive::models::ProgressMeter;
use rbee_protocol::inventory::HiveProbe;
use rbee_protocol::models::HubAccess;
use rbee_protocol::platform::{LIBC_PROBE, Libc};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent};

use super::agent;
use super::fan_out::HostContext;
use crate::fake_hive::AgentAnswer;
use crate::ssh::shell::{self, Value};
use crate::ssh::{SshConnection, SshError, Stdin, Upload};

/// What went wrong talking to a hive, by the layer it went wrong in.
#[derive(Debug, thiserror::Error)]
pub enum HiveError {
    /// The SSH transport: unreachable, host key, authentication, or the queen's side.
    #[error(transparent)]
    Transport(#[from] SshError),
    /// The agent's own answer, as it sent it (its code is the agent's to choose).
    #[error("{}", .0.message)]
    Agent(ErrorDetail),
    /// A file on the queen's machine (a model or binary to push) could not be read:
    /// the hive is not to blame.
    #[error("cannot read {}: {source}", path.display())]
    LocalFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A shell step on the hive ran and failed.
    #[error("{step} on {hive} failed: {stderr}")]
    Step {
        hive: String,
        step: &'static str,
        stderr: String,
        hint: &'static str,
    },
}

impl From<HiveError> for ErrorDetail {
    fn from(error: HiveError) -> ErrorDetail {
        match error {
            HiveError::Transport(ssh) => ssh.to_detail(),
            HiveError::Agent(detail) => detail,
            HiveError::LocalFile { .. } => ErrorDetail::new(ErrorCode::NotFound, error.to_string())
                .with_hint("push a file the queen's machine can read"),
            HiveError::Step { hint, .. } => {
                ErrorDetail::new(ErrorCode::AgentFailed, error.to_string()).with_hint(hint)
            }
        }
    }
}

/// What a hive has installed: its platform in Rust's names, its C library and the
/// sha256 of each of the named binaries it has.
pub struct Installed {
    pub os: String,
    pub arch: String,
    pub libc: Libc,
    pub sha256: BTreeMap<String, String>,
}

/// One binary to push: the file to send (in the wire form `codec` names), its own
/// sha256 (which names the partial upload on the hive, so only an upload of these very
/// bytes is resumed) and the sha256 the hive must find once it is unpacked.
pub struct BinaryPush<'p> {
    pub bin_dir: &'p str,
    pub name: &'p str,
    pub sha256: &'p str,
    pub codec: &'static str,
    pub wire: &'p Path,
    pub wire_sha256: &'p str,
}

/// What a binary push sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Bytes sent on the wire by this push.
    pub sent: u64,
    /// Bytes an earlier, cut push had left on the hive, which this one kept.
    pub resumed_at: u64,
}

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
    async fn connection(&self) -> Result<Arc<SshConnection>, HiveError> {
        Ok(self
            .host
            .job
            .state
            .ssh
            .connect(&self.host.hive, self.accept_new_host_keys)
            .await?)
    }

    /// The queen's address as the hive sees it over SSH (`None` through a jump host).
    pub async fn queen_address_seen(&self) -> Result<Option<IpAddr>, HiveError> {
        Ok(self.connection().await?.local_addr.map(|a| a.ip()))
    }

    /// Feeds the hive's SSH health with how one command fared.
    fn observe(&self, outcome: Result<(), &str>) {
        let state = &self.host.job.state;
        let thresholds = crate::hives::Thresholds {
            unhealthy_after: state.config.queen.ssh_unhealthy_after,
            healthy_after: state.config.queen.ssh_healthy_after,
        };
        state
            .hives
            .record_ssh(&self.host.hive.alias, outcome, thresholds);
    }

    /// Feeds the hive's SSH health with how a step that is not an agent command fared:
    /// only the transport's own failures count against it.
    fn observe_step<T>(&self, result: &Result<T, HiveError>) {
        match result {
            Err(HiveError::Transport(
                e @ (SshError::Unreachable { .. }
                | SshError::Protocol { .. }
                | SshError::AuthFailed { .. }),
            )) => {
                self.observe(Err(&e.to_string()));
            }
            Err(HiveError::Transport(_) | HiveError::LocalFile { .. }) => {}
            Ok(_) | Err(HiveError::Agent(_) | HiveError::Step { .. }) => self.observe(Ok(())),
        }
    }

    /// Records the latency of a step that is not an agent command.
    fn timed(&self, name: &str, started: Instant) {
        self.host
            .job
            .state
            .metrics
            .ssh_operation(name, "ssh", started.elapsed());
    }

    /// The hive's platform (machine and C library) and the checksums of the binaries in
    /// `bin_dir`: from its agent's session when one runs, else by one shell command (a
    /// hive without an agent). The shell caches a checksum beside the binary with its size and mtime,
    /// so an unchanged hive is not re-hashed (hashing the worker takes long); any write
    /// to the binary changes its mtime. sha256sum hashes its stdin: given a path with a
    /// newline or backslash (an install_dir may hold any character), GNU's prints the
    /// hash with a `\` before it.
    pub async fn installed(&self, bin_dir: &str, names: &[&str]) -> Result<Installed, HiveError> {
        let result = self.probe_installed(bin_dir, names).await;
        self.observe_step(&result);
        result
    }

    async fn probe_installed(&self, bin_dir: &str, names: &[&str]) -> Result<Installed, HiveError> {
        // Reached (and its host key checked) once: an unreachable hive fails here, not
        // after a second wait.
        let connection = self.connection().await?;
        // The agent's answer is this step's business, not a result of the job.
        let quiet = self.host.quiet();
        let from_agent = HiveClient::new(&quiet)
            .accepting_new_host_keys(self.accept_new_host_keys)
            .call(AgentCommand::Binaries)
            .await
            .ok()
            .and_then(|answer| match answer {
                rbee_protocol::OperationResult::Binaries(installed) => Some(installed),
                _ => None,
            });
        // An agent that predates the C library question leaves it to the shell.
        if let Some((installed, libc)) =
            from_agent.and_then(|i| i.libc.clone().map(|libc| (i, libc)))
        {
            return Ok(Installed {
                os: installed.os,
                arch: installed.arch,
                libc,
                sha256: installed.sha256,
            });
        }
        let started = Instant::now();
        let names = names.join(" ");
        let probe = shell::script(
            &[
                ("d", Value::Path(bin_dir)),
                ("names", Value::Word(&names)),
                ("q", Value::Word(LIBC_PROBE)),
            ],
            "uname -sm; printf 'libc %s\\n' \"$(eval \"$q\")\"; for n in $names; do f=\"$d/$n\"; s=\"$d/.$n.sha256\"; \
             if [ ! -f \"$f\" ]; then echo \"$n -\"; continue; fi; st=$(stat -c '%s %Y' \"$f\"); \
             if [ -f \"$s\" ] && [ \"$(cut -d' ' -f2,3 \"$s\")\" = \"$st\" ]; then echo \"$n $(cut -d' ' -f1 \"$s\")\"; \
             else h=$(sha256sum < \"$f\" | cut -d' ' -f1); echo \"$h $st\" > \"$s\" 2>/dev/null; echo \"$n $h\"; fi; done",
        );
        let (_, answer) = connection.output(&probe).await?;
        self.timed("probe", started);
        let mut lines = answer.lines();
        let (os, arch) = platform(lines.next().unwrap_or("").trim());
        let libc = Libc::from_probe(
            lines
                .next()
                .and_then(|line| line.strip_prefix("libc"))
                .unwrap_or(""),
        );
        let sha256 = lines
            .filter_map(|line| line.split_once(' '))
            .map(|(name, hash)| (name.to_owned(), hash.to_owned()))
            .collect();
        Ok(Installed {
            os,
            arch,
            libc,
            sha256,
        })
    }

    /// Reaches a hive that may have nothing of rbee yet and checks what `hive add`
    /// needs: the host key it answered with, its platform, and whether its install
    /// directory exists or can be made, is writable, and how much disk is free there.
    pub async fn probe_candidate(&self) -> Result<HiveProbe, HiveError> {
        let result = self.run_candidate_probe().await;
        self.observe_step(&result);
        result
    }

    async fn run_candidate_probe(&self) -> Result<HiveProbe, HiveError> {
        let started = Instant::now();
        let script = shell::script(
            &[
                ("d", Value::Path(&self.host.hive.install_dir)),
                ("q", Value::Word(LIBC_PROBE)),
            ],
            "printf 'uname=%s\\n' \"$(uname -sm)\"; printf 'libc=%s\\n' \"$(eval \"$q\")\"; mkdir -p \"$d\" 2>/dev/null; \
             printf 'dir=%s\\n' \"$(cd \"$d\" 2>/dev/null && pwd)\"; \
             if [ -d \"$d\" ] && [ -w \"$d\" ]; then echo writable=yes; else echo writable=no; fi; \
             printf 'avail_kb=%s\\n' \"$(df -Pk \"$d\" 2>/dev/null | awk 'NR==2 {print $4}')\"",
        );
        // A localhost hive of a `local-hive` queen is this machine, reached without SSH.
        let (answer, host, port, user, fingerprint) = if self.in_process() {
            let answer = self.run_here(&script).await?;
            let user = std::env::var("USER").unwrap_or_default();
            let hive = &self.host.hive;
            (
                answer,
                hive.host.clone(),
                0,
                user,
                "none: in-process (local-hive)".to_owned(),
            )
        } else {
            let connection = self.connection().await?;
            let (_, answer) = connection.output(&script).await?;
            let target = &connection.target;
            (
                answer,
                target.host.clone(),
                target.port,
                target.user.clone(),
                connection.host_key_fingerprint.clone(),
            )
        };
        self.timed("probe", started);
        let field = |name: &str| {
            answer
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let (os, arch) = platform(&field("uname"));
        let dir = field("dir");
        Ok(HiveProbe {
            alias: self.host.hive.alias.clone(),
            host,
            port,
            user,
            fingerprint,
            os,
            arch,
            libc: Libc::from_probe(&field("libc")),
            install_dir: if dir.is_empty() {
                self.host.hive.install_dir.clone()
            } else {
                dir
            },
            writable: field("writable") == "yes",
            free_disk_bytes: field("avail_kb").parse::<u64>().ok().map(|kb| kb * 1024),
        })
    }

    /// Runs `script` on this machine, as the hive's shell would; its stdout.
    async fn run_here(&self, script: &shell::Line) -> Result<String, HiveError> {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script.as_str())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| HiveError::Step {
                hive: self.host.hive.alias.clone(),
                step: "probing this machine",
                stderr: e.to_string(),
                hint: "the queen runs `sh` to probe a local-hive; check that it can",
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The paths of the decompressors the hive has (`zstd`, `gzip`), one a line; empty
    /// when the question fails (then files go raw).
    pub async fn decompressors(&self) -> String {
        let Ok(connection) = self.connection().await else {
            return String::new();
        };
        connection
            .output(&shell::script(
                &[],
                "command -v zstd 2>/dev/null; command -v gzip 2>/dev/null; true",
            ))
            .await
            .map_or_else(|_| String::new(), |(_, out)| out)
    }

    /// Streams one binary to the hive, which unpacks it beside its final name, checks
    /// its sha256 and only then moves it into place (a cut push leaves the old binary),
    /// reporting bytes, rate and time left as model pushes do.
    ///
    /// Resumable: the wire form (compressed here once per build, so the same bytes
    /// every time) lands on the hive as `.<name>.<wire sha16>.wire.partial` before it
    /// is unpacked. A push that is cut leaves what arrived; the next push of the same
    /// bytes asks for that file's size and sends only the rest, appended. The whole
    /// wire file's sha256 is checked before unpacking, so a damaged partial is removed
    /// (and the push after it starts over) rather than installed.
    pub async fn push_binary(&self, push: BinaryPush<'_>) -> Result<Pushed, HiveError> {
        let result = self.send_binary(push).await;
        self.observe_step(&result);
        result
    }

    async fn send_binary(&self, push: BinaryPush<'_>) -> Result<Pushed, HiveError> {
        let started = Instant::now();
        let size = std::fs::metadata(push.wire)
            .map_err(|source| HiveError::LocalFile {
                path: push.wire.to_owned(),
                source,
            })?
            .len();
        let size_word = size.to_string();
        let wire_id = &push.wire_sha256[..16.min(push.wire_sha256.len())];
        let vars = [
            ("d", Value::Path(push.bin_dir)),
            ("n", Value::Word(push.name)),
            ("w", Value::Word(wire_id)),
        ];
        let connection = self.connection().await?;
        let (_, arrived) = connection
            .output(&shell::script(
                &vars,
                "p=\"$d/.$n.$w.wire.partial\"; if [ -f \"$p\" ]; then stat -c %s \"$p\"; else echo 0; fi",
            ))
            .await?;
        // A partial longer than the file (not ours after all) is cut back to nothing.
        let resumed_at = arrived
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n < size)
            .unwrap_or(0);
        let offset_word = resumed_at.to_string();
        let script = shell::script(
            &[
                ("d", Value::Path(push.bin_dir)),
                ("n", Value::Word(push.name)),
                ("w", Value::Word(wire_id)),
                ("wsha", Value::Word(push.wire_sha256)),
                ("z", Value::Word(&size_word)),
                ("o", Value::Word(&offset_word)),
                ("sha", Value::Word(push.sha256)),
                ("c", Value::Word(push.codec)),
            ],
            "set -e; mkdir -p \"$d\"; p=\"$d/.$n.$w.wire.partial\"; t=\"$d/.$n.partial.$$\"; \
             trap 'rm -f \"$t\"' EXIT; \
             for f in \"$d/.$n\".*.wire.partial; do [ \"$f\" = \"$p\" ] || rm -f \"$f\"; done; \
             truncate -s \"$o\" \"$p\"; cat >> \"$p\"; \
             a=$(stat -c %s \"$p\"); \
             if [ \"$a\" -lt \"$z\" ]; then echo \"cut after $a of $z bytes; the next push sends the rest\" >&2; exit 4; fi; \
             if [ \"$(sha256sum < \"$p\" | cut -d' ' -f1)\" != \"$wsha\" ]; then rm -f \"$p\"; \
               echo \"the uploaded file does not match its checksum; the next push starts over\" >&2; exit 3; fi; \
             case \"$c\" in zstd) zstd -dqc < \"$p\" > \"$t\" ;; gzip) gzip -dc < \"$p\" > \"$t\" ;; *) cat < \"$p\" > \"$t\" ;; esac; \
             s=$(sha256sum < \"$t\" | cut -d' ' -f1); \
             if [ \"$s\" != \"$sha\" ]; then rm -f \"$p\"; echo \"checksum mismatch: got $s\" >&2; exit 3; fi; \
             chmod 755 \"$t\"; mv -f \"$t\" \"$d/$n\"; rm -f \"$p\"; trap - EXIT; \
             echo \"$s $(stat -c '%s %Y' \"$d/$n\")\" > \"$d/.$n.sha256\"",
        );
        let (job, alias, label) = (
            self.host.job.clone(),
            self.host.hive.alias.clone(),
            push.name.to_owned(),
        );
        let mut meter: Option<ProgressMeter> = None;
        let mut on_progress = move |sent: u64, total: u64| {
            let meter = meter.get_or_insert_with(|| ProgressMeter::new(label.clone(), Some(total)));
            if let Some(mut progress) = meter.update(sent) {
                progress.hive = Some(alias.clone());
                job.emit(JobEvent::Progress(progress));
            }
        };
        let outcome = connection
            .exec(
                &script,
                Some(Upload {
                    path: push.wire,
                    offset: resumed_at,
                    on_progress: &mut on_progress,
                }),
                &mut |_| {},
            )
            .await?;
        self.timed("push", started);
        if outcome.success() {
            Ok(Pushed {
                sent: size - resumed_at,
                resumed_at,
            })
        } else {
            Err(HiveError::Step {
                hive: self.host.hive.alias.clone(),
                step: "pushing a binary",
                stderr: outcome.stderr,
                hint: "check free disk space and permissions of the install directory on the hive; a push that was cut resumes where it stopped",
            })
        }
    }

    /// Ends the agent session, so the next call starts the agent anew (after its
    /// binary was replaced).
    pub async fn restart_agent_session(&self) {
        if let Ok(connection) = self.connection().await {
            connection.end_session().await;
        }
    }

    /// Removes the binaries, worker state and logs under the hive's install_dir
    /// (models stay); whether rbee was installed there. The connection is forgotten
    /// afterwards, since nothing is left to talk to.
    pub async fn remove_install(&self) -> Result<bool, HiveError> {
        let result = self.remove_files().await;
        self.observe_step(&result);
        result
    }

    async fn remove_files(&self) -> Result<bool, HiveError> {
        let started = Instant::now();
        let dir = &self.host.hive.install_dir;
        let [bin, workers, logs] = ["bin", "workers", "logs"].map(|p| shell::join(dir, p));
        let (outcome, out) = self
            .connection()
            .await?
            .output(&shell::script(
                &[
                    ("b", Value::Path(&bin)),
                    ("w", Value::Path(&workers)),
                    ("l", Value::Path(&logs)),
                ],
                "if [ -e \"$b\" ]; then echo present; fi; rm -rf \"$b\" \"$w\" \"$l\"",
            ))
            .await?;
        self.timed("uninstall", started);
        if !outcome.success() {
            return Err(HiveError::Step {
                hive: self.host.hive.alias.clone(),
                step: "removing rbee",
                stderr: outcome.stderr,
                hint: "check the permissions of the install directory on the hive",
            });
        }
        self.host.job.state.ssh.forget(&self.host.hive.alias).await;
        Ok(out.contains("present"))
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
            let answer = self.ssh_call(command, input).await;
            // The hive answered unless the connection failed; a refusal is its answer.
            match &answer {
                Err(e) if e.code == ErrorCode::Unreachable => self.observe(Err(&e.message)),
                Err(e)
                    if matches!(
                        e.code,
                        ErrorCode::HostKeyUnknown | ErrorCode::HostKeyChanged
                    ) => {}
                _ => self.observe(Ok(())),
            }
            (answer, "ssh")
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
        let connection = self.connection().await.map_err(ErrorDetail::from)?;
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
                    offset: 0,
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
    HiveError::LocalFile {
        path: path.to_owned(),
        source: error,
    }
    .into()
}

/// `uname -sm` in Rust's names, so it compares with `std::env::consts`.
fn platform(uname: &str) -> (String, String) {
    let mut words = uname.split_whitespace();
    let os = match words.next().unwrap_or("") {
        "Linux" => "linux".to_owned(),
        "Darwin" => "macos".to_owned(),
        other => other.to_lowercase(),
    };
    let arch = match words.next().unwrap_or("") {
        "arm64" => "aarch64".to_owned(),
        "amd64" => "x86_64".to_owned(),
        other => other.to_owned(),
    };
    (os, arch)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_maps_to_rust_names() {
        assert_eq!(
            platform("Linux x86_64"),
            ("linux".to_owned(), "x86_64".to_owned())
        );
        assert_eq!(
            platform("Darwin arm64"),
            ("macos".to_owned(), "aarch64".to_owned())
        );
    }

    #[test]
    fn each_layer_maps_to_its_own_code() {
        let local = ErrorDetail::from(HiveError::LocalFile {
            path: "/m.gguf".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        // The queen's own file: never a code that marks the hive unreachable.
        assert_eq!(local.code, ErrorCode::NotFound);
        assert!(local.message.contains("/m.gguf"), "{}", local.message);
        let step = ErrorDetail::from(HiveError::Step {
            hive: "h".into(),
            step: "removing rbee",
            stderr: "Permission denied".into(),
            hint: "check",
        });
        assert_eq!(step.code, ErrorCode::AgentFailed);
        assert!(
            step.message
                .contains("removing rbee on h failed: Permission denied")
        );
        let refusal = ErrorDetail::new(ErrorCode::ModelNotFound, "no such model");
        assert_eq!(
            ErrorDetail::from(HiveError::Agent(refusal.clone())),
            refusal
        );
        let ssh = ErrorDetail::from(HiveError::Transport(SshError::Unreachable {
            host: "h".into(),
            port: 22,
            reason: "refused".into(),
        }));
        assert_eq!(ssh.code, ErrorCode::Unreachable);
    }
}
