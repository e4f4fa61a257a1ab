//! The queen started in-process on 127.0.0.1:0 and driven over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{NewState, Queen, new_state, serve_state};
use rbee_config::{Config, Inventory};
use rbee_protocol::cluster::WorkerStatus;
use rbee_protocol::{ErrorBody, ErrorCode, JobEvent, OperationResult};
use serde_json::{Value, json};

const INVENTORY: &str = r#"
[defaults]
ssh_user = "rbee"
[hives.gpu-a]
host = "192.0.2.10"
groups = ["gpu"]
[hives.localhost]
host = "127.0.0.1"
"#;

async fn start_with(configure: impl FnOnce(&mut Config)) -> Queen {
    let mut config = Config::default();
    config.queen.keepalive_ms = 100;
    configure(&mut config);
    let inventory =
        Inventory::parse(std::path::Path::new("inventory.toml"), INVENTORY).expect("inventory");
    serve_state(new_state(config, inventory), "127.0.0.1:0").await
}

async fn start() -> Queen {
    start_with(|_| {}).await
}

fn terminal_count(events: &[JobEvent]) -> usize {
    events.iter().filter(|e| e.is_terminal()).count()
}

#[tokio::test]
async fn health_and_build_info() {
    let queen = start().await;
    let health: Value = queen.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    let info: Value = queen.get_json("/v1/build-info").await;
    assert_eq!(info["version"], rbee_protocol::VERSION);
    assert!(info["features"].is_array());
    let stamp = info["build_timestamp"].as_str().expect("timestamp");
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.starts_with("20"),
        "{stamp}"
    );
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn a_job_streams_to_done_with_typed_frames() {
    let queen = start().await;
    let job = queen.submit(json!({"operation": "status"})).await;
    let (frames, _) = queen.frames(&job, Duration::from_secs(10)).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["narration", "result", "done"]);
    assert_eq!(frames[2].data, "[DONE]");
    let ids: Vec<Option<&str>> = frames.iter().map(|f| f.id.as_deref()).collect();
    assert_eq!(ids, [Some("0"), Some("1"), Some("2")]);
    let result: Value = serde_json::from_str(&frames[1].data).expect("json");
    let aliases: Vec<&str> = result["value"]["hives"]
        .as_array()
        .expect("hives")
        .iter()
        .filter_map(|h| h["alias"].as_str())
        .collect();
    assert_eq!(aliases, ["gpu-a", "localhost"]);
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn waiting_for_a_loading_worker_shows_its_load_percent() {
    let queen = start().await;
    let job = queen
        .submit(json!({"operation": "wait_ready", "model": "m.gguf", "timeout_s": 30}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let beat = |percent: Option<u8>, state: &str| {
        let mut body = json!({
            "worker_id": "w1", "hive_id": "gpu-a", "model": "m.gguf", "device": "cpu",
            "url": "http://127.0.0.1:1", "state": state, "interval_ms": 1000
        });
        if let Some(percent) = percent {
            body["load_percent"] = json!(percent);
        }
        body
    };
    for body in [
        beat(Some(30), "loading"),
        beat(Some(30), "loading"),
        beat(Some(85), "loading"),
        beat(None, "ready"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/worker-heartbeat", queen.url))
            .json(&body)
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(response.status(), 204);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = queen.events(&job).await;
    let shown: Vec<(u64, Option<u64>, &str)> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress(p) => Some((p.current, p.total, p.unit.as_str())),
            _ => None,
        })
        .collect();
    // Each new percent once, out of 100, then the worker is the answer.
    assert_eq!(
        shown,
        [(30, Some(100), "%"), (85, Some(100), "%")],
        "{events:?}"
    );
    assert!(events.iter().any(
        |e| matches!(e, JobEvent::Result { result: OperationResult::Worker(w), .. } if w.heartbeat.worker_id == "w1")
    ));
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn late_subscriber_receives_every_event_from_the_first() {
    let queen = start().await;
    let job = queen
        .submit(json!({"operation": "wait_ready", "model": "m.gguf", "timeout_s": 30}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    queen.heartbeat("w1", "m.gguf", "ready", 1000).await;
    // Wait for the job to end, then subscribe for the first time.
    let mut ended = false;
    for _ in 0..100 {
        let summary: Value = queen.get_json(&format!("/v1/jobs/{job}")).await;
        if summary["state"] == "done" {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended, "wait_ready finished once a ready heartbeat arrived");
    let events = queen.events(&job).await;
    assert!(
        matches!(&events[0], JobEvent::Narration(n) if n.human.contains("waiting for a ready worker"))
    );
    assert!(
        matches!(&events[events.len() - 2], JobEvent::Result { result: OperationResult::Worker(w), .. } if w.heartbeat.worker_id == "w1")
    );
    assert_eq!(events.last(), Some(&JobEvent::Done));
    assert_eq!(terminal_count(&events), 1);
    // A reconnect with Last-Event-ID resumes after it.
    let resumed = queen
        .http
        .get(format!("{}/v1/jobs/{job}/stream", queen.url))
        .header("last-event-id", "1")
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    assert!(
        !resumed.contains("id: 0\n") && !resumed.contains("id: 1\n") && resumed.contains("[DONE]"),
        "{resumed}"
    );
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn cancel_ends_the_stream_with_cancelled() {
    let queen = start().await;
    let job = queen
        .submit(json!({"operation": "wait_ready", "model": "never", "timeout_s": 60}))
        .await;
    let canceller = {
        let (http, url, job) = (queen.http.clone(), queen.url.clone(), job.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let response = http
                .delete(format!("{url}/v1/jobs/{job}"))
                .send()
                .await
                .expect("delete");
            assert_eq!(response.status(), 202);
        })
    };
    let events = queen.events(&job).await;
    canceller.await.expect("canceller");
    assert!(
        matches!(events.last(), Some(JobEvent::Cancelled { reason }) if reason.contains("operator")),
        "{events:?}"
    );
    assert_eq!(terminal_count(&events), 1);
    let jobs: Value = queen.get_json("/v1/jobs").await;
    assert_eq!(jobs[0]["state"], "cancelled");
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn shutdown_cancels_running_jobs_and_returns() {
    let queen = start().await;
    let job = queen
        .submit(json!({"operation": "wait_ready", "model": "never"}))
        .await;
    let reader = {
        let (http, url, job) = (queen.http.clone(), queen.url.clone(), job.clone());
        tokio::spawn(async move {
            http.get(format!("{url}/v1/jobs/{job}/stream"))
                .send()
                .await
                .expect("stream")
                .text()
                .await
                .expect("text")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = queen
        .http
        .post(format!("{}/v1/shutdown", queen.url))
        .send()
        .await
        .expect("shutdown");
    assert_eq!(response.status(), 202);
    let text = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .expect("stream ends")
        .expect("reader");
    assert!(
        text.contains("event: cancelled") && text.contains("shutting down"),
        "{text}"
    );
    tokio::time::timeout(Duration::from_secs(15), queen.server)
        .await
        .expect("serve returns")
        .expect("task")
        .expect("ok");
}

#[tokio::test]
async fn malformed_bodies_get_the_error_body() {
    let queen = start().await;
    let cases = [
        ("{\"operation\": ", ErrorCode::InvalidJson, "line 1"),
        ("not json", ErrorCode::InvalidJson, "expected"),
        (
            "{\"operation\":\"fly\"}",
            ErrorCode::BadRequest,
            "unknown variant `fly`",
        ),
        (
            "{\"operation\":\"hive_status\"}",
            ErrorCode::BadRequest,
            "missing field `hive_id`",
        ),
    ];
    for (body, code, needle) in cases {
        let response = queen
            .http
            .post(format!("{}/v1/jobs", queen.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let error: ErrorBody = response.json().await.expect("error body");
        assert_eq!(error.error.code, code, "{body}");
        assert!(
            error.error.message.contains(needle),
            "{body}: {}",
            error.error.message
        );
        assert!(error.error.hint.is_some());
    }
    let missing = queen
        .http
        .get(format!("{}/v1/jobs/job-nope/stream", queen.url))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let error: ErrorBody = missing.json().await.expect("error body");
    assert_eq!(error.error.code, ErrorCode::NotFound);
    let no_route = queen
        .http
        .get(format!("{}/v2/nothing", queen.url))
        .send()
        .await
        .expect("get");
    assert_eq!(no_route.status(), 404);
    let _: ErrorBody = no_route.json().await.expect("error body");
    let bad_heartbeat = queen
        .http
        .post(format!("{}/v1/worker-heartbeat", queen.url))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(bad_heartbeat.status(), 400);
    queen.stop_cleanly().await;
}

/// Sampling fields outside their ranges are refused where they enter, with the field
/// named, before any job exists; OpenAI's routes say it in OpenAI's shape.
#[tokio::test]
async fn out_of_range_sampling_is_a_400_naming_the_field() {
    let queen = start().await;
    let cases = [
        (
            json!({"temperature": 1.1111111111111111e24}),
            "temperature",
            "between 0 and 2",
        ),
        (json!({"top_p": -0.5}), "top_p", "between 0 and 1"),
        (json!({"min_p": 5}), "min_p", "between 0 and 1"),
        (json!({"repeat_penalty": 0}), "repeat_penalty", "above 0"),
        (json!({"max_tokens": 0}), "max_tokens", "at least 1"),
    ];
    for (fields, field, allowed) in &cases {
        let mut operation = json!({"operation": "infer", "model": "m", "prompt": "hi"});
        for (key, value) in fields.as_object().expect("object") {
            operation[key] = value.clone();
        }
        let response = queen.post_operation(&operation).await;
        assert_eq!(response.status(), 400, "{operation}");
        let error: ErrorBody = response.json().await.expect("error body");
        assert_eq!(error.error.code, ErrorCode::BadRequest);
        assert!(
            error.error.message.contains(&format!("`{field}`"))
                && error.error.message.contains(allowed),
            "{}",
            error.error.message
        );
        assert!(error.error.hint.is_some());
    }
    assert!(
        queen.state.jobs.list().is_empty(),
        "a refused operation made a job"
    );
    for (fields, field, allowed) in cases
        .iter()
        .filter(|(_, f, _)| ["temperature", "top_p"].contains(f))
    {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in fields.as_object().expect("object") {
            body[key] = value.clone();
        }
        let response = queen
            .http
            .post(format!("{}/v1/chat/completions", queen.url))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("error body");
        assert_eq!(error["error"]["param"], *field, "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(allowed)),
            "{error}"
        );
    }
    queen.stop_cleanly().await;
}

/// Every route, given malformed, oversized, wrongly typed or nested bodies, unknown ids
/// and methods it does not take: a 4xx with the JSON error body, never a 5xx, never a
/// dropped connection.
#[tokio::test]
async fn every_route_answers_bad_requests_with_a_4xx_json_error() {
    let queen = start().await;
    let oversized = format!("{{\"operation\":\"{}\"}}", "a".repeat(3 << 20));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<Vec<u8>> = [
        "",
        "{",
        "null",
        "42",
        "[]",
        "\"text\"",
        "{\"operation\":7}",
        "{\"operation\":\"model_download\",\"hive_id\":1,\"model\":[]}",
        "{\"worker_id\":{},\"state\":3}",
        "{\"messages\":\"hi\",\"model\":5}",
        "{\"prompt\":{\"a\":1},\"max_tokens\":-1}",
        "{\"model\":\"m\",\"messages\":[{\"role\":1}],\"temperature\":\"hot\"}",
        &oversized,
        &nested,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .chain([vec![0xff, 0xfe, b'{', 0x00]])
    .collect();
    let mut requests: Vec<(reqwest::Method, String, Vec<u8>)> = Vec::new();
    for path in [
        "/v1/jobs",
        "/v1/worker-heartbeat",
        "/v1/chat/completions",
        "/v1/completions",
    ] {
        for body in &bodies {
            requests.push((reqwest::Method::POST, path.to_owned(), body.clone()));
        }
    }
    let long_id = "x".repeat(10_000);
    for (method, path) in [
        (reqwest::Method::GET, "/v1/jobs/job-nope".to_owned()),
        (reqwest::Method::DELETE, "/v1/jobs/..%2F..%2Fetc".to_owned()),
        (reqwest::Method::GET, format!("/v1/jobs/{long_id}/stream")),
        (reqwest::Method::GET, "/v1/shutdown".to_owned()),
        (reqwest::Method::PUT, "/v1/jobs".to_owned()),
        (reqwest::Method::GET, "/v1/chat/completions".to_owned()),
        (reqwest::Method::DELETE, "/v1/models".to_owned()),
        (reqwest::Method::POST, "/health".to_owned()),
        (reqwest::Method::POST, "/metrics".to_owned()),
        (reqwest::Method::GET, "/v1/worker-heartbeat".to_owned()),
        (reqwest::Method::POST, "/v1/cluster/stream".to_owned()),
        (reqwest::Method::POST, "/v1/build-info".to_owned()),
        (reqwest::Method::POST, "/".to_owned()),
        (reqwest::Method::DELETE, "/dashboard/app.js".to_owned()),
        (
            reqwest::Method::GET,
            "/dashboard/../../etc/passwd".to_owned(),
        ),
    ] {
        requests.push((method, path, b"{\"x\":1}".to_vec()));
    }
    for (method, path, body) in requests {
        let shown = format!(
            "{method} {path} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let response = queen
            .http
            .request(method, format!("{}{path}", queen.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{shown}: no answer: {e}"));
        let status = response.status();
        assert!(status.is_client_error(), "{shown}: {status}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("body");
        assert!(
            content_type.starts_with("application/json"),
            "{shown}: {status} {content_type:?} {text}"
        );
        let error: ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{shown}: {status} not the error body ({e}): {text}"));
        assert!(!error.error.message.is_empty(), "{shown}");
    }
    let health = queen.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn a_bad_playbook_ends_with_an_error_naming_the_place_and_a_hint() {
    let queen = start().await;
    for (content, expected) in [
        ("", "no [[play]]"),
        (
            "[[play]]\nhosts = \"all\"\n[[play.tasks]]\nfly = {}\n",
            "unknown action `fly`",
        ),
        ("[[play]\n", "line 1"),
    ] {
        let job = queen
            .submit(json!({"operation": "playbook_run", "name": "site.toml", "content": content}))
            .await;
        let events = queen.events(&job).await;
        let Some(JobEvent::Error(e)) = events.last() else {
            panic!("{content:?}: {events:?}")
        };
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert!(
            e.message.contains("site.toml") && e.message.contains(expected),
            "{e:?}"
        );
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains("play")),
            "{e:?}"
        );
    }
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let queen = start().await;
    let job = queen
        .submit(json!({"operation": "wait_ready", "model": "never", "timeout_s": 60}))
        .await;
    let (frames, raw) = queen.frames(&job, Duration::from_millis(450)).await;
    assert_eq!(frames.len(), 1, "only the first narration so far");
    assert!(
        raw.lines().filter(|l| l.starts_with(':')).count() >= 2,
        "{raw:?}"
    );
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn workers_go_stale_after_three_missed_intervals() {
    // The exact boundary is tested with a set clock (scheduling.rs); here a worker whose
    // heartbeats stop is seen stale through the API, waited for rather than slept on.
    let queen = start().await;
    queen.heartbeat("w-stale", "m", "ready", 50).await;
    async fn status(queen: &Queen) -> WorkerStatus {
        let job = queen.submit(json!({"operation": "worker_list"})).await;
        match &queen.events(&job).await[0] {
            JobEvent::Result {
                result: OperationResult::Workers(ws),
                ..
            } => ws[0].status,
            other => panic!("{other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&queen).await != WorkerStatus::Stale {
        assert!(tokio::time::Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A heartbeat brings it back.
    queen.heartbeat("w-stale", "m", "ready", 60_000).await;
    assert_eq!(status(&queen).await, WorkerStatus::Ready);
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn api_token_guards_every_route_but_health() {
    let queen = start_with(|c| c.queen.api_token = Some("s3cret".into())).await;
    let health = queen
        .http
        .get(format!("{}/health", queen.url))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
    // A client without the token the test client sends by default.
    let bare = reqwest::Client::new();
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let mut request = bare.get(format!("{}/v1/jobs", queen.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("get");
        assert_eq!(response.status(), 401, "{token:?}");
        let error: ErrorBody = response.json().await.expect("error body");
        assert_eq!(error.error.code, ErrorCode::Unauthorized);
    }
    let ok = bare
        .get(format!("{}/v1/jobs", queen.url))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), 200);
    queen.stop_cleanly().await;
}

#[tokio::test]
async fn serve_refuses_a_public_listener_without_a_token() {
    // Whoever starts the queen in-process, not only its CLI, meets the loopback rule.
    let NewState { app, dir: _dir } = new_state(Config::default(), Inventory::default());
    let state = Arc::new(app);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let refused = tokio::time::timeout(Duration::from_secs(5), queen_rbee::serve(listener, state))
        .await
        .expect("serve returns at once")
        .expect_err("no token, not loopback");
    assert!(
        refused.to_string().contains("without an API token"),
        "{refused:#}"
    );

    let mut config = Config::default();
    config.queen.api_token = Some("t".to_owned());
    let NewState { app, dir: _dir2 } = new_state(config, Inventory::default());
    let state = Arc::new(app);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let shutdown = state.shutdown.clone();
    let serving = tokio::spawn(queen_rbee::serve(listener, state));
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("a token lets it serve");
    assert_eq!(health.status(), 200);
    shutdown.cancel();
    serving.await.expect("join").expect("clean stop");
}
