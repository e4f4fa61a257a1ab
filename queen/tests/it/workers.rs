//! Workers on lab hives with the real model: spawned over SSH by the agent, fed into
//! the registry by their heartbeats, and used by `infer` through the queen, from the
//! keeper binary too.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbee_config::{Config, Inventory};
use rbee_protocol::{ErrorCode, JobEvent, Level};
use serde_json::{Value, json};

use crate::support::{Lab, Queen, bin_dir, start_queen_on, test_model};

pub const TOKEN: &str = "lab-api-token";
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// A queen for lab hives: the API token, short heartbeats, one slot per worker.
pub fn config(state_dir: &Path) -> Config {
    let mut config = Config::default();
    config.queen.bin_dir = Some(bin_dir());
    config.queen.connect_timeout_secs = 3;
    config.queen.operation_timeout_secs = 120;
    config.queen.api_token = Some(TOKEN.to_owned());
    config.queen.state_dir = Some(state_dir.to_path_buf());
    config.queen.heartbeat_interval_ms = 500;
    config.queen.worker_slots = 1;
    config.queen.queue_capacity = 1;
    config
}

/// Puts the test model into every hive's model cache where `model push` puts it (the
/// lab's hosts share this machine's file system; pushing is the models tests' part).
pub fn stock_models(inventory: &Inventory) {
    for hive in inventory.hives.values() {
        let models = Path::new(&hive.install_dir).join("models/local");
        std::fs::create_dir_all(&models).expect("models dir");
        std::fs::copy(test_model(), models.join(format!("{MODEL}.gguf"))).expect("copy model");
    }
}

fn terminal(events: &[(Instant, JobEvent)]) -> &JobEvent {
    &events.last().expect("events").1
}

fn done(events: &[(Instant, JobEvent)]) -> Value {
    assert_eq!(terminal(events), &JobEvent::Done, "{events:#?}");
    Queen::result_of(events).expect("a result")
}

fn text(events: &[(Instant, JobEvent)]) -> String {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Token { t, .. } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn infer(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "operation": "infer",
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    })
}

/// Runs the keeper binary with `stdin` as its input; its stdout and stderr, once it
/// exited successfully.
async fn keeper(config: &Path, args: &[&str], stdin: &str) -> (String, String) {
    use std::io::Write;
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_owned();
    let shown = args.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(bin_dir().join("rbee-keeper"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("RBEE_QUEEN_URL")
            .env_remove("RBEE_API_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("keeper runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("keeper output")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rbee-keeper {shown:?}:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

async fn spawn(queen: &Queen, hive: &str) -> Value {
    spawn_with(queen, hive, json!({})).await
}

/// `spawn` with more fields of the operation (`parallel`, `ctx_size`).
async fn spawn_with(queen: &Queen, hive: &str, more: Value) -> Value {
    let mut operation =
        json!({"operation": "worker_spawn", "hive_id": hive, "model": MODEL, "device": "cpu"});
    for (key, value) in more.as_object().expect("fields") {
        operation[key] = value.clone();
    }
    let events = queen.run(operation).await;
    let worker = done(&events);
    assert_eq!(worker["status"], "ready", "{worker}");
    assert_eq!(worker["hive_id"], hive, "{worker}");
    // The worker's loading reached the job as it happened.
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Narration(n) if n.action == "worker_log")),
        "{events:#?}"
    );
    worker
}

async fn worker_ids(queen: &Queen) -> Vec<String> {
    listed_workers(queen, |status| status == "ready").await
}

/// The workers the queen lists whose status passes `keep`.
async fn listed_workers(queen: &Queen, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let listed = done(&queen.run(json!({"operation": "worker_list"})).await);
    listed
        .as_array()
        .expect("worker list")
        .iter()
        .filter(|w| keep(w["status"].as_str().unwrap_or_default()))
        .map(|w| w["worker_id"].as_str().expect("id").to_owned())
        .collect()
}

/// What the in-process queen logs, at debug level and for every crate (russh's and
/// hyper's included), as its binary would with `RBEE_LOG=debug`.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn install() -> LogCapture {
        let capture = LogCapture::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(capture.clone())
            .with_ansi(false)
            .try_init()
            .expect("the only subscriber in this test process");
        capture
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

/// Every file under `dir`, concatenated (a hive's worker logs).
fn files_text(dir: &Path) -> String {
    let mut text = String::new();
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(item.path()).unwrap_or_default(),
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_on_two_hives_serve_through_the_queen_and_survive_its_restart() {
    let log = LogCapture::install();
    let started = Instant::now();
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());
    let lab = Lab::up(2);
    let inventory = lab.inventory(None);
    stock_models(&inventory);
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), inventory.clone(), "0.0.0.0:0").await;
    let port = queen.state.listen_addr().port();
    for operation in ["hive_install", "hive_start"] {
        let events = queen
            .run(json!({"operation": operation, "hive_id": "lab"}))
            .await;
        assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    }

    step("lab up, hives installed and started");
    // A device the hive does not have is refused with the ones it has.
    let events = queen
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": MODEL, "device": "cuda:3"}))
        .await;
    let JobEvent::Error(error) = terminal(&events) else {
        panic!("{events:#?}")
    };
    assert_eq!(error.code, ErrorCode::NotFound, "{error:?}");
    assert!(error.message.contains("cuda:3"), "{error:?}");
    assert!(
        error.hint.as_deref().is_some_and(|h| h.contains("cpu")),
        "{error:?}"
    );
    // A model the hive lacks has a code of its own, so spawning elsewhere on request
    // tells it from a missing device.
    let events = queen
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": "absent.gguf", "device": "cpu"}))
        .await;
    let JobEvent::Error(error) = terminal(&events) else {
        panic!("{events:#?}")
    };
    assert_eq!(error.code, ErrorCode::ModelNotFound, "{error:?}");

    // Slots and context as asked: the agent passes them to the worker, whose heartbeat
    // reports them.
    let first = spawn_with(&queen, "hive-1", json!({"parallel": 2, "ctx_size": 1024})).await;
    assert_eq!(first["slots_total"], 2, "{first}");
    let second = spawn(&queen, "hive-2").await;
    let first_id = first["worker_id"].as_str().expect("id").to_owned();
    let second_id = second["worker_id"].as_str().expect("id").to_owned();
    let mut ids = worker_ids(&queen).await;
    ids.sort();
    let mut expected = vec![first_id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    step("two workers spawned");
    // The keeper binary streams the reply and ends with the stats.
    let keeper_dir = tempfile::tempdir().expect("keeper dir");
    let keeper_config = keeper_dir.path().join("config.toml");
    std::fs::write(
        &keeper_config,
        format!("[queen]\nport = {port}\napi_token = \"{TOKEN}\"\n"),
    )
    .expect("keeper config");
    let options = [
        "--model",
        MODEL,
        "--system",
        "Answer in one short sentence.",
        "--max-tokens",
        "24",
        "--temperature",
        "0",
    ];
    let infer_args = [&["infer", "What is the capital of France?"][..], &options].concat();
    let (stdout, stderr) = keeper(&keeper_config, &infer_args, "").await;
    assert!(stdout.contains("Paris"), "{stdout}");
    // The stats end the run on stderr, leaving stdout to the reply.
    assert!(
        stderr.contains("tok/s") && stderr.contains("first token"),
        "{stderr}"
    );

    // Plain `infer`, as a new user types it, answers: the prompt goes in as a user's
    // message through the model's chat template (`--raw` would send it as it is).
    let plain = [
        "infer",
        "--model",
        MODEL,
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "What is the capital of France? Answer in one word.",
    ];
    let (stdout, _) = keeper(&keeper_config, &plain, "").await;
    assert!(stdout.contains("Paris"), "{stdout}");

    step("keeper infer");
    // `chat` keeps the conversation and uses the model's chat template.
    let chat_args = [&["chat"][..], &options].concat();
    let question = "What is the capital of France?\n/exit\n";
    let (stdout, _) = keeper(&keeper_config, &chat_args, question).await;
    assert!(stdout.contains("Paris"), "{stdout}");

    step("keeper chat");
    // Restarted on the same port with the same state directory, the queen adopts both
    // workers from their heartbeats and can still talk to them.
    queen.stop().await;
    let queen = start_queen_on(
        config(state_dir.path()),
        inventory.clone(),
        &format!("0.0.0.0:{port}"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker_ids(&queen).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "workers not adopted: {:?}",
            worker_ids(&queen).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = queen.run(infer("Say hello.", 8)).await;
    done(&events);
    assert!(!text(&events).is_empty());

    step("queen restarted, workers adopted");
    // More requests than one worker's slots and a one-place queue hold: as many run as
    // the worker has slots, one waits, the rest are refused with queue_full.
    let slots = done(&queen.run(json!({"operation": "worker_list"})).await)
        .as_array()
        .and_then(|all| all.iter().find(|w| w["hive_id"] == "hive-2"))
        .and_then(|w| w["slots_total"].as_u64())
        .expect("the worker on hive-2 reports its slots") as usize;
    assert_eq!(slots, 4, "the worker's default --parallel");
    let pinned = |_: ()| {
        let mut op = infer("Count from one to fifty in words.", 24);
        op["hive_id"] = json!("hive-2");
        op
    };
    let sent = slots + 3;
    let runs = (0..sent).map(|_| queen.run(pinned(())));
    let outcomes = futures::future::join_all(runs).await;
    let full = outcomes
        .iter()
        .filter(|events| matches!(terminal(events), JobEvent::Error(e) if e.code == ErrorCode::QueueFull))
        .count();
    let ok = outcomes
        .iter()
        .filter(|events| terminal(events) == &JobEvent::Done)
        .count();
    assert!(full >= 1, "{outcomes:#?}");
    assert_eq!(full + ok, sent, "{outcomes:#?}");
    assert!(
        ok > slots,
        "a request per slot and the queued one finish: {outcomes:#?}"
    );

    step("queue");
    // Stopped, a worker leaves the registry; requests go to the other.
    let stopped = done(
        &queen
            .run(json!({"operation": "worker_stop", "worker_id": first_id}))
            .await,
    );
    assert_eq!(stopped["outcome"], "stopped", "{stopped}");
    for _ in 0..2 {
        let answer = done(&queen.run(infer("Name a colour.", 4)).await);
        assert_eq!(answer["worker_id"], second_id.as_str(), "{answer}");
    }

    step("stop");
    // A worker killed outright: a request it was given before the registry noticed is
    // retried on the other worker.
    let third = spawn(&queen, "hive-1").await;
    let third_id = third["worker_id"].as_str().expect("id").to_owned();
    let hive1 = &inventory.hives["hive-1"];
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(&hive1.install_dir).join(format!("workers/{third_id}.json")),
        )
        .expect("state file"),
    )
    .expect("state json");
    let pid = record["pid"].as_i64().expect("pid") as libc::pid_t;
    // The worker's token is in neither its command line (what `ps` shows) nor its
    // state file.
    let token = queen.state.worker_token(&third_id);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&token),
        "token on the command line"
    );
    assert!(
        !record.to_string().contains(&token),
        "token in the state file"
    );
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let both = futures::future::join(
        queen.run(infer("Say yes.", 4)),
        queen.run(infer("Say no.", 4)),
    )
    .await;
    for events in [&both.0, &both.1] {
        let answer = done(events);
        assert_eq!(answer["worker_id"], second_id.as_str(), "{answer}");
    }
    let retried = [&both.0, &both.1].iter().any(|events| {
        events.iter().any(|(_, e)| {
            matches!(e, JobEvent::Narration(n) if n.action == "retry" && n.level == Level::Warn)
        })
    });
    assert!(retried, "{both:#?}");

    step("retry after SIGKILL");
    // Logs come from the hive.
    let events = queen
        .run(json!({"operation": "worker_logs", "worker_id": second_id, "lines": 5}))
        .await;
    done(&events);
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Narration(n) if n.action == "worker_log")),
        "{events:#?}"
    );

    step("logs");
    // hive stop stops what runs there.
    let events = queen
        .run(json!({"operation": "hive_stop", "hive_id": "hive-2"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    assert!(!worker_ids(&queen).await.contains(&second_id));

    step("hive stop");
    // With none left, --spawn starts one on an online hive that holds the model; two
    // such requests at once start one worker, not two.
    let mut op = infer("Say hi.", 4);
    op["spawn"] = json!(true);
    op["hive_id"] = json!("hive-1");
    // Every listed worker, whatever its status: the one started may still read busy
    // or stale from a heartbeat sent while it answered, on a loaded machine.
    let before = listed_workers(&queen, |_| true).await;
    let (first_answer, other) = futures::future::join(queen.run(op.clone()), queen.run(op)).await;
    let (answer, other) = (done(&first_answer), done(&other));
    assert!(
        answer["worker_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("hive-1-")),
        "{answer}"
    );
    assert_eq!(
        answer["worker_id"], other["worker_id"],
        "one worker for both"
    );
    let started: Vec<String> = listed_workers(&queen, |_| true)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");

    step("spawn on request");
    // Killed mid-stream, a worker's request ends with an error event at once, not a
    // hang.
    let last_id = answer["worker_id"].as_str().expect("id").to_owned();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(&hive1.install_dir).join(format!("workers/{last_id}.json")),
        )
        .expect("state file"),
    )
    .expect("state json");
    let pid = record["pid"].as_i64().expect("pid") as libc::pid_t;
    // Killed at its first token, so the model cannot have ended the answer first.
    let mut killed_at = None;
    let events = queen
        .run_watched(
            infer("List the numbers from 1 to 1000, one per line.", 1000),
            |event| {
                if matches!(event, JobEvent::Token { .. }) && killed_at.is_none() {
                    // SAFETY: kill has no memory effects.
                    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
                    killed_at = Some(Instant::now());
                }
            },
        )
        .await;
    let killed_at = killed_at.expect("a token before the end");
    let (ended_at, JobEvent::Error(error)) = events.last().expect("events") else {
        panic!("{events:#?}")
    };
    assert!(
        ended_at.duration_since(killed_at) < Duration::from_secs(2),
        "the error came {:?} after the kill",
        ended_at.duration_since(killed_at)
    );
    assert!(!text(&events).is_empty(), "tokens arrived before the kill");
    assert_eq!(error.code, ErrorCode::WorkerFailed, "{error:?}");

    // No job event of this queen's jobs (spawns included) carried a worker token.
    let tokens: Vec<String> = [&first_id, &second_id, &third_id, &last_id]
        .iter()
        .map(|id| queen.state.worker_token(id))
        .collect();
    let jobs = queen.state.jobs.list();
    assert!(jobs.iter().any(|j| j.operation == "worker_spawn"));
    for job in jobs {
        let replay = queen.stream_text(&job.job_id).await;
        assert!(
            tokens.iter().all(|token| !replay.contains(token)),
            "job {} shows a worker token",
            job.job_id
        );
    }

    // Uninstalling a hive stops its workers before it removes their state.
    let last = spawn(&queen, "hive-1").await;
    let pid = last["pid"].as_i64().expect("pid") as libc::pid_t;

    // No secret (worker tokens, the API token) in the queen's log at debug level, in
    // the hives' worker logs, or on any command line while a worker runs.
    let mut secrets = tokens;
    secrets.push(
        queen
            .state
            .worker_token(last["worker_id"].as_str().expect("id")),
    );
    secrets.push(TOKEN.to_owned());
    let queen_log = log.text();
    assert!(
        queen_log.contains("DEBUG") && queen_log.contains("exec"),
        "{queen_log}"
    );
    let worker_logs: String = inventory
        .hives
        .values()
        .map(|hive| files_text(&Path::new(&hive.install_dir).join("logs")))
        .collect();
    assert!(worker_logs.contains("ready"), "{worker_logs}");
    let command_lines: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect();
    assert!(command_lines.iter().any(|c| c.contains("llm-worker-rbee")));
    for secret in &secrets {
        assert!(!queen_log.contains(secret), "a secret in the queen's log");
        assert!(!worker_logs.contains(secret), "a secret in a worker log");
        assert!(
            command_lines.iter().all(|c| !c.contains(secret)),
            "a secret on a command line"
        );
    }
    let events = queen
        .run(json!({"operation": "hive_uninstall", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("llm-worker-rbee"),
        "the worker outlived the uninstall"
    );
    queen.stop().await;
}
