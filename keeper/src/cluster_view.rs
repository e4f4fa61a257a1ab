//! The answers about hives and the cluster as sentences and tables: what an agent
//! reports of its hive (version, devices, status, binaries), the inventory, the
//! queen's `status`, and the per-hive recap every fan-out ends with.

use rbee_protocol::HiveCapabilities;
use rbee_protocol::agent::{AgentStatus, AgentVersion, InstalledBinaries};
use rbee_protocol::cluster::{ClusterStatus, HiveSummary};
use rbee_protocol::inventory::{HiveProbe, InventoryChange};
use rbee_protocol::result::RecapRow;

use crate::model_table::bytes;

/// `agent 0.1.0 on linux/x86_64`.
pub fn version(version: &AgentVersion) -> String {
    format!(
        "agent {} on {}/{}",
        version.version, version.os, version.arch
    )
}

/// `2 device(s): CPU-0 (…, 12.0 GiB free of 15.6 GiB), …; RAM 9.1 GiB free of …`.
pub fn capabilities(caps: &HiveCapabilities) -> String {
    let devices: Vec<String> = caps
        .devices
        .iter()
        .map(|d| {
            format!(
                "{} {} ({} free of {})",
                d.id,
                d.name,
                bytes(d.memory_free),
                bytes(d.memory_total)
            )
        })
        .collect();
    format!(
        "{} ({}): {} device(s): {}; RAM {} free of {}; disk {} free",
        caps.hostname,
        caps.platform(),
        caps.devices.len(),
        devices.join(", "),
        bytes(caps.ram_available),
        bytes(caps.ram_total),
        bytes(caps.disk_free)
    )
}

/// The agent's `status` as three lines: agent, devices, workers.
pub fn status(status: &AgentStatus) -> String {
    let workers: Vec<String> = status
        .workers
        .iter()
        .map(|w| match (&w.state, &w.problem) {
            (Some(record), _) => format!(
                "{} ({} on {}, pid {})",
                w.id, record.model, record.device, record.pid
            ),
            (None, Some(problem)) => format!("{} ({problem})", w.id),
            (None, None) => w.id.clone(),
        })
        .collect();
    format!(
        "{} in {}\n  {}\n  {} worker(s){}",
        version(&status.version),
        status.install_dir,
        capabilities(&status.capabilities),
        status.workers.len(),
        if workers.is_empty() {
            String::new()
        } else {
            format!(": {}", workers.join(", "))
        }
    )
}

/// `binaries on linux/x86_64: llm-worker-rbee 3f2a…, rbee-hive 9c1d…`.
pub fn binaries(installed: &InstalledBinaries) -> String {
    let files: Vec<String> = installed
        .sha256
        .iter()
        .map(|(name, sha)| format!("{name} {}", sha.get(..12).unwrap_or(sha)))
        .collect();
    format!(
        "binaries on {}/{}{}: {}",
        installed.os,
        installed.arch,
        installed
            .libc
            .as_ref()
            .map_or_else(String::new, |libc| format!(", {libc}")),
        if files.is_empty() {
            "none".to_owned()
        } else {
            files.join(", ")
        }
    )
}

/// The inventory's hives with what the queen knows of them.
pub fn hives(hives: &[HiveSummary]) -> String {
    let rows: Vec<Vec<String>> = hives
        .iter()
        .map(|h| {
            vec![
                h.alias.clone(),
                h.host.clone(),
                h.ssh_port.map_or("-".to_owned(), |p| p.to_string()),
                h.ssh_user.clone().unwrap_or_else(|| "-".to_owned()),
                dash_if_empty(h.groups.join(",")),
                if h.online { "yes" } else { "no" }.to_owned(),
                match h.ssh.healthy {
                    Some(true) => "ok",
                    Some(false) => "down",
                    None => "-",
                }
                .to_owned(),
                h.agent_version.clone().unwrap_or_else(|| "-".to_owned()),
                h.devices
                    .as_ref()
                    .map_or("-".to_owned(), |d| dash_if_empty(d.join(","))),
                h.install_dir.clone(),
            ]
        })
        .collect();
    crate::table::rows(
        &[
            "alias",
            "host",
            "port",
            "user",
            "groups",
            "online",
            "ssh",
            "agent",
            "devices",
            "install_dir",
        ],
        &rows,
    )
}

/// The queen's `status`: one line for the queen, the hives (with how the queen's SSH
/// commands to each fare: the hive → queen direction is the workers' `heard`), the
/// workers.
pub fn cluster(status: &ClusterStatus) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cluster_at(status, now)
}

fn cluster_at(status: &ClusterStatus, now_unix_s: u64) -> String {
    let online = status.hives.iter().filter(|h| h.online).count();
    let ago = |at: u64| format!("{} ago", duration(now_unix_s.saturating_sub(at)));
    let ssh: String = status
        .hives
        .iter()
        .filter(|h| h.ssh.healthy.is_some() || h.ssh.consecutive_failures > 0)
        .map(|h| {
            let ssh = &h.ssh;
            let mut line = format!(
                "\n{}: ssh {}",
                h.alias,
                match ssh.healthy {
                    Some(true) => "ok",
                    Some(false) => "down",
                    None => "not judged yet",
                }
            );
            if ssh.consecutive_failures > 0 {
                line.push_str(&format!(
                    ", {} failure(s) in a row, the last {}: {}",
                    ssh.consecutive_failures,
                    ssh.last_error_unix_s.map_or_else(|| "-".to_owned(), ago),
                    ssh.last_error.as_deref().unwrap_or("-")
                ));
            }
            if let Some(at) = ssh.last_success_unix_s {
                line.push_str(&format!("; last success {}", ago(at)));
            }
            line
        })
        .collect();
    format!(
        "queen {}, up {}, {} job(s) running\n\nHIVES ({} of {} online)\n{}{}\n\nWORKERS ({})\n{}",
        status.queen.version,
        duration(status.queen.uptime_s),
        status.queen.jobs_running,
        online,
        status.hives.len(),
        hives(&status.hives),
        ssh,
        status.workers.len(),
        crate::worker_table::render(&status.workers)
    )
}

/// A fan-out's per-hive outcome.
pub fn recap(rows: &[RecapRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.hive.clone(),
                r.status.as_str().to_owned(),
                match r.code {
                    Some(code) => format!("{} ({code})", r.message),
                    None => r.message.clone(),
                },
            ]
        })
        .collect();
    crate::table::rows(&["hive", "status", "message"], &rows)
}

/// `root@10.251.1.2:22, linux/x86_64, host key SHA256:…; ~/.rbee writable, 12.0 GiB free`.
pub fn probe(probe: &HiveProbe) -> String {
    format!(
        "{}@{}:{}, {}/{}, {}, host key {}; {} {}, {}",
        probe.user,
        probe.host,
        probe.port,
        probe.os,
        probe.arch,
        probe.libc,
        probe.fingerprint,
        probe.install_dir,
        if probe.writable {
            "writable"
        } else {
            "NOT writable"
        },
        probe.free_disk_bytes.map_or_else(
            || "free disk unknown".to_owned(),
            |b| format!("{} free", bytes(b))
        ),
    )
}

/// `added hive-5 to /etc/rbee/inventory.toml`, or a reload's changes.
pub fn inventory_change(change: &InventoryChange) -> String {
    let parts: Vec<String> = [
        ("added", &change.added),
        ("removed", &change.removed),
        ("changed", &change.changed),
    ]
    .into_iter()
    .filter(|(_, aliases)| !aliases.is_empty())
    .map(|(what, aliases)| format!("{what} {}", aliases.join(", ")))
    .collect();
    if parts.is_empty() {
        format!("{}: no hive changed", change.path)
    } else {
        format!("{}: {}", change.path, parts.join("; "))
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// `3h 12m`, `5m 02s`, `42s`.
fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_protocol::ErrorCode;
    use rbee_protocol::cluster::QueenSummary;
    use rbee_protocol::result::HostStatus;

    fn hive(alias: &str, online: bool) -> HiveSummary {
        HiveSummary {
            alias: alias.to_owned(),
            host: "192.0.2.10".to_owned(),
            ssh_port: None,
            ssh_user: Some("rbee".to_owned()),
            install_dir: "~/.rbee".to_owned(),
            groups: vec!["gpu".to_owned(), "lab".to_owned()],
            online,
            agent_version: online.then(|| "0.1.0".to_owned()),
            devices: online.then(|| vec!["CPU-0".to_owned(), "GPU-0".to_owned()]),
            ssh: if online {
                rbee_protocol::cluster::LinkHealth {
                    healthy: Some(true),
                    last_success_unix_s: Some(995),
                    ..Default::default()
                }
            } else {
                rbee_protocol::cluster::LinkHealth {
                    healthy: Some(false),
                    consecutive_failures: 3,
                    last_error: Some("192.0.2.11:22 is unreachable: no route".to_owned()),
                    last_error_unix_s: Some(998),
                    last_success_unix_s: Some(875),
                }
            },
        }
    }

    #[test]
    fn the_cluster_status_reads_as_sentences_and_tables_not_json() {
        let text = cluster_at(
            &ClusterStatus {
                queen: QueenSummary {
                    version: "0.1.0".to_owned(),
                    uptime_s: 3725,
                    jobs_running: 1,
                },
                hives: vec![hive("gpu-a", true), hive("gpu-b", false)],
                workers: Vec::new(),
            },
            1_000,
        );
        assert!(!text.contains('{'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "queen 0.1.0, up 1h 02m, 1 job(s) running");
        assert_eq!(lines[2], "HIVES (1 of 2 online)");
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            [
                "gpu-a",
                "192.0.2.10",
                "-",
                "rbee",
                "gpu,lab",
                "yes",
                "ok",
                "0.1.0",
                "CPU-0,GPU-0",
                "~/.rbee"
            ]
        );
        assert_eq!(lines[5].split_whitespace().nth(6), Some("down"));
        // Both directions: SSH per hive here, heartbeats as the workers' `heard`.
        assert_eq!(lines[6], "gpu-a: ssh ok; last success 5s ago");
        assert_eq!(
            lines[7],
            "gpu-b: ssh down, 3 failure(s) in a row, the last 2s ago: 192.0.2.11:22 is unreachable: no route; last success 2m 05s ago"
        );
        assert_eq!(lines[9], "WORKERS (0)");
        assert_eq!(lines[10], "(none)");
    }

    #[test]
    fn an_agent_status_names_each_worker_by_its_record_or_its_problem() {
        let agent: AgentStatus = serde_json::from_value(serde_json::json!({
            "version": {"version": "0.1.0", "os": "linux", "arch": "x86_64"},
            "install_dir": "/srv/rbee",
            "capabilities": {"agent_version": "0.1.0", "os": "linux", "arch": "x86_64",
                "hostname": "h", "devices": [], "ram_total": 1, "ram_available": 1, "disk_free": 1},
            "workers": [
                {"id": "w-1", "problem": "w-1.json is not a worker state file"},
                {"id": "w-2", "state": {"worker_id": "w-2", "pid": 42, "model": "m.gguf",
                    "model_path": "/m.gguf", "device": "cpu", "port": 9001,
                    "url": "http://h:9001", "log": "/l", "queen_url": "http://q:8500",
                    "started_unix_s": 1}}
            ]
        }))
        .expect("a status");
        let text = status(&agent);
        assert!(!text.contains('{'), "{text}");
        assert!(
            text.ends_with(
                "2 worker(s): w-1 (w-1.json is not a worker state file), w-2 (m.gguf on cpu, pid 42)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_recap_names_the_code_of_a_failure() {
        let text = recap(&[
            RecapRow {
                hive: "a".to_owned(),
                status: HostStatus::Ok,
                message: "online".to_owned(),
                code: None,
            },
            RecapRow {
                hive: "b".to_owned(),
                status: HostStatus::Unreachable,
                message: "no route".to_owned(),
                code: Some(ErrorCode::Unreachable),
            },
        ]);
        assert_eq!(
            text,
            "HIVE  STATUS       MESSAGE\na     ok           online\nb     unreachable  no route (unreachable)"
        );
    }
}
