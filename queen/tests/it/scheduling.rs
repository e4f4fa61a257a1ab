//! Scheduling by capacity: the queen fills workers' free slots, most free first, and
//! queues only when every slot of every worker serving the model is taken.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use queen_rbee::operations::{Pins, candidates};
use queen_rbee::workers::WorkerRegistry;
use rbee_protocol::WorkerHeartbeat;
use rbee_protocol::cluster::WorkerStatus;
use serde_json::json;

fn heartbeat(worker_id: &str, model: &str, slots_total: u32) -> WorkerHeartbeat {
    serde_json::from_value(json!({
        "worker_id": worker_id,
        "hive_id": "h1",
        "model": model,
        "device": "cpu",
        "url": format!("http://127.0.0.1:1/{worker_id}"),
        "state": "ready",
        "slots_total": slots_total,
    }))
    .expect("heartbeat")
}

/// Picks as the scheduler does: the best candidate with a free slot, counted at once.
fn pick(registry: &WorkerRegistry, model: &str) -> Option<String> {
    registry
        .pick(|all| {
            candidates(all, model, &Pins::default(), &HashSet::new(), 1)
                .into_iter()
                .find(|w| w.free_slots(1) > 0)
        })
        .map(|w| w.heartbeat.worker_id)
}

fn in_flight(registry: &WorkerRegistry, worker_id: &str) -> u32 {
    registry.get(worker_id).expect("worker").in_flight
}

#[test]
fn requests_fill_free_slots_most_free_first_and_never_overfill() {
    let registry = WorkerRegistry::default();
    registry.record(heartbeat("big", "m", 4));
    registry.record(heartbeat("small", "m", 2));
    registry.record(heartbeat("other-model", "n", 8));

    let mut picked = Vec::new();
    while let Some(worker) = pick(&registry, "m") {
        // At every pick, no worker of the model holds more than its slots, and a worker
        // is only given a request while none has more free slots than it had.
        for (id, slots) in [("big", 4), ("small", 2)] {
            assert!(in_flight(&registry, id) <= slots, "{id} over its slots");
        }
        picked.push(worker);
        assert!(picked.len() <= 6, "more requests than slots: {picked:?}");
    }
    assert_eq!(
        picked.len(),
        6,
        "every slot is used before queueing: {picked:?}"
    );
    assert_eq!(in_flight(&registry, "big"), 4);
    assert_eq!(in_flight(&registry, "small"), 2);
    assert_eq!(in_flight(&registry, "other-model"), 0);
    // Most free slots first: big (4 free) takes the first two, then they alternate.
    assert_eq!(picked[..2], ["big", "big"]);

    // A finished request frees exactly one slot, which the next request takes.
    registry.finish_request("small");
    assert_eq!(pick(&registry, "m").as_deref(), Some("small"));
    assert_eq!(pick(&registry, "m"), None);
}

#[test]
fn a_worker_that_reports_no_slots_gets_the_configured_number() {
    let registry = WorkerRegistry::default();
    registry.record(heartbeat("old", "m", 0));
    let view = registry.get("old").expect("worker");
    assert_eq!(view.capacity(1), 1);
    assert_eq!(view.capacity(3), 3);
    assert_eq!(pick(&registry, "m").as_deref(), Some("old"));
    assert_eq!(pick(&registry, "m"), None);
}

#[test]
fn a_worker_is_stale_after_three_missed_intervals_and_not_before() {
    let registry = WorkerRegistry::default();
    let mut beat = heartbeat("w", "m", 4);
    beat.interval_ms = 1_000;
    let heard = Instant::now();
    registry.record_at(beat, heard);
    let status_at = |after_ms: u64| {
        let workers = registry.list_at(heard + Duration::from_millis(after_ms));
        (workers[0].status, workers[0].is_schedulable())
    };
    assert_eq!(status_at(0), (WorkerStatus::Ready, true));
    assert_eq!(status_at(2_999), (WorkerStatus::Ready, true));
    assert_eq!(status_at(3_000), (WorkerStatus::Ready, true));
    assert_eq!(status_at(3_001), (WorkerStatus::Stale, false));
}

#[test]
fn only_leased_idle_workers_are_unloaded_and_never_while_a_request_runs() {
    use rbee_protocol::KeepAlive;
    let registry = WorkerRegistry::default();
    for id in ["pinned", "leased", "busy", "brief"] {
        // Heard for the whole test: staleness is not what it checks.
        let mut beat = heartbeat(id, "m", 1);
        beat.interval_ms = 3_600_000;
        registry.record(beat);
    }
    let start = Instant::now();
    let ten_s = Some(KeepAlive::For(Duration::from_secs(10)));
    registry.lease("pinned", None);
    registry.lease("leased", ten_s);
    registry.lease("busy", ten_s);
    registry.lease("brief", Some(KeepAlive::For(Duration::ZERO)));
    registry.start_request("busy");
    let taken = |after: Duration| -> Vec<String> {
        let mut ids: Vec<String> = registry
            .take_idle(start + after)
            .into_iter()
            .map(|(w, _)| w.heartbeat.worker_id)
            .collect();
        ids.sort();
        ids
    };
    // keep_alive 0 still waits MIN_IDLE, so the request a worker was started for
    // reaches it first.
    assert!(taken(Duration::from_millis(500)).is_empty());
    assert_eq!(taken(Duration::from_millis(1_100)), ["brief"]);
    assert!(taken(Duration::from_secs(5)).is_empty());
    assert_eq!(taken(Duration::from_secs(11)), ["leased"]);
    // Taken once, and out of scheduling while it is being stopped.
    assert!(taken(Duration::from_secs(12)).is_empty());
    let leased = registry.get("leased").expect("worker");
    assert_eq!(leased.status, WorkerStatus::Stopping);
    assert!(!leased.is_schedulable());
    // A stop that failed gives it back, with its idle time restarted.
    registry.keep("leased");
    assert!(registry.get("leased").expect("worker").is_schedulable());
    // The busy worker goes only once its request ended and it idled again.
    registry.finish_request("busy");
    let ended = Instant::now();
    assert!(
        registry
            .take_idle(ended + Duration::from_secs(9))
            .is_empty()
    );
    assert_eq!(
        registry.take_idle(ended + Duration::from_secs(10))[0]
            .0
            .heartbeat
            .worker_id,
        "busy"
    );
    // A request's keep_alive does not unpin a worker started by hand, and -1 pins.
    registry.renew_lease("pinned", KeepAlive::For(Duration::ZERO));
    assert_eq!(registry.idle_limit("pinned"), None);
    registry.renew_lease("leased", KeepAlive::Forever);
    assert_eq!(registry.idle_limit("leased"), None);
    assert!(taken(Duration::from_secs(3_600)).is_empty());
}
