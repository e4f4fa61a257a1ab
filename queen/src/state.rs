//! The queen's shared state: configuration, inventory and the registries.

use std::sync::{Arc, RwLock};
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
}

impl AppState {
    pub fn new(config: Config, inventory: Inventory) -> Self {
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
        }
    }

    /// The inventory as it is now; a snapshot, so no lock outlives the call.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
