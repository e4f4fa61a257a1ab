//! Job events: what a job tells the operator while it runs, and how it ends.
//!
//! The same JSON is written by the hive agent (one event per stdout line) and sent by
//! the queen on a job's SSE stream (the `event:` field is [`JobEvent::kind`]).

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;
use crate::result::OperationResult;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// A human-readable step of an operation: who did what to what.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Narration {
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub target: String,
    pub human: String,
    #[serde(default)]
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive: Option<String>,
}

/// Progress of long work (downloads, pushes). `total` is unknown for some streams.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is progressing, e.g. the file being pushed; one bar per (hive, label).
    pub label: String,
    pub current: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub unit: String,
    /// Units per second, averaged over the last few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Seconds left at that rate, when `total` is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive: Option<String>,
}

/// One event of a job. Exactly one terminal event (`done`, `error`, `cancelled`) ends
/// every job's stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    Narration(Narration),
    Progress(Progress),
    Token {
        t: String,
        i: u32,
        /// The tokens' log probabilities, when the request asked for them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lp: Vec<crate::TokenLogprob>,
    },
    Result {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hive: Option<String>,
        #[serde(flatten)]
        result: OperationResult,
    },
    Done,
    Error(ErrorDetail),
    Cancelled {
        #[serde(default)]
        reason: String,
    },
}

impl JobEvent {
    /// The SSE `event:` name of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            JobEvent::Narration(_) => "narration",
            JobEvent::Progress(_) => "progress",
            JobEvent::Token { .. } => "token",
            JobEvent::Result { .. } => "result",
            JobEvent::Done => "done",
            JobEvent::Error(_) => "error",
            JobEvent::Cancelled { .. } => "cancelled",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Done | JobEvent::Error(_) | JobEvent::Cancelled { .. }
        )
    }

    pub fn narration(actor: &str, action: &str, target: &str, human: impl Into<String>) -> Self {
        JobEvent::Narration(Narration {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            human: human.into(),
            level: Level::Info,
            hive: None,
        })
    }

    /// The SSE `data:` payload: JSON, except `[DONE]` for the `done` event.
    pub fn sse_data(&self) -> String {
        match self {
            JobEvent::Done => "[DONE]".to_owned(),
            other => serde_json::to_string(other).unwrap_or_else(|e| {
                // Serialising these types cannot fail (no maps with non-string keys);
                // keep the stream well-formed even so.
                format!(r#"{{"type":"error","code":"internal","message":"{e}"}}"#)
            }),
        }
    }

    /// Parses an SSE frame of a job stream back into an event.
    pub fn from_sse(event: &str, data: &str) -> Result<JobEvent, serde_json::Error> {
        if event == "done" && data.trim() == "[DONE]" {
            return Ok(JobEvent::Done);
        }
        serde_json::from_str(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_with_rate_and_eta_round_trips_and_older_events_still_parse() {
        let event = JobEvent::Progress(Progress {
            label: "m.gguf".to_owned(),
            current: 10,
            total: Some(100),
            unit: "bytes".to_owned(),
            rate: Some(5),
            eta_s: Some(18),
            hive: Some("h".to_owned()),
        });
        let json = serde_json::to_string(&event).expect("serialise");
        assert_eq!(
            serde_json::from_str::<JobEvent>(&json).expect("parse"),
            event
        );
        let older = r#"{"type":"progress","label":"x","current":1,"unit":"bytes"}"#;
        let JobEvent::Progress(parsed) = serde_json::from_str(older).expect("parse") else {
            panic!("not progress");
        };
        assert_eq!(
            (parsed.rate, parsed.eta_s, parsed.total),
            (None, None, None)
        );
    }
}
