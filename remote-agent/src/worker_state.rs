//! Worker state files, `<install_dir>/workers/<id>.json`: where they are, how one is
//! read, and whether its worker still runs. The one owner of both questions, so that
//! `worker-list`, `worker-stop`, `status` and `model-delete` agree on which workers live.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rbee_protocol::ErrorCode;
use rbee_protocol::agent::WorkerRecord;

use crate::error::AgentError;

pub fn workers_dir(install_dir: &Path) -> PathBuf {
    install_dir.join("workers")
}

pub fn state_path(install_dir: &Path, worker_id: &str) -> PathBuf {
    workers_dir(install_dir).join(format!("{worker_id}.json"))
}

pub fn read_record(path: &Path) -> Result<Option<WorkerRecord>, AgentError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("read", path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        AgentError::refused(
            ErrorCode::AgentFailed,
            format!("{} is not a worker state file: {e}", path.display()),
            "stop the worker by hand and delete the file",
        )
    })
}

/// Whether the record's process still runs and is that worker: a pid the system
/// reused for another program, or a zombie, does not count.
pub fn is_running(record: &WorkerRecord) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{}", record.pid));
    if let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X')) {
            return false;
        }
        return fs::read(proc_dir.join("cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == record.worker_id.as_bytes())
        });
    }
    let Ok(pid) = libc::pid_t::try_from(record.pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The records of the workers that still run, from every state file in `dir` that is
/// one (a file half-written or of another kind is passed over).
pub fn running_records(dir: &Path) -> io::Result<Vec<WorkerRecord>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut running = Vec::new();
    for item in read.flatten() {
        let path = item.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Ok(Some(record)) = read_record(&path)
            && is_running(&record)
        {
            running.push(record);
        }
    }
    Ok(running)
}
