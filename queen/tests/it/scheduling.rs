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
