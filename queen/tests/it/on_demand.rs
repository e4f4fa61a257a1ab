//! Models on demand, on a real lab hive with the real model: an OpenAI request for a
//! model no worker serves loads it, an idle worker is unloaded after its keep_alive, a
//! client that will not wait is told the load state, a model no hive holds is a 404
//! listing what the cluster holds, and a worker started by hand stays.

use std::path::Path;
use std::time::{Duration, Instant};

use rbee_protocol::JobEvent;
use serde_json::{Value, json};

use crate::support::{Lab, Queen, bin_dir, start_queen_on, test_model};
use crate::workers::{MODEL, TOKEN, config, stock_models};

/// The model under a second name, for a worker started by hand.
const PINNED: &str = "pinned-copy";

fn chat(model: &str, more: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say yes."}],
        "max_tokens": 4,
        "temperature": 0.0,
    });
    for (key, value) in more.as_object().expect("fields") {
        body[key] = value.clone();
    }
    body
}

/// The ids of the workers serving `model` that the queen knows.
fn serving(queen: &Queen, model: &str) -> Vec<String> {
    queen
        .state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.serves(model))
        .map(|w| w.heartbeat.worker_id)
        .collect()
}

/// Whether the hive still has a process for `worker_id` (its state file names its pid).
fn process_runs(install_dir: &Path, worker_id: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(install_dir.join(format!("workers/{worker_id}.json")))
    else {
        return false;
    };
    let record: Value = serde_json::from_str(&text).expect("state json");
    let pid = record["pid"].as_i64().expect("pid");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("llm-worker-rbee"))
}

/// Waits until `check` holds, up to `limit`.
async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// Runs the keeper binary against `queen` with no terminal on stdin.
pub async fn keeper(queen: &Queen, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("keeper dir");
    let config = dir.path().join("config.toml");
    let port = queen.state.listen_addr().port();
    std::fs::write(
        &config,
        format!("[queen]\nport = {port}\napi_token = \"{TOKEN}\"\n"),
    )
    .expect("keeper config");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin_dir().join("rbee-keeper"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("RBEE_QUEEN_URL")
            .env_remove("RBEE_API_TOKEN")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("keeper runs");
        drop(dir);
        out
    })
    .await
    .expect("join")
}

async fn post(queen: &Queen, body: &Value, prefer: Option<&str>) -> reqwest::Response {
    let mut request = queen
        .http
        .post(format!("{}/v1/chat/completions", queen.url))
        .json(body);
    if let Some(prefer) = prefer {
        request = request.header("Prefer", prefer);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_models_load_on_request_and_idle_workers_unload() {
    let started = Instant::now();
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());
    let lab = Lab::up(1);
    let inventory = lab.inventory(None);
    stock_models(&inventory);
    let hive = inventory.hives.values().next().expect("one hive").clone();
    let install_dir = Path::new(&hive.install_dir).to_path_buf();
    std::fs::copy(
        test_model(),
        install_dir.join(format!("models/local/{PINNED}.gguf")),
    )
    .expect("copy model");
    let state_dir = tempfile::tempdir().expect("state dir");
    let mut config = config(state_dir.path());
    let keep_alive = Duration::from_secs(3);
    config.queen.keep_alive = "3s".parse().expect("keep_alive");
    // A stream waits one keep-alive interval for its first token, then sends comments.
    config.queen.keepalive_ms = 200;
    assert!(config.queen.auto_spawn, "on demand is the default");
    let queen = start_queen_on(config, inventory.clone(), "0.0.0.0:0").await;
    queen.run_each(&["hive_install", "hive_start"], "lab").await;
    // A worker started by hand is pinned: it outlives every keep_alive below.
    let events = queen
        .run(json!({"operation": "worker_spawn", "hive_id": hive.alias, "model": PINNED}))
        .await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    let pinned = serving(&queen, PINNED);
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    step("lab up, a pinned worker started");

    // The first request for a model nothing serves is answered: the queen loads it.
    assert!(serving(&queen, MODEL).is_empty());
    let response = post(&queen, &chat(MODEL, json!({})), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(!answer.is_empty(), "{body}");
    let loaded = serving(&queen, MODEL);
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    let worker_id = loaded[0].clone();
    assert!(process_runs(&install_dir, &worker_id));
    step("a cold request answered");

    // `infer` without --model: with two models served and no terminal, the keeper
    // lists them instead of guessing.
    let out = keeper(&queen, &["infer", "Say yes."]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("several models would do")
            && stderr.contains(MODEL)
            && stderr.contains(PINNED)
            && stderr.contains("pass --model"),
        "{stderr}"
    );

    // Idle past its keep_alive, the worker is stopped through its hive, as a job.
    let last_request = Instant::now();
    let gone = wait_for(keep_alive + Duration::from_secs(15), || {
        serving(&queen, MODEL).is_empty() && !process_runs(&install_dir, &worker_id)
    })
    .await;
    assert!(gone, "the idle worker was not unloaded");
    assert!(
        last_request.elapsed() >= keep_alive,
        "unloaded before its keep_alive"
    );
    let stop = queen
        .state
        .jobs
        .list()
        .into_iter()
        .find(|j| j.operation == "worker_stop")
        .expect("a worker_stop job");
    let replay = queen.stream_text(&stop.job_id).await;
    assert!(
        replay.contains("unloading worker") && replay.contains("keep_alive 3s"),
        "{replay}"
    );
    // The worker started by hand stays, idle as long.
    assert_eq!(serving(&queen, PINNED), pinned);
    step("the idle worker unloaded, the pinned one kept");

    // With one model served, `infer` without --model uses it.
    let out = keeper(&queen, &["infer", "--max-tokens", "4", "Say yes."]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&pinned[0]), "{stderr}");

    // A client that will not wait is told the state at once, with Retry-After, while
    // the queen loads the model; it is served once the model is loaded. Asked with
    // keep_alive 0, the worker goes as soon as that request ends.
    let no_wait = chat(MODEL, json!({"keep_alive": 0}));
    let response = post(&queen, &no_wait, Some("wait=0")).await;
    assert_eq!(response.status(), 503);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "{retry_after:?}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_loading", "{body}");
    assert!(
        ["starting", "loading"].contains(&body["state"].as_str().unwrap_or("")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        let response = post(&queen, &no_wait, Some("wait=0")).await;
        match response.status().as_u16() {
            200 => break response.json::<Value>().await.expect("json"),
            503 => {
                assert!(Instant::now() < deadline, "never loaded");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("{other}: {}", response.text().await.unwrap_or_default()),
        }
    };
    assert!(answered["choices"][0]["message"]["content"].is_string());
    let reloaded = serving(&queen, MODEL);
    assert_eq!(reloaded.len(), 1, "one worker for the model: {reloaded:?}");
    let ended = Instant::now();
    let gone = wait_for(Duration::from_secs(10), || {
        serving(&queen, MODEL).is_empty()
    })
    .await;
    assert!(gone, "keep_alive 0 did not unload the worker");
    assert!(
        ended.elapsed() < keep_alive + Duration::from_secs(2),
        "keep_alive 0 took {:?}",
        ended.elapsed()
    );
    step("wait=0 told the load state; keep_alive 0 unloaded at once");

    // A streaming client of a cold model gets keep-alive comments while it loads,
    // then its tokens.
    let response = post(&queen, &chat(MODEL, json!({"stream": true})), None).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("stream");
    let first_data = body.find("data:").expect("data");
    assert!(
        body[..first_data].lines().any(|l| l.starts_with(':')),
        "no keep-alive comment before the first token: {body}"
    );
    assert!(
        body.contains("\"content\"") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );
    step("a stream held while its model loads");

    // A model no hive holds: 404 at once, listing what the cluster holds.
    let asked = Instant::now();
    let response = post(&queen, &chat("no-such-model", json!({})), None).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("no-such-model") && message.contains(MODEL) && message.contains(PINNED),
        "{message}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(serving(&queen, "no-such-model").is_empty());
    step("a model no hive holds is a 404 listing the cluster's");

    queen.stop().await;
}

/// A hive whose CPU is declared with room for one worker of the test model (about
/// 0.72 GB with four slots of 4,096 positions in halves) but not two.
fn lab_with_room_for_one() -> Lab {
    let lab = Lab::unstarted();
    let host = lab.dir.path().join("hosts/hive-1");
    std::fs::create_dir_all(&host).expect("host dir");
    let devices = host.join("devices.json");
    std::fs::write(
        &devices,
        json!([{"id": "CPU-0", "kind": "cpu", "index": 0, "name": "declared CPU",
                "memory_total": 1_100_000_000u64, "memory_free": 1_000_000_000u64}])
        .to_string(),
    )
    .expect("devices");
    std::fs::write(
        host.join("environment"),
        format!("RBEE_HIVE_DEVICES_FILE={}\n", devices.display()),
    )
    .expect("environment");
    lab.script(&["up", "1"]);
    lab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_device_unloads_its_least_recently_used_idle_worker_never_a_busy_one() {
    let lab = lab_with_room_for_one();
    let inventory = lab.inventory(None);
    stock_models(&inventory);
    let install_dir = Path::new(&inventory.hives["hive-1"].install_dir).to_path_buf();
    std::fs::copy(
        test_model(),
        install_dir.join(format!("models/local/{PINNED}.gguf")),
    )
    .expect("copy model");
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), inventory, "0.0.0.0:0").await;
    queen
        .run_each(&["hive_install", "hive_start"], "hive-1")
        .await;
    let infer = |model: &str, max_tokens: u32| {
        json!({"operation": "infer", "model": model,
               "prompt": "List the numbers from 1 to 1000, one per line.",
               "max_tokens": max_tokens, "temperature": 0.0})
    };
    let events = queen.run(infer(MODEL, 4)).await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    let first = serving(&queen, MODEL);
    assert_eq!(first.len(), 1);

    // The second model does not fit beside the first: the idle first is unloaded.
    let events = queen.run(infer(PINNED, 4)).await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    let evicted = events.iter().any(|(_, e)| {
        matches!(e, JobEvent::Narration(n) if n.action == "evict" && n.human.contains(&first[0]))
    });
    assert!(evicted, "{events:#?}");
    assert!(serving(&queen, MODEL).is_empty());
    assert!(!process_runs(&install_dir, &first[0]));
    let second = serving(&queen, PINNED);
    assert_eq!(second.len(), 1);

    // While the second generates, the first model cannot be loaded: nothing idle to
    // unload, and the answer names what holds the memory. The busy worker's request
    // is not disturbed.
    let long = queen.submit(infer(PINNED, 400)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while queen
        .state
        .workers
        .get(&second[0])
        .is_none_or(|w| w.in_flight == 0)
    {
        assert!(Instant::now() < deadline, "the long request never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = queen.run(infer(MODEL, 4)).await;
    let JobEvent::Error(error) = &events.last().expect("events").1 else {
        panic!("{events:#?}")
    };
    assert_eq!(
        error.code,
        rbee_protocol::ErrorCode::InsufficientMemory,
        "{error:?}"
    );
    assert!(
        error.message.contains(&second[0]) && error.message.contains("busy"),
        "{error:?}"
    );
    let long_events = queen.events(&long).await;
    assert_eq!(
        long_events.last(),
        Some(&JobEvent::Done),
        "{long_events:#?}"
    );
    assert_eq!(serving(&queen, PINNED), second);
    queen.stop().await;
}
