//! What the queen's integration tests share: a queen started in-process and a way to
//! run one operation to its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use queen_rbee::state::AppState;
use rbee_config::{Config, Inventory};
use rbee_protocol::JobEvent;
use rbee_protocol::sse::SseDecoder;
use serde_json::Value;

pub struct Queen {
    pub url: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
}

/// Starts a queen in-process on 127.0.0.1:0.
pub async fn start_queen(config: Config, inventory: Inventory) -> Queen {
    let state = Arc::new(AppState::new(config, inventory));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(queen_rbee::serve(listener, state.clone()));
    Queen {
        url,
        state,
        http: reqwest::Client::new(),
    }
}

impl Queen {
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

    /// Runs an operation; every event with the moment it arrived.
    pub async fn run(&self, operation: Value) -> Vec<(Instant, JobEvent)> {
        let body: Value = self
            .http
            .post(format!("{}/v1/jobs", self.url))
            .json(&operation)
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let job = body["job_id"].as_str().expect("job id");
        let response = self
            .http
            .get(format!("{}/v1/jobs/{job}/stream", self.url))
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
                        events.push((Instant::now(), JobEvent::from_sse(&frame.event, &frame.data).expect("event")));
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
}
