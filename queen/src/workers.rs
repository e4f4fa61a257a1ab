//! The worker registry, fed only by heartbeats: the queen never asks workers how they
//! are, so a restarted queen rebuilds this from the heartbeats of running workers.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbee_protocol::WorkerHeartbeat;
use serde::Serialize;
use tokio::sync::watch;

/// Missed intervals after which a worker is stale and out of scheduling.
pub const STALE_AFTER_INTERVALS: u32 = 3;

#[derive(Default)]
pub struct WorkerRegistry {
    workers: Mutex<HashMap<String, Entry>>,
    /// Bumped on every heartbeat, so waiters re-check without polling.
    changed: watch::Sender<u64>,
}

struct Entry {
    heartbeat: WorkerHeartbeat,
    last_seen: Instant,
}

/// A worker as the queen sees it now.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WorkerView {
    #[serde(flatten)]
    pub heartbeat: WorkerHeartbeat,
    /// The worker's state, or `stale` when its heartbeats stopped.
    pub status: &'static str,
    pub last_seen_ms: u64,
}

impl WorkerView {
    pub fn is_schedulable(&self) -> bool {
        self.status != "stale" && self.heartbeat.state.accepts_requests()
    }
}

impl WorkerRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, heartbeat: WorkerHeartbeat) {
        let id = heartbeat.worker_id.clone();
        let known = {
            let mut workers = self.lock();
            let known = workers.contains_key(&id);
            workers.insert(
                id.clone(),
                Entry {
                    heartbeat,
                    last_seen: Instant::now(),
                },
            );
            known
        };
        if !known {
            tracing::info!(worker_id = %id, "worker registered from its heartbeat");
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn list(&self) -> Vec<WorkerView> {
        let now = Instant::now();
        let mut out: Vec<WorkerView> = self.lock().values().map(|e| view(e, now)).collect();
        out.sort_by(|a, b| a.heartbeat.worker_id.cmp(&b.heartbeat.worker_id));
        out
    }

    pub fn get(&self, worker_id: &str) -> Option<WorkerView> {
        self.lock().get(worker_id).map(|e| view(e, Instant::now()))
    }
}

fn view(entry: &Entry, now: Instant) -> WorkerView {
    let age = now.duration_since(entry.last_seen);
    let interval = Duration::from_millis(entry.heartbeat.interval_ms.max(1));
    let stale = age > interval * STALE_AFTER_INTERVALS;
    WorkerView {
        heartbeat: entry.heartbeat.clone(),
        status: if stale {
            "stale"
        } else {
            entry.heartbeat.state.as_str()
        },
        last_seen_ms: age.as_millis() as u64,
    }
}
