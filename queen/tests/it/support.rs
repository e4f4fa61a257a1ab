//! What the queen's integration tests share: a queen started in-process and a way to
//! run one operation to its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use queen_rbee::state::AppState;
use rbee_config::{Config, Inventory};
use rbee_protocol::sse::{SseDecoder, SseFrame};
use rbee_protocol::{JobEvent, OperationResult};
use serde_json::{Value, json};

/// A result's `value` as the wire carries it: what a script reading `--json` sees.
pub fn payload(result: &OperationResult) -> Value {
    serde_json::to_value(result).expect("a result serialises")["value"].take()
}

pub struct Queen {
    pub url: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The state directory `new_state` made, removed with the queen.
    _state_dir: Option<tempfile::TempDir>,
}

/// A queen's state before it serves, with the temporary state directory made for it.
pub struct NewState {
    pub app: AppState,
    /// Removed on drop: the worker-token key and the push cache (tens of megabytes of
    /// binaries) go with it, so a run of the suite leaves nothing in the temp dir.
    pub dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for NewState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl std::ops::DerefMut for NewState {
    fn deref_mut(&mut self) -> &mut AppState {
        &mut self.app
    }
}

/// The queen's state; without a state directory in `config`, the worker-token key and
/// the push cache go to a fresh temporary one, which lives as long as the result.
pub fn new_state(mut config: Config, inventory: Inventory) -> NewState {
    let dir = config.queen.state_dir.is_none().then(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        config.queen.state_dir = Some(dir.path().to_owned());
        dir
    });
    NewState {
        app: AppState::new(config, inventory).expect("queen state"),
        dir,
    }
}

/// Starts a queen in-process on 127.0.0.1:0.
pub async fn start_queen(config: Config, inventory: Inventory) -> Queen {
    start_queen_on(config, inventory, "127.0.0.1:0").await
}

/// Starts a queen in-process listening on `addr`.
pub async fn start_queen_on(config: Config, inventory: Inventory, addr: &str) -> Queen {
    serve_state(new_state(config, inventory), addr).await
}

/// Starts a queen in-process on `state` (prepared by the test) listening on `addr`.
pub async fn serve_state(state: NewState, addr: &str) -> Queen {
    let NewState { app, dir } = state;
    let state = Arc::new(app);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    let _ = state.listen_addr.set(bound);
    let port = bound.port();
    let url = format!("http://127.0.0.1:{port}");
    let server = tokio::spawn(queen_rbee::serve(listener, state.clone()));
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &state.config.queen.api_token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    Queen {
        url,
        state,
        http: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client"),
        server,
        _state_dir: dir,
    }
}

impl Queen {
    /// Shuts the queen down as a signal would and waits until its port is free.
    pub async fn stop(self) {
        self.state.shutdown.cancel();
        let _ = self.server.await;
    }

    /// Shuts the queen down and checks that it stopped in time and cleanly.
    pub async fn stop_cleanly(self) {
        self.state.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("the queen stops")
            .expect("task")
            .expect("serve returns Ok");
    }

    /// Posts `operation` to `/v1/jobs` and returns the answer as it is.
    pub async fn post_operation(&self, operation: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/jobs", self.url))
            .json(operation)
            .send()
            .await
            .expect("submit")
    }

    pub async fn submit(&self, operation: Value) -> String {
        let response = self.post_operation(&operation).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body["sse_url"],
            format!("/v1/jobs/{}/stream", body["job_id"].as_str().expect("id"))
        );
        body["job_id"].as_str().expect("job_id").to_owned()
    }

    /// Reads a job's stream to its end (or `limit`), keeping raw frames and comments.
    pub async fn frames(&self, job_id: &str, limit: Duration) -> (Vec<SseFrame>, String) {
        let response = self
            .http
            .get(format!("{}/v1/jobs/{job_id}/stream", self.url))
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/event-stream")
        );
        let mut raw = String::new();
        let mut frames = Vec::new();
        let mut decoder = SseDecoder::new();
        let mut body = response.bytes_stream();
        let _ = tokio::time::timeout(limit, async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.expect("chunk");
                raw.push_str(&String::from_utf8_lossy(&chunk));
                frames.extend(decoder.feed(&chunk).expect("valid sse"));
            }
        })
        .await;
        (frames, raw)
    }

    pub async fn events(&self, job_id: &str) -> Vec<JobEvent> {
        let (frames, _) = self.frames(job_id, Duration::from_secs(20)).await;
        frames
            .iter()
            .map(|f| JobEvent::from_sse(&f.event, &f.data).expect("event parses"))
            .collect()
    }

    pub async fn heartbeat(&self, worker_id: &str, model: &str, state: &str, interval_ms: u64) {
        let response = self
            .http
            .post(format!("{}/v1/worker-heartbeat", self.url))
            .json(&json!({
                "worker_id": worker_id, "hive_id": "gpu-a", "model": model, "device": "cpu",
                "url": "http://127.0.0.1:1", "state": state, "interval_ms": interval_ms
            }))
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(response.status(), 204);
    }

    /// The operation's `result` value without a hive (the operation's own answer).
    pub fn result_of(events: &[(Instant, JobEvent)]) -> Option<Value> {
        events.iter().rev().find_map(|(_, e)| match e {
            JobEvent::Result { hive: None, result } => Some(payload(result)),
            _ => None,
        })
    }

    /// The whole SSE stream of a finished job, as text.
    pub async fn stream_text(&self, job_id: &str) -> String {
        self.http
            .get(format!("{}/v1/jobs/{job_id}/stream", self.url))
            .send()
            .await
            .expect("stream")
            .text()
            .await
            .expect("text")
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Runs each operation on `hive_id` in turn; each must end with `done`.
    pub async fn run_each(&self, operations: &[&str], hive_id: &str) {
        for operation in operations {
            let events = self
                .run(serde_json::json!({"operation": operation, "hive_id": hive_id}))
                .await;
            assert_eq!(
                events.last().map(|(_, e)| e),
                Some(&JobEvent::Done),
                "{operation}: {events:#?}"
            );
        }
    }

    /// Runs an operation; every event with the moment it arrived.
    pub async fn run(&self, operation: Value) -> Vec<(Instant, JobEvent)> {
        run_job(&self.http, &self.url, operation).await
    }

    /// Runs an operation, showing each event to `watch` as it arrives.
    pub async fn run_watched(
        &self,
        operation: Value,
        watch: impl FnMut(&JobEvent),
    ) -> Vec<(Instant, JobEvent)> {
        run_job_watched(&self.http, &self.url, operation, watch).await
    }
}

/// Runs an operation on the queen at `url`; every event with the moment it arrived.
pub async fn run_job(
    http: &reqwest::Client,
    url: &str,
    operation: Value,
) -> Vec<(Instant, JobEvent)> {
    run_job_watched(http, url, operation, |_| {}).await
}

/// Runs an operation like [`run_job`], showing each event to `watch` as it arrives.
pub async fn run_job_watched(
    http: &reqwest::Client,
    url: &str,
    operation: Value,
    mut watch: impl FnMut(&JobEvent),
) -> Vec<(Instant, JobEvent)> {
    let job = submit_job(http, url, operation).await;
    let response = http
        .get(format!("{url}/v1/jobs/{job}/stream"))
        .send()
        .await
        .expect("stream");
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            chunk = body.next() => {
                let Some(chunk) = chunk else { break };
                for frame in decoder.feed(&chunk.expect("chunk")).expect("sse") {
                    let event = JobEvent::from_sse(&frame.event, &frame.data).expect("event");
                    watch(&event);
                    events.push((Instant::now(), event));
                }
            }
            () = &mut deadline => panic!("job did not end: {events:?}"),
        }
    }
    assert!(
        events.last().is_some_and(|(_, e)| e.is_terminal()),
        "{events:?}"
    );
    events
}

/// Submits an operation to the queen at `url` without following it; its job id.
pub async fn submit_job(http: &reqwest::Client, url: &str, operation: Value) -> String {
    let body: Value = http
        .post(format!("{url}/v1/jobs"))
        .json(&operation)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    body["job_id"].as_str().expect("job id").to_owned()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// target/<profile>, where the workspace's binaries are built.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for name in ["rbee-hive", "llm-worker-rbee"] {
        assert!(
            dir.join(name).is_file(),
            "{} missing: run `cargo nextest run --workspace` (it builds every binary) or `cargo build --workspace --bins`",
            dir.join(name).display()
        );
    }
    dir
}

/// A lab of real sshd hosts, torn down on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn up(hosts: usize) -> Lab {
        let lab = Lab::unstarted();
        lab.script(&["up", &hosts.to_string()]);
        lab
    }

    /// A lab directory with no host started yet (`script(&["up", N])` starts them), for
    /// a test that prepares a host's file system first.
    pub fn unstarted() -> Lab {
        Lab {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn script(&self, args: &[&str]) {
        let out = std::process::Command::new(repo().join("lab/lab.sh"))
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .expect("lab.sh runs");
        assert!(
            out.status.success(),
            "lab.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lab's inventory, with known_hosts pointing at `known_hosts` when given.
    pub fn inventory(&self, known_hosts: Option<&Path>) -> Inventory {
        let path = self.dir.path().join("inventory.toml");
        let mut text = std::fs::read_to_string(&path).expect("inventory");
        if let Some(file) = known_hosts {
            let original = self.dir.path().join("known_hosts");
            text = text.replace(&original.display().to_string(), &file.display().to_string());
        }
        Inventory::parse(&path, &text).expect("lab inventory parses")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("lab/lab.sh"))
            .arg("down")
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}

/// The test model: `RBEE_TEST_MODEL`, or where `scripts/fetch-test-model.sh` puts it.
pub fn test_model() -> PathBuf {
    let path = std::env::var_os("RBEE_TEST_MODEL").map_or_else(
        || repo().join(".rbee-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "test model not found at {}: run scripts/fetch-test-model.sh (or set RBEE_TEST_MODEL)",
        path.display()
    );
    path
}

/// Fails the test unless `promtool check metrics` accepts the exposition `text`
/// (`install-deps.sh tests` installs the prometheus package).
pub fn assert_promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (install-deps.sh installs the prometheus package)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
