//! `config.toml`: the queen's address and API token, shared by queen and keeper.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::FileError;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub queen: QueenConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueenConfig {
    pub port: u16,
    pub bind_addr: IpAddr,
    /// When set, every route but `/health` needs `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Where the queen finds the inventory; defaults to the config directory's.
    pub inventory: Option<PathBuf>,
    /// How long a finished job's events stay available to late subscribers.
    pub job_ttl_secs: u64,
    /// How many events one job keeps; older ones are dropped first.
    pub max_job_events: usize,
    /// How often an idle SSE stream gets a keep-alive comment.
    pub keepalive_ms: u64,
    /// Hives driven at once by one fan-out operation.
    pub forks: usize,
    /// Seconds to reach a hive (TCP connect and SSH handshake).
    pub connect_timeout_secs: u64,
    /// Seconds one hive may take for one operation before it counts as unreachable.
    pub operation_timeout_secs: u64,
    /// Where `hive install` finds the binaries it pushes; beside queen-rbee by default.
    pub bin_dir: Option<PathBuf>,
    /// OpenSSH client configuration to honour; `~/.ssh/config` by default.
    pub ssh_config: Option<PathBuf>,
    /// Where the queen keeps what must survive a restart (the key that derives worker
    /// tokens); `$RBEE_STATE_DIR` or `~/.local/state/rbee` by default.
    pub state_dir: Option<PathBuf>,
    /// Milliseconds between the heartbeats of the workers this queen spawns.
    pub heartbeat_interval_ms: u64,
    /// Requests one worker is given at once when its heartbeat does not say how many
    /// slots it has (workers that do are given that many); more wait in the queue.
    pub worker_slots: u32,
    /// Requests that may wait for a busy model; one more is refused with `queue_full`.
    pub queue_capacity: usize,
    /// Seconds a queued request waits for a worker before it fails.
    pub queue_timeout_secs: u64,
    /// Start a worker for a request (keeper or OpenAI route) when none serves the model
    /// and a hive holds it; `false` makes such a request fail unless it asks to spawn.
    pub auto_spawn: bool,
    /// How long a worker started on demand stays loaded without requests, in Ollama's
    /// forms (`"5m"`, `"30s"`, `0` = unload after the request, `-1` = never). Workers
    /// started by hand are never unloaded for idleness unless started with a keep_alive.
    pub keep_alive: rbee_protocol::KeepAlive,
    /// SSH failures in a row after which a hive counts as unhealthy (one lost packet
    /// never flips it).
    pub ssh_unhealthy_after: u32,
    /// SSH successes in a row after which an unhealthy hive counts as healthy again.
    pub ssh_healthy_after: u32,
    /// The Hugging Face hub (or a mirror) hives download from, unless a hive's
    /// `hf_endpoint` variable names another; `HF_ENDPOINT` in the environment.
    pub hf_endpoint: Option<String>,
    /// The token for gated repositories, sent to hives on the agent's stdin only;
    /// `HF_TOKEN` in the environment.
    pub hf_token: Option<String>,
}

impl Default for QueenConfig {
    fn default() -> Self {
        QueenConfig {
            port: rbee_protocol::DEFAULT_QUEEN_PORT,
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            api_token: None,
            inventory: None,
            job_ttl_secs: 600,
            max_job_events: 65_536,
            keepalive_ms: 10_000,
            forks: 16,
            connect_timeout_secs: 10,
            operation_timeout_secs: 300,
            bin_dir: None,
            ssh_config: None,
            state_dir: None,
            heartbeat_interval_ms: 2_000,
            worker_slots: 1,
            queue_capacity: 64,
            queue_timeout_secs: 300,
            auto_spawn: true,
            keep_alive: rbee_protocol::KeepAlive::default(),
            ssh_unhealthy_after: 3,
            ssh_healthy_after: 2,
            hf_endpoint: None,
            hf_token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] Box<FileError>),
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl Config {
    /// Loads `path`, or the default file when `path` is `None`. A missing default file
    /// means defaults; a missing file the operator named is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => crate::read_toml(path)?,
            None => {
                let path = crate::paths::default_config_file();
                if path.exists() {
                    crate::read_toml(&path)?
                } else {
                    Config::default()
                }
            }
        };
        config.apply_env()?;
        Ok(config)
    }

    /// Environment overrides: `RBEE_QUEEN_PORT`, `RBEE_BIND_ADDR`, `RBEE_API_TOKEN`,
    /// `HF_ENDPOINT`, `HF_TOKEN`. Read once, here: operations take them from the
    /// configuration.
    fn apply_env(&mut self) -> Result<(), ConfigError> {
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(endpoint) = set("HF_ENDPOINT") {
            self.queen.hf_endpoint = Some(endpoint);
        }
        if let Some(token) = set("HF_TOKEN") {
            self.queen.hf_token = Some(token);
        }
        if let Ok(value) = std::env::var("RBEE_QUEEN_PORT") {
            self.queen.port =
                value
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                        name: "RBEE_QUEEN_PORT",
                        value,
                        reason: e.to_string(),
                    })?;
        }
        if let Ok(value) = std::env::var("RBEE_BIND_ADDR") {
            self.queen.bind_addr =
                value
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        name: "RBEE_BIND_ADDR",
                        value,
                        reason: e.to_string(),
                    })?;
        }
        if let Ok(value) = std::env::var("RBEE_API_TOKEN")
            && !value.is_empty()
        {
            self.queen.api_token = Some(value);
        }
        Ok(())
    }

    /// The URL a client on this machine uses to reach the queen.
    pub fn queen_url(&self) -> String {
        let host = if self.queen.bind_addr.is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            match self.queen.bind_addr {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            }
        };
        format!("http://{host}:{}", self.queen.port)
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.queen
            .inventory
            .clone()
            .unwrap_or_else(crate::paths::default_inventory_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Box<FileError>> {
        crate::parse_toml(Path::new("config.toml"), text)
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").expect("parses"), Config::default());
    }

    #[test]
    fn port_and_bind() {
        let c = parse("[queen]\nport = 9000\nbind_addr = \"0.0.0.0\"\napi_token = \"t\"\n")
            .expect("parses");
        assert_eq!(c.queen.port, 9000);
        assert!(c.queen.bind_addr.is_unspecified());
        assert_eq!(c.queen_url(), "http://127.0.0.1:9000");
    }

    #[test]
    fn errors_name_file_line_column_and_expectation() {
        let cases = [
            ("[queen]\nport = \"x\"\n", "line 2"),
            ("[queen]\nprot = 1\n", "unknown field `prot`"),
            ("[quen]\n", "unknown field `quen`"),
            ("[queen]\nport = 70000\n", "line 2"),
            ("[queen\n", "line 1"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with("config.toml:"), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
