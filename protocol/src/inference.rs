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
    /// How `prompt` reaches the model: as it is (the default, as OpenAI's completions
    /// take it), or as a user's chat message.
    #[serde(default, skip_serializing_if = "PromptFormat::is_raw")]
    pub prompt_format: PromptFormat,
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
    /// Whether each token's event carries its log probability (OpenAI's `logprobs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// How many of the most likely tokens each position also reports (0 to
    /// [`MAX_TOP_LOGPROBS`], OpenAI's `top_logprobs`); implies `logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// The most alternatives a position may report (as OpenAI allows).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// A generated token's log probability under the model (the log-softmax of its logits,
/// before sampling's filters) and, when asked, the most likely tokens at its position.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The token's bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One of the most likely tokens at a position.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// How a request's `prompt` reaches the model.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// The text as it is.
    #[default]
    Raw,
    /// The text as one user message, rendered with the model's chat template when it
    /// has one (as `ollama run` and `llama-cli` do); as it is when it has none.
    Chat,
}

impl PromptFormat {
    pub fn is_raw(&self) -> bool {
        *self == PromptFormat::Raw
    }
}

/// The most stop sequences one request may carry (as OpenAI allows).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// A field of a request outside what it may be: names the field, what is allowed and
/// what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` must be {allowed}; got {got}")]
pub struct InvalidField {
    pub field: &'static str,
    pub allowed: &'static str,
    pub got: String,
}

impl InvalidField {
    /// The wire error: `bad_request`, with the field in the message.
    pub fn to_detail(&self) -> crate::ErrorDetail {
        crate::ErrorDetail::new(crate::ErrorCode::BadRequest, self.to_string()).with_hint(format!(
            "leave `{}` out to use the worker's default",
            self.field
        ))
    }
}

impl InferenceRequest {
    /// Checks every field against its allowed range, so a value no sampler means
    /// (a temperature of 1e24, a negative `top_p`) is refused where the request
    /// enters instead of silently changing what the worker does. The ranges are
    /// OpenAI's where OpenAI has the field.
    pub fn validate(&self) -> Result<(), InvalidField> {
        within("temperature", self.temperature, 0.0, 2.0, "between 0 and 2")?;
        within("top_p", self.top_p, 0.0, 1.0, "between 0 and 1")?;
        within("min_p", self.min_p, 0.0, 1.0, "between 0 and 1")?;
        if let Some(penalty) = self.repeat_penalty
            && !(penalty.is_finite() && penalty > 0.0)
        {
            return Err(InvalidField {
                field: "repeat_penalty",
                allowed: "a number above 0 (1 means no penalty)",
                got: penalty.to_string(),
            });
        }
        if let Some(top) = self.top_logprobs
            && top > MAX_TOP_LOGPROBS
        {
            return Err(InvalidField {
                field: "top_logprobs",
                allowed: "between 0 and 20",
                got: top.to_string(),
            });
        }
        if self.max_tokens == Some(0) {
            return Err(InvalidField {
                field: "max_tokens",
                allowed: "at least 1",
                got: "0".to_owned(),
            });
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return Err(InvalidField {
                field: "stop",
                allowed: "at most 4 sequences",
                got: format!("{} sequences", self.stop.len()),
            });
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(InvalidField {
                field: "stop",
                allowed: "sequences of at least one character",
                got: "an empty sequence".to_owned(),
            });
        }
        match (&self.prompt, &self.messages) {
            (Some(_), None) => Ok(()),
            (None, Some(messages)) if !messages.is_empty() => Ok(()),
            (None, Some(_)) => Err(InvalidField {
                field: "messages",
                allowed: "at least one message",
                got: "none".to_owned(),
            }),
            (None, None) => Err(InvalidField {
                field: "prompt",
                allowed: "given, or `messages` instead",
                got: "neither".to_owned(),
            }),
            (Some(_), Some(_)) => Err(InvalidField {
                field: "prompt",
                allowed: "given without `messages`",
                got: "both".to_owned(),
            }),
        }
    }
}

/// `value` in `min..=max` when given; NaN and infinities are outside every range.
fn within(
    field: &'static str,
    value: Option<f64>,
    min: f64,
    max: f64,
    allowed: &'static str,
) -> Result<(), InvalidField> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(InvalidField {
            field,
            allowed,
            got: v.to_string(),
        }),
        _ => Ok(()),
    }
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
    /// Text of the tokens up to output token `i` not sent before (a character split
    /// across tokens, or text that may begin a stop sequence, waits for the next), and
    /// when the request asked, the log probabilities of those tokens.
    Token {
        t: String,
        i: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lp: Vec<TokenLogprob>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operation;

    fn prompt() -> InferenceRequest {
        InferenceRequest {
            prompt: Some("hi".to_owned()),
            ..InferenceRequest::default()
        }
    }

    #[test]
    fn sampling_fields_inside_their_ranges_pass_and_the_edges_count_as_inside() {
        let edges = [
            InferenceRequest {
                temperature: Some(0.0),
                top_p: Some(0.0),
                min_p: Some(0.0),
                repeat_penalty: Some(f64::MIN_POSITIVE),
                max_tokens: Some(1),
                top_k: Some(0),
                ..prompt()
            },
            InferenceRequest {
                temperature: Some(2.0),
                top_p: Some(1.0),
                min_p: Some(1.0),
                repeat_penalty: Some(1.3),
                max_tokens: Some(u32::MAX),
                stop: vec!["a".to_owned(); MAX_STOP_SEQUENCES],
                ..prompt()
            },
            InferenceRequest {
                messages: Some(vec![ChatMessage {
                    role: "user".to_owned(),
                    content: "hi".to_owned(),
                }]),
                ..InferenceRequest::default()
            },
        ];
        for request in edges {
            assert_eq!(request.validate(), Ok(()), "{request:?}");
        }
    }

    #[test]
    fn each_field_outside_its_range_is_refused_by_name() {
        let cases = [
            (
                InferenceRequest {
                    temperature: Some(2.000_001),
                    ..prompt()
                },
                "`temperature` must be between 0 and 2; got 2.000001",
            ),
            (
                InferenceRequest {
                    temperature: Some(f64::NAN),
                    ..prompt()
                },
                "`temperature` must be between 0 and 2; got NaN",
            ),
            (
                InferenceRequest {
                    top_p: Some(-0.1),
                    ..prompt()
                },
                "`top_p` must be between 0 and 1; got -0.1",
            ),
            (
                InferenceRequest {
                    min_p: Some(5.0),
                    ..prompt()
                },
                "`min_p` must be between 0 and 1; got 5",
            ),
            (
                InferenceRequest {
                    repeat_penalty: Some(0.0),
                    ..prompt()
                },
                "`repeat_penalty` must be a number above 0 (1 means no penalty); got 0",
            ),
            (
                InferenceRequest {
                    repeat_penalty: Some(f64::INFINITY),
                    ..prompt()
                },
                "`repeat_penalty` must be a number above 0 (1 means no penalty); got inf",
            ),
            (
                InferenceRequest {
                    max_tokens: Some(0),
                    ..prompt()
                },
                "`max_tokens` must be at least 1; got 0",
            ),
            (
                InferenceRequest {
                    stop: vec!["x".to_owned(); MAX_STOP_SEQUENCES + 1],
                    ..prompt()
                },
                "`stop` must be at most 4 sequences; got 5 sequences",
            ),
            (
                InferenceRequest {
                    stop: vec![String::new()],
                    ..prompt()
                },
                "`stop` must be sequences of at least one character; got an empty sequence",
            ),
            (
                InferenceRequest::default(),
                "`prompt` must be given, or `messages` instead; got neither",
            ),
            (
                InferenceRequest {
                    messages: Some(Vec::new()),
                    ..InferenceRequest::default()
                },
                "`messages` must be at least one message; got none",
            ),
        ];
        for (request, message) in cases {
            let error = request.validate().expect_err(message);
            assert_eq!(error.to_string(), message);
            assert_eq!(error.to_detail().code, crate::ErrorCode::BadRequest);
        }
    }

    /// A fuzzer found that this temperature did not survive its own serialization
    /// (`…112e+24` came back) before serde_json parsed floats exactly; it must round
    /// trip, and then be refused for its range.
    #[test]
    fn a_huge_temperature_round_trips_exactly_and_is_refused() {
        let text =
            r#"{"operation":"infer","model":"m","prompt":"p","temperature":1.1111111111111111e24}"#;
        let operation: Operation = serde_json::from_str(text).expect("parses");
        let again: Operation =
            serde_json::from_str(&serde_json::to_string(&operation).expect("serialises"))
                .expect("parses again");
        assert_eq!(again, operation);
        let Operation::Infer { request, .. } = &operation else {
            panic!("not infer: {operation:?}");
        };
        assert_eq!(request.temperature, Some(1.111_111_111_111_111_1e24));
        let error = operation.validate().expect_err("out of range");
        assert_eq!(error.field, "temperature");
    }
}
