//! The web dashboard: its page and cluster stream over HTTP against an in-process
//! queen, and the whole page in headless Chromium against the lab with a real worker.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rbee_config::{Config, Inventory};
use rbee_protocol::sse::SseDecoder;
use serde_json::{Value, json};

use crate::support::{Lab, Queen, bin_dir, start_queen, start_queen_on};
use crate::webdriver::Browser;
use crate::workers::{MODEL, TOKEN, config, stock_models};

/// Reads `snapshot` events off a cluster stream.
struct Snapshots {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    decoder: SseDecoder,
    pending: std::collections::VecDeque<Value>,
}

impl Snapshots {
    async fn open(queen: &Queen) -> Snapshots {
        let response = queen
            .http
            .get(format!("{}/v1/cluster/stream", queen.url))
            .send()
            .await
            .expect("cluster stream");
        assert_eq!(response.status(), 200);
        Snapshots {
            body: response.bytes_stream().boxed(),
            decoder: SseDecoder::new(),
            pending: Default::default(),
        }
    }

    /// The next snapshot, or `None` when none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(snapshot) = self.pending.pop_front() {
                return Some(snapshot);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()?
                .expect("the stream stays open")
                .expect("chunk");
            for frame in self.decoder.feed(&chunk).expect("sse") {
                assert_eq!(frame.event, "snapshot", "{frame:?}");
                self.pending
                    .push_back(serde_json::from_str(&frame.data).expect("snapshot json"));
            }
        }
    }
}

async fn heartbeat(queen: &Queen, state: &str) {
    let status = queen
        .http
        .post(format!("{}/v1/worker-heartbeat", queen.url))
        .json(&json!({
            "worker_id": "w-1", "hive_id": "hive-1", "model": "m", "device": "cpu",
            "url": "http://127.0.0.1:9", "state": state, "interval_ms": 60_000,
        }))
        .send()
        .await
        .expect("heartbeat")
        .status();
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_assets_are_public_and_the_cluster_stream_pushes_each_change_once() {
    let mut settings = Config::default();
    settings.queen.api_token = Some("dash-token".to_owned());
    let queen = start_queen(settings, Inventory::default()).await;
    let anonymous = reqwest::Client::new();

    let page = anonymous
        .get(format!("{}/", queen.url))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("/dashboard/app.js"),
        "the page loads its script"
    );
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let asset = anonymous
            .get(format!("{}{path}", queen.url))
            .send()
            .await
            .expect("asset");
        assert_eq!(asset.status(), 200, "{path}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}"
        );
    }
    // The data is not public.
    let refused = anonymous
        .get(format!("{}/v1/cluster/stream", queen.url))
        .send()
        .await
        .expect("stream");
    assert_eq!(refused.status(), 401);

    let mut snapshots = Snapshots::open(&queen).await;
    let first = snapshots
        .next(Duration::from_secs(5))
        .await
        .expect("a first snapshot at once");
    assert_eq!(first["workers"], json!([]), "{first}");
    assert_eq!(first["queen"]["version"], rbee_protocol::VERSION);

    // Each change arrives promptly, much sooner than the stream's 2 s tick would bring
    // it, three times in a row.
    for state in ["loading", "ready", "busy"] {
        heartbeat(&queen, state).await;
        let sent = Instant::now();
        let snapshot = snapshots
            .next(Duration::from_secs(5))
            .await
            .expect("a snapshot after the heartbeat");
        assert!(
            sent.elapsed() < Duration::from_millis(700),
            "{state} came after {:?}",
            sent.elapsed()
        );
        assert_eq!(snapshot["workers"][0]["worker_id"], "w-1", "{snapshot}");
        assert_eq!(snapshot["workers"][0]["status"], state, "{snapshot}");
    }
    // A heartbeat that changes nothing shown sends nothing, over more than one tick.
    heartbeat(&queen, "busy").await;
    let repeated = snapshots.next(Duration::from_millis(2_500)).await;
    assert!(repeated.is_none(), "unchanged snapshot sent: {repeated:?}");

    // An open stream does not hold up shutdown.
    let stopped = tokio::time::timeout(Duration::from_secs(5), queen.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited on the cluster stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_chromium_shows_the_lab_and_streams_a_chat_reply() {
    let started = Instant::now();
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());
    let artifacts = bin_dir()
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    // Started first, so a machine without Chromium fails before the lab is built.
    let browser = Browser::start(1280, 1000).await;
    let lab = Lab::up(2);
    let inventory = lab.inventory(None);
    stock_models(&inventory);
    let state_dir = tempfile::tempdir().expect("state dir");
    // Workers on the lab's hosts must reach the queen, so it listens beyond loopback,
    // which takes an API token.
    let queen = start_queen_on(config(state_dir.path()), inventory, "0.0.0.0:0").await;
    for operation in ["hive_install", "hive_start"] {
        let events = queen
            .run(json!({"operation": operation, "hive_id": "lab"}))
            .await;
        assert_eq!(
            events.last().map(|(_, e)| e),
            Some(&rbee_protocol::JobEvent::Done),
            "{events:#?}"
        );
    }
    let events = queen
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": MODEL, "device": "cpu"}))
        .await;
    let worker = Queen::result_of(&events).expect("the spawned worker");
    let worker_id = worker["worker_id"].as_str().expect("worker id").to_owned();
    step("lab up, two hives started, one worker spawned");

    // The page asks for the token before it shows anything.
    browser.goto(&queen.url).await;
    browser
        .wait_for(
            "the token form",
            "!document.getElementById('token-panel').hidden",
            Duration::from_secs(10),
        )
        .await;
    // The refused first call is the browser console's one expected error.
    let before_token = browser.console_errors().await;
    assert!(
        before_token.iter().all(|e| e.contains("401")),
        "{before_token:#?}"
    );
    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-form button[type=submit]").await;

    browser
        .wait_for(
            "two online hives and the ready worker",
            &format!(
                "document.querySelectorAll('#hives [data-hive][data-status=online]').length === 2 \
                 && document.querySelector('#workers [data-worker=\"{worker_id}\"][data-status=ready]')"
            ),
            Duration::from_secs(15),
        )
        .await;
    let shown = browser
        .script(
            "const hives = [...document.querySelectorAll('#hives [data-hive]')];
             return {
               hives: hives.map(h => h.dataset.hive),
               meters: hives.map(h => h.querySelectorAll('[role=meter]').length),
               worker: document.querySelector('#workers [data-worker]').innerText,
               model: document.getElementById('chat-model').value,
               token_kept: sessionStorage.getItem('rbee.apiToken') === arguments[0],
               connection: document.getElementById('connection').dataset.state,
               token_form_shown: document.getElementById('token-panel').offsetParent !== null,
             };",
            json!([TOKEN]),
        )
        .await;
    assert_eq!(shown["hives"], json!(["hive-1", "hive-2"]), "{shown}");
    assert!(
        shown["meters"]
            .as_array()
            .expect("meters")
            .iter()
            .all(|m| m.as_u64() >= Some(1)),
        "every started hive shows its memory: {shown}"
    );
    let worker_text = shown["worker"].as_str().expect("worker text");
    assert!(
        worker_text.contains(MODEL) && worker_text.contains("cpu"),
        "{shown}"
    );
    assert_eq!(
        shown["model"], MODEL,
        "the chat offers the worker's model: {shown}"
    );
    assert_eq!(shown["token_kept"], true, "{shown}");
    assert_eq!(shown["connection"], "live", "{shown}");
    assert_eq!(shown["token_form_shown"], false, "{shown}");
    step("the page shows the cluster");

    // A chat message streams its reply in several chunks.
    browser.click("#chat-form summary").await;
    browser
        .type_into("#chat-system", "Answer in one short sentence.")
        .await;
    browser.type_into("#chat-temperature", "0").await;
    browser.type_into("#chat-max-tokens", "24").await;
    browser
        .type_into("#chat-input", "What is the capital of France?")
        .await;
    browser.click("#chat-send").await;
    browser
        .wait_for(
            "the reply to end",
            "['done', 'error'].includes(document.querySelector('.message.assistant')?.dataset.state)",
            Duration::from_secs(60),
        )
        .await;
    let reply = browser
        .script(
            "const m = document.querySelector('.message.assistant');
             return {state: m.dataset.state, chunks: Number(m.dataset.chunks),
                     text: m.querySelector('.text').textContent, stats: m.innerText};",
            json!([]),
        )
        .await;
    assert_eq!(reply["state"], "done", "{reply}");
    assert!(
        reply["text"].as_str().is_some_and(|t| t.contains("Paris")),
        "{reply}"
    );
    assert!(
        reply["chunks"].as_u64() > Some(1),
        "the reply came in one piece: {reply}"
    );
    step("a chat reply streamed");

    // The chat's job heads the recent jobs; its event stream opens below the list.
    browser
        .wait_for(
            "the chat's infer job in the list",
            "document.querySelector('#jobs li[data-job] .op')?.textContent === 'infer'",
            Duration::from_secs(10),
        )
        .await;
    browser.click("#jobs li[data-job]").await;
    browser
        .wait_for(
            "the job's events, to its end",
            "document.querySelector('#job-events li[data-kind=done]') \
             && document.querySelector('#job-events li[data-kind=tokens]')?.textContent.includes('Paris') \
             && /tokens, [0-9.]+ tok\\/s/.test(document.querySelector('#job-events li[data-kind=result]')?.textContent) \
             && !document.querySelector('#job-events li[data-kind=result]').textContent.includes('{')",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_for(
            "the worker's rate of its last request",
            "document.querySelector('#workers [data-worker]').innerText.includes('tok/s')",
            Duration::from_secs(5),
        )
        .await;
    step("the job's event stream and the worker's rate shown");

    // The whole page, not only the window, goes into the screenshot.
    let height = browser
        .script(
            "window.scrollTo(0, 0); return document.documentElement.scrollHeight;",
            json!([]),
        )
        .await
        .as_u64()
        .expect("page height");
    browser
        .emulate(1280, height.clamp(800, 4000) as u32, false)
        .await;
    let wide = artifacts.join("dashboard.png");
    browser.screenshot(&wide).await;
    eprintln!("screenshot: {}", wide.display());

    // On a phone-wide screen nothing overflows sideways.
    browser.emulate(390, 844, true).await;
    browser
        .wait_for(
            "the phone-wide layout",
            "window.innerWidth === 390",
            Duration::from_secs(5),
        )
        .await;
    let widths = browser
        .script(
            "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth};",
            json!([]),
        )
        .await;
    assert!(
        widths["scroll"].as_u64() <= widths["inner"].as_u64(),
        "the page is wider than the phone: {widths}"
    );
    let height = browser
        .script("return document.documentElement.scrollHeight;", json!([]))
        .await
        .as_u64()
        .expect("page height");
    browser
        .emulate(390, height.clamp(844, 6000) as u32, true)
        .await;
    let phone = artifacts.join("dashboard-phone.png");
    browser.screenshot(&phone).await;
    eprintln!("screenshot: {}", phone.display());

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the browser console: {errors:#?}");
    step("phone layout checked");
    drop(browser);
    queen.stop().await;
    drop(lab);
}
