//! The real `queen-rbee` process: killed with SIGKILL while a worker serves and a model
//! download runs on a lab hive, then started again; and what it writes to its log at
//! debug level.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbee_protocol::cluster::WorkerStatus;
use rbee_protocol::{JobEvent, OperationResult};
use serde_json::json;

use crate::hives::{recap, rows, terminal};
use crate::hub_mirror::{HubMirror, MirrorFile};
use crate::models::{agent_running, install_dir, inventory_text_with_mirror, model_bytes, tree};
use crate::support::{Lab, bin_dir, payload, run_job, submit_job, test_model};

const API_TOKEN: &str = "queen-process-api-token-5f1c07";
const HF_TOKEN: &str = "hf_queen_process_secret_93ad41";
const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A queen process logging at debug level to `log`; SIGKILLed on drop.
struct QueenProcess {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl QueenProcess {
    async fn start(dir: &Path, port: u16, log: &Path) -> QueenProcess {
        let log = std::fs::File::create(log).expect("queen log");
        let child = Command::new(bin_dir().join("queen-rbee"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--inventory")
            .arg(dir.join("inventory.toml"))
            .env("RBEE_LOG", "debug")
            .env("HF_TOKEN", HF_TOKEN)
            .env_remove("RBEE_API_TOKEN")
            .env_remove("RBEE_CONFIG")
            .env_remove("RBEE_INVENTORY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("queen-rbee runs");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {API_TOKEN}").parse().expect("header"),
        );
        let queen = QueenProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let health = queen.http.get(format!("{}/health", queen.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return queen;
            }
            assert!(Instant::now() < deadline, "queen-rbee did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run(&self, operation: serde_json::Value) -> Vec<(Instant, JobEvent)> {
        run_job(&self.http, &self.url, operation).await
    }
}

impl Drop for QueenProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The command lines of every process on this machine (lab hosts included), as `ps`
/// shows them.
fn command_lines() -> Vec<String> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

fn partial_size(dir: &Path) -> u64 {
    tree(dir)
        .iter()
        .filter(|p| p.ends_with(".partial"))
        .filter_map(|p| std::fs::metadata(dir.join(p)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_queen_leaves_its_worker_serving_stops_its_download_and_the_next_queen_adopts_and_resumes()
 {
    let lab = Lab::up(1);
    let mirror = HubMirror::start("0.0.0.0:0").await;
    let bytes = model_bytes();
    let mut slow = MirrorFile::new(bytes.clone());
    slow.slow = true;
    mirror.add("acme/slow", "slow.gguf", slow);
    let dir = tempfile::tempdir().expect("queen dir");
    let port = free_port();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[queen]\nport = {port}\nbind_addr = \"0.0.0.0\"\napi_token = \"{API_TOKEN}\"\nbin_dir = \"{}\"\nstate_dir = \"{}\"\nconnect_timeout_secs = 3\nheartbeat_interval_ms = 500\n",
            bin_dir().display(),
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    std::fs::write(
        dir.path().join("inventory.toml"),
        inventory_text_with_mirror(&lab, mirror.addr.port()),
    )
    .expect("inventory");
    let logs: Vec<PathBuf> = (1..=2)
        .map(|n| dir.path().join(format!("queen-{n}.log")))
        .collect();

    let local_models = install_dir(&lab, "hive-1").join("models/local");
    std::fs::create_dir_all(&local_models).expect("models dir");
    std::fs::copy(test_model(), local_models.join(MODEL_FILE)).expect("stock the model");

    let first = QueenProcess::start(dir.path(), port, &logs[0]).await;
    for operation in ["hive_install", "hive_start"] {
        let events = first
            .run(json!({"operation": operation, "hive_id": "hive-1"}))
            .await;
        assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    }
    let spawned = first
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": MODEL, "device": "cpu"}))
        .await;
    assert_eq!(terminal(&spawned), &JobEvent::Done, "{spawned:#?}");
    let worker = spawned
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            JobEvent::Result { hive: None, result } => Some(payload(result)),
            _ => None,
        })
        .expect("the worker");
    let worker_id = worker["worker_id"].as_str().expect("id").to_owned();
    let pid = worker["pid"].as_i64().expect("pid") as libc::pid_t;
    let download =
        json!({"operation": "model_download", "hive_id": "hive-1", "model": "acme/slow:slow.gguf"});
    submit_job(&first.http, &first.url, download.clone()).await;
    let slow_dir = install_dir(&lab, "hive-1").join("models/acme/slow");
    let deadline = Instant::now() + Duration::from_secs(30);
    while partial_size(&slow_dir) < 1 << 20 {
        assert!(Instant::now() < deadline, "the slow download never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Mid-download, no command line on the machine (the queen's, sshd's, the agent's)
    // carries the hub token or the API token.
    assert!(agent_running("acme/slow"));
    for line in command_lines() {
        assert!(
            !line.contains(HF_TOKEN) && !line.contains(API_TOKEN),
            "a secret on a command line: {line}"
        );
    }

    // SIGKILL: no shutdown runs. Its SSH connection dies with it, so the agent on the
    // hive sees its stdin end and stops, keeping the partial file.
    drop(first);
    let gone = Instant::now() + Duration::from_secs(10);
    while agent_running("acme/slow") {
        assert!(
            Instant::now() < gone,
            "the agent kept downloading for a dead queen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the worker died with the queen"
    );
    let kept = partial_size(&slow_dir);
    assert!(kept >= 1 << 20, "the partial file was kept: {kept}");
    assert!(!slow_dir.join("slow.gguf").exists());

    // The next queen, on the same port and state, resumes the download on request.
    mirror.add("acme/slow", "slow.gguf", MirrorFile::new(bytes.clone()));
    let second = QueenProcess::start(dir.path(), port, &logs[1]).await;
    // The worker, still running, is adopted from its heartbeats and serves.
    let adopted = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = second.run(json!({"operation": "worker_list"})).await;
        let ready = listed.iter().any(|(_, e)| {
            matches!(e, JobEvent::Result { hive: None, result: OperationResult::Workers(ws) }
                if ws.iter().any(|w| w.heartbeat.worker_id == worker_id && w.status == WorkerStatus::Ready))
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < adopted,
            "the worker was not adopted: {listed:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = second
        .run(json!({
            "operation": "infer",
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 4,
            "temperature": 0.0,
        }))
        .await;
    assert_eq!(terminal(&answer), &JobEvent::Done, "{answer:#?}");
    assert!(
        answer
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Token { .. })),
        "{answer:#?}"
    );
    let before = mirror.seen().len();
    let resumed = second.run(download).await;
    assert_eq!(
        recap(&resumed),
        rows(&[("hive-1", "changed")]),
        "{resumed:#?}"
    );
    let range = mirror.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET")
        .find_map(|s| s.range.clone());
    let from: u64 = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("resumed with a Range request: {range:?}"));
    assert!(
        from >= kept,
        "resumed from byte {from}, the partial held {kept}"
    );
    assert!(std::fs::read(slow_dir.join("slow.gguf")).expect("resumed file") == *bytes);
    // The hub token reached the hub, so the queen had it to leak.
    assert!(
        mirror
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {HF_TOKEN}")))
    );

    // Neither job events nor the log at debug level (every exec and remote stderr
    // line) show a secret.
    let jobs: serde_json::Value = second
        .http
        .get(format!("{}/v1/jobs", second.url))
        .send()
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    for job in jobs.as_array().expect("jobs") {
        let id = job["job_id"].as_str().expect("id");
        let replay = second
            .http
            .get(format!("{}/v1/jobs/{id}/stream", second.url))
            .send()
            .await
            .expect("stream")
            .text()
            .await
            .expect("text");
        assert!(!replay.contains(HF_TOKEN) && !replay.contains(API_TOKEN));
    }
    let stopped = second
        .run(json!({"operation": "worker_stop", "worker_id": worker_id}))
        .await;
    assert_eq!(terminal(&stopped), &JobEvent::Done, "{stopped:#?}");
    drop(second);
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("queen log");
        assert!(
            text.contains("DEBUG") && text.contains("exec"),
            "the log is at debug level: {text}"
        );
        assert!(
            !text.contains(HF_TOKEN) && !text.contains(API_TOKEN),
            "a secret in {}: {text}",
            log.display()
        );
    }
}
