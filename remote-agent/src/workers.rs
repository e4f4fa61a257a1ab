//! Workers on this hive. `worker-spawn` starts `llm-worker-rbee` in a session of its
//! own, so it outlives the agent, the SSH channel and the queen; a state file under
//! `<install_dir>/workers/` lets any later agent run find it again. The agent waits
//! for the worker's `ready` line in its log and relays the log meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rbee_protocol::agent::{HiveWorker, WorkerRecord};
use rbee_protocol::result::{StopOutcome, WorkerLogs, WorkerStopped};
use rbee_protocol::{
    DeviceInfo, DeviceSpec, ErrorCode, Level, OperationResult, UnknownDevice, WorkerLine,
};

use crate::cancel::CancelFlag;
use crate::command::SpawnRequest;
use crate::error::AgentError;
use crate::report::Reporter;
use crate::worker_state::{is_running, read_record, state_path, workers_dir};

/// The worker reads its token from this variable (never from its command line).
const TOKEN_ENV: &str = "RBEE_WORKER_TOKEN";
/// How long a worker may take from start to `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the log and the process are looked at while waiting.
const POLL: Duration = Duration::from_millis(25);
/// Log lines shown with a failure.
const FAILURE_TAIL_LINES: usize = 20;

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts a worker and returns once it is ready, or fails with the tail of its log.
pub fn spawn(
    install_dir: &Path,
    hive: &str,
    request: &SpawnRequest,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<(), AgentError> {
    let mut device = find_device(&request.device, hive)?;
    let model_path = PathBuf::from(crate::models::resolve(install_dir, &request.model)?.path);
    if let Some(device) = device.as_mut()
        && crate::detect::devices_are_declared()
    {
        device.memory_free = device
            .memory_free
            .saturating_sub(held_by_workers(install_dir, &request.device));
    }
    // Refused here, before the worker spends minutes loading into memory it cannot
    // have. Metal reports no memory to check against.
    let mut memory_bytes = 0;
    if let Some(device) = &device {
        let need = crate::fit::check(
            &model_path,
            device,
            hive,
            request.parallel,
            request.ctx_size,
        )?;
        memory_bytes = need.total();
        report.narrate(
            Level::Info,
            "worker_spawn",
            format!(
                "the model needs ~{} MiB; {} has {} MiB free",
                need.total() >> 20,
                request.device,
                device.memory_free >> 20
            ),
        );
    }
    let state = state_path(install_dir, &request.worker_id);
    if let Some(existing) = read_record(&state)?
        && is_running(&existing)
    {
        return Err(AgentError::refused(
            ErrorCode::Conflict,
            format!(
                "worker {} already runs on {hive} (pid {})",
                existing.worker_id, existing.pid
            ),
            "stop it first with `rbee-keeper worker stop`, or spawn with another id",
        ));
    }
    let bind: IpAddr = request.bind.parse().map_err(|_| {
        AgentError::refused(
            ErrorCode::BadRequest,
            format!("`{}` is not an IP address to bind", request.bind),
            "set the hive's `worker_bind` var to an address such as 0.0.0.0",
        )
    })?;
    let port = free_port(bind)?;
    let binary = crate::binaries::worker_binary(install_dir)?;
    let logs = install_dir.join("logs");
    for dir in [&logs, &workers_dir(install_dir)] {
        fs::create_dir_all(dir).map_err(|e| AgentError::io("create", dir, e))?;
    }
    let log_path = logs.join(format!("{}.log", request.worker_id));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| AgentError::io("open", &log_path, e))?;
    let log_start = log.metadata().map_or(0, |m| m.len());
    let log_err = log
        .try_clone()
        .map_err(|e| AgentError::io("open", &log_path, e))?;
    let url = format!("http://{}:{port}", url_host(&request.advertise_host));

    let mut command = Command::new(&binary);
    command
        .args(["--worker-id", &request.worker_id])
        .arg("--model")
        .arg(&model_path)
        .args(["--model-id", &request.model])
        .args(["--device", &request.device])
        .args(["--port", &port.to_string()])
        .args(["--bind", &request.bind])
        .args(["--advertise-url", &url])
        .args(["--queen-url", &request.queen_url])
        .args(["--hive-id", hive])
        .args([
            "--heartbeat-interval",
            &(request.heartbeat_interval_ms as f64 / 1000.0).to_string(),
        ])
        .env("NO_COLOR", "1")
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    if let Some(parallel) = request.parallel {
        command.args(["--parallel", &parallel.to_string()]);
    }
    if let Some(ctx_size) = request.ctx_size {
        command.args(["--ctx-size", &ctx_size.to_string()]);
    }
    if let Some(token) = &request.token {
        command.env(TOKEN_ENV, token);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of this process. A
    // session of its own keeps the worker alive when sshd ends this session.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    report.narrate(
        Level::Info,
        "worker_spawn",
        format!(
            "starting worker {} on {} with {} (port {port})",
            request.worker_id,
            request.device,
            model_path.display()
        ),
    );
    let child = command
        .spawn()
        .map_err(|e| AgentError::io("start", &binary, e))?;
    let record = WorkerRecord {
        worker_id: request.worker_id.clone(),
        pid: child.id(),
        model: request.model.clone(),
        model_path: model_path.display().to_string(),
        device: request.device.clone(),
        port,
        url,
        log: log_path.display().to_string(),
        queen_url: request.queen_url.clone(),
        started_unix_s: now_unix_s(),
        memory_bytes,
    };
    write_record(&state, &record)?;
    let outcome = wait_ready(child, &log_path, log_start, report, cancel);
    match outcome {
        Ok(load_ms) => {
            report.narrate(
                Level::Info,
                "worker_spawn",
                format!(
                    "worker {} is ready at {} (loaded in {load_ms:.0} ms)",
                    record.worker_id, record.url
                ),
            );
            report.result(OperationResult::SpawnedWorker(HiveWorker {
                record,
                alive: true,
            }));
            Ok(())
        }
        Err(error) => {
            let _ = fs::remove_file(&state);
            Err(error)
        }
    }
}

/// Follows the worker's log from `offset` until its `ready` line. The child is reaped
/// by a thread of its own afterwards, so a long-lived caller (the queen's in-process
/// agent) leaves no zombie behind when the worker exits later.
fn wait_ready(
    mut child: Child,
    log_path: &Path,
    offset: u64,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<f64, AgentError> {
    let mut reader = LogFollower::open(log_path, offset)?;
    let started = Instant::now();
    let mut tail: Vec<String> = Vec::new();
    loop {
        for line in reader.new_lines()? {
            if let Some(load_ms) = ready_line(&line) {
                thread::spawn(move || child.wait());
                return Ok(load_ms);
            }
            if !line.starts_with('{') {
                report.narrate(Level::Info, "worker_log", line.clone());
            }
            tail.push(line);
            if tail.len() > FAILURE_TAIL_LINES {
                tail.remove(0);
            }
        }
        let exited = child
            .try_wait()
            .map_err(|e| AgentError::io("watch", log_path, e))?;
        if let Some(status) = exited {
            tail.extend(reader.new_lines()?);
            let keep = tail.len().saturating_sub(FAILURE_TAIL_LINES);
            return Err(AgentError::refused(
                ErrorCode::WorkerFailed,
                format!(
                    "the worker exited before it was ready ({status}); its log ends:\n{}",
                    tail[keep..].join("\n")
                ),
                format!("the whole log is {}", log_path.display()),
            ));
        }
        if cancel.is_cancelled() || started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            return Err(AgentError::refused(
                ErrorCode::Timeout,
                format!(
                    "the worker was not ready after {}s; stopped it",
                    READY_TIMEOUT.as_secs()
                ),
                format!("its log is {}", log_path.display()),
            ));
        }
        thread::sleep(POLL);
    }
}

/// `load_ms` of the worker's `ready` line.
fn ready_line(line: &str) -> Option<f64> {
    match WorkerLine::parse(line)? {
        WorkerLine::Ready { load_ms, .. } => Some(load_ms),
        WorkerLine::Listening { .. } => None,
    }
}

/// Reads lines appended to a file since the last call.
struct LogFollower {
    file: File,
    partial: Vec<u8>,
}

impl LogFollower {
    fn open(path: &Path, offset: u64) -> Result<Self, AgentError> {
        let mut file = File::open(path).map_err(|e| AgentError::io("read", path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| AgentError::io("read", path, e))?;
        Ok(LogFollower {
            file,
            partial: Vec::new(),
        })
    }

    fn new_lines(&mut self) -> Result<Vec<String>, AgentError> {
        let mut chunk = Vec::new();
        self.file
            .read_to_end(&mut chunk)
            .map_err(|e| AgentError::io("read", "the worker log", e))?;
        self.partial.extend_from_slice(&chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if !text.is_empty() {
                lines.push(text);
            }
        }
        Ok(lines)
    }
}

/// Stops a worker: SIGTERM lets it drain and say `stopping` to the queen; SIGKILL
/// after `timeout`.
pub fn stop(
    install_dir: &Path,
    hive: &str,
    worker_id: &str,
    timeout: Duration,
    report: &mut Reporter<'_>,
) -> Result<(), AgentError> {
    let state = state_path(install_dir, worker_id);
    let record = read_record(&state)?.ok_or_else(|| unknown_worker(hive, worker_id))?;
    let outcome = if !is_running(&record) {
        StopOutcome::NotRunning
    } else {
        report.narrate(
            Level::Info,
            "worker_stop",
            format!("stopping worker {worker_id} (pid {})", record.pid),
        );
        signal(record.pid, libc::SIGTERM);
        if wait_gone(&record, timeout) {
            StopOutcome::Stopped
        } else {
            report.narrate(
                Level::Warn,
                "worker_stop",
                format!(
                    "worker {worker_id} still runs after {}s; killing it",
                    timeout.as_secs()
                ),
            );
            signal(record.pid, libc::SIGKILL);
            wait_gone(&record, Duration::from_secs(5));
            StopOutcome::Killed
        }
    };
    fs::remove_file(&state).map_err(|e| AgentError::io("remove", &state, e))?;
    report.narrate(
        Level::Info,
        "worker_stop",
        format!("worker {worker_id}: {}", outcome.describe()),
    );
    report.result(OperationResult::WorkerStopped(WorkerStopped {
        worker_id: worker_id.to_owned(),
        outcome,
    }));
    Ok(())
}

fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; a pid that is gone gives ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn wait_gone(record: &WorkerRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_running(record) {
            return true;
        }
        thread::sleep(POLL);
    }
    !is_running(record)
}

/// Every worker with a state file, and whether its process runs.
pub fn list(install_dir: &Path, report: &mut Reporter<'_>) -> Result<(), AgentError> {
    let dir = workers_dir(install_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.result(OperationResult::HiveWorkers(Vec::new()));
            return Ok(());
        }
        Err(e) => return Err(AgentError::io("list", &dir, e)),
    };
    let mut workers = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_record(&path) {
            Ok(Some(record)) => workers.push(HiveWorker {
                alive: is_running(&record),
                record,
            }),
            Ok(None) => {}
            Err(error) => report.narrate(Level::Warn, "worker_list", error.to_string()),
        }
    }
    workers.sort_by(|a, b| a.record.worker_id.cmp(&b.record.worker_id));
    report.result(OperationResult::HiveWorkers(workers));
    Ok(())
}

/// The last `lines` of a worker's log as narrations; with `follow`, new lines until
/// cancelled or until the worker is gone.
pub fn logs(
    install_dir: &Path,
    hive: &str,
    worker_id: &str,
    lines: u32,
    follow: bool,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<(), AgentError> {
    let record = read_record(&state_path(install_dir, worker_id))?;
    let log_path = match &record {
        Some(record) => PathBuf::from(&record.log),
        None => install_dir.join("logs").join(format!("{worker_id}.log")),
    };
    let text = fs::read(&log_path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => unknown_worker(hive, worker_id),
        _ => AgentError::io("read", &log_path, e),
    })?;
    let end = text.len() as u64;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let first = all.len().saturating_sub(lines as usize);
    for line in &all[first..] {
        report.narrate(Level::Info, "worker_log", *line);
    }
    let mut shown = all.len() - first;
    if follow {
        let mut follower = LogFollower::open(&log_path, end)?;
        loop {
            for line in follower.new_lines()? {
                report.narrate(Level::Info, "worker_log", line);
                shown += 1;
            }
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            if record.as_ref().is_none_or(|r| !is_running(r)) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    report.result(OperationResult::WorkerLogs(WorkerLogs {
        worker_id: worker_id.to_owned(),
        log: log_path.display().to_string(),
        lines: shown as u64,
    }));
    Ok(())
}

fn unknown_worker(hive: &str, worker_id: &str) -> AgentError {
    AgentError::refused(
        ErrorCode::NotFound,
        format!("no worker {worker_id} on {hive}"),
        "`rbee-keeper worker list` shows the workers and their hives",
    )
}

/// Writes the state file atomically: a reader sees the old file or the new one.
fn write_record(path: &Path, record: &WorkerRecord) -> Result<(), AgentError> {
    let partial = path.with_extension("json.partial");
    let text = serde_json::to_vec_pretty(record).map_err(AgentError::Serialize)?;
    fs::write(&partial, text).map_err(|e| AgentError::io("write", &partial, e))?;
    fs::rename(&partial, path).map_err(|e| AgentError::io("write", path, e))
}

/// The device a worker is asked to run on, as detected now (its free memory fresh);
/// `None` for Metal, which reports no memory. Refuses a device this hive does not
/// have, listing the ones it has.
/// The memory the running workers on `device` were estimated to need when started.
fn held_by_workers(install_dir: &Path, device: &str) -> u64 {
    crate::worker_state::running_records(&workers_dir(install_dir))
        .unwrap_or_default()
        .iter()
        .filter(|r| r.device == device)
        .map(|r| r.memory_bytes)
        .sum()
}

fn find_device(device: &str, hive: &str) -> Result<Option<DeviceInfo>, AgentError> {
    let spec: DeviceSpec = device.parse().map_err(|e: UnknownDevice| {
        AgentError::refused(
            ErrorCode::BadRequest,
            e.to_string(),
            "devices are named cpu, cuda:N or metal",
        )
    })?;
    let found = match spec {
        DeviceSpec::Cpu => Some(crate::detect::cpu_device()?),
        DeviceSpec::Metal if cfg!(target_os = "macos") => return Ok(None),
        DeviceSpec::Metal => None,
        DeviceSpec::Cuda(index) => crate::detect::gpu_devices()?
            .into_iter()
            .find(|g| g.index == index),
    };
    match found {
        Some(found) => Ok(Some(found)),
        None => {
            let mut names = vec!["cpu".to_owned()];
            names.extend(
                crate::detect::gpu_devices()?
                    .iter()
                    .map(|g| format!("cuda:{} ({})", g.index, g.name)),
            );
            Err(AgentError::refused(
                ErrorCode::NotFound,
                format!("{hive} has no device {device}"),
                format!("devices on {hive}: {}", names.join(", ")),
            ))
        }
    }
}

/// A port nobody listens on now; the worker binds it right after.
fn free_port(bind: IpAddr) -> Result<u16, AgentError> {
    TcpListener::bind((bind, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| AgentError::io("find a free port on", bind.to_string(), e))
}

/// A host for a URL: IPv6 addresses go in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_gpu_is_refused_with_the_devices_there_are() {
        let error = find_device("cuda:7", "hive-x").expect_err("no such gpu");
        let AgentError::Refused(detail) = error else {
            panic!("{error:?}")
        };
        assert_eq!(detail.code, ErrorCode::NotFound);
        assert!(detail.message.contains("cuda:7"), "{detail:?}");
        assert!(
            detail.hint.as_deref().is_some_and(|h| h.contains("cpu")),
            "{detail:?}"
        );
        let cpu = find_device("cpu", "hive-x").expect("a CPU");
        assert_eq!(cpu.map(|d| d.kind), Some(rbee_protocol::DeviceKind::Cpu));
        assert!(find_device("tpu:0", "hive-x").is_err());
    }

    #[test]
    fn a_reused_pid_is_not_the_worker() {
        let record = WorkerRecord {
            worker_id: "w-not-this-process".to_owned(),
            pid: std::process::id(),
            model: String::new(),
            model_path: String::new(),
            device: "cpu".to_owned(),
            port: 1,
            url: String::new(),
            log: String::new(),
            queen_url: String::new(),
            started_unix_s: 0,
            memory_bytes: 0,
        };
        assert!(!is_running(&record));
    }
}
