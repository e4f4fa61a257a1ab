//! Hive operations: install, uninstall, start, stop, status, list, refresh, and the
//! inventory check. Each fans out over the hives a pattern selects.

use std::sync::Arc;

use rbee_hive::AgentCommand;
use rbee_protocol::agent::HiveWorker;
use rbee_protocol::cluster::WorkerStatus;
use rbee_protocol::{ErrorCode, ErrorDetail, HiveCapabilities, Level};

use super::agent::answer_as;
use super::binaries::{Binaries, LocalBinary, sha256_cached};
use super::fan_out::{HostContext, HostDone, fan_out};
use super::hive_client::{BinaryPush, HiveClient, Installed, no_usable_agent, unreadable};
use super::push::Codec;
use super::runnable::{HivePlatform, Unsettled};
use super::{JobContext, OpResult};
use crate::ssh::shell;

/// Pushes the agent and worker binaries unless the hive has them already; with
/// `check`, only says which it would push.
pub(super) async fn install_on(
    host: &HostContext,
    binaries: Option<&Binaries>,
    accept: bool,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    if HiveClient::new(host).in_process() {
        return Ok(HostDone::ok(
            "local-hive: this queen runs localhost operations in-process; nothing to push",
        ));
    }
    let binaries = binaries.ok_or_else(|| {
        ErrorDetail::new(
            ErrorCode::Internal,
            "a hive reached over SSH was given no binaries to push",
        )
    })?;
    let client = HiveClient::new(host).accepting_new_host_keys(accept);
    let bin_dir = shell::join(&host.hive.install_dir, "bin");
    let names = super::binaries::NAMES;
    let Installed {
        os,
        arch,
        libc,
        sha256: present,
    } = client.installed(&bin_dir, &names).await?;
    // Nothing is pushed to a hive that could not run it.
    let hive = HivePlatform {
        alias: &host.hive.alias,
        os: &os,
        arch: &arch,
        libc: &libc,
    };
    let (set, unsettled) = binaries.pick(&hive)?;
    if let Some(Unsettled(note)) = unsettled {
        host.narrate(Level::Warn, "install", note);
    }
    if !set.is_in(binaries.bin_dir()) {
        host.narrate(
            Level::Info,
            "install",
            format!(
                "{} cannot run the queen's own build; using {}",
                host.hive.alias,
                set.describe(binaries.bin_dir())
            ),
        );
    }
    let binaries = set.prepared().await?;
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
        client.decompressors().await
    };
    let mut pushed = Vec::new();
    let mut codecs = std::collections::BTreeSet::new();
    let mut on_wire = 0u64;
    let mut resumed = Vec::new();
    for binary in stale {
        let codec = Codec::pick(&tools, &binary.forms);
        codecs.insert(codec.word());
        host.narrate(
            Level::Info,
            "push",
            format!("pushing {} to {bin_dir}", binary.name),
        );
        let wire = binary.forms.wire(codec).to_owned();
        let wire_sha256 = {
            let path = wire.clone();
            tokio::task::spawn_blocking(move || sha256_cached(&path))
                .await
                .map_err(|e| ErrorDetail::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| unreadable(&wire, e))?
        };
        let done = client
            .push_binary(BinaryPush {
                bin_dir: &bin_dir,
                name: binary.name,
                sha256: &binary.sha256,
                codec: codec.word(),
                wire: &wire,
                wire_sha256: &wire_sha256,
            })
            .await?;
        on_wire += done.sent;
        if done.resumed_at > 0 {
            resumed.push(format!(
                "{} resumed at byte {}",
                binary.name, done.resumed_at
            ));
        }
        pushed.push(binary.name);
    }
    if !pushed.is_empty() {
        // A session still runs the agent that was replaced; the next call starts anew.
        client.restart_agent_session().await;
    }
    Ok(if pushed.is_empty() {
        HostDone::ok("binaries up to date (same checksum); nothing uploaded")
    } else {
        // The bytes this push sent: a resumed binary counts only what was missing.
        let codecs = codecs.into_iter().collect::<Vec<_>>().join(", ");
        let resumed = if resumed.is_empty() {
            String::new()
        } else {
            format!("; {}", resumed.join(", "))
        };
        HostDone::changed(format!(
            "pushed {} ({:.1} MB on the wire, {codecs}; {on_wire} bytes sent{resumed})",
            pushed.join(", "),
            on_wire as f64 / 1e6,
        ))
    })
}

pub async fn install(ctx: &JobContext, pattern: &str, accept: bool) -> OpResult {
    // A missing binary fails the hives that need a push, not the ones run in-process.
    let binaries = Binaries::find(ctx).await;
    fan_out(ctx, pattern, "install", |host| {
        let binaries = binaries.clone();
        async move {
            if HiveClient::new(&host).in_process() {
                return install_on(&host, None, accept, false).await;
            }
            let binaries = binaries?;
            install_on(&host, Some(&binaries), accept, false).await
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
        "{}; {} device(s): {}; {} GiB RAM free",
        caps.platform(),
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
    let binaries: Option<Arc<Binaries>> = Binaries::find(ctx).await.ok();
    fan_out(ctx, pattern, "start", |host| {
        let binaries = binaries.clone();
        async move { start_on(&host, binaries.as_deref(), accept, false).await }
    })
    .await
}

/// Reaches the hive, reinstalls a missing or stale agent, detects devices and marks the
/// hive online; with `check`, only says whether the agent would be (re)installed.
pub(super) async fn start_on(
    host: &HostContext,
    binaries: Option<&Binaries>,
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
        changed = install_on(host, Some(binaries), accept, false)
            .await?
            .changed;
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
        // The hive → queen direction: a worker the hive runs whose heartbeats this
        // queen does not hear.
        let running = super::workers::running_on(&host.quiet()).await?;
        let mut silent = 0;
        for worker in &running {
            if heartbeats_missing(&host, worker) {
                warn_unheard(&host, worker);
                silent += 1;
            }
        }
        let ssh = host.job.state.hives.ssh_health(&host.hive.alias);
        let ssh = match (ssh.healthy, ssh.consecutive_failures) {
            (_, 0) => "ssh ok".to_owned(),
            (Some(false), n) => format!(
                "ssh down ({n} failure(s) in a row, the last: {})",
                ssh.last_error.as_deref().unwrap_or("-")
            ),
            (_, n) => format!("ssh ok, {n} failure(s) in a row"),
        };
        Ok(HostDone::ok(format!(
            "agent {}, {}, {ssh}, {} worker(s){}, {}",
            status.version.version,
            if online { "online" } else { "not started" },
            status.workers.len(),
            if silent > 0 {
                format!(" ({silent} running without heartbeats)")
            } else {
                String::new()
            },
            describe(&status.capabilities)
        )))
    })
    .await
}

/// Whether a worker the hive runs is unheard by this queen: never, or not within three
/// of its intervals.
fn heartbeats_missing(host: &HostContext, worker: &HiveWorker) -> bool {
    host.job
        .state
        .workers
        .get(&worker.record.worker_id)
        .is_none_or(|w| w.status == WorkerStatus::Stale)
}

/// Names an unheard worker with the queen URL it sends its heartbeats to.
fn warn_unheard(host: &HostContext, worker: &HiveWorker) {
    let id = &worker.record.worker_id;
    let when = host.job.state.workers.get(id).map_or_else(
        || "never heard".to_owned(),
        |w| format!("last heard {}s ago", w.last_seen_ms / 1000),
    );
    host.narrate(
        Level::Warn,
        "heartbeat",
        format!(
            "worker {id} runs on {} but its heartbeats do not reach this queen ({when}); it sends them to {}: check that {} reaches that address (a firewall, or a wrong `queen_url` var)",
            host.hive.alias, worker.record.queen_url, host.hive.alias
        ),
    );
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
        let present = HiveClient::new(&host).remove_install().await?;
        host.job.state.hives.mark_offline(&host.hive.alias);
        let dir = &host.hive.install_dir;
        let models = shell::join(dir, "models");
        Ok(if present {
            HostDone::changed(format!(
                "stopped {stopped} worker(s), removed rbee from {dir} (models kept in {models})"
            ))
        } else {
            HostDone::ok("rbee was not installed")
        })
    })
    .await
}
