//! The real binaries as processes: rbee-keeper driving a queen-rbee it started.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// queen-rbee is built beside rbee-keeper by `cargo build --workspace` / nextest.
fn queen_binary() -> PathBuf {
    let keeper = PathBuf::from(env!("CARGO_BIN_EXE_rbee-keeper"));
    let queen = keeper.with_file_name("queen-rbee");
    assert!(
        queen.is_file(),
        "{} is missing: run `cargo nextest run --workspace` (it builds every binary) or `cargo build --workspace --bins`",
        queen.display()
    );
    queen
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An isolated operator: its own config and state directories and queen port.
struct Operator {
    dir: tempfile::TempDir,
    port: u16,
}

impl Operator {
    fn new() -> Self {
        let operator = Operator {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
        };
        std::fs::create_dir_all(operator.config_dir()).expect("config dir");
        std::fs::write(
            operator.config_dir().join("inventory.toml"),
            "[hives.localhost]\nhost = \"127.0.0.1\"\n[hives.gpu-a]\nhost = \"192.0.2.10\"\n",
        )
        .expect("inventory");
        operator
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn env(&self, command: &mut Command) {
        command
            .env("RBEE_CONFIG_DIR", self.config_dir())
            .env("RBEE_STATE_DIR", self.dir.path().join("state"))
            .env("RBEE_QUEEN_PORT", self.port.to_string())
            .env("RBEE_QUEEN_BIN", queen_binary())
            .env_remove("RBEE_CONFIG")
            .env_remove("RBEE_QUEEN_URL")
            .env_remove("RBEE_API_TOKEN")
            .stdin(Stdio::null());
    }

    fn keeper(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rbee-keeper"));
        self.env(&mut command);
        command.args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.keeper(args).output().expect("rbee-keeper runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.keeper(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    fn post(&self, path: &str, body: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ])
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("curl");
        text(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// The running jobs' ids, from `job list --json`.
    fn jobs(&self) -> Vec<Value> {
        let out = self.ok(&["--json", "job", "list"]);
        serde_json::from_str::<Value>(&out)
            .expect("json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait_for_running_job(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(job) = self.jobs().iter().find(|j| j["state"] == "running") {
                return job["job_id"].as_str().expect("id").to_owned();
            }
            assert!(Instant::now() < deadline, "no running job appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.run(&["queen", "stop", "--timeout", "5"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ndjson(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn queen_lifecycle_and_a_streamed_job() {
    let op = Operator::new();
    let status = op.run(&["queen", "status"]);
    assert_eq!(status.status.code(), Some(3), "not running yet");

    let started = op.ok(&["queen", "start"]);
    assert!(started.contains("queen started at"), "{started}");
    let again = op.ok(&["queen", "start"]);
    assert!(
        again.contains("already running"),
        "starting twice is a no-op: {again}"
    );
    let status = op.ok(&["queen", "status"]);
    assert!(
        status.contains("is running") && status.contains(&op.url()),
        "{status}"
    );
    let info: Value = serde_json::from_str(&op.ok(&["--json", "queen", "info"])).expect("json");
    assert_eq!(info["build"]["version"], env!("CARGO_PKG_VERSION"));

    // A job rendered for people: the result table lists the inventory's hives.
    let table = op.ok(&["inventory", "list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("ALIAS") && header.contains("HOST") && header.contains("ONLINE"),
        "{table}"
    );
    assert!(
        table.contains("gpu-a") && table.contains("localhost"),
        "{table}"
    );

    // The same job for scripts: one JSON event per line, ending with done.
    let events = ndjson(&op.ok(&["--json", "status"]));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["narration", "result", "done"]);

    let stopped = op.ok(&["queen", "stop"]);
    assert!(stopped.contains("queen stopped"), "{stopped}");
    assert_eq!(op.run(&["queen", "status"]).status.code(), Some(3));
}

#[test]
fn failed_jobs_exit_non_zero_with_the_hint() {
    let op = Operator::new();
    op.ok(&["queen", "start"]);
    let out = op.run(&["worker", "get", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no worker nobody") && stderr.contains("hint:"),
        "{stderr}"
    );
}

#[test]
fn infer_without_a_model_and_nothing_served_says_what_to_pass() {
    let op = Operator::new();
    op.ok(&["queen", "start"]);
    let out = op.run(&["infer", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no ready worker serves a model, and no --model was given")
            && stderr.contains("hint: name one with --model"),
        "{stderr}"
    );
    op.ok(&["queen", "stop"]);
}

#[test]
fn late_subscriber_sees_the_whole_job() {
    let op = Operator::new();
    op.ok(&["queen", "start"]);
    let mut waiter = op.spawn(&["worker", "wait", "--model", "m.gguf", "--timeout", "60"]);
    let job = op.wait_for_running_job();
    let heartbeat = r#"{"worker_id":"w1","hive_id":"localhost","model":"m.gguf","device":"cpu","url":"http://127.0.0.1:9","state":"ready"}"#;
    assert_eq!(op.post("/v1/worker-heartbeat", heartbeat), 204);
    assert!(wait_exit(&mut waiter, Duration::from_secs(10)).success());
    // Subscribing only now still replays the job from its first event.
    let events = ndjson(&op.ok(&["--json", "job", "watch", &job]));
    assert_eq!(
        events.first().and_then(|e| e["type"].as_str()),
        Some("narration")
    );
    assert_eq!(events.last().and_then(|e| e["type"].as_str()), Some("done"));
    let worker = events
        .iter()
        .find(|e| e["type"] == "result")
        .expect("result");
    assert_eq!(worker["value"]["worker_id"], "w1");
}

#[test]
fn ctrl_c_cancels_the_job_on_the_queen() {
    let op = Operator::new();
    op.ok(&["queen", "start"]);
    let mut waiter = op.spawn(&["worker", "wait", "--model", "never", "--timeout", "60"]);
    let job = op.wait_for_running_job();
    // SAFETY: kill(2) on a child this test owns, with a valid signal number.
    let rc = unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut waiter, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    std::io::Read::read_to_string(waiter.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(
        stderr.contains("cancelled: cancelled by the operator"),
        "{stderr}"
    );
    let state = op
        .jobs()
        .into_iter()
        .find(|j| j["job_id"] == job.as_str())
        .expect("job listed");
    assert_eq!(state["state"], "cancelled");
}

#[test]
fn queen_stop_with_a_job_running_cancels_it_and_exits_zero() {
    let op = Operator::new();
    let mut queen = Command::new(queen_binary());
    op.env(&mut queen);
    let mut queen = queen
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("queen");
    let deadline = Instant::now() + Duration::from_secs(20);
    while op.run(&["queen", "status"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "queen did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut waiter = op.spawn(&["worker", "wait", "--model", "never", "--timeout", "60"]);
    op.wait_for_running_job();
    op.ok(&["queen", "stop"]);
    assert_eq!(
        wait_exit(&mut waiter, Duration::from_secs(15)).code(),
        Some(130)
    );
    assert!(
        wait_exit(&mut queen, Duration::from_secs(15)).success(),
        "queen-rbee exits 0"
    );
}

#[test]
fn malformed_files_are_reported_with_place_and_expectation() {
    let op = Operator::new();
    std::fs::write(
        op.config_dir().join("config.toml"),
        "[queen]\nport = 8500\nprot = 1\n",
    )
    .expect("write");
    let out = op.run(&["queen", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.toml")
            && stderr.contains("line 3")
            && stderr.contains("unknown field `prot`"),
        "{stderr}"
    );

    std::fs::write(op.config_dir().join("config.toml"), "").expect("write");
    std::fs::write(
        op.config_dir().join("inventory.toml"),
        "[hives.a]\nhost = 5\n",
    )
    .expect("write");
    let out = op.run(&["queen", "start", "--timeout", "10"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("inventory.toml")
            && stderr.contains("line 2")
            && stderr.contains("expected a string"),
        "{stderr}"
    );
}

#[test]
fn prompts_without_a_terminal_name_the_flag() {
    let op = Operator::new();
    // Each refused before anything reaches a queen (none runs here).
    let cases: [(&[&str], &str); 4] = [
        (&["hive", "uninstall", "gpu-a"], "pass --yes"),
        (&["hive", "remove", "gpu-a"], "pass --yes"),
        (&["hive", "add", "gpu-b"], "pass --host"),
        (&["hive", "add", "--host", "192.0.2.11"], "first argument"),
    ];
    for (args, flag) in cases {
        let out = op.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(flag),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn queen_refuses_a_public_bind_without_a_token() {
    let op = Operator::new();
    let mut queen = Command::new(queen_binary());
    op.env(&mut queen);
    let out = queen.args(["--bind", "0.0.0.0"]).output().expect("queen");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("without an API token") && stderr.contains("RBEE_API_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn the_keeper_sends_the_configured_token() {
    let op = Operator::new();
    std::fs::write(
        op.config_dir().join("config.toml"),
        "[queen]\napi_token = \"s3cret\"\n",
    )
    .expect("write");
    op.ok(&["queen", "start"]);
    let status = op.ok(&["status"]);
    assert!(
        status.contains("HIVES (0 of 2 online)") && !status.contains('{'),
        "the status reads as sentences and tables: {status}"
    );
    assert_eq!(
        op.post("/v1/jobs", r#"{"operation":"status"}"#),
        401,
        "curl without the token is refused"
    );
}

/// Runs the keeper with an empty configuration directory and no queen.
fn unconfigured_keeper(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbee-keeper"))
        .args(args)
        .env("RBEE_CONFIG_DIR", dir)
        .env_remove("RBEE_CONFIG")
        .output()
        .expect("keeper runs")
}

#[test]
fn completions_and_the_man_page_need_no_configuration() {
    // No config file, no queen: a fresh machine's shell setup.
    let dir = tempfile::tempdir().expect("tempdir");
    let keeper = |args: &[&str]| {
        let out = unconfigured_keeper(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let bash = keeper(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("infer"),
        "{bash}"
    );
    // The script is valid bash.
    let script = dir.path().join("rbee-keeper.bash");
    std::fs::write(&script, &bash).expect("script");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(keeper(&["completions", "zsh"]).starts_with("#compdef rbee-keeper"));
    assert!(keeper(&["completions", "fish"]).contains("complete -c rbee-keeper"));
    let man = keeper(&["man"]);
    assert!(
        man.contains(".TH rbee-keeper 1") && man.contains("infer"),
        "{man}"
    );
}

#[test]
fn a_keep_alive_is_checked_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["model", "load", "m", "--keep-alive", "soon"][..],
        &["infer", "--model", "m", "--keep-alive", "5 minutes", "hi"][..],
        &[
            "worker",
            "spawn",
            "--hive",
            "h",
            "--model",
            "m",
            "--keep-alive",
            "5d",
        ][..],
    ] {
        let out = unconfigured_keeper(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--keep-alive") && stderr.contains("\"30s\""),
            "{args:?}: {stderr}"
        );
    }
}
