//! Starts the worker binary and a stand-in queen, and reads inference streams.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use rbee_protocol::sse::SseDecoder;
use rbee_protocol::{InferenceEvent, WorkerHeartbeat, WorkerLine};

pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_llm-worker-rbee");

/// The test model: `RBEE_TEST_MODEL`, or where the fetch script puts it.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("RBEE_TEST_MODEL").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.rbee-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "test model not found at {}: run scripts/fetch-test-model.sh (or set RBEE_TEST_MODEL)",
        path.display()
    );
    path
}

/// A worker process; killed when dropped.
pub struct Worker {
    child: Child,
    pub url: String,
    pub token: Option<String>,
}

impl Worker {
    /// Starts the worker on a free port and waits until it listens.
    pub fn start(queen_url: &str, token: Option<&str>, extra: &[&str]) -> Worker {
        Worker::start_binary(Path::new(WORKER_BIN), queen_url, token, extra)
    }

    /// [`Worker::start`] with another build of the worker.
    pub fn start_binary(
        binary: &Path,
        queen_url: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> Worker {
        let model = model_path();
        let mut command = Command::new(binary);
        command
            .args([
                "--worker-id",
                "w-test",
                "--hive-id",
                "localhost",
                "--port",
                "0",
            ])
            .arg("--model")
            .arg(&model)
            .args(["--queen-url", queen_url])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("RBEE_WORKER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.env("RBEE_WORKER_TOKEN", token);
        }
        let mut child = command.spawn().expect("start the worker binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("the worker prints a line")
            .expect("readable stdout");
        let Some(WorkerLine::Listening { url, .. }) = WorkerLine::parse(&first) else {
            panic!("the first line says where the worker listens: {first}");
        };
        // Keep draining stdout so the worker never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Worker {
            child,
            url,
            token: token.map(str::to_owned),
        }
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn request(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        let request = self
            .client()
            .request(method, format!("{}{route}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Waits for `/ready` to answer 200 and returns its body.
    pub async fn ready(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.request(reqwest::Method::GET, "/ready").send().await
                && response.status() == 200
            {
                return response.json().await.expect("ready JSON");
            }
            assert!(Instant::now() < deadline, "worker not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one inference to its end and returns every event.
    pub async fn infer(&self, body: serde_json::Value) -> Vec<InferenceEvent> {
        let response = self
            .request(reqwest::Method::POST, "/v1/inference")
            .json(&body)
            .send()
            .await
            .expect("inference request");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let mut events = Vec::new();
        let mut stream = EventStream::new(response);
        while let Some(event) = stream.next().await {
            let terminal = event.is_terminal();
            events.push(event);
            if terminal {
                break;
            }
        }
        events
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The inference events of one streaming response, decoded as they arrive.
pub struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    decoder: SseDecoder,
    pending: std::collections::VecDeque<InferenceEvent>,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> Self {
        EventStream {
            body: response.bytes_stream().boxed(),
            decoder: SseDecoder::new(),
            pending: Default::default(),
        }
    }

    pub async fn next(&mut self) -> Option<InferenceEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = self.body.next().await?.expect("stream chunk");
            for frame in self.decoder.feed(&chunk).expect("valid SSE") {
                let event: InferenceEvent = serde_json::from_str(&frame.data).expect("event JSON");
                assert_eq!(frame.event, event.kind(), "event name matches its data");
                self.pending.push_back(event);
            }
        }
    }
}

/// The generated text of a finished stream.
pub fn text_of(events: &[InferenceEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            InferenceEvent::Token { t, .. } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A stand-in queen that records every heartbeat it receives.
pub struct Queen {
    pub url: String,
    pub beats: Arc<Mutex<Vec<WorkerHeartbeat>>>,
}

impl Queen {
    pub async fn start() -> Queen {
        let beats: Arc<Mutex<Vec<WorkerHeartbeat>>> = Arc::default();
        let sink = beats.clone();
        let app = Router::new().route(
            "/v1/worker-heartbeat",
            post(move |Json(beat): Json<WorkerHeartbeat>| async move {
                sink.lock().expect("lock").push(beat);
                Json(serde_json::json!({ "ok": true }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind queen");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Queen { url, beats }
    }

    pub fn beats(&self) -> Vec<WorkerHeartbeat> {
        self.beats.lock().expect("lock").clone()
    }
}

/// A queen URL nothing listens on.
pub const NO_QUEEN: &str = "http://127.0.0.1:9";

/// Runs the worker binary to its exit with the given model file.
pub fn run_to_exit(model: &Path) -> Output {
    Command::new(WORKER_BIN)
        .args([
            "--worker-id",
            "w-bad",
            "--port",
            "0",
            "--queen-url",
            NO_QUEEN,
        ])
        .arg("--model")
        .arg(model)
        .env_remove("RBEE_WORKER_TOKEN")
        .output()
        .expect("run the worker binary")
}
