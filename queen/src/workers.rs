//! The worker registry, fed by heartbeats: the queen never asks workers how they are,
//! so a restarted queen rebuilds this from the heartbeats of running workers. Only the
//! rate of each worker's last request and its lease (how long it may stay idle) come
//! from elsewhere (the scheduler and the spawns), and a restart forgets them: a worker
//! the queen did not start since its restart is never unloaded for idleness.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbee_protocol::cluster::WorkerStatus;
pub use rbee_protocol::cluster::WorkerView;
use rbee_protocol::{KeepAlive, WorkerHeartbeat, WorkerState};
use tokio::sync::watch;

/// The shortest idle time before an unload, whatever the keep_alive: a worker started
/// for a request with `keep_alive` 0 must live until that request reaches it.
pub const MIN_IDLE: Duration = Duration::from_secs(1);

/// Missed intervals after which a worker is stale and out of scheduling.
pub const STALE_AFTER_INTERVALS: u32 = 3;

#[derive(Default)]
pub struct WorkerRegistry {
    workers: Mutex<HashMap<String, Entry>>,
    /// Requests the queen has sent each worker and not yet seen end.
    in_flight: Mutex<HashMap<String, u32>>,
    /// Requests waiting for a free worker, per model.
    queued: Mutex<HashMap<String, usize>>,
    /// Held from looking at the workers to counting a request against one, so two
    /// requests never both take a worker's last free slot.
    picking: Mutex<()>,
    /// Bumped on every heartbeat, so waiters re-check without polling.
    changed: watch::Sender<u64>,
    /// Models a job is starting a worker for now: another request for one waits for
    /// that worker instead of starting a second.
    spawning: Mutex<HashSet<String>>,
    /// Workers that may be unloaded for idleness, with their idle limit; every other
    /// worker is pinned.
    leases: Mutex<HashMap<String, Lease>>,
    /// Workers being unloaded: out of scheduling until they are gone.
    unloading: Mutex<HashSet<String>>,
}

/// How long a worker may stay without requests, and since when it has.
#[derive(Debug, Clone, Copy)]
struct Lease {
    limit: Duration,
    idle_since: Instant,
}

struct Entry {
    heartbeat: WorkerHeartbeat,
    last_seen: Instant,
    /// The generation rate of the last request the queen saw end on this worker.
    last_tokens_per_s: Option<f64>,
}

/// A model's worker being started; dropping it lets the next request start one.
pub struct Spawning<'a> {
    registry: &'a WorkerRegistry,
    model: String,
}

impl Drop for Spawning<'_> {
    fn drop(&mut self) {
        self.registry
            .spawning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.model);
        // Waiters look again: at the worker now serving, or to start one themselves.
        self.registry.changed.send_modify(|n| *n += 1);
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WorkerRegistry {
    /// Sets how long `worker_id` may stay without requests before it is unloaded;
    /// `None` or `-1` pins it. Its idle time starts now.
    pub fn lease(&self, worker_id: &str, keep_alive: Option<KeepAlive>) {
        let mut leases = locked(&self.leases);
        match keep_alive.and_then(KeepAlive::idle_limit) {
            Some(limit) => {
                leases.insert(
                    worker_id.to_owned(),
                    Lease {
                        limit,
                        idle_since: Instant::now(),
                    },
                );
            }
            None => {
                leases.remove(worker_id);
            }
        }
    }

    /// A request on `worker_id` asked for its own keep_alive (Ollama's per-request
    /// form): it replaces the worker's limit, unless the worker is pinned (started by
    /// hand, or before this queen's restart), which a request does not unpin.
    pub fn renew_lease(&self, worker_id: &str, keep_alive: KeepAlive) {
        let mut leases = locked(&self.leases);
        match (leases.get_mut(worker_id), keep_alive.idle_limit()) {
            (Some(lease), Some(limit)) => lease.limit = limit,
            (Some(_), None) => {
                leases.remove(worker_id);
            }
            (None, _) => {}
        }
    }

    /// The idle limit of `worker_id`, `None` when pinned.
    pub fn idle_limit(&self, worker_id: &str) -> Option<Duration> {
        locked(&self.leases).get(worker_id).map(|l| l.limit)
    }

    /// The leased workers idle past their limit at `now` (no request from this queen
    /// in flight, none in the worker, ready), each marked as unloading so no request is
    /// sent to it; the caller stops them.
    pub fn take_idle(&self, now: Instant) -> Vec<(WorkerView, Duration)> {
        let views = self.list_at(now);
        let leases = locked(&self.leases);
        let mut unloading = locked(&self.unloading);
        let mut idle = Vec::new();
        for view in views {
            let id = &view.heartbeat.worker_id;
            let Some(lease) = leases.get(id) else {
                continue;
            };
            let quiet = view.in_flight == 0
                && view.heartbeat.slots_busy == 0
                && view.heartbeat.queue_depth == 0
                && view.status == WorkerStatus::Ready;
            let idle_for = now.saturating_duration_since(lease.idle_since);
            if quiet && idle_for >= lease.limit.max(MIN_IDLE) && unloading.insert(id.clone()) {
                idle.push((view, idle_for));
            }
        }
        idle
    }

    /// The least recently used idle worker on `device` of `hive` that may be unloaded
    /// (leased, ready, no request in flight here or in the worker), marked as unloading
    /// so no request is sent to it; the caller stops it to free its memory.
    pub fn take_least_recently_used(&self, hive: &str, device: &str) -> Option<WorkerView> {
        let views = self.list();
        let leases = locked(&self.leases);
        let mut unloading = locked(&self.unloading);
        let victim = views
            .into_iter()
            .filter(|w| w.heartbeat.hive_id == hive && w.heartbeat.device == device)
            .filter(|w| {
                w.in_flight == 0
                    && w.heartbeat.slots_busy == 0
                    && w.heartbeat.queue_depth == 0
                    && w.status == WorkerStatus::Ready
                    && !unloading.contains(&w.heartbeat.worker_id)
            })
            .filter_map(|w| {
                let since = leases.get(&w.heartbeat.worker_id)?.idle_since;
                Some((since, w))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, w)| w)?;
        unloading.insert(victim.heartbeat.worker_id.clone());
        Some(victim)
    }

    /// Gives an unloading worker back to scheduling (its stop failed).
    pub fn keep(&self, worker_id: &str) {
        locked(&self.unloading).remove(worker_id);
        if let Some(lease) = locked(&self.leases).get_mut(worker_id) {
            lease.idle_since = Instant::now();
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether a job is starting a worker for `model` now.
    pub fn is_spawning(&self, model: &str) -> bool {
        locked(&self.spawning).contains(model)
    }

    /// Claims the start of a worker for `model`, or `None` while another job does it.
    pub fn begin_spawn(&self, model: &str) -> Option<Spawning<'_>> {
        let fresh = self
            .spawning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned());
        fresh.then(|| Spawning {
            registry: self,
            model: model.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, heartbeat: WorkerHeartbeat) {
        self.record_at(heartbeat, Instant::now());
    }

    /// [`WorkerRegistry::record`] as heard at `at`: staleness is judged from it, so a
    /// test can set the clock instead of sleeping through intervals.
    pub fn record_at(&self, heartbeat: WorkerHeartbeat, at: Instant) {
        let id = heartbeat.worker_id.clone();
        let known = {
            let mut workers = self.lock();
            let previous = workers.get(&id).map(|e| e.last_tokens_per_s);
            workers.insert(
                id.clone(),
                Entry {
                    heartbeat,
                    last_seen: at,
                    last_tokens_per_s: previous.flatten(),
                },
            );
            previous.is_some()
        };
        if !known {
            tracing::info!(worker_id = %id, "worker registered from its heartbeat");
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Notes the rate of a request that ended on `worker_id`.
    pub fn record_rate(&self, worker_id: &str, tokens_per_s: f64) {
        if let Some(entry) = self.lock().get_mut(worker_id) {
            entry.last_tokens_per_s = Some(tokens_per_s);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn list(&self) -> Vec<WorkerView> {
        self.list_at(Instant::now())
    }

    /// The workers as they stand at `now`.
    pub fn list_at(&self, now: Instant) -> Vec<WorkerView> {
        let in_flight = self.in_flight_counts();
        let unloading = locked(&self.unloading).clone();
        let mut out: Vec<WorkerView> = self
            .lock()
            .values()
            .map(|e| view(e, now, &in_flight, &unloading))
            .collect();
        out.sort_by(|a, b| a.heartbeat.worker_id.cmp(&b.heartbeat.worker_id));
        out
    }

    /// The models ready workers serve, sorted, each once.
    pub fn served_models(&self) -> Vec<String> {
        let mut served: Vec<String> = self
            .list()
            .into_iter()
            .filter(|w| w.is_schedulable())
            .map(|w| w.heartbeat.model)
            .collect();
        served.sort();
        served.dedup();
        served
    }

    pub fn get(&self, worker_id: &str) -> Option<WorkerView> {
        let in_flight = self.in_flight_counts();
        let unloading = locked(&self.unloading).clone();
        self.lock()
            .get(worker_id)
            .map(|e| view(e, Instant::now(), &in_flight, &unloading))
    }

    /// Forgets a worker that was stopped on purpose; a later heartbeat brings it back.
    pub fn remove(&self, worker_id: &str) {
        self.lock().remove(worker_id);
        locked(&self.leases).remove(worker_id);
        locked(&self.unloading).remove(worker_id);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Takes a place in `model`'s queue: its position, or `None` when `capacity` wait
    /// already.
    pub fn join_queue(&self, model: &str, capacity: usize) -> Option<usize> {
        let mut queued = self
            .queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let waiting = queued.entry(model.to_owned()).or_default();
        if *waiting >= capacity {
            return None;
        }
        *waiting += 1;
        Some(*waiting)
    }

    pub fn leave_queue(&self, model: &str) {
        let mut queued = self
            .queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(waiting) = queued.get_mut(model) {
            *waiting = waiting.saturating_sub(1);
            if *waiting == 0 {
                queued.remove(model);
            }
        }
    }

    fn in_flight_counts(&self) -> HashMap<String, u32> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs `pick` on the workers as they are now and counts a request against the
    /// worker it returns, as one step.
    pub fn pick(
        &self,
        pick: impl FnOnce(Vec<WorkerView>) -> Option<WorkerView>,
    ) -> Option<WorkerView> {
        let _picking = self
            .picking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let chosen = pick(self.list())?;
        self.start_request(&chosen.heartbeat.worker_id);
        Some(chosen)
    }

    /// Counts a request as running on `worker_id` until [`WorkerRegistry::finish_request`].
    pub fn start_request(&self, worker_id: &str) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(worker_id.to_owned())
            .or_default() += 1;
    }

    /// Ends a request counted by [`WorkerRegistry::start_request`], restarts the
    /// worker's idle time, and wakes whoever waits for a free worker.
    pub fn finish_request(&self, worker_id: &str) {
        if let Some(lease) = locked(&self.leases).get_mut(worker_id) {
            lease.idle_since = Instant::now();
        }
        {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = in_flight.get_mut(worker_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    in_flight.remove(worker_id);
                }
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

fn view(
    entry: &Entry,
    now: Instant,
    in_flight: &HashMap<String, u32>,
    unloading: &HashSet<String>,
) -> WorkerView {
    let age = now.saturating_duration_since(entry.last_seen);
    let interval = Duration::from_millis(entry.heartbeat.interval_ms.max(1));
    let stale = age > interval * STALE_AFTER_INTERVALS;
    let mut heartbeat = entry.heartbeat.clone();
    // Being unloaded: the worker may still say ready, but takes no more requests.
    if unloading.contains(&heartbeat.worker_id) {
        heartbeat.state = WorkerState::Stopping;
    }
    WorkerView {
        status: if stale {
            WorkerStatus::Stale
        } else {
            heartbeat.state.into()
        },
        heartbeat,
        last_seen_ms: age.as_millis() as u64,
        in_flight: in_flight
            .get(&entry.heartbeat.worker_id)
            .copied()
            .unwrap_or(0),
        last_tokens_per_s: entry.last_tokens_per_s,
    }
}
