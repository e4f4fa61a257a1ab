//! The queen's shared state: configuration, inventory and the registries.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rbee_config::{Config, Inventory};
use tokio_util::sync::CancellationToken;

use crate::hives::HiveRegistry;
use crate::jobs::JobRegistry;
use crate::ssh::{SshPool, SshSettings};
use crate::workers::WorkerRegistry;

pub struct AppState {
    pub config: Config,
    inventory: RwLock<Arc<Inventory>>,
    pub jobs: JobRegistry,
    pub workers: WorkerRegistry,
    pub hives: HiveRegistry,
    pub ssh: SshPool,
    /// Client for the workers' HTTP APIs.
    pub http: reqwest::Client,
    /// Cancelled to stop the daemon: by a signal, `POST /v1/shutdown`, or a test.
    pub shutdown: CancellationToken,
    pub started: Instant,
    /// When this queen started, in Unix seconds: taken once, so every report of it is
    /// the same number (computing it from `now - elapsed` flips by a second).
    started_unix_s: u64,
    /// Derives each worker's token (see [`crate::tokens`]); kept in the state
    /// directory, so a restarted queen can still talk to the workers it adopts.
    worker_key: [u8; 32],
    /// The address the HTTP server listens on, once it does.
    pub listen_addr: OnceLock<SocketAddr>,
    pub metrics: crate::metrics::Metrics,
    /// Answers agent commands in place of hives (tests only; `None` when serving).
    pub fake_hives: Option<Arc<dyn crate::fake_hive::FakeHive>>,
    /// Held while the inventory file is edited or reloaded, so two edits never read
    /// the same text and the last write wins.
    pub inventory_edits: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Fails only when the worker-token key can be neither read nor created.
    pub fn new(config: Config, inventory: Inventory) -> anyhow::Result<Self> {
        let state_dir = config
            .queen
            .state_dir
            .clone()
            .unwrap_or_else(rbee_config::paths::state_dir);
        let worker_key = crate::tokens::load_or_create_key(&state_dir.join("worker-key"))?;
        Ok(AppState::with_key(config, inventory, worker_key))
    }

    fn with_key(config: Config, inventory: Inventory, worker_key: [u8; 32]) -> Self {
        let jobs = JobRegistry::new(
            Duration::from_secs(config.queen.job_ttl_secs),
            config.queen.max_job_events,
        );
        let mut ssh = SshSettings::new(
            inventory.known_hosts.clone(),
            config.queen.ssh_config.clone(),
        );
        ssh.connect_timeout = Duration::from_secs(config.queen.connect_timeout_secs.max(1));
        AppState {
            hives: HiveRegistry::default(),
            ssh: SshPool::new(ssh),
            http: reqwest::Client::new(),
            config,
            inventory: RwLock::new(Arc::new(inventory)),
            jobs,
            workers: WorkerRegistry::default(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            worker_key,
            listen_addr: OnceLock::new(),
            metrics: crate::metrics::Metrics::default(),
            fake_hives: None,
            inventory_edits: tokio::sync::Mutex::new(()),
        }
    }

    /// The token worker `worker_id` must present and is sent with.
    pub fn worker_token(&self, worker_id: &str) -> String {
        crate::tokens::worker_token(&self.worker_key, worker_id)
    }

    pub fn worker_token_matches(&self, worker_id: &str, presented: &str) -> bool {
        crate::tokens::is_worker_token(&self.worker_key, worker_id, presented)
    }

    /// Where the daemon listens: the bound address once serving, else the config's.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::new(self.config.queen.bind_addr, self.config.queen.port))
    }

    /// The inventory as it is now; a snapshot, so no lock outlives the call.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts a reloaded inventory in place; operations already running keep the
    /// snapshot they took.
    pub fn replace_inventory(&self, inventory: Inventory) {
        *self
            .inventory
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(inventory);
    }
}

impl AppState {
    /// When this queen started, in Unix seconds.
    pub fn started_unix_s(&self) -> u64 {
        self.started_unix_s
    }

    /// The gauges `/metrics` reads from the registries.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let mut workers = std::collections::BTreeMap::new();
        let mut slots = std::collections::BTreeMap::new();
        let mut worker_heard_ms = Vec::new();
        for worker in self.workers.list() {
            worker_heard_ms.push((worker.heartbeat.worker_id.clone(), worker.last_seen_ms));
            *workers
                .entry(worker.status.as_str().to_owned())
                .or_insert(0) += 1;
            if worker.is_schedulable() {
                let (total, busy) = slots
                    .entry(worker.heartbeat.model.clone())
                    .or_insert((0, 0));
                *total += u64::from(worker.capacity(self.config.queen.worker_slots));
                *busy += u64::from(worker.heartbeat.slots_busy);
            }
        }
        let inventory = self.inventory();
        crate::metrics::Snapshot {
            workers,
            slots,
            hives_total: inventory.hives.len() as u64,
            hives_reachable: inventory
                .hives
                .keys()
                .filter(|alias| self.hives.get(alias).is_some_and(|r| r.online))
                .count() as u64,
            hive_ssh: inventory
                .hives
                .keys()
                .map(|alias| {
                    let health = self.hives.ssh_health(alias);
                    (alias.clone(), health.healthy, health.consecutive_failures)
                })
                .collect(),
            worker_heard_ms,
            jobs_running: self.jobs.running() as u64,
        }
    }
}
