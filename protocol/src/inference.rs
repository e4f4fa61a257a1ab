//! Inference requests and the events a worker streams back.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// `POST /v1/inference` on a worker. Either `prompt` or `messages` is set; the
/// sampling fields carry the names OpenAI uses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Carried from the queen so one request can be followed through both logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` was reached.
    Length,
    /// A stop sequence was produced.
    Stop,
    /// The client went away or the request was cancelled.
    Cancelled,
    /// The sequence filled the worker's context for one request.
    Context,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Stop => "stop",
            StopReason::Cancelled => "cancelled",
            StopReason::Context => "context",
        }
    }
}

/// Events of a worker's inference stream (`event:` is [`InferenceEvent::kind`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InferenceEvent {
    Started {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        prompt_tokens: u32,
    },
    Token {
        t: String,
        i: u32,
    },
    End {
        stop_reason: StopReason,
        prompt_tokens: u32,
        tokens: u32,
        ttft_ms: f64,
        tokens_per_s: f64,
    },
    Error {
        code: crate::ErrorCode,
        message: String,
    },
}

impl InferenceEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            InferenceEvent::Started { .. } => "started",
            InferenceEvent::Token { .. } => "token",
            InferenceEvent::End { .. } => "end",
            InferenceEvent::Error { .. } => "error",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            InferenceEvent::End { .. } | InferenceEvent::Error { .. }
        )
    }
}
