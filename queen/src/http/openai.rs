//! The OpenAI-compatible API: `POST /v1/chat/completions`, `POST /v1/completions`
//! and `GET /v1/models`. Each completion is an `infer` job, so it goes through the
//! same scheduler, queue and retries as `rbee-keeper infer`, and shows in the job
//! list; this module only translates between OpenAI's shapes and the job's events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use rbee_protocol::inference::InvalidField;
use rbee_protocol::result::InferenceStats;
use rbee_protocol::{
    ChatMessage, ErrorCode, ErrorDetail, InferenceRequest, JobEvent, Operation, OperationResult,
    StopReason, TokenLogprob,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::Job;
use crate::state::AppState;
use crate::workers::WorkerView;
use rbee_protocol::cluster::WorkerStatus;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: String,
    message: String,
    /// The request field at fault, as OpenAI names it.
    param: Option<&'static str>,
}

impl OpenAiError {
    fn bad_request(message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "bad_request".to_owned(),
            message: message.into(),
            param: None,
        }
    }

    /// A sampling field out of its range: OpenAI's `invalid_value` with the field.
    fn invalid_field(error: &InvalidField) -> Self {
        OpenAiError {
            code: "invalid_value".to_owned(),
            param: Some(error.field),
            ..OpenAiError::bad_request(error.to_string())
        }
    }

    /// The status and type OpenAI's clients expect for an rbee error.
    fn from_detail(detail: &ErrorDetail) -> Self {
        let (status, kind, code) = match detail.code {
            ErrorCode::NoWorker | ErrorCode::NotFound | ErrorCode::ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ErrorCode::BadRequest | ErrorCode::InvalidJson => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                detail.code.as_str(),
            ),
            ErrorCode::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            ErrorCode::QueueFull => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
            ),
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", "timeout"),
            ErrorCode::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                detail.code.as_str(),
            ),
        };
        let message = match &detail.hint {
            Some(hint) => format!("{} (hint: {hint})", detail.message),
            None => detail.message.clone(),
        };
        OpenAiError {
            status,
            kind,
            code: code.to_owned(),
            message,
            param: None,
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// `stop` is a string or a list of strings.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's content: text, or a list of parts of which the text ones count.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize, Debug)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize, Debug)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// The fields both endpoints share; others OpenAI defines are accepted and ignored.
#[derive(Deserialize, Debug)]
struct Sampling {
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
    /// How long the serving worker stays loaded without requests (Ollama's field).
    #[serde(default)]
    keep_alive: Option<rbee_protocol::KeepAlive>,
    /// Chat: whether to return each token's log probability; completions: how many
    /// alternatives to return with it.
    #[serde(default)]
    logprobs: Option<Logprobs>,
    /// Chat: how many alternatives each position returns (0 to 20).
    #[serde(default)]
    top_logprobs: Option<u32>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
enum Logprobs {
    /// Chat's form.
    Flag(bool),
    /// The completions endpoint's form: alternatives per position.
    Count(u32),
}

#[derive(Deserialize, Debug, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, Debug)]
struct ChatBody {
    messages: Vec<Message>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize, Debug)]
struct CompletionBody {
    prompt: Prompt,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, OpenAiError> {
    serde_json::from_slice(body)
        .map_err(|e| OpenAiError::bad_request(format!("invalid request body: {e}")))
}

impl Sampling {
    fn request(&self) -> Result<InferenceRequest, OpenAiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(OpenAiError::bad_request("only n=1 is supported"));
        }
        if self.model.trim().is_empty() {
            return Err(OpenAiError::bad_request("`model` is required"));
        }
        Ok(InferenceRequest {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(list)) => list.clone(),
            },
            logprobs: self.wants_logprobs(),
            top_logprobs: match self.logprobs {
                Some(Logprobs::Count(n)) => Some(n),
                _ => self.top_logprobs,
            },
            ..InferenceRequest::default()
        })
    }

    fn wants_logprobs(&self) -> bool {
        match self.logprobs {
            Some(Logprobs::Flag(on)) => on,
            Some(Logprobs::Count(_)) => true,
            None => false,
        }
    }
}

/// The `logprobs` of a choice: `null` unless the request asked, otherwise the tokens'
/// entries in the endpoint's form (chat's `content` list, or the completions
/// endpoint's parallel lists with text offsets from `offset`).
fn logprobs_value(kind: Kind, asked: bool, entries: &[TokenLogprob], offset: usize) -> Value {
    if !asked {
        return Value::Null;
    }
    match kind {
        Kind::Chat => {
            let content: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let top: Vec<Value> = e
                        .top
                        .iter()
                        .map(|t| json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes}))
                        .collect();
                    json!({"token": e.token, "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top})
                })
                .collect();
            json!({"content": content, "refusal": Value::Null})
        }
        Kind::Text => {
            let mut at = offset;
            let offsets: Vec<usize> = entries
                .iter()
                .map(|e| {
                    let here = at;
                    at += e.token.len();
                    here
                })
                .collect();
            json!({
                "tokens": entries.iter().map(|e| e.token.as_str()).collect::<Vec<_>>(),
                "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                "top_logprobs": entries
                    .iter()
                    .map(|e| {
                        e.top
                            .iter()
                            .map(|t| (t.token.clone(), json!(t.logprob)))
                            .collect::<serde_json::Map<_, _>>()
                    })
                    .collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }
}

/// What kind of completion: the object names and how a piece of text is wrapped.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn object(self, streaming: bool) -> &'static str {
        match (self, streaming) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        }
    }

    /// The choice of a whole (non-streamed) answer.
    fn choice(self, text: String, finish_reason: &str, logprobs: Value) -> Value {
        match self {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }),
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }),
        }
    }

    /// The choice of one streamed piece.
    fn delta(
        self,
        text: Option<&str>,
        first: bool,
        finish_reason: Option<&str>,
        logprobs: Value,
    ) -> Value {
        match self {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(text) = text {
                    delta.insert("content".into(), json!(text));
                }
                json!({"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs})
            }
            Kind::Text => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }),
        }
    }
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let body: ChatBody = parse(&body)?;
    let mut request = body.sampling.request()?;
    let messages = body
        .messages
        .into_iter()
        .map(|m| ChatMessage {
            role: m.role,
            content: match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => parts
                    .into_iter()
                    .filter(|p| p.kind == "text")
                    .map(|p| p.text)
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        })
        .collect::<Vec<_>>();
    if messages.is_empty() {
        return Err(OpenAiError::bad_request("`messages` must not be empty"));
    }
    request.messages = Some(messages);
    complete(state, &headers, Kind::Chat, body.sampling, request).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let body: CompletionBody = parse(&body)?;
    let mut request = body.sampling.request()?;
    request.prompt = Some(match body.prompt {
        Prompt::One(text) => text,
        Prompt::Many(mut list) if list.len() == 1 => list.remove(0),
        Prompt::Many(_) => {
            return Err(OpenAiError::bad_request(
                "one prompt per request is supported",
            ));
        }
    });
    complete(state, &headers, Kind::Text, body.sampling, request).await
}

/// Cancels the job when the client goes away before it ended.
struct CancelOnDrop(Arc<Job>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.cancel("the API client disconnected");
        }
    }
}

/// The job's stats `result`, as usage and finish reason.
struct Outcome {
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: &'static str,
}

fn outcome(stats: Option<&InferenceStats>) -> Outcome {
    Outcome {
        prompt_tokens: stats.map_or(0, |s| u64::from(s.prompt_tokens)),
        completion_tokens: stats.map_or(0, |s| u64::from(s.tokens)),
        finish_reason: match stats.map(|s| s.stop_reason) {
            Some(StopReason::Length | StopReason::Context) => "length",
            _ => "stop",
        },
    }
}

fn usage(outcome: &Outcome) -> Value {
    json!({
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    })
}

/// Whether the client asked not to wait for a model to load (`Prefer: wait=0`,
/// RFC 7240).
fn prefers_no_wait(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| {
            p.split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("wait") && v.trim() == "0")
        })
}

/// Seconds a client that would not wait is told to come back after.
const RETRY_AFTER_S: u64 = 2;
/// How long a cold start may take to fail (a model no hive holds) before a client
/// that would not wait is told that it is loading.
const EARLY_FAILURE: std::time::Duration = std::time::Duration::from_millis(500);

/// `503` with `Retry-After` and the load state, for a client that would not wait.
fn loading(model: &str, load_state: &str, worker: Option<&WorkerView>) -> Response {
    let message = match worker {
        Some(w) => format!(
            "{model} is loading on worker {} ({}); retry after {RETRY_AFTER_S}s",
            w.heartbeat.worker_id, w.heartbeat.hive_id
        ),
        None => format!("a worker for {model} is starting; retry after {RETRY_AFTER_S}s"),
    };
    let body = json!({
        "error": {
            "message": message,
            "type": "server_error",
            "param": Value::Null,
            "code": "model_loading",
        },
        "model": model,
        "state": load_state,
        // How much of the weights the loading worker has read, where its engine says.
        "percent": worker.and_then(|w| w.heartbeat.load_percent),
        "worker_id": worker.map(|w| w.heartbeat.worker_id.clone()),
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_S.to_string())],
        Json(body),
    )
        .into_response()
}

/// For a client that would not wait: `None` when a ready worker serves the model (or
/// nothing can be started for it, which the job itself answers), else the answer now,
/// after starting a worker when none is starting.
async fn answer_without_waiting(state: &Arc<AppState>, model: &str) -> Option<Response> {
    let workers = state.workers.list();
    if workers
        .iter()
        .any(|w| w.serves(model) && w.is_schedulable())
    {
        return None;
    }
    if let Some(loading_worker) = workers
        .iter()
        .find(|w| w.serves(model) && w.status == WorkerStatus::Loading)
    {
        return Some(loading(model, "loading", Some(loading_worker)));
    }
    if state.workers.is_spawning(model) {
        return Some(loading(model, "starting", None));
    }
    if !state.config.queen.auto_spawn {
        return None;
    }
    let job = crate::operations::spawn(
        state.clone(),
        // Loaded for the queen's keep_alive: the request's own applies once it ran.
        Operation::ModelLoad {
            model: model.to_owned(),
            hive_id: None,
            keep_alive: None,
        },
    );
    let mut events = Box::pin(job.subscribe(0).map(|(_, event)| event));
    let early = tokio::time::timeout(EARLY_FAILURE, async {
        while let Some(event) = events.next().await {
            match event {
                JobEvent::Error(detail) => return Some(Err(detail)),
                JobEvent::Done => return Some(Ok(())),
                _ => {}
            }
        }
        None
    })
    .await;
    match early {
        Ok(Some(Err(detail))) => Some(OpenAiError::from_detail(&detail).into_response()),
        // Loaded already (another request's worker became ready): serve it.
        Ok(Some(Ok(()))) => None,
        _ => Some(loading(model, "starting", None)),
    }
}

async fn complete(
    state: Arc<AppState>,
    headers: &HeaderMap,
    kind: Kind,
    sampling: Sampling,
    request: InferenceRequest,
) -> Result<Response, OpenAiError> {
    request
        .validate()
        .map_err(|e| OpenAiError::invalid_field(&e))?;
    if state.shutdown.is_cancelled() {
        return Err(OpenAiError::from_detail(&ErrorDetail::new(
            ErrorCode::ShuttingDown,
            "the queen is shutting down",
        )));
    }
    let model = sampling.model.clone();
    let state_keepalive_ms = state.config.queen.keepalive_ms.max(100);
    if prefers_no_wait(headers)
        && let Some(answer) = answer_without_waiting(&state, &model).await
    {
        return Ok(answer);
    }
    let job = crate::operations::spawn(
        state,
        Operation::Infer {
            model: model.clone(),
            hive_id: None,
            worker_id: None,
            spawn: false,
            keep_alive: sampling.keep_alive,
            request,
        },
    );
    let guard = CancelOnDrop(job.clone());
    let id = format!("{}-{}", kind.id_prefix(), job.id.trim_start_matches("job-"));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut events = Box::pin(job.clone().subscribe(0).map(|(_, event)| event));

    // Nothing is sent before the first token or the end, so a failure to start
    // still gets its proper status code; except that a stream still without a token
    // after one keep-alive interval (a model loading) starts with keep-alive comments
    // only, and an error then comes as the stream's one data event.
    let mut text = String::new();
    let keepalive = std::time::Duration::from_millis(state_keepalive_ms);
    let hold = tokio::time::Instant::now() + keepalive;
    let first = loop {
        let next = if sampling.stream {
            match tokio::time::timeout_at(hold, events.next()).await {
                Ok(next) => next,
                Err(_) => break None,
            }
        } else {
            events.next().await
        };
        match next {
            None => {
                return Err(OpenAiError::from_detail(&ErrorDetail::new(
                    ErrorCode::Internal,
                    "the job ended without an outcome",
                )));
            }
            Some(JobEvent::Error(detail)) => return Err(OpenAiError::from_detail(&detail)),
            Some(JobEvent::Cancelled { reason }) => {
                return Err(OpenAiError::from_detail(&ErrorDetail::new(
                    ErrorCode::ShuttingDown,
                    format!("cancelled: {reason}"),
                )));
            }
            Some(event @ (JobEvent::Token { .. } | JobEvent::Result { .. } | JobEvent::Done)) => {
                break Some(event);
            }
            Some(_) => {}
        }
    };

    let asked = sampling.wants_logprobs();
    if !sampling.stream {
        let mut result = None;
        let mut entries = Vec::new();
        let mut next = first;
        while let Some(event) = next {
            match event {
                JobEvent::Token { t, lp, .. } => {
                    text.push_str(&t);
                    entries.extend(lp);
                }
                JobEvent::Result {
                    result: OperationResult::Inference(stats),
                    ..
                } => result = Some(stats),
                JobEvent::Done => break,
                JobEvent::Error(detail) => return Err(OpenAiError::from_detail(&detail)),
                JobEvent::Cancelled { reason } => {
                    return Err(OpenAiError::from_detail(&ErrorDetail::new(
                        ErrorCode::ShuttingDown,
                        format!("cancelled: {reason}"),
                    )));
                }
                _ => {}
            }
            next = events.next().await;
        }
        drop(guard);
        let outcome = outcome(result.as_ref());
        return Ok(Json(json!({
            "id": id,
            "object": kind.object(false),
            "created": created,
            "model": model,
            "choices": [kind.choice(
                text,
                outcome.finish_reason,
                logprobs_value(kind, asked, &entries, 0),
            )],
            "usage": usage(&outcome),
            "system_fingerprint": Value::Null,
        }))
        .into_response());
    }

    let include_usage = sampling.stream_options.unwrap_or_default().include_usage;
    let chunk = move |choices: Vec<Value>, usage: Option<Value>| {
        let mut body = json!({
            "id": id,
            "object": kind.object(true),
            "created": created,
            "model": model,
            "choices": choices,
            "system_fingerprint": Value::Null,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        Event::default().data(body.to_string())
    };
    let stream = completion_chunks(first, events, guard, kind, asked, include_usage, chunk);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response())
}

/// The SSE chunks of a streamed completion, ending with `data: [DONE]`.
fn completion_chunks(
    first: Option<JobEvent>,
    events: impl Stream<Item = JobEvent> + Send + Unpin + 'static,
    guard: CancelOnDrop,
    kind: Kind,
    logprobs: bool,
    include_usage: bool,
    chunk: impl Fn(Vec<Value>, Option<Value>) -> Event + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    struct Walk<S, F> {
        pending: Option<JobEvent>,
        events: S,
        sent_first: bool,
        result: Option<InferenceStats>,
        finished: bool,
        _guard: CancelOnDrop,
        kind: Kind,
        logprobs: bool,
        /// Bytes of text streamed so far (the completions endpoint's offsets).
        offset: usize,
        include_usage: bool,
        chunk: F,
        tail: Vec<Event>,
    }
    let walk = Walk {
        pending: first,
        events,
        sent_first: false,
        result: None,
        finished: false,
        _guard: guard,
        kind,
        logprobs,
        offset: 0,
        include_usage,
        chunk,
        tail: Vec::new(),
    };
    futures::stream::unfold(walk, |mut walk| async move {
        loop {
            if let Some(event) = walk.tail.pop() {
                return Some((Ok(event), walk));
            }
            if walk.finished {
                return None;
            }
            let event = match walk.pending.take() {
                Some(event) => event,
                None => match walk.events.next().await {
                    Some(event) => event,
                    None => JobEvent::Done,
                },
            };
            match event {
                JobEvent::Token { t, lp, .. } => {
                    let first = !walk.sent_first;
                    walk.sent_first = true;
                    let logprobs = logprobs_value(walk.kind, walk.logprobs, &lp, walk.offset);
                    walk.offset += t.len();
                    let choice = walk.kind.delta(Some(&t), first, None, logprobs);
                    return Some((Ok((walk.chunk)(vec![choice], None)), walk));
                }
                JobEvent::Result {
                    result: OperationResult::Inference(stats),
                    ..
                } => walk.result = Some(stats),
                // Failed before its first token, in a stream already started (held
                // while the model loaded): the error as OpenAI streams one.
                JobEvent::Error(detail) if !walk.sent_first => {
                    walk.finished = true;
                    let error = OpenAiError::from_detail(&detail);
                    walk.tail = vec![
                        Event::default().data("[DONE]"),
                        Event::default().data(error.body().to_string()),
                    ];
                }
                JobEvent::Done | JobEvent::Error(_) | JobEvent::Cancelled { .. } => {
                    // An error after the first token can only end the stream; the
                    // finish chunk says it stopped.
                    walk.finished = true;
                    let outcome = outcome(walk.result.take().as_ref());
                    let mut tail = vec![Event::default().data("[DONE]")];
                    if walk.include_usage {
                        tail.push((walk.chunk)(Vec::new(), Some(usage(&outcome))));
                    }
                    let finish = walk.kind.delta(
                        None,
                        !walk.sent_first,
                        Some(outcome.finish_reason),
                        Value::Null,
                    );
                    tail.push((walk.chunk)(vec![finish], None));
                    walk.tail = tail;
                }
                _ => {}
            }
        }
    })
}

/// `GET /v1/models`: every model a ready worker serves, then every model a hive held
/// when its catalog was last listed (`model list`).
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let created = state.started_unix_s();
    let mut data: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in state.workers.served_models() {
        if seen.insert(id.clone()) {
            data.push(json!({"id": id, "object": "model", "created": created, "owned_by": "rbee"}));
        }
    }
    for (id, hives) in state.hives.known_models() {
        if seen.insert(id.clone()) {
            data.push(json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": "rbee",
                "hives": hives,
            }));
        }
    }
    Json(json!({"object": "list", "data": data}))
}
