//! Benchmarks of the queen itself, each printing its figures and the target beside them:
//!
//! - `heartbeats`: 1,000 simulated workers posting heartbeats (with their worker tokens)
//!   to an in-process queen over HTTP; heartbeats/s and round-trip percentiles. The
//!   load generator shares the machine's cores with the queen.
//! - `schedule`: one scheduling decision (pick the best ready worker and count the
//!   request against it) with 1,000 workers registered.
//! - `forwarding`: a simulated worker that emits tokens as fast as it can, reached
//!   directly and through a `queen-rbee` process, interleaved: the time to first token
//!   and per-token latency the queen adds, and the queen's CPU while it forwards many
//!   streams at once.
//! - `streams`: 64 concurrent inference streams through a `queen-rbee` process over 4
//!   real workers with the test model (`RBEE_TEST_MODEL`, or the fetched one): errors,
//!   queue behaviour, tokens/s in total.
//!
//! ```sh
//! cargo bench -p queen-rbee --bench queen                 # all of them
//! cargo bench -p queen-rbee --bench queen -- schedule     # one
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use queen_rbee::operations::{Pins, candidates};
use queen_rbee::state::AppState;
use rbee_config::{Config, Inventory};
use rbee_protocol::cluster::WorkerStatus;
use rbee_protocol::sse::SseDecoder;
use rbee_protocol::{InferenceEvent, JobEvent, OperationResult, WorkerHeartbeat, WorkerState};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WORKERS: usize = 1_000;

fn main() -> Result<()> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name || w == "all");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    if runs("schedule") {
        schedule()?;
    }
    if runs("heartbeats") {
        runtime.block_on(heartbeats())?;
    }
    if runs("forwarding") {
        runtime.block_on(forwarding())?;
    }
    if runs("streams") {
        runtime.block_on(streams())?;
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn state(token: Option<&str>) -> Result<(AppState, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.queen.state_dir = Some(dir.path().to_path_buf());
    config.queen.api_token = token.map(str::to_owned);
    Ok((AppState::new(config, Inventory::default())?, dir))
}

fn beat(i: usize, model: &str, url: &str) -> WorkerHeartbeat {
    WorkerHeartbeat {
        worker_id: format!("bench-w{i}"),
        hive_id: format!("hive-{}", i % 50),
        model: model.to_owned(),
        model_file: Some(format!("{model}.gguf")),
        device: "cpu".to_owned(),
        url: url.to_owned(),
        state: WorkerState::Ready,
        queue_depth: (i % 3) as u32,
        slots_total: 1,
        slots_busy: 0,
        tokens_generated: i as u64,
        memory_bytes: 1 << 30,
        interval_ms: 2_000,
        pid: None,
        load_percent: None,
        engine: None,
    }
}

fn schedule() -> Result<()> {
    let (state, _dir) = state(None)?;
    for i in 0..WORKERS {
        // Heard long enough ago to stay fresh through the whole run.
        let mut beat = beat(i, "bench-model", "http://127.0.0.1:9");
        beat.interval_ms = 600_000;
        state.workers.record(beat);
    }
    let pins = Pins::default();
    let excluded = Default::default();

    let mut times = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let started = Instant::now();
        let chosen = state.workers.pick(|list| {
            candidates(list, "bench-model", &pins, &excluded, 1)
                .into_iter()
                .next()
        });
        times.push(started.elapsed());
        let chosen = chosen.ok_or("no worker picked")?;
        state.workers.finish_request(&chosen.heartbeat.worker_id);
    }
    times.sort();
    println!(
        "schedule: one decision with {WORKERS} workers registered: p50 {}, p99 {} (target < 1 ms)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    Ok(())
}

async fn heartbeats() -> Result<()> {
    const TOKEN: &str = "bench-api-token";
    const CONNECTIONS: usize = 32;
    let (state, _dir) = state(Some(TOKEN))?;
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/worker-heartbeat", listener.local_addr()?);
    let server = tokio::spawn(queen_rbee::serve(listener, state.clone()));
    // Every worker's body and token, made before the clock starts.
    let bodies: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (0..WORKERS)
            .map(|i| {
                let beat = beat(i, "bench-model", "http://127.0.0.1:9");
                let token = state.worker_token(&beat.worker_id);
                Ok((serde_json::to_vec(&beat)?, token))
            })
            .collect::<Result<_>>()?,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?;
    let run = |seconds: f64| {
        let (client, bodies, url) = (client.clone(), bodies.clone(), url.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let tasks: Vec<_> = (0..CONNECTIONS)
                .map(|c| {
                    let (client, bodies, url) = (client.clone(), bodies.clone(), url.clone());
                    tokio::spawn(async move {
                        let mut times = Vec::new();
                        let mut failures = 0usize;
                        let mut i = c;
                        while Instant::now() < deadline {
                            let (body, token) = &bodies[i % WORKERS];
                            let started = Instant::now();
                            let answer = client
                                .post(&url)
                                .bearer_auth(token)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await;
                            match answer {
                                Ok(r) if r.status().as_u16() == 204 => {
                                    times.push(started.elapsed())
                                }
                                _ => failures += 1,
                            }
                            i += CONNECTIONS;
                        }
                        (times, failures)
                    })
                })
                .collect();
            let mut times = Vec::new();
            let mut failures = 0;
            for task in tasks {
                let (t, f) = task.await.unwrap_or_default();
                times.extend(t);
                failures += f;
            }
            (times, failures)
        }
    };
    run(1.0).await;
    let seconds = 5.0;
    let (mut times, failures) = run(seconds).await;
    times.sort();
    let rate = times.len() as f64 / seconds;
    println!(
        "heartbeats: {WORKERS} workers, {CONNECTIONS} connections: {rate:.0}/s (target ≥ 10,000/s), round trip p50 {}, p99 {} (target p99 < 5 ms), {failures} failed, {} workers registered",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        state.workers.list().len()
    );
    state.shutdown.cancel();
    let _ = server.await;
    Ok(())
}

/// A worker that answers `/v1/inference` with `max_tokens` tokens as fast as it can.
async fn fake_worker() -> Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::response::sse::{Event, Sse};
    async fn infer(
        axum::Json(request): axum::Json<Value>,
    ) -> Sse<impl futures::Stream<Item = std::result::Result<Event, std::convert::Infallible>>>
    {
        let n = request["max_tokens"].as_u64().unwrap_or(16) as u32;
        let frame = |e: InferenceEvent| {
            Ok(Event::default()
                .event(e.kind())
                .data(serde_json::to_string(&e).unwrap_or_default()))
        };
        let started = std::iter::once(frame(InferenceEvent::Started {
            request_id: None,
            prompt_tokens: 8,
        }));
        let tokens = (0..n).map(move |i| {
            frame(InferenceEvent::Token {
                t: " tok".to_owned(),
                i,
                lp: Vec::new(),
            })
        });
        let end = std::iter::once(frame(InferenceEvent::End {
            stop_reason: rbee_protocol::StopReason::Length,
            prompt_tokens: 8,
            tokens: n,
            ttft_ms: 0.0,
            tokens_per_s: 0.0,
        }));
        Sse::new(futures::stream::iter(started.chain(tokens).chain(end)))
    }
    let app = axum::Router::new().route("/v1/inference", axum::routing::post(infer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // As the real worker does: no Nagle delay on small token writes.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

/// A `queen-rbee` process on a free port, loopback only, logging to `dir`.
struct QueenProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl QueenProcess {
    async fn start(extra: &str) -> Result<QueenProcess> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[queen]\nport = {port}\nstate_dir = {:?}\ninventory = {:?}\n{extra}",
                dir.path().display().to_string(),
                dir.path().join("inventory.toml").display().to_string()
            ),
        )?;
        std::fs::write(dir.path().join("inventory.toml"), "")?;
        let log = std::fs::File::create(dir.path().join("queen.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_queen-rbee"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{url}/health")).send().await.is_ok() {
                return Ok(QueenProcess {
                    child,
                    url,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("queen.log")).unwrap_or_default();
        Err(format!("queen-rbee did not answer /health within 5 s; its log:\n{log}").into())
    }

    /// The process's CPU time so far (user + system).
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
    }
}

impl Drop for QueenProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Times of one stream: to the first token, and per token after it.
struct Timing {
    ttft: Duration,
    per_token: Duration,
    tokens: u32,
}

/// Reads an SSE response, calling `token` for each frame; returns the timing.
async fn read_stream(
    response: reqwest::Response,
    started: Instant,
    is_token: impl Fn(&str, &str) -> bool,
) -> Result<Timing> {
    let mut decoder = SseDecoder::new();
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut tokens = 0u32;
    while let Some(chunk) = body.next().await {
        for frame in decoder.feed(&chunk?)? {
            if is_token(&frame.event, &frame.data) {
                tokens += 1;
                first.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    let total = started.elapsed();
    let ttft = first.ok_or("the stream carried no token")?;
    Ok(Timing {
        ttft,
        per_token: (total - ttft) / tokens.saturating_sub(1).max(1),
        tokens,
    })
}

async fn direct(client: &reqwest::Client, worker: &str, max_tokens: u32) -> Result<Timing> {
    let started = Instant::now();
    let response = client
        .post(format!("{worker}/v1/inference"))
        .json(&json!({"prompt": "bench", "max_tokens": max_tokens}))
        .send()
        .await?
        .error_for_status()?;
    read_stream(response, started, |event, _| event == "token").await
}

async fn through_queen(
    client: &reqwest::Client,
    queen: &str,
    model: &str,
    max_tokens: u32,
) -> Result<Timing> {
    let started = Instant::now();
    let job: Value = client
        .post(format!("{queen}/v1/jobs"))
        .json(&json!({"operation": "infer", "model": model, "prompt": "bench", "max_tokens": max_tokens, "temperature": 0.0}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = job["job_id"].as_str().ok_or("no job id")?;
    let response = client
        .get(format!("{queen}/v1/jobs/{id}/stream"))
        .send()
        .await?
        .error_for_status()?;
    let errors = std::sync::atomic::AtomicBool::new(false);
    let timing = read_stream(response, started, |event, data| {
        match JobEvent::from_sse(event, data) {
            Ok(JobEvent::Token { .. }) => true,
            Ok(JobEvent::Error(_)) => {
                errors.store(true, std::sync::atomic::Ordering::Relaxed);
                false
            }
            _ => false,
        }
    })
    .await?;
    if errors.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("the job ended with an error".into());
    }
    Ok(timing)
}

async fn post_beat(client: &reqwest::Client, queen: &str, beat: &WorkerHeartbeat) -> Result<()> {
    client
        .post(format!("{queen}/v1/worker-heartbeat"))
        .json(beat)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn forwarding() -> Result<()> {
    const RUNS: usize = 200;
    const TOKENS: u32 = 64;
    let (worker, _server) = fake_worker().await?;
    let queen = QueenProcess::start("worker_slots = 64\nqueue_capacity = 256\n").await?;
    let client = reqwest::Client::new();
    let mut beat = beat(0, "bench-model", &worker);
    beat.interval_ms = 60_000;
    post_beat(&client, &queen.url, &beat).await?;

    for _ in 0..20 {
        direct(&client, &worker, TOKENS).await?;
        through_queen(&client, &queen.url, "bench-model", TOKENS).await?;
    }
    let (mut d_ttft, mut d_tok, mut q_ttft, mut q_tok) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let d = direct(&client, &worker, TOKENS).await?;
        let q = through_queen(&client, &queen.url, "bench-model", TOKENS).await?;
        assert_eq!((d.tokens, q.tokens), (TOKENS, TOKENS));
        d_ttft.push(d.ttft);
        d_tok.push(d.per_token);
        q_ttft.push(q.ttft);
        q_tok.push(q.per_token);
    }
    for v in [&mut d_ttft, &mut d_tok, &mut q_ttft, &mut q_tok] {
        v.sort();
    }
    let p50 = |v: &[Duration]| percentile(v, 0.5);
    println!(
        "forwarding: time to first token p50 direct {} / through the queen {}: added {} (target < 2 ms; the queen's path includes submitting the job and opening its stream)",
        ms(p50(&d_ttft)),
        ms(p50(&q_ttft)),
        ms(p50(&q_ttft).saturating_sub(p50(&d_ttft)))
    );
    println!(
        "forwarding: per-token latency p50 direct {} / through the queen {}: added {} (target < 0.1 ms)",
        ms(p50(&d_tok)),
        ms(p50(&q_tok)),
        ms(p50(&q_tok).saturating_sub(p50(&d_tok)))
    );

    // Many long streams at once: tokens/s delivered and the queen's CPU meanwhile.
    const STREAMS: usize = 16;
    const LONG: u32 = 20_000;
    let cpu_before = queen.cpu();
    let started = Instant::now();
    let runs: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url) = (client.clone(), queen.url.clone());
            tokio::spawn(async move { through_queen(&client, &url, "bench-model", LONG).await })
        })
        .collect();
    let mut tokens = 0u64;
    for run in runs {
        tokens += u64::from(run.await??.tokens);
    }
    let wall = started.elapsed();
    let cpu = queen.cpu() - cpu_before;
    let rate = tokens as f64 / wall.as_secs_f64();
    let cpu_share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "forwarding: {STREAMS} streams at once: {rate:.0} tokens/s through the queen, queen CPU {:.0}% of one core, i.e. {:.1}% of a core per 10,000 tokens/s",
        cpu_share * 100.0,
        cpu_share * 100.0 * 10_000.0 / rate
    );
    Ok(())
}

/// How many workers the queen lists as ready.
async fn ready_workers(client: &reqwest::Client, queen: &str) -> Result<usize> {
    let job: Value = client
        .post(format!("{queen}/v1/jobs"))
        .json(&json!({"operation": "worker_list"}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["job_id"].as_str().ok_or("no job id")?;
    let text = client
        .get(format!("{queen}/v1/jobs/{id}/stream"))
        .send()
        .await?
        .text()
        .await?;
    let mut decoder = SseDecoder::new();
    for frame in decoder.feed(text.as_bytes())? {
        if let Ok(JobEvent::Result {
            result: OperationResult::Workers(workers),
            ..
        }) = JobEvent::from_sse(&frame.event, &frame.data)
        {
            return Ok(workers
                .iter()
                .filter(|w| w.status == WorkerStatus::Ready)
                .count());
        }
    }
    Ok(0)
}

fn test_model() -> Result<PathBuf> {
    let path = std::env::var_os("RBEE_TEST_MODEL").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.rbee-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no test model at {}: run scripts/fetch-test-model.sh",
            path.display()
        )
        .into())
    }
}

async fn streams() -> Result<()> {
    const STREAMS: usize = 64;
    const WORKER_COUNT: usize = 4;
    const TOKENS: u32 = 16;
    let model = test_model()?;
    let name = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let worker_bin = Path::new(env!("CARGO_BIN_EXE_queen-rbee")).with_file_name("llm-worker-rbee");
    if !worker_bin.is_file() {
        return Err(format!(
            "{} is missing: build it in this profile (cargo build --release -p llm-worker-rbee)",
            worker_bin.display()
        )
        .into());
    }
    // One request at a time per worker; the rest wait in the queen's queue (64 places).
    let queen = QueenProcess::start("worker_slots = 1\nqueue_capacity = 64\n").await?;
    let workers: Vec<Child> = (0..WORKER_COUNT)
        .map(|i| {
            Command::new(&worker_bin)
                .args(["--worker-id", &format!("bench-{i}"), "--port", "0"])
                .arg("--model")
                .arg(&model)
                .args(["--queen-url", &queen.url, "--hive-id", "localhost"])
                .args(["--heartbeat-interval", "0.5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    struct Reap(Vec<Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let _reap = Reap(workers);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_workers(&client, &queen.url).await? < WORKER_COUNT {
        if Instant::now() > deadline {
            return Err("the 4 workers were not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let started = Instant::now();
    let runs: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url, name) = (client.clone(), queen.url.clone(), name.clone());
            tokio::spawn(async move { through_queen(&client, &url, &name, TOKENS).await })
        })
        .collect();
    let (mut tokens, mut errors, mut ttfts) = (0u64, 0usize, Vec::new());
    for run in runs {
        match run.await? {
            Ok(timing) => {
                tokens += u64::from(timing.tokens);
                ttfts.push(timing.ttft);
            }
            Err(e) => {
                errors += 1;
                eprintln!("streams: a request failed: {e}");
            }
        }
    }
    let wall = started.elapsed();
    ttfts.sort();
    println!(
        "streams: {STREAMS} concurrent streams over {WORKER_COUNT} workers ({name}, {TOKENS} tokens each): {errors} errors, {tokens} tokens in {:.1} s = {:.1} tokens/s in total; time to first token p50 {} (queued behind others), max {}",
        wall.as_secs_f64(),
        tokens as f64 / wall.as_secs_f64(),
        ms(percentile(&ttfts, 0.5)),
        ms(percentile(&ttfts, 1.0)),
    );
    Ok(())
}
