//! The `local-hive` feature: localhost operations run the agent in-process, with the
//! same events as over SSH and no sshd involved. Run by `scripts/test.sh` with
//! `--features local-hive`.

use std::sync::Arc;

use futures::StreamExt;
use queen_rbee::state::AppState;
use rbee_config::{Config, Inventory};
use rbee_protocol::JobEvent;
use rbee_protocol::sse::SseDecoder;
use serde_json::{Value, json};

async fn run(url: &str, operation: Value) -> Vec<JobEvent> {
    let http = reqwest::Client::new();
    let body: Value = http
        .post(format!("{url}/v1/jobs"))
        .json(&operation)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let job = body["job_id"].as_str().expect("job id");
    let response = http
        .get(format!("{url}/v1/jobs/{job}/stream"))
        .send()
        .await
        .expect("stream");
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        for frame in decoder.feed(&chunk.expect("chunk")).expect("sse") {
            events.push(JobEvent::from_sse(&frame.event, &frame.data).expect("event"));
        }
    }
    events
}

#[tokio::test]
async fn localhost_runs_in_process_without_sshd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[hives.localhost]\nhost = \"127.0.0.1\"\n# no sshd listens here: only the in-process path can succeed\nssh_port = 1\ninstall_dir = \"{}\"\n",
        dir.path().join("rbee").display()
    );
    let inventory =
        Inventory::parse(std::path::Path::new("inventory.toml"), &text).expect("inventory");
    let state = Arc::new(AppState::new(Config::default(), inventory));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(queen_rbee::serve(listener, state.clone()));

    let info: Value = reqwest::get(format!("{url}/v1/build-info"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(info["features"], json!(["local-hive"]));

    let install = run(
        &url,
        json!({"operation": "hive_install", "hive_id": "localhost"}),
    )
    .await;
    assert_eq!(install.last(), Some(&JobEvent::Done), "{install:?}");
    let started = run(
        &url,
        json!({"operation": "hive_start", "hive_id": "localhost"}),
    )
    .await;
    assert_eq!(started.last(), Some(&JobEvent::Done), "{started:?}");
    let caps = started
        .iter()
        .find_map(|e| match e {
            JobEvent::Result {
                hive: Some(h),
                value,
            } if h == "localhost" && value.get("devices").is_some() => Some(value.clone()),
            _ => None,
        })
        .expect("capabilities from the in-process agent");
    assert_eq!(caps["devices"][0]["id"], "CPU-0");
    assert!(started.iter().any(|e| matches!(e, JobEvent::Narration(n) if n.hive.as_deref() == Some("localhost") && n.human.contains("detect"))));
    assert!(state.hives.get("localhost").is_some_and(|r| r.online));
    state.shutdown.cancel();
}
