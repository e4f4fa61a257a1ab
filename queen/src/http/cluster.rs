//! `GET /v1/cluster/stream`: the cluster at a glance (hives, workers, recent jobs) as
//! server-sent `snapshot` events, pushed when something changes. The dashboard reads
//! it with `fetch`, so the API token stays in the `Authorization` header.
//!
//! The stream wakes on the registries' change counters (heartbeats, hives going on- or
//! offline, jobs starting and ending) and on a slow tick, which catches what changes
//! with time alone (a worker turning stale, a job's event count). A snapshot equal to
//! the last one sent is not sent again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use rbee_protocol::HiveCapabilities;
use rbee_protocol::cluster::WorkerStatus;
use serde::Serialize;
use tokio::sync::watch;

use crate::jobs::JobSummary;
use crate::state::AppState;

/// How many of the newest jobs a snapshot lists.
const RECENT_JOBS: usize = 20;
/// Catches changes no registry announces: staleness, event counts.
const TICK: Duration = Duration::from_secs(2);
/// Changes that arrive together (every worker's heartbeat, a job and its worker) make
/// one snapshot.
const COALESCE: Duration = Duration::from_millis(50);

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ClusterSnapshot {
    pub queen: QueenRow,
    pub hives: Vec<HiveRow>,
    pub workers: Vec<WorkerRow>,
    /// The newest jobs first.
    pub jobs: Vec<JobSummary>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct QueenRow {
    pub version: &'static str,
    pub started_unix_s: u64,
    pub jobs_running: usize,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HiveRow {
    pub alias: String,
    pub host: String,
    pub groups: Vec<String>,
    /// `online`, `offline`, or `unknown` when the queen has not reached it yet.
    pub status: &'static str,
    /// How the queen's SSH commands to it fare.
    pub ssh: rbee_protocol::cluster::LinkHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Devices, memory and disk as the last `hive start` or `hive refresh` found them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<HiveCapabilities>,
}

/// A worker without what changes on every heartbeat (when it was last heard), so an
/// idle cluster sends nothing.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub worker_id: String,
    pub hive_id: String,
    pub model: String,
    pub device: String,
    /// The worker's state, or `stale` when its heartbeats stopped.
    pub status: WorkerStatus,
    pub in_flight: u32,
    /// Requests the worker generates at once, and how many of its slots are serving.
    pub slots_total: u32,
    pub slots_busy: u32,
    pub queue_depth: u32,
    pub tokens_generated: u64,
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_tokens_per_s: Option<f64>,
    /// While loading: how much of the weights it has read, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_percent: Option<u8>,
    /// What computes the worker's tokens (`cpu-avx512`, `candle`, ...), once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

pub fn snapshot(state: &AppState) -> ClusterSnapshot {
    let inventory = state.inventory();
    let hives = inventory
        .hives
        .values()
        .map(|hive| {
            let record = state.hives.get(&hive.alias);
            HiveRow {
                alias: hive.alias.clone(),
                host: hive.host.clone(),
                groups: hive.groups.iter().cloned().collect(),
                status: match &record {
                    Some(r) if r.online => "online",
                    Some(_) => "offline",
                    None => "unknown",
                },
                agent_version: record.as_ref().and_then(|r| r.agent_version.clone()),
                capabilities: record.and_then(|r| r.capabilities),
                ssh: state.hives.ssh_health(&hive.alias),
            }
        })
        .collect();
    let workers = state
        .workers
        .list()
        .into_iter()
        .map(|w| WorkerRow {
            status: w.status,
            slots_total: w.capacity(state.config.queen.worker_slots),
            in_flight: w.in_flight,
            last_tokens_per_s: w.last_tokens_per_s,
            worker_id: w.heartbeat.worker_id,
            hive_id: w.heartbeat.hive_id,
            model: w.heartbeat.model,
            device: w.heartbeat.device,
            slots_busy: w.heartbeat.slots_busy,
            queue_depth: w.heartbeat.queue_depth,
            tokens_generated: w.heartbeat.tokens_generated,
            memory_bytes: w.heartbeat.memory_bytes,
            load_percent: w.heartbeat.load_percent,
            engine: w.heartbeat.engine,
        })
        .collect();
    ClusterSnapshot {
        queen: QueenRow {
            version: rbee_protocol::VERSION,
            started_unix_s: state.started_unix_s(),
            jobs_running: state.jobs.running(),
        },
        hives,
        workers,
        jobs: state.jobs.recent(RECENT_JOBS),
    }
}

/// Follows the registries and yields each snapshot that differs from the last.
struct Watcher {
    state: Arc<AppState>,
    workers: watch::Receiver<u64>,
    hives: watch::Receiver<u64>,
    jobs: watch::Receiver<u64>,
    tick: tokio::time::Interval,
    last: Option<ClusterSnapshot>,
}

impl Watcher {
    fn new(state: Arc<AppState>) -> Self {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watcher {
            workers: state.workers.subscribe(),
            hives: state.hives.subscribe(),
            jobs: state.jobs.subscribe(),
            tick,
            last: None,
            state,
        }
    }

    /// The next snapshot to send, or `None` once the queen shuts down.
    async fn next(&mut self) -> Option<ClusterSnapshot> {
        let shutdown = self.state.shutdown.clone();
        loop {
            if self.last.is_some() {
                let woke = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    changed = self.workers.changed() => changed.is_ok(),
                    changed = self.hives.changed() => changed.is_ok(),
                    changed = self.jobs.changed() => changed.is_ok(),
                    _ = self.tick.tick() => true,
                };
                // A registry dropped its sender: the state is going away.
                if !woke {
                    return None;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(COALESCE) => {}
                }
            }
            // Seen before reading, so a change during the read wakes the next round.
            self.workers.borrow_and_update();
            self.hives.borrow_and_update();
            self.jobs.borrow_and_update();
            let snapshot = snapshot(&self.state);
            if self.last.as_ref() != Some(&snapshot) {
                self.last = Some(snapshot.clone());
                return Some(snapshot);
            }
        }
    }
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let keepalive = Duration::from_millis(state.config.queen.keepalive_ms.max(10));
    let snapshots = futures::stream::unfold(Watcher::new(state), |mut watcher| async move {
        let snapshot = watcher.next().await?;
        match serde_json::to_string(&snapshot) {
            Ok(data) => Some((Ok(Event::default().event("snapshot").data(data)), watcher)),
            Err(e) => {
                tracing::warn!(error = %e, "cluster snapshot not serialisable; ending the stream");
                None
            }
        }
    });
    Sse::new(snapshots).keep_alive(KeepAlive::new().interval(keepalive))
}
