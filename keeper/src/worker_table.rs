//! Worker answers as compact tables (`worker list|get|spawn`, a hive's own list), the
//! worker a hive started as one sentence, and an `infer` run's stats as one line.

use rbee_protocol::agent::HiveWorker;
use rbee_protocol::cluster::WorkerView;
use rbee_protocol::result::InferenceStats;

/// The workers as the queen sees them.
pub fn render(workers: &[WorkerView]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let beat = &w.heartbeat;
            vec![
                beat.worker_id.clone(),
                beat.hive_id.clone(),
                beat.model.clone(),
                beat.device.clone(),
                beat.engine.clone().unwrap_or_else(|| "-".to_owned()),
                w.status.as_str().to_owned(),
                // Busy slots as the worker last said, of the requests it runs at once.
                format!("{}/{}", beat.slots_busy, w.capacity(1)),
                w.in_flight.to_string(),
                beat.tokens_generated.to_string(),
                // The hive → queen direction: when its last heartbeat arrived.
                format!("{:.1}s", w.last_seen_ms as f64 / 1000.0),
                beat.url.clone(),
            ]
        })
        .collect();
    crate::table::rows(
        &[
            "worker",
            "hive",
            "model",
            "device",
            "engine",
            "status",
            "slots",
            "in_flight",
            "tokens",
            "heard",
            "url",
        ],
        &rows,
    )
}

/// The workers a hive's agent has state files for.
pub fn render_on_hive(workers: &[HiveWorker]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let r = &w.record;
            vec![
                r.worker_id.clone(),
                r.model.clone(),
                r.device.clone(),
                r.pid.to_string(),
                if w.alive { "running" } else { "gone" }.to_owned(),
                r.url.clone(),
            ]
        })
        .collect();
    crate::table::rows(
        &["worker", "model", "device", "pid", "process", "url"],
        &rows,
    )
}

/// `worker W started for M on cpu (pid P), at URL; log: L`.
pub fn spawned(worker: &HiveWorker) -> String {
    let r = &worker.record;
    format!(
        "worker {} started for {} on {} (pid {}), at {}; log: {}",
        r.worker_id, r.model, r.device, r.pid, r.url, r.log
    )
}

/// `[7 tokens, 4.4 tok/s, first token 403 ms, stop: eos, worker W on H]`.
pub fn stats_line(stats: &InferenceStats) -> String {
    format!(
        "[{} tokens, {:.1} tok/s, first token {:.0} ms, stop: {}, worker {} on {}]",
        stats.tokens,
        stats.tokens_per_s,
        stats.ttft_ms,
        stats.stop_reason.as_str(),
        stats.worker_id,
        stats.hive_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_protocol::StopReason;
    use rbee_protocol::cluster::WorkerStatus;

    #[test]
    fn workers_become_a_compact_table_and_stats_one_line() {
        let worker = WorkerView {
            // Parsed, as the queen receives it, so new heartbeat fields need no edit here.
            heartbeat: serde_json::from_value(serde_json::json!({
                "worker_id": "w1", "hive_id": "h", "model": "m", "device": "cpu",
                "url": "http://x:1", "state": "ready", "tokens_generated": 5,
                "memory_bytes": 1, "pid": 2, "slots_total": 4, "slots_busy": 3,
                "engine": "cpu-avx2"
            }))
            .expect("a heartbeat"),
            status: WorkerStatus::Stale,
            last_seen_ms: 9_000,
            in_flight: 0,
            last_tokens_per_s: None,
        };
        let table = render(&[worker]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "WORKER",
                "HIVE",
                "MODEL",
                "DEVICE",
                "ENGINE",
                "STATUS",
                "SLOTS",
                "IN_FLIGHT",
                "TOKENS",
                "HEARD",
                "URL"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "w1",
                "h",
                "m",
                "cpu",
                "cpu-avx2",
                "stale",
                "3/4",
                "0",
                "5",
                "9.0s",
                "http://x:1"
            ]
        );
        assert_eq!(render(&[]), "(none)");
        let line = stats_line(&InferenceStats {
            worker_id: "w1".to_owned(),
            hive_id: "h".to_owned(),
            device: "cpu".to_owned(),
            stop_reason: StopReason::Eos,
            prompt_tokens: 3,
            tokens: 7,
            tokens_per_s: 4.43,
            worker_ttft_ms: 300.0,
            ttft_ms: 403.2,
            total_ms: 2000.0,
        });
        assert_eq!(
            line,
            "[7 tokens, 4.4 tok/s, first token 403 ms, stop: eos, worker w1 on h]"
        );
    }
}
