//! Hive operations: install, uninstall, start, stop, status, list, refresh, and the
//! inventory check. Each fans out over the hives a pattern selects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rbee_hive::AgentCommand;
use rbee_protocol::{ErrorCode, ErrorDetail, HiveCapabilities, JobEvent, Level};
use sha2::{Digest, Sha256};

use super::agent::answer_as;
use super::fan_out::{HostContext, HostDone, fan_out};
use super::hive_client::{HiveClient, no_usable_agent};
use super::push::{self, Codec, Forms};
use super::{JobContext, OpResult};
use crate::ssh::shell::{self, Value};
use crate::ssh::{SshConnection, Upload};
use rbee_hive::models::ProgressMeter;

/// The binaries `hive install` pushes.
const BINARIES: [&str; 2] = ["rbee-hive", "llm-worker-rbee"];

pub(super) struct LocalBinary {
    name: &'static str,
    /// The sha256 of the file as the hive gets it (stripped).
    sha256: String,
    forms: Forms,
}

/// Hashes a file, reusing the last hash while its size and mtime stay the same.
pub(super) fn sha256_cached(path: &std::path::Path) -> std::io::Result<String> {
    type Cache =
        std::sync::Mutex<std::collections::HashMap<PathBuf, (std::time::SystemTime, u64, String)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let stamp = (meta.modified()?, meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some((modified, len, hash)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path)
        && (*modified, *len) == stamp
    {
        return Ok(hash.clone());
    }
    // Streamed: a model pushed from here can be larger than this machine's memory.
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    let hash = hex::encode(hasher.finalize());
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_owned(), (stamp.0, stamp.1, hash.clone()));
    Ok(hash)
}

/// Finds and hashes the binaries to push, once per job.
pub(super) async fn local_binaries(ctx: &JobContext) -> Result<Arc<Vec<LocalBinary>>, ErrorDetail> {
    let dir = match &ctx.state.config.queen.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .ok_or_else(|| {
                ErrorDetail::new(
                    ErrorCode::Internal,
                    "cannot tell where queen-rbee runs from",
                )
            })?,
    };
    let forms_dir = ctx
        .state
        .config
        .queen
        .state_dir
        .clone()
        .unwrap_or_else(rbee_config::paths::state_dir)
        .join("push");
    let hashed = tokio::task::spawn_blocking(move || {
        BINARIES
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let unreadable = |e: std::io::Error| {
                    ErrorDetail::new(ErrorCode::NotFound, format!("cannot read {}: {e}", path.display())).with_hint(
                        "build the binaries (`cargo build --release --workspace`) or set bin_dir under [queen] in config.toml",
                    )
                };
                let built = sha256_cached(&path).map_err(unreadable)?;
                let forms = push::prepare(&path, name, &built, &forms_dir);
                let sha256 = sha256_cached(&forms.installed).map_err(unreadable)?;
                Ok(LocalBinary { name, sha256, forms })
            })
            .collect::<Result<Vec<_>, ErrorDetail>>()
    })
    .await
    .map_err(|e| ErrorDetail::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Arc::new(hashed))
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

/// The hive's platform and the checksums of the binaries it has, by one shell command
/// (for a hive without a running agent). A checksum is cached beside the binary with
/// its size and mtime, so an unchanged hive is not re-hashed (hashing the worker takes
/// long); any write to the binary changes its mtime. sha256sum hashes its stdin:
/// given a path with a newline or backslash (an install_dir may hold any character),
/// GNU's prints the hash with a `\` before it.
async fn probe(
    connection: &SshConnection,
    bin_dir: &str,
    binaries: &[LocalBinary],
) -> Result<(String, String, BTreeMap<String, String>), ErrorDetail> {
    let names: Vec<&str> = binaries.iter().map(|b| b.name).collect();
    let names = names.join(" ");
    let probe = shell::script(
        &[("d", Value::Path(bin_dir)), ("names", Value::Word(&names))],
        "uname -sm; for n in $names; do f=\"$d/$n\"; s=\"$d/.$n.sha256\"; \
         if [ ! -f \"$f\" ]; then echo \"$n -\"; continue; fi; st=$(stat -c '%s %Y' \"$f\"); \
         if [ -f \"$s\" ] && [ \"$(cut -d' ' -f2,3 \"$s\")\" = \"$st\" ]; then echo \"$n $(cut -d' ' -f1 \"$s\")\"; \
         else h=$(sha256sum < \"$f\" | cut -d' ' -f1); echo \"$h $st\" > \"$s\" 2>/dev/null; echo \"$n $h\"; fi; done",
    );
    let (_, answer) = connection.output(&probe).await.map_err(|e| e.to_detail())?;
    let mut lines = answer.lines();
    let (os, arch) = platform(lines.next().unwrap_or("").trim());
    let present = lines
        .filter_map(|line| line.split_once(' '))
        .map(|(name, hash)| (name.to_owned(), hash.to_owned()))
        .collect();
    Ok((os, arch, present))
}

/// Pushes the agent and worker binaries unless the hive has them already; with
/// `check`, only says which it would push.
pub(super) async fn install_on(
    host: &HostContext,
    binaries: &[LocalBinary],
    accept: bool,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    if HiveClient::new(host).in_process() {
        return Ok(HostDone::ok(
            "local-hive: this queen runs localhost operations in-process; nothing to push",
        ));
    }
    let connection = HiveClient::new(host)
        .accepting_new_host_keys(accept)
        .connection()
        .await?;
    let bin_dir = shell::join(&host.hive.install_dir, "bin");
    // A running agent answers in its session (no shell); else one shell probe. Its
    // answer is this step's business, not a result of the job.
    let quiet = HostContext {
        job: super::JobContext {
            relay_agent_results: false,
            ..host.job.clone()
        },
        hive: host.hive.clone(),
    };
    let (os, arch, present) = match HiveClient::new(&quiet)
        .accepting_new_host_keys(accept)
        .call(AgentCommand::Binaries)
        .await
        .ok()
        .and_then(|answer| answer_as!(answer, Binaries, "binaries").ok())
    {
        Some(installed) => (installed.os, installed.arch, installed.sha256),
        None => probe(&connection, &bin_dir, binaries).await?,
    };
    if (os.as_str(), arch.as_str()) != (std::env::consts::OS, std::env::consts::ARCH) {
        return Err(ErrorDetail::new(
            ErrorCode::AgentFailed,
            format!(
                "{} runs {os}/{arch}, but these binaries are built for {}/{}",
                host.hive.alias,
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
        )
        .with_hint(format!(
            "build rbee for {arch}-unknown-{os} and set bin_dir under [queen] to it"
        )));
    }
    if check {
        let stale: Vec<&str> = binaries
            .iter()
            .filter(|b| present.get(b.name) != Some(&b.sha256))
            .map(|b| b.name)
            .collect();
        return Ok(if stale.is_empty() {
            HostDone::ok("binaries up to date (same checksum)")
        } else {
            HostDone::changed(format!("would push {}", stale.join(", ")))
        });
    }
    let stale: Vec<&LocalBinary> = binaries
        .iter()
        .filter(|b| present.get(b.name) != Some(&b.sha256))
        .collect();
    // The decompressors the hive has, and the forms each binary has here, decide what
    // goes on the wire.
    let tools = if stale.is_empty() {
        String::new()
    } else {
        connection
            .output(&shell::script(
                &[],
                "command -v zstd 2>/dev/null; command -v gzip 2>/dev/null; true",
            ))
            .await
            .map_or_else(|_| String::new(), |(_, out)| out)
    };
    let mut pushed = Vec::new();
    let mut codecs = std::collections::BTreeSet::new();
    let mut on_wire = 0u64;
    for binary in stale {
        let codec = Codec::pick(&tools, &binary.forms);
        codecs.insert(codec.word());
        host.narrate(
            Level::Info,
            "push",
            format!("pushing {} to {bin_dir}", binary.name),
        );
        let script = shell::script(
            &[
                ("d", Value::Path(&bin_dir)),
                ("n", Value::Word(binary.name)),
                ("sha", Value::Word(&binary.sha256)),
                ("c", Value::Word(codec.word())),
            ],
            "set -e; mkdir -p \"$d\"; t=\"$d/.$n.partial.$$\"; trap 'rm -f \"$t\"' EXIT; \
             case \"$c\" in zstd) zstd -dqc > \"$t\" ;; gzip) gzip -dc > \"$t\" ;; *) cat > \"$t\" ;; esac; \
             s=$(sha256sum < \"$t\" | cut -d' ' -f1); \
             if [ \"$s\" != \"$sha\" ]; then echo \"checksum mismatch: got $s\" >&2; exit 3; fi; \
             chmod 755 \"$t\"; mv -f \"$t\" \"$d/$n\"; trap - EXIT; \
             echo \"$s $(stat -c '%s %Y' \"$d/$n\")\" > \"$d/.$n.sha256\"",
        );
        let (job, alias, label) = (
            host.job.clone(),
            host.hive.alias.clone(),
            binary.name.to_owned(),
        );
        // Bytes, rate and time left, as model pushes report them.
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
                    path: binary.forms.wire(codec),
                    on_progress: &mut on_progress,
                }),
                &mut |_| {},
            )
            .await
            .map_err(|e| e.to_detail())?;
        if !outcome.success() {
            return Err(ErrorDetail::new(
                ErrorCode::AgentFailed,
                format!("pushing {} failed: {}", binary.name, outcome.stderr),
            )
            .with_hint(
                "check free disk space and permissions of the install directory on the hive",
            ));
        }
        on_wire += std::fs::metadata(binary.forms.wire(codec)).map_or(0, |m| m.len());
        pushed.push(binary.name);
    }
    if !pushed.is_empty() {
        // A session still runs the agent that was replaced; the next call starts anew.
        connection.end_session().await;
    }
    Ok(if pushed.is_empty() {
        HostDone::ok("binaries up to date (same checksum); nothing uploaded")
    } else {
        HostDone::changed(format!(
            "pushed {} ({:.1} MB on the wire, {})",
            pushed.join(", "),
            on_wire as f64 / 1e6,
            codecs.into_iter().collect::<Vec<_>>().join(", ")
        ))
    })
}

pub async fn install(ctx: &JobContext, pattern: &str, accept: bool) -> OpResult {
    // A missing binary fails the hives that need a push, not the ones run in-process.
    let binaries = local_binaries(ctx).await;
    fan_out(ctx, pattern, "install", |host| {
        let binaries = binaries.clone();
        async move {
            if HiveClient::new(&host).in_process() {
                return install_on(&host, &[], accept, false).await;
            }
            install_on(&host, &binaries?, accept, false).await
        }
    })
    .await
}

fn describe(caps: &HiveCapabilities) -> String {
    let devices: Vec<String> = caps
        .devices
        .iter()
        .map(|d| format!("{} {}", d.id, d.name))
        .collect();
    format!(
        "{} device(s): {}; {} GiB RAM free",
        caps.devices.len(),
        devices.join(", "),
        caps.ram_available / (1 << 30)
    )
}

async fn detect(
    host: &HostContext,
    version: String,
    accept: bool,
) -> Result<HiveCapabilities, ErrorDetail> {
    let caps = answer_as!(
        HiveClient::new(host)
            .accepting_new_host_keys(accept)
            .call(AgentCommand::Detect)
            .await?,
        Capabilities,
        "detect"
    )?;
    host.job
        .state
        .hives
        .mark_online(&host.hive.alias, version, Some(caps.clone()));
    Ok(caps)
}

/// Detects a hive this queen has not heard of since it started (a restarted queen
/// knows workers from heartbeats, but hives only from asking them).
pub(super) async fn detect_unknown(host: &HostContext) -> Result<HiveCapabilities, ErrorDetail> {
    let caps = answer_as!(
        HiveClient::new(host).call(AgentCommand::Detect).await?,
        Capabilities,
        "detect"
    )?;
    host.job.state.hives.mark_online(
        &host.hive.alias,
        caps.agent_version.clone(),
        Some(caps.clone()),
    );
    Ok(caps)
}

pub async fn start(ctx: &JobContext, pattern: &str, accept: bool) -> OpResult {
    let binaries: Option<Arc<Vec<LocalBinary>>> = local_binaries(ctx).await.ok();
    fan_out(ctx, pattern, "start", |host| {
        let binaries = binaries.clone();
        async move { start_on(&host, binaries.as_deref().map(Vec::as_slice), accept, false).await }
    })
    .await
}

/// Reaches the hive, reinstalls a missing or stale agent, detects devices and marks the
/// hive online; with `check`, only says whether the agent would be (re)installed.
pub(super) async fn start_on(
    host: &HostContext,
    binaries: Option<&[LocalBinary]>,
    accept: bool,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    let mut changed = false;
    let version = match HiveClient::new(host)
        .accepting_new_host_keys(accept)
        .call(AgentCommand::Version)
        .await
    {
        Ok(answer) => Some(answer_as!(answer, AgentVersion, "version")?),
        Err(e) if no_usable_agent(&e) => {
            if check {
                return Ok(HostDone::changed(format!(
                    "would install the agent ({}) and start the hive",
                    e.message
                )));
            }
            host.narrate(
                Level::Info,
                "start",
                format!("no usable agent ({}); installing it", e.message),
            );
            None
        }
        Err(e) => return Err(e),
    };
    let stale = version
        .as_ref()
        .is_none_or(|v| v.version != rbee_protocol::VERSION);
    if stale {
        if let Some(v) = &version {
            if check {
                return Ok(HostDone::changed(format!(
                    "would reinstall agent {} (queen is {})",
                    v.version,
                    rbee_protocol::VERSION
                )));
            }
            host.narrate(
                Level::Info,
                "start",
                format!(
                    "agent {} is stale (queen is {}); reinstalling",
                    v.version,
                    rbee_protocol::VERSION
                ),
            );
        }
        let binaries = binaries.ok_or_else(|| {
            ErrorDetail::new(
                ErrorCode::NotFound,
                "the agent must be (re)installed, but this queen has no binaries to push",
            )
            .with_hint("set bin_dir under [queen] in config.toml")
        })?;
        changed = install_on(host, binaries, accept, false).await?.changed;
    }
    if check {
        return Ok(HostDone::ok(format!(
            "agent {} is current",
            rbee_protocol::VERSION
        )));
    }
    let caps = detect(host, rbee_protocol::VERSION.to_owned(), accept).await?;
    let message = format!("online; {}", describe(&caps));
    Ok(if changed {
        HostDone::changed(message)
    } else {
        HostDone::ok(message)
    })
}

pub async fn refresh(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "refresh", |host| async move {
        refresh_on(&host).await
    })
    .await
}

/// Re-detects the hive's devices and memory.
pub(super) async fn refresh_on(host: &HostContext) -> Result<HostDone, ErrorDetail> {
    let version = answer_as!(
        HiveClient::new(host).call(AgentCommand::Version).await?,
        AgentVersion,
        "version"
    )?;
    let caps = detect(host, version.version, false).await?;
    Ok(HostDone::ok(describe(&caps)))
}

pub async fn status(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "status", |host| async move {
        let status = answer_as!(
            HiveClient::new(&host).call(AgentCommand::Status).await?,
            AgentStatus,
            "status"
        )?;
        let online = host
            .job
            .state
            .hives
            .get(&host.hive.alias)
            .is_some_and(|r| r.online);
        Ok(HostDone::ok(format!(
            "agent {}, {}, {} worker(s), {}",
            status.version.version,
            if online { "online" } else { "not started" },
            status.workers.len(),
            describe(&status.capabilities)
        )))
    })
    .await
}

/// `hive list` and `inventory check`: reachability, host key and agent version of
/// every hive the pattern selects.
pub async fn check(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "check", |host| async move {
        let version = answer_as!(
            HiveClient::new(&host).call(AgentCommand::Version).await?,
            AgentVersion,
            "version"
        )?;
        let record = host.job.state.hives.get(&host.hive.alias);
        let current = if version.version == rbee_protocol::VERSION {
            "current"
        } else {
            "STALE"
        };
        Ok(HostDone::ok(format!(
            "reachable; agent {} ({current}) on {}/{}; {}",
            version.version,
            version.os,
            version.arch,
            match record.and_then(|r| r.capabilities.filter(|_| r.online)) {
                Some(caps) => format!("online, {}", describe(&caps)),
                None => "not started".to_owned(),
            }
        )))
    })
    .await
}

pub async fn stop(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "stop", |host| async move {
        let was_online = host
            .job
            .state
            .hives
            .get(&host.hive.alias)
            .is_some_and(|r| r.online);
        let stopped = super::workers::stop_all_on(&host).await?;
        host.job.state.hives.mark_offline(&host.hive.alias);
        host.job.state.ssh.forget(&host.hive.alias).await;
        Ok(match (stopped, was_online) {
            (0, true) => HostDone::changed("marked offline"),
            (0, false) => HostDone::ok("no workers ran; already offline"),
            (n, _) => HostDone::changed(format!("stopped {n} worker(s); marked offline")),
        })
    })
    .await
}

pub async fn uninstall(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "uninstall", |host| async move {
        if HiveClient::new(&host).in_process() {
            host.job.state.hives.mark_offline(&host.hive.alias);
            return Ok(HostDone::ok("local-hive: nothing was pushed to localhost"));
        }
        // Workers first: removing their state files would leave them running unknown.
        let stopped = match super::workers::stop_all_on(&host).await {
            Ok(stopped) => stopped,
            // Without an agent there were no workers it could have started.
            Err(e) if e.code == ErrorCode::AgentFailed => 0,
            Err(e) => return Err(e),
        };
        let connection = HiveClient::new(&host).connection().await?;
        let dir = &host.hive.install_dir;
        let [bin, workers, logs] = ["bin", "workers", "logs"].map(|p| shell::join(dir, p));
        let (outcome, out) = connection
            .output(&shell::script(
                &[
                    ("b", Value::Path(&bin)),
                    ("w", Value::Path(&workers)),
                    ("l", Value::Path(&logs)),
                ],
                "if [ -e \"$b\" ]; then echo present; fi; rm -rf \"$b\" \"$w\" \"$l\"",
            ))
            .await
            .map_err(|e| e.to_detail())?;
        if !outcome.success() {
            return Err(ErrorDetail::new(
                ErrorCode::AgentFailed,
                format!("removing rbee failed: {}", outcome.stderr),
            ));
        }
        host.job.state.hives.mark_offline(&host.hive.alias);
        host.job.state.ssh.forget(&host.hive.alias).await;
        let models = shell::join(dir, "models");
        Ok(if out.contains("present") {
            HostDone::changed(format!(
                "stopped {stopped} worker(s), removed rbee from {dir} (models kept in {models})"
            ))
        } else {
            HostDone::ok("rbee was not installed")
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn uname_maps_to_rust_names() {
        assert_eq!(
            super::platform("Linux x86_64"),
            ("linux".to_owned(), "x86_64".to_owned())
        );
        assert_eq!(
            super::platform("Darwin arm64"),
            ("macos".to_owned(), "aarch64".to_owned())
        );
    }
}
