//! The worker registry, fed by heartbeats: the queen never asks workers how they are,
//! so a restarted queen rebuilds this from the heartbeats of running workers. Only the
//! rate of each worker's last request comes from elsewhere (the scheduler), and a
//! restart forgets it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbee_protocol::WorkerHeartbeat;
use rbee_protocol::cluster::WorkerStatus;
pub use rbee_protocol::cluster::WorkerView;
use tokio::sync::watch;

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

impl WorkerRegistry {
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
        let mut out: Vec<WorkerView> = self
            .lock()
            .values()
            .map(|e| view(e, now, &in_flight))
            .collect();
        out.sort_by(|a, b| a.heartbeat.worker_id.cmp(&b.heartbeat.worker_id));
        out
    }

    pub fn get(&self, worker_id: &str) -> Option<WorkerView> {
        let in_flight = self.in_flight_counts();
        self.lock()
            .get(worker_id)
            .map(|e| view(e, Instant::now(), &in_flight))
    }

    /// Forgets a worker that was stopped on purpose; a later heartbeat brings it back.
    pub fn remove(&self, worker_id: &str) {
        self.lock().remove(worker_id);
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

    /// Ends a request counted by [`WorkerRegistry::start_request`] and wakes whoever
    /// waits for a free worker.
    pub fn finish_request(&self, worker_id: &str) {
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

fn view(entry: &Entry, now: Instant, in_flight: &HashMap<String, u32>) -> WorkerView {
    let age = now.duration_since(entry.last_seen);
    let interval = Duration::from_millis(entry.heartbeat.interval_ms.max(1));
    let stale = age > interval * STALE_AFTER_INTERVALS;
    WorkerView {
        heartbeat: entry.heartbeat.clone(),
        status: if stale {
            WorkerStatus::Stale
        } else {
            entry.heartbeat.state.into()
        },
        last_seen_ms: age.as_millis() as u64,
        in_flight: in_flight
            .get(&entry.heartbeat.worker_id)
            .copied()
            .unwrap_or(0),
        last_tokens_per_s: entry.last_tokens_per_s,
    }
}
