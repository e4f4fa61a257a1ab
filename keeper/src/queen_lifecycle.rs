//! The queen daemon's lifecycle on this machine: start, stop, status, info, rebuild.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use console::style;
use serde_json::json;

use crate::Settings;

const POLL: Duration = Duration::from_millis(50);

fn pid_file() -> PathBuf {
    rbee_config::paths::state_dir().join("queen.pid")
}

fn log_file() -> PathBuf {
    rbee_config::paths::state_dir().join("queen.log")
}

/// Where `queen start` finds the daemon: the flag, else beside this binary, else PATH.
fn find_queen_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("queen-rbee");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("queen-rbee");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find the queen-rbee binary\nhint: build it with `cargo build -p queen-rbee`, or pass --queen-bin"
    )
}

pub async fn start(
    settings: &Settings,
    queen_bin: Option<PathBuf>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    if client.get_json("/health").await?.is_some() {
        settings.say(
            &format!("queen is already running at {}", client.base()),
            json!({"status": "running", "url": client.base(), "started": false}),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let binary = find_queen_binary(queen_bin)?;
    let state_dir = rbee_config::paths::state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let log_path = log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = std::process::Command::new(&binary);
    if let Some(config) = &settings.config_path {
        command.arg("--config").arg(config);
    }
    if let Some(port) = settings.url_port() {
        command.arg("--port").arg(port.to_string());
    }
    // The daemon gets its own process group so the operator's Ctrl-C in this terminal
    // does not reach it, and no terminal to wait on.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    std::fs::write(pid_file(), child.id().to_string())?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if client.get_json("/health").await?.is_some() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(pid_file());
            bail!(
                "queen-rbee exited at start ({status})\n{}",
                tail(&log_path, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "queen-rbee did not answer /health within {timeout}s; its log: {}",
                log_path.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    settings.say(
        &format!("{} queen started at {} (pid {}, log {})", style("✓").green(), client.base(), child.id(), log_path.display()),
        json!({"status": "running", "url": client.base(), "started": true, "pid": child.id(), "log": log_path}),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(settings: &Settings, timeout: u64) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    if client.get_json("/health").await?.is_none() {
        let _ = std::fs::remove_file(pid_file());
        settings.say(
            "queen is not running",
            json!({"status": "stopped", "stopped": false}),
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The queen may close the connection as it stops, before its answer arrives;
    // whether it stopped is what the health checks below tell.
    if let Err(e) = client.post_json("/v1/shutdown", &json!({})).await {
        tracing::debug!("shutdown request: {e:#}");
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    // A pooled connection the stopping queen closed fails the request rather than the
    // connect; either way nothing answers any more.
    while matches!(client.get_json("/health").await, Ok(Some(_))) {
        if Instant::now() > deadline {
            bail!(
                "the queen is still running {timeout}s after the shutdown request; its log: {}",
                log_file().display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let _ = std::fs::remove_file(pid_file());
    settings.say(
        &format!("{} queen stopped", style("✓").green()),
        json!({"status": "stopped", "stopped": true}),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn status(settings: &Settings) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    let Some(health) = client.get_json("/health").await? else {
        settings.say(
            &format!("queen is not running at {}", client.base()),
            json!({"status": "stopped", "url": client.base()}),
        );
        return Ok(ExitCode::from(3));
    };
    let build = client.get_json("/v1/build-info").await?.unwrap_or_default();
    settings.say(
        &format!(
            "{} queen is running at {} (version {}, features: {})",
            style("●").green(),
            client.base(),
            health["version"].as_str().unwrap_or("?"),
            features(&build)
        ),
        json!({"status": "running", "url": client.base(), "health": health, "build": build}),
    );
    Ok(ExitCode::SUCCESS)
}

fn features(build: &serde_json::Value) -> String {
    let list: Vec<&str> = build["features"]
        .as_array()
        .map(|f| f.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

pub async fn info(settings: &Settings) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    let build = client.get_json("/v1/build-info").await?;
    let files = json!({
        "config": settings.config_path.clone().unwrap_or_else(rbee_config::paths::default_config_file),
        "inventory": settings.config.inventory_path(),
        "log": log_file(),
        "pid": pid_file(),
    });
    let human = match &build {
        Some(b) => format!(
            "queen at {}\n  version:   {}\n  features:  {}\n  built:     {}\n  config:    {}\n  inventory: {}\n  log:       {}",
            client.base(),
            b["version"].as_str().unwrap_or("?"),
            features(b),
            b["build_timestamp"].as_str().unwrap_or("?"),
            files["config"].as_str().unwrap_or("?"),
            files["inventory"].as_str().unwrap_or("?"),
            files["log"].as_str().unwrap_or("?"),
        ),
        None => format!(
            "queen is not running at {}\n  config: {}",
            client.base(),
            files["config"].as_str().unwrap_or("?")
        ),
    };
    settings.say(
        &human,
        json!({"url": client.base(), "build": build, "files": files}),
    );
    Ok(if build.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Rebuilds queen-rbee with cargo in the source tree this keeper came from (or
/// `$RBEE_SOURCE_DIR`), in the same profile as this keeper, output shown live.
pub async fn rebuild(settings: &Settings, with_local_hive: bool) -> anyhow::Result<ExitCode> {
    let source = std::env::var_os("RBEE_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    if !source.join("Cargo.toml").is_file() {
        bail!(
            "no rbee source tree at {}\nhint: set RBEE_SOURCE_DIR to a checkout of rbee",
            source.display()
        );
    }
    let release = std::env::current_exe()
        .map(|exe| exe.components().any(|c| c.as_os_str() == "release"))
        .unwrap_or(false);
    let mut command =
        tokio::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(&source)
        .args(["build", "-p", "queen-rbee"]);
    if release {
        command.arg("--release");
    }
    if with_local_hive {
        command.args(["--features", "local-hive"]);
    }
    eprintln!(
        "{} cargo build -p queen-rbee{}{}",
        style("→").cyan(),
        if release { " --release" } else { "" },
        if with_local_hive {
            " --features local-hive"
        } else {
            ""
        }
    );
    let status = command.status().await.context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let running = settings.client()?.get_json("/health").await?.is_some();
    let note = if running {
        "; restart the queen to use it: `rbee-keeper queen stop && rbee-keeper queen start`"
    } else {
        ""
    };
    settings.say(
        &format!("{} queen-rbee rebuilt{note}", style("✓").green()),
        json!({"rebuilt": true, "local_hive": with_local_hive, "restart_needed": running}),
    );
    Ok(ExitCode::SUCCESS)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
