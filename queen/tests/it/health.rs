//! A hive's health in both directions, on a real lab host: SSH (the queen's commands)
//! turns unhealthy only after failures in a row and healthy only after successes in a
//! row; a worker the hive runs whose heartbeats never reach the queen is named, with
//! the queen URL it was given.

use std::path::Path;

use rbee_protocol::{JobEvent, Level};
use serde_json::{Value, json};

use crate::support::{Lab, Queen, bin_dir, start_queen_on};
use crate::workers::{MODEL, config, stock_models};

const HIVE: &str = "hive-1";

async fn hive_status(queen: &Queen) -> Vec<JobEvent> {
    queen
        .run(json!({"operation": "hive_status", "hive_id": HIVE}))
        .await
        .into_iter()
        .map(|(_, event)| event)
        .collect()
}

fn recap_message(events: &[JobEvent]) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            JobEvent::Result {
                result: rbee_protocol::OperationResult::Recap(rows),
                ..
            } => Some(
                rows.iter()
                    .map(|r| format!("{:?} {}", r.status, r.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

async fn metric(queen: &Queen, line_start: &str) -> Option<String> {
    let text = queen.metrics().await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(str::to_owned)
}

/// Starts a worker on the hive by running its agent directly (the lab shares this
/// machine's file system), with heartbeats sent where no queen listens.
fn spawn_unheard_worker(install_dir: &Path) -> Value {
    let out = std::process::Command::new(bin_dir().join("rbee-hive"))
        .arg("--install-dir")
        .arg(install_dir)
        .args([
            "--hive-id",
            HIVE,
            "worker-spawn",
            "--worker-id",
            "unheard-1",
        ])
        .args(["--model", MODEL, "--device", "cpu"])
        .args(["--queen-url", "http://127.0.0.1:9"])
        .args(["--bind", "127.0.0.1", "--advertise-host", "127.0.0.1"])
        .args(["--heartbeat-interval-ms", "500"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("rbee-hive runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let record =
        std::fs::read_to_string(install_dir.join("workers/unheard-1.json")).expect("state file");
    serde_json::from_str(&record).expect("state json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_health_needs_failures_in_a_row_and_silent_workers_are_named() {
    let lab = Lab::up(1);
    let inventory = lab.inventory(None);
    stock_models(&inventory);
    let install_dir = Path::new(&inventory.hives[HIVE].install_dir).to_path_buf();
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), inventory, "0.0.0.0:0").await;
    queen.run_each(&["hive_install", "hive_start"], HIVE).await;
    assert_eq!(queen.state.hives.ssh_health(HIVE).healthy, Some(true));

    // The hive → queen direction: a worker whose heartbeats go elsewhere.
    let record = spawn_unheard_worker(&install_dir);
    let events = hive_status(&queen).await;
    let warning = events
        .iter()
        .find_map(|e| match e {
            JobEvent::Narration(n) if n.action == "heartbeat" => Some(n.clone()),
            _ => None,
        })
        .expect("a heartbeat warning");
    assert_eq!(warning.level, Level::Warn);
    assert!(
        warning.human.contains("unheard-1")
            && warning.human.contains("never heard")
            && warning.human.contains("http://127.0.0.1:9"),
        "{}",
        warning.human
    );
    assert!(
        recap_message(&events).contains("1 running without heartbeats"),
        "{events:#?}"
    );
    let pid = record["pid"].as_i64().expect("pid") as libc::pid_t;
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    // The queen → hive direction: sshd stops; one failed command does not flip it.
    lab.script(&["stop-sshd", "1"]);
    queen.state.ssh.forget(HIVE).await;
    hive_status(&queen).await;
    let health = queen.state.hives.ssh_health(HIVE);
    assert_eq!(health.healthy, Some(true), "{health:?}");
    assert_eq!(health.consecutive_failures, 1);
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{health:?}"
    );
    assert_eq!(
        metric(&queen, "rbee_hive_ssh_healthy{").await.as_deref(),
        Some("rbee_hive_ssh_healthy{hive=\"hive-1\"} 1")
    );
    // The third failure in a row does.
    hive_status(&queen).await;
    hive_status(&queen).await;
    let health = queen.state.hives.ssh_health(HIVE);
    assert_eq!(health.healthy, Some(false), "{health:?}");
    assert_eq!(
        metric(&queen, "rbee_hive_ssh_healthy{").await.as_deref(),
        Some("rbee_hive_ssh_healthy{hive=\"hive-1\"} 0")
    );
    let status = queen.run(json!({"operation": "status"})).await;
    let row = crate::support::Queen::result_of(&status).expect("status");
    assert_eq!(row["hives"][0]["ssh"]["healthy"], false, "{row}");
    assert_eq!(row["hives"][0]["ssh"]["consecutive_failures"], 3, "{row}");

    // Back: one success is not yet trust (`model list` is one command); two in a row
    // are.
    lab.script(&["start-sshd", "1"]);
    let events = queen
        .run(json!({"operation": "model_list", "hive_id": HIVE}))
        .await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    assert_eq!(queen.state.hives.ssh_health(HIVE).healthy, Some(false));
    hive_status(&queen).await;
    let health = queen.state.hives.ssh_health(HIVE);
    assert_eq!(health.healthy, Some(true), "{health:?}");
    assert_eq!(health.consecutive_failures, 0);
    queen.stop().await;
}
