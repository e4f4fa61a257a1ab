//! Worker answers (`worker list|get|spawn`) as compact tables, and an `infer` run's
//! stats as one line.

use serde_json::{Value, json};

/// The table for a worker view or a list of them; `None` for anything else.
pub fn render(value: &Value) -> Option<String> {
    let workers: Vec<&Value> = match value {
        Value::Array(list) if list.iter().all(is_worker) && !list.is_empty() => {
            list.iter().collect()
        }
        Value::Object(_) if is_worker(value) => vec![value],
        _ => return None,
    };
    let rows: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "worker": w["worker_id"],
                "hive": w["hive_id"],
                "model": w["model"],
                "device": w["device"],
                "status": w["status"],
                "in_flight": w["in_flight"],
                "tokens": w["tokens_generated"],
                "url": w["url"],
            })
        })
        .collect();
    Some(crate::render::format_value(&Value::Array(rows)))
}

/// A worker as the queen reports it: heartbeat fields and the queen's status.
fn is_worker(value: &Value) -> bool {
    value.get("worker_id").is_some() && value.get("status").is_some() && value.get("url").is_some()
}

/// `[7 tokens, 4.4 tok/s, first token 403 ms, worker W on H]` for an `infer` result.
pub fn stats_line(value: &Value) -> Option<String> {
    let tokens_per_s = value.get("tokens_per_s")?.as_f64()?;
    Some(format!(
        "[{} tokens, {tokens_per_s:.1} tok/s, first token {:.0} ms, stop: {}, worker {} on {}]",
        value["tokens"],
        value["ttft_ms"].as_f64().unwrap_or(0.0),
        value["stop_reason"].as_str().unwrap_or("?"),
        value["worker_id"].as_str().unwrap_or("?"),
        value["hive_id"].as_str().unwrap_or("?"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_become_a_compact_table_and_stats_one_line() {
        let worker = json!({"worker_id": "w1", "hive_id": "h", "model": "m", "device": "cpu",
            "status": "ready", "in_flight": 0, "tokens_generated": 5, "url": "http://x:1",
            "memory_bytes": 1, "pid": 2});
        let table = render(&json!([worker])).expect("a table");
        assert!(
            table
                .lines()
                .next()
                .is_some_and(|h| h.contains("WORKER") && !h.contains("PID")),
            "{table}"
        );
        assert!(render(&json!({"hives": []})).is_none());
        let line = stats_line(&json!({"tokens": 7, "tokens_per_s": 4.43, "ttft_ms": 403.2,
            "stop_reason": "eos", "worker_id": "w1", "hive_id": "h"}))
        .expect("stats");
        assert_eq!(
            line,
            "[7 tokens, 4.4 tok/s, first token 403 ms, stop: eos, worker w1 on h]"
        );
    }
}
