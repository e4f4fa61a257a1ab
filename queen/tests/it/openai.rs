//! The OpenAI-compatible API, checked with the official `openai` Python client against
//! an in-process queen and a real worker process with the real model; API tokens; and
//! `/metrics`, validated with promtool.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbee_config::{Config, Inventory};
use serde_json::Value;

use crate::support::{assert_promtool_accepts, bin_dir, repo, start_queen, test_model};

const TOKEN: &str = "openai-test-token";
const MODEL: &str = "smollm2";

/// Kills the worker when the test ends, however it ends.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openai_client_chats_streams_completes_and_lists_models() {
    let python = repo().join(".rbee-cache/py-venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/setup-test-tools.sh (scripts/test.sh does)",
        python.display()
    );
    let mut config = Config::default();
    config.queen.api_token = Some(TOKEN.to_owned());
    let queen = start_queen(config, Inventory::default()).await;
    let worker_id = "openai-worker";
    let logs = tempfile::NamedTempFile::new().expect("log file");
    let worker = Worker(
        Command::new(bin_dir().join("llm-worker-rbee"))
            .args(["--worker-id", worker_id, "--hive-id", "localhost"])
            .arg("--model")
            .arg(test_model())
            .args([
                "--model-id",
                MODEL,
                "--port",
                "0",
                "--heartbeat-interval",
                "0.5",
            ])
            .args(["--queen-url", &queen.url])
            .env("RBEE_WORKER_TOKEN", queen.state.worker_token(worker_id))
            .arg("--log-json")
            .stdout(Stdio::null())
            .stderr(logs.reopen().expect("log file"))
            .spawn()
            .expect("worker starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !queen
        .state
        .workers
        .get(worker_id)
        .is_some_and(|w| w.is_schedulable())
    {
        assert!(Instant::now() < deadline, "the worker did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = queen.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo().join("tests/openai/check_client.py"))
            .args([&url, TOKEN, MODEL])
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The queen's job id is the request id the worker logs, as JSON with --log-json.
    let jobs = queen.get_json("/v1/jobs").await;
    let worker_log = std::fs::read_to_string(logs.path()).expect("worker log");
    let logged: Vec<Value> = worker_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!logged.is_empty(), "no JSON log lines: {worker_log}");
    let infer_job = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["operation"] == "infer" && j["state"] == "done")
        .and_then(|j| j["job_id"].as_str())
        .expect("an infer job")
        .to_owned();
    assert!(
        logged
            .iter()
            .any(|l| l["fields"]["request_id"] == infer_job.as_str()),
        "{infer_job} not in the worker's log:\n{worker_log}"
    );

    // Without the token: 401 with a JSON error body; /health stays open.
    let anonymous = reqwest::Client::new();
    let refused = anonymous
        .get(format!("{}/v1/models", queen.url))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let health = anonymous
        .get(format!("{}/health", queen.url))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    // The metrics count what just happened and pass promtool's checks. The worker's
    // state is what its last heartbeat said: one sent during the last request still
    // says busy, so wait for the next.
    let scrape = || queen.metrics();
    let mut metrics = scrape().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !metrics.contains("rbee_workers{status=\"ready\"} 1")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        metrics = scrape().await;
    }
    for expected in [
        "rbee_inference_requests_total{model=\"smollm2\",outcome=\"ok\"}",
        "rbee_inference_requests_total{model=\"no-such-model\",outcome=\"no_worker\"} 1",
        "rbee_jobs_total{operation=\"infer\",outcome=\"done\"}",
        "rbee_time_to_first_token_seconds_count{model=\"smollm2\"}",
        "rbee_tokens_per_second_bucket{model=\"smollm2\",le=\"+Inf\"}",
        "rbee_workers{status=\"ready\"} 1",
        "rbee_hives_reachable 0",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    let tokens: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rbee_tokens_generated_total "))
        .and_then(|v| v.parse().ok())
        .expect("tokens counter");
    assert!(tokens > 0, "{metrics}");
    assert_promtool_accepts(&metrics);
    drop(worker);
}
