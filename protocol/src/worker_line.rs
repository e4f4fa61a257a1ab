//! The lines a worker prints on its stdout, one JSON object each: how whoever started
//! it (the hive agent, a test) learns where it listens and when its model is loaded.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerLine {
    /// The HTTP API is bound (first line): `url` is where the worker is reached.
    Listening { url: String, worker_id: String },
    /// The model is loaded and requests are served.
    Ready {
        load_ms: f64,
        /// The GGUF file's name.
        model: String,
        /// What computes tokens: `cpu-<kernel set>` or `candle`.
        engine: String,
        /// Requests generated at once.
        #[serde(default)]
        slots: u32,
    },
}

impl WorkerLine {
    /// The line as the worker prints it.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A line of the worker's output, or `None` for anything else it prints (logs).
    pub fn parse(line: &str) -> Option<WorkerLine> {
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_logs_are_not_lines() {
        let ready = WorkerLine::Ready {
            load_ms: 12.5,
            model: "m.gguf".into(),
            engine: "cpu-avx2".into(),
            slots: 4,
        };
        let text = ready.to_line();
        assert!(text.starts_with(r#"{"event":"ready""#), "{text}");
        assert_eq!(WorkerLine::parse(&text), Some(ready));
        let listening = r#"{"event":"listening","url":"http://127.0.0.1:1","worker_id":"w"}"#;
        assert!(matches!(
            WorkerLine::parse(listening),
            Some(WorkerLine::Listening { .. })
        ));
        assert_eq!(WorkerLine::parse("2026-01-01 INFO model ready"), None);
        assert_eq!(WorkerLine::parse(r#"{"event":"other"}"#), None);
    }
}
