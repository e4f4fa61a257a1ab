//! The `local-hive` feature: localhost operations run the agent in-process, with the
//! same events as over SSH and no sshd involved. `scripts/test.sh` turns the feature
//! on for the whole run.

use rbee_config::{Config, Inventory};
use rbee_protocol::{JobEvent, OperationResult};
use serde_json::{Value, json};

use crate::support::{assert_promtool_accepts, start_queen};

#[tokio::test]
async fn localhost_runs_in_process_without_sshd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[hives.localhost]\nhost = \"127.0.0.1\"\n# no sshd listens here: only the in-process path can succeed\nssh_port = 1\ninstall_dir = \"{}\"\n",
        dir.path().join("rbee").display()
    );
    let inventory =
        Inventory::parse(std::path::Path::new("inventory.toml"), &text).expect("inventory");
    let queen = start_queen(Config::default(), inventory).await;
    let (url, state) = (queen.url.clone(), queen.state.clone());
    let run = |operation: Value| {
        let queen = &queen;
        async move {
            queen
                .run(operation)
                .await
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
        }
    };

    let info: Value = reqwest::get(format!("{url}/v1/build-info"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(info["features"], json!(["local-hive"]));

    let install = run(json!({"operation": "hive_install", "hive_id": "localhost"})).await;
    assert_eq!(install.last(), Some(&JobEvent::Done), "{install:?}");
    let started = run(json!({"operation": "hive_start", "hive_id": "localhost"})).await;
    assert_eq!(started.last(), Some(&JobEvent::Done), "{started:?}");
    let caps = started
        .iter()
        .find_map(|e| match e {
            JobEvent::Result {
                hive: Some(h),
                result: OperationResult::Capabilities(caps),
            } if h == "localhost" => Some(serde_json::to_value(caps).expect("json")),
            _ => None,
        })
        .expect("capabilities from the in-process agent");
    assert_eq!(caps["devices"][0]["id"], "CPU-0");
    assert!(started.iter().any(|e| matches!(e, JobEvent::Narration(n) if n.hive.as_deref() == Some("localhost") && n.human.contains("detect"))));
    assert!(state.hives.get("localhost").is_some_and(|r| r.online));

    // Model commands go through the same hive client as every other, so they are timed
    // like the rest.
    let listed = run(json!({"operation": "model_list", "hive_id": "localhost"})).await;
    assert_eq!(listed.last(), Some(&JobEvent::Done), "{listed:?}");
    assert!(listed.iter().any(|e| matches!(e, JobEvent::Result {
        hive: Some(h),
        result: OperationResult::Models(models),
    } if h == "localhost" && models.is_empty())));
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    for command in ["version", "detect", "model-list"] {
        assert!(
            metrics.contains(&format!(
                "rbee_ssh_operation_seconds_count{{command=\"{command}\",transport=\"in_process\"}} 1"
            )),
            "{command} is not timed: {metrics}"
        );
    }
    assert_promtool_accepts(&metrics);
    state.shutdown.cancel();
}
