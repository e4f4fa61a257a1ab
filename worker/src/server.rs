//! The worker's HTTP API: health, readiness and streaming inference.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use rbee_protocol::{
    ChatMessage, ErrorBody, ErrorCode, ErrorDetail, InferenceRequest, PromptFormat, WorkerState,
};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::chat::ChatTemplate;
use crate::engine::Job;
use crate::model::ModelInfo;
use crate::sampling::SamplingParams;
use crate::slots::SlotTable;
use crate::status::{STEP_SEQUENCE_BUCKETS, WorkerStatus};
use crate::tokenizer::TextTokenizer;

/// Generated tokens when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: usize = 256;
/// Events buffered per stream before the engine waits for a slow client.
const STREAM_BUFFER: usize = 64;

/// What the routes need once the model is loaded.
pub struct ServedModel {
    pub info: ModelInfo,
    pub tokenizer: Arc<TextTokenizer>,
    pub template: Option<ChatTemplate>,
    pub jobs: mpsc::Sender<Job>,
}

#[derive(Clone)]
pub struct AppState {
    pub worker_id: Arc<str>,
    pub device: Arc<str>,
    pub status: Arc<WorkerStatus>,
    /// Empty while the model loads.
    pub model: Arc<OnceLock<ServedModel>>,
    /// The bearer token every route but `/health` requires, when set.
    pub token: Option<Arc<str>>,
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/ready", get(ready))
        .route("/slots", get(slots))
        .route("/metrics", get(metrics))
        .route("/v1/inference", post(inference))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(state)
}

fn error_response(status: StatusCode, detail: ErrorDetail) -> Response {
    let mut response = (status, Json(ErrorBody::from(detail))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                ErrorDetail::new(ErrorCode::Unauthorized, "missing or wrong worker token")
                    .with_hint("send `Authorization: Bearer <RBEE_WORKER_TOKEN>`"),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (slots_total, slots_busy) = state.status.slots().counts();
    Json(json!({
        "status": "ok",
        "state": state.status.state(),
        "slots_total": slots_total,
        "slots_busy": slots_busy,
        "engine": state.status.engine(),
    }))
}

/// Each sequence slot: its state, the tokens its cache holds, the request it serves.
async fn slots(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "slots": state.status.slots().snapshot() }))
}

/// The worker's counters in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = render_metrics(&state.status, state.status.slots());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn render_metrics(status: &WorkerStatus, slots: &SlotTable) -> String {
    use std::fmt::Write;
    let c = status.counters();
    let (slots_total, slots_busy) = slots.counts();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "rbee_worker_requests_total",
        "counter",
        "Inference requests that ended, however they ended.",
        c.requests_done,
    );
    metric(
        "rbee_worker_tokens_generated_total",
        "counter",
        "Tokens generated.",
        c.tokens_generated,
    );
    metric(
        "rbee_worker_prompt_tokens_reused_total",
        "counter",
        "Prompt tokens taken from a slot's cache instead of being run again.",
        c.prompt_tokens_reused,
    );
    metric(
        "rbee_worker_step_tokens_total",
        "counter",
        "Tokens run by forward passes, prompts included.",
        c.step_tokens,
    );
    metric(
        "rbee_worker_slots",
        "gauge",
        "Sequence slots: requests generated at once.",
        u64::from(slots_total),
    );
    metric(
        "rbee_worker_slots_busy",
        "gauge",
        "Slots serving a request.",
        u64::from(slots_busy),
    );
    metric(
        "rbee_worker_queue_depth",
        "gauge",
        "Requests waiting for a free slot.",
        u64::from(c.queue_depth),
    );
    let name = "rbee_worker_step_sequences";
    let _ = writeln!(
        out,
        "# HELP {name} Sequences run together by each forward pass.\n# TYPE {name} histogram"
    );
    for (bound, count) in STEP_SEQUENCE_BUCKETS.iter().zip(&c.step_sequences) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", c.steps);
    let _ = writeln!(out, "{name}_sum {}", c.step_sequences_sum);
    let _ = writeln!(out, "{name}_count {}", c.steps);
    out
}

async fn ready(State(state): State<AppState>) -> Response {
    let worker_state = state.status.state();
    match state.model.get() {
        Some(model) if worker_state.accepts_requests() => Json(json!({
            "ready": true,
            "worker_id": &*state.worker_id,
            "state": worker_state,
            "device": &*state.device,
            "model": &model.info,
            "slots_total": state.status.slots().counts().0,
            "slots_busy": state.status.slots().counts().1,
            "queue_depth": state.status.queue_depth(),
            "tokens_generated": state.status.tokens_generated(),
        }))
        .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "state": worker_state })),
        )
            .into_response(),
    }
}

async fn inference(State(state): State<AppState>, body: Bytes) -> Response {
    let model = match (state.status.state(), state.model.get()) {
        (WorkerState::Draining | WorkerState::Stopping, _) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorDetail::new(ErrorCode::ShuttingDown, "the worker is shutting down"),
            );
        }
        (_, None) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorDetail::new(ErrorCode::NoWorker, "the model is still loading"),
            );
        }
        (_, Some(model)) => model,
    };
    let request: InferenceRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorDetail::new(ErrorCode::InvalidJson, format!("invalid request body: {e}")),
            );
        }
    };
    // The queen sets the request id to its job id, so both logs name the request alike.
    tracing::info!(
        request_id = request.request_id.as_deref().unwrap_or("-"),
        max_tokens = ?request.max_tokens,
        "inference request"
    );
    let (events, receiver) = mpsc::channel(STREAM_BUFFER);
    let job = match build_job(model, request, events) {
        Ok(job) => job,
        Err(detail) => return error_response(StatusCode::BAD_REQUEST, detail),
    };

    // Counted before sending so the engine's decrement can never come first.
    state.status.enqueued();
    if let Err(e) = model.jobs.try_send(job) {
        state.status.dequeued();
        let detail = match e {
            mpsc::error::TrySendError::Full(_) => {
                ErrorDetail::new(ErrorCode::QueueFull, "the worker's queue is full")
                    .with_hint("retry later or send the request to another worker")
            }
            mpsc::error::TrySendError::Closed(_) => {
                ErrorDetail::new(ErrorCode::ShuttingDown, "the worker is shutting down")
            }
        };
        return error_response(StatusCode::SERVICE_UNAVAILABLE, detail);
    }

    let stream = ReceiverStream::new(receiver).map(|event| {
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event(event.kind()).data(data))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Validates a request and turns it into the engine's job.
fn build_job(
    model: &ServedModel,
    request: InferenceRequest,
    events: mpsc::Sender<rbee_protocol::InferenceEvent>,
) -> Result<Job, ErrorDetail> {
    // The same checks the queen makes, for requests sent to the worker directly.
    request.validate().map_err(|e| e.to_detail())?;
    let bad = |message: String| ErrorDetail::new(ErrorCode::BadRequest, message);
    let text = match (request.prompt, request.messages) {
        (Some(prompt), None) => match (request.prompt_format, &model.template) {
            (PromptFormat::Chat, Some(template)) => template
                .render(&[ChatMessage {
                    role: "user".into(),
                    content: prompt,
                }])
                .map_err(|e| bad(e.to_string()))?,
            _ => prompt,
        },
        (None, Some(messages)) => {
            let template = model.template.as_ref().ok_or_else(|| {
                bad("this model has no chat template; send `prompt` instead of `messages`".into())
            })?;
            template.render(&messages).map_err(|e| bad(e.to_string()))?
        }
        (Some(_), Some(_)) => {
            return Err(bad("send either `prompt` or `messages`, not both".into()));
        }
        (None, None) => return Err(bad("send `prompt` or `messages`".into())),
    };
    let prompt = model
        .tokenizer
        .encode_prompt(&text)
        .map_err(|e| bad(e.to_string()))?;
    if prompt.is_empty() {
        return Err(bad("the prompt is empty".into()));
    }
    let context = model.info.context_length;
    if prompt.len() >= context {
        return Err(bad(format!(
            "the prompt has {} tokens but the model's context holds {context}",
            prompt.len()
        )));
    }
    let room = context - prompt.len();
    let max_tokens = match request.max_tokens {
        Some(0) => return Err(bad("`max_tokens` must be at least 1".into())),
        Some(n) if n as usize > room => {
            return Err(ErrorDetail::new(
                ErrorCode::BadRequest,
                format!(
                    "the prompt has {} tokens and `max_tokens` asks for {n} more, but a \
                     sequence holds {context} tokens on this worker",
                    prompt.len()
                ),
            )
            .with_hint(format!(
                "ask for at most {room} tokens, shorten the prompt, or start the worker \
                 with a larger --ctx-size (or fewer --parallel slots)"
            )));
        }
        Some(n) => n as usize,
        // Without a limit, generation may run to the context's end ("context").
        None => DEFAULT_MAX_TOKENS.min(room),
    };

    // `validate` has checked every range, once, where the protocol defines them.
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: request.temperature.unwrap_or(defaults.temperature),
        top_k: request.top_k.map_or(defaults.top_k, |k| k as usize),
        top_p: request.top_p.unwrap_or(defaults.top_p),
        min_p: request.min_p.unwrap_or(defaults.min_p),
        repeat_penalty: request
            .repeat_penalty
            .map_or(defaults.repeat_penalty, |p| p as f32),
        repeat_last_n: defaults.repeat_last_n,
        seed: request.seed.unwrap_or_else(clock_seed),
    };
    Ok(Job {
        request_id: request.request_id,
        prompt,
        max_tokens,
        sampling,
        stop: request.stop,
        logprobs: (request.logprobs || request.top_logprobs.is_some())
            .then(|| request.top_logprobs.unwrap_or(0) as usize),
        events,
    })
}

/// A seed for requests that name none: unpredictable enough, and logged nowhere.
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
