//! `infer`: pick the best ready worker for a model, wait in a bounded queue when all
//! are busy, spawn one when asked to, relay its tokens, and retry on another worker
//! when the chosen one fails before its first token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rbee_config::Hive;
use rbee_protocol::result::InferenceStats;
use rbee_protocol::sse::SseDecoder;
use rbee_protocol::{
    DeviceKind, DeviceSpec, ErrorCode, ErrorDetail, InferenceEvent, InferenceRequest, JobEvent,
    KeepAlive, Level, Narration, OperationResult,
};

use super::fan_out::HostContext;
use super::{JobContext, OpResult, hives, models, workers};
use crate::state::AppState;
use crate::workers::WorkerView;

/// Workers tried for one request before it fails.
const MAX_ATTEMPTS: usize = 3;
/// How often a queued request re-checks without a registry change (stale workers
/// change state without a heartbeat).
const RECHECK: Duration = Duration::from_millis(500);

/// What the operator pinned or allowed for one request.
#[derive(Debug, Default, Clone)]
pub struct Pins {
    pub hive: Option<String>,
    pub worker: Option<String>,
    /// Spawn a worker when none serves the model.
    pub spawn: bool,
    /// How long the serving worker stays loaded without requests, when the request
    /// says; the queen's `keep_alive` for a worker it starts otherwise.
    pub keep_alive: Option<KeepAlive>,
}

/// The schedulable workers for `model` that the pins allow, best first: the most free
/// slots (the slots a worker reports, `fallback_slots` where it reports none, less the
/// queen's requests in flight), then the shortest queue in the worker, ties to the most
/// recently heard.
pub fn candidates(
    workers: Vec<WorkerView>,
    model: &str,
    pins: &Pins,
    excluded: &HashSet<String>,
    fallback_slots: u32,
) -> Vec<WorkerView> {
    let mut found: Vec<WorkerView> = workers
        .into_iter()
        .filter(|w| w.is_schedulable() && w.serves(model))
        .filter(|w| pins.hive.as_ref().is_none_or(|h| &w.heartbeat.hive_id == h))
        .filter(|w| {
            pins.worker
                .as_ref()
                .is_none_or(|id| &w.heartbeat.worker_id == id)
        })
        .filter(|w| !excluded.contains(&w.heartbeat.worker_id))
        .collect();
    found.sort_by_key(|w| {
        (
            std::cmp::Reverse(w.free_slots(fallback_slots)),
            w.heartbeat.queue_depth,
            w.last_seen_ms,
        )
    });
    found
}

/// A request counted against a worker until dropped.
struct Slot {
    state: Arc<AppState>,
    worker: WorkerView,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state
            .workers
            .finish_request(&self.worker.heartbeat.worker_id);
    }
}

/// A place in a model's queue, given back when dropped.
struct Queued {
    state: Arc<AppState>,
    model: String,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.state.workers.leave_queue(&self.model);
    }
}

/// Waits for a worker with a free slot; spawns one first when allowed and none
/// serves the model.
async fn acquire(
    ctx: &JobContext,
    model: &str,
    pins: &Pins,
    excluded: &HashSet<String>,
) -> Result<Slot, ErrorDetail> {
    let state = &ctx.state;
    let config = &state.config.queen;
    let slots = config.worker_slots.max(1);
    let mut changed = state.workers.subscribe();
    let mut queued: Option<Queued> = None;
    let mut spawned = false;
    let mut narrated_wait = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.queue_timeout_secs);
    loop {
        changed.borrow_and_update();
        let mut found = Vec::new();
        let mut loading = false;
        let picked = state.workers.pick(|all| {
            loading = all.iter().any(|w| {
                w.serves(model)
                    && w.status == rbee_protocol::cluster::WorkerStatus::Loading
                    && !excluded.contains(&w.heartbeat.worker_id)
            });
            found = candidates(all, model, pins, excluded, slots);
            found.iter().find(|w| w.free_slots(slots) > 0).cloned()
        });
        if let Some(worker) = picked {
            return Ok(Slot {
                state: state.clone(),
                worker,
            });
        }
        let may_spawn = (pins.spawn || config.auto_spawn) && pins.worker.is_none();
        let mut awaiting_spawn = false;
        if found.is_empty() && !loading {
            if !may_spawn || spawned {
                return Err(no_worker(ctx, model, pins, excluded));
            }
            // Two requests for a model nothing serves start one worker: the second
            // waits for the first's.
            match state.workers.begin_spawn(model) {
                Some(claim) => {
                    spawned = true;
                    let started = spawn_for(ctx, model, pins).await;
                    drop(claim);
                    started?;
                    continue;
                }
                None => awaiting_spawn = true,
            }
        }
        if awaiting_spawn {
            if !narrated_wait {
                narrated_wait = true;
                ctx.narrate(
                    "spawn",
                    model,
                    format!("waiting for the worker another request is starting for {model}"),
                );
            }
        } else if queued.is_none() {
            let waiting = state
                .workers
                .join_queue(model, config.queue_capacity)
                .ok_or_else(|| {
                    ErrorDetail::new(
                        ErrorCode::QueueFull,
                        format!(
                            "every worker serving {model} is busy and the queue is full ({} waiting)",
                            config.queue_capacity
                        ),
                    )
                    .with_hint(
                        "retry later, spawn more workers (`rbee-keeper worker spawn`), or raise queue_capacity under [queen]",
                    )
                })?;
            queued = Some(Queued {
                state: state.clone(),
                model: model.to_owned(),
            });
            ctx.narrate(
                "queue",
                model,
                format!(
                    "all {} worker(s) serving {model} are busy; waiting in the queue (position {waiting})",
                    found.len()
                ),
            );
        }
        let wake = tokio::time::Instant::now() + RECHECK;
        if tokio::time::Instant::now() >= deadline {
            return Err(ErrorDetail::new(
                ErrorCode::Timeout,
                format!(
                    "no worker serving {model} was free within {}s",
                    config.queue_timeout_secs
                ),
            )
            .with_hint("spawn more workers, or raise queue_timeout_secs under [queen]"));
        }
        let _ = tokio::time::timeout_at(wake.min(deadline), changed.changed()).await;
    }
}

fn no_worker(
    ctx: &JobContext,
    model: &str,
    pins: &Pins,
    excluded: &HashSet<String>,
) -> ErrorDetail {
    let known = ctx.state.workers.list().len();
    let mut message = format!("no ready worker serves {model}");
    if let Some(hive) = &pins.hive {
        message.push_str(&format!(" on {hive}"));
    }
    if let Some(worker) = &pins.worker {
        message.push_str(&format!(" as worker {worker}"));
    }
    if !excluded.is_empty() {
        message.push_str(&format!(
            " ({} failed: {})",
            excluded.len(),
            excluded.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    message.push_str(&format!(" ({known} worker(s) known)"));
    ErrorDetail::new(ErrorCode::NoWorker, message).with_hint(
        "spawn one with `rbee-keeper worker spawn --hive H --model M`, or pass --spawn; `rbee-keeper worker list` shows what runs",
    )
}

/// Spawns a worker for `model` on the online hive and device with the most free
/// memory, trying the next when a hive does not hold the model.
async fn spawn_for(ctx: &JobContext, model: &str, pins: &Pins) -> Result<WorkerView, ErrorDetail> {
    let inventory = ctx.state.inventory();
    let mut places: Vec<(u64, Hive, DeviceSpec)> = Vec::new();
    for hive in inventory.hives.values() {
        if pins.hive.as_ref().is_some_and(|h| h != &hive.alias) {
            continue;
        }
        let caps = match ctx.state.hives.get(&hive.alias) {
            // Stopped on purpose: not a place for new workers.
            Some(record) if !record.online => continue,
            Some(record) if record.capabilities.is_some() => record.capabilities,
            _ => {
                let host = HostContext {
                    job: ctx.clone(),
                    hive: hive.clone(),
                };
                match hives::detect_unknown(&host).await {
                    Ok(caps) => Some(caps),
                    Err(error) => {
                        ctx.emit(JobEvent::Narration(Narration {
                            actor: "queen".to_owned(),
                            action: "spawn".to_owned(),
                            target: hive.alias.clone(),
                            human: format!("{} skipped: {}", hive.alias, error.message),
                            level: Level::Warn,
                            hive: Some(hive.alias.clone()),
                        }));
                        None
                    }
                }
            }
        };
        let Some(caps) = caps else {
            continue;
        };
        for device in &caps.devices {
            // Metal reports no free memory to place by.
            if matches!(device.kind, DeviceKind::Cuda | DeviceKind::Cpu) {
                places.push((device.memory_free, hive.clone(), device.worker_device()));
            }
        }
    }
    places.sort_by_key(|place| std::cmp::Reverse(place.0));
    if places.is_empty() {
        return Err(ErrorDetail::new(
            ErrorCode::NoWorker,
            format!("no worker serves {model} and no online hive could start one"),
        )
        .with_hint("bring hives online with `rbee-keeper hive start`; `hive stop` takes a hive out of placement"));
    }
    let mut refusals = Vec::new();
    let mut short_of_memory = false;
    // A hive without the model is not asked again for its other devices; one whose
    // device is too small is (a smaller device with less overhead can still fit).
    let mut without_model = HashSet::new();
    for (free, hive, device) in places {
        if without_model.contains(&hive.alias) {
            continue;
        }
        ctx.narrate(
            "spawn",
            &hive.alias,
            format!(
                "no worker serves {model}; spawning one on {} ({device}, {} MiB free)",
                hive.alias,
                free >> 20
            ),
        );
        let device_name = device.to_string();
        let outcome = loop {
            match workers::spawn_on(ctx, &hive, model, &device_name, workers::Slots::default())
                .await
            {
                // Room is made by unloading the least recently used idle worker there,
                // never a busy or pinned one, then the start is tried again.
                Err(refusal) if refusal.code == ErrorCode::InsufficientMemory => {
                    let Some(victim) = ctx
                        .state
                        .workers
                        .take_least_recently_used(&hive.alias, &device_name)
                    else {
                        break Err(refusal);
                    };
                    let victim_id = victim.heartbeat.worker_id.clone();
                    ctx.narrate(
                        "evict",
                        &victim_id,
                        format!(
                            "{device_name} on {} lacks memory for {model}; unloading idle worker {victim_id} ({}), the least recently used",
                            hive.alias, victim.heartbeat.model
                        ),
                    );
                    if let Err(error) = workers::stop_quietly(ctx, &victim_id).await {
                        ctx.state.workers.keep(&victim_id);
                        break Err(error);
                    }
                }
                other => break other,
            }
        };
        match outcome {
            Ok(worker) => {
                let keep_alive = pins.keep_alive.unwrap_or(ctx.state.config.queen.keep_alive);
                ctx.state
                    .workers
                    .lease(&worker.heartbeat.worker_id, Some(keep_alive));
                ctx.narrate(
                    "spawn",
                    &worker.heartbeat.worker_id,
                    match keep_alive.idle_limit() {
                        Some(_) => format!(
                            "worker {} is unloaded after {keep_alive} without requests",
                            worker.heartbeat.worker_id
                        ),
                        None => format!(
                            "worker {} stays loaded (keep_alive {keep_alive})",
                            worker.heartbeat.worker_id
                        ),
                    },
                );
                return Ok(worker);
            }
            Err(refusal) if refusal.code == ErrorCode::ModelNotFound => {
                without_model.insert(hive.alias.clone());
                refusals.push(format!("{}: {}", hive.alias, refusal.message));
                // What the hive holds instead, for the answer that lists the cluster's
                // models.
                let host = HostContext {
                    job: ctx.clone(),
                    hive: hive.clone(),
                };
                let _ = models::held(&host.quiet()).await;
            }
            Err(refusal) if refusal.code == ErrorCode::InsufficientMemory => {
                short_of_memory = true;
                refusals.push(format!(
                    "{}: {}{}",
                    hive.alias,
                    refusal.message,
                    holders(ctx, &hive.alias, &device_name)
                ));
            }
            Err(other) => return Err(other),
        }
    }
    if !short_of_memory && refusals.len() == without_model.len() {
        return Err(not_held(ctx, model));
    }
    if short_of_memory {
        return Err(ErrorDetail::new(
            ErrorCode::InsufficientMemory,
            format!(
                "no device has memory for {model}: {}",
                refusals.join("; ")
            ),
        )
        .with_hint(
            "stop a worker that holds the memory (`rbee-keeper worker stop`), put the model on a hive with more free memory, or use a smaller quantisation",
        ));
    }
    let hint = "put the model on a hive first (`rbee-keeper model download` or `model push`)";
    Err(ErrorDetail::new(
        ErrorCode::NoWorker,
        format!(
            "no hive could spawn a worker for {model}: {}",
            refusals.join("; ")
        ),
    )
    .with_hint(hint))
}

/// What holds the memory of `device` on `hive` that could not be unloaded: its
/// workers, busy or pinned, as ` (held by …)`.
fn holders(ctx: &JobContext, hive: &str, device: &str) -> String {
    let held: Vec<String> = ctx
        .state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.heartbeat.hive_id == hive && w.heartbeat.device == device)
        .map(|w| {
            let id = &w.heartbeat.worker_id;
            let why = if ctx.state.workers.idle_limit(id).is_none() {
                "pinned"
            } else {
                "busy"
            };
            format!("{id} ({}, {why})", w.heartbeat.model)
        })
        .collect();
    if held.is_empty() {
        String::new()
    } else {
        format!(" (held by {})", held.join(", "))
    }
}

/// No online hive holds `model`: `model_not_found`, listing what the cluster holds
/// (served by workers, or in the hives' catalogs as last listed).
fn not_held(ctx: &JobContext, model: &str) -> ErrorDetail {
    let mut held = ctx.state.workers.served_models();
    held.extend(ctx.state.hives.known_models().into_iter().map(|(id, _)| id));
    held.sort();
    held.dedup();
    let hint = if held.is_empty() {
        "the cluster holds no models; put one on a hive with `rbee-keeper model download` or `model push`".to_owned()
    } else {
        format!(
            "the cluster holds: {}; put another on a hive with `rbee-keeper model download` or `model push`",
            held.join(", ")
        )
    };
    ErrorDetail::new(
        ErrorCode::ModelNotFound,
        format!("no online hive holds {model}"),
    )
    .with_hint(hint)
}

/// `model load`: starts a worker for `model` where it fits best unless one serves it
/// or is being started, and reports the worker once it is ready.
pub async fn load(ctx: &JobContext, model: &str, pins: &Pins) -> OpResult {
    let state = &ctx.state;
    let mut changed = state.workers.subscribe();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.config.queen.queue_timeout_secs);
    let mut narrated_wait = false;
    loop {
        changed.borrow_and_update();
        let serving = state.workers.list().into_iter().find(|w| {
            w.serves(model)
                && pins.hive.as_ref().is_none_or(|h| &w.heartbeat.hive_id == h)
                && (w.is_schedulable() || w.status == rbee_protocol::cluster::WorkerStatus::Loading)
        });
        match serving {
            Some(worker) if worker.is_schedulable() => {
                if let Some(keep_alive) = pins.keep_alive {
                    state
                        .workers
                        .renew_lease(&worker.heartbeat.worker_id, keep_alive);
                }
                ctx.narrate(
                    "load",
                    &worker.heartbeat.worker_id,
                    format!(
                        "{model} is loaded: worker {} on {}",
                        worker.heartbeat.worker_id, worker.heartbeat.hive_id
                    ),
                );
                ctx.result(OperationResult::Worker(worker));
                return Ok(());
            }
            Some(_) => {}
            None => {
                if let Some(claim) = state.workers.begin_spawn(model) {
                    let started = spawn_for(ctx, model, pins).await;
                    drop(claim);
                    ctx.result(OperationResult::Worker(started?));
                    return Ok(());
                }
            }
        }
        if !narrated_wait {
            narrated_wait = true;
            ctx.narrate(
                "load",
                model,
                format!("waiting for the worker another request is starting for {model}"),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ErrorDetail::new(
                ErrorCode::Timeout,
                format!(
                    "no worker for {model} was ready within {}s",
                    state.config.queen.queue_timeout_secs
                ),
            )
            .with_hint("`rbee-keeper worker list` shows the worker being started; raise queue_timeout_secs under [queen]"));
        }
        let wake = (tokio::time::Instant::now() + RECHECK).min(deadline);
        let _ = tokio::time::timeout_at(wake, changed.changed()).await;
    }
}

/// How a request to one worker ended without success.
struct Failure {
    detail: ErrorDetail,
    /// No token had reached the client: another worker may take the request.
    retryable: bool,
}

pub async fn infer(
    ctx: &JobContext,
    model: &str,
    pins: &Pins,
    request: InferenceRequest,
) -> OpResult {
    let outcome = infer_with_retries(ctx, model, pins, request).await;
    let metrics = &ctx.state.metrics;
    match &outcome {
        Ok(stats) => {
            metrics.inference_finished(model, "ok");
            metrics.inference_timing(model, stats.ttft, stats.tokens, stats.tokens_per_s);
        }
        Err(error) => metrics.inference_finished(model, error.code.as_str()),
    }
    outcome.map(|_| ())
}

/// What a finished request measured.
struct Stats {
    ttft: Duration,
    tokens: u64,
    tokens_per_s: f64,
}

async fn infer_with_retries(
    ctx: &JobContext,
    model: &str,
    pins: &Pins,
    mut request: InferenceRequest,
) -> Result<Stats, ErrorDetail> {
    request.request_id.get_or_insert_with(|| ctx.job.id.clone());
    let started = Instant::now();
    let mut excluded = HashSet::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let slot = acquire(ctx, model, pins, &excluded).await?;
        let worker = &slot.worker.heartbeat;
        tracing::info!(
            request_id = request.request_id.as_deref().unwrap_or("-"),
            worker_id = %worker.worker_id,
            attempt,
            "inference routed"
        );
        ctx.narrate(
            "infer",
            &worker.worker_id,
            format!(
                "routing to worker {} on {} ({})",
                worker.worker_id, worker.hive_id, worker.device
            ),
        );
        match relay(ctx, &slot.worker, &request, started).await {
            Ok(stats) => {
                if let Some(keep_alive) = pins.keep_alive {
                    ctx.state.workers.renew_lease(&worker.worker_id, keep_alive);
                }
                return Ok(stats);
            }
            Err(failure)
                if failure.retryable && attempt < MAX_ATTEMPTS && pins.worker.is_none() =>
            {
                ctx.emit(JobEvent::Narration(Narration {
                    actor: "queen".to_owned(),
                    action: "retry".to_owned(),
                    target: worker.worker_id.clone(),
                    human: format!(
                        "worker {} failed before its first token ({}); retrying on another worker",
                        worker.worker_id, failure.detail.message
                    ),
                    level: Level::Warn,
                    hive: Some(worker.hive_id.clone()),
                }));
                excluded.insert(worker.worker_id.clone());
            }
            Err(failure) => return Err(failure.detail),
        }
    }
    Err(no_worker(ctx, model, pins, &excluded))
}

/// Sends the request to one worker and forwards its tokens as they come.
async fn relay(
    ctx: &JobContext,
    worker: &WorkerView,
    request: &InferenceRequest,
    started: Instant,
) -> Result<Stats, Failure> {
    let beat = &worker.heartbeat;
    let worker_id = beat.worker_id.as_str();
    let mut tokens_seen = 0u32;
    let mut first_token_ms = None;
    // Before the first token another worker may take the request, unless the request
    // itself was refused.
    let fail = |tokens_seen: u32, code: ErrorCode, message: String| Failure {
        retryable: tokens_seen == 0 && !matches!(code, ErrorCode::BadRequest),
        detail: ErrorDetail::new(code, message),
    };
    let response = ctx
        .state
        .http
        .post(format!("{}/v1/inference", beat.url.trim_end_matches('/')))
        .bearer_auth(ctx.state.worker_token(worker_id))
        .json(request)
        .send()
        .await
        .map_err(|e| {
            fail(
                0,
                ErrorCode::WorkerFailed,
                format!("cannot reach worker {worker_id}: {e}"),
            )
        })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let code = match status.as_u16() {
            503 => ErrorCode::QueueFull,
            400 | 422 => ErrorCode::BadRequest,
            _ => ErrorCode::WorkerFailed,
        };
        return Err(fail(
            0,
            code,
            format!("worker {worker_id} answered {status}: {body}"),
        ));
    }
    let mut decoder = SseDecoder::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            fail(
                tokens_seen,
                ErrorCode::WorkerFailed,
                format!("the stream from worker {worker_id} broke: {e}"),
            )
        })?;
        let frames = decoder
            .feed(&chunk)
            .map_err(|e| fail(tokens_seen, ErrorCode::WorkerFailed, e.to_string()))?;
        for frame in frames {
            let event: InferenceEvent = serde_json::from_str(&frame.data).map_err(|e| {
                fail(
                    tokens_seen,
                    ErrorCode::WorkerFailed,
                    format!("worker {worker_id} sent an unreadable event ({e})"),
                )
            })?;
            match event {
                InferenceEvent::Started { .. } => {}
                InferenceEvent::Token { t, i, lp } => {
                    first_token_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
                    tokens_seen += 1;
                    ctx.emit(JobEvent::Token { t, i, lp });
                }
                InferenceEvent::End {
                    stop_reason,
                    prompt_tokens,
                    tokens,
                    ttft_ms,
                    tokens_per_s,
                } => {
                    ctx.state.workers.record_rate(worker_id, tokens_per_s);
                    ctx.result(OperationResult::Inference(InferenceStats {
                        worker_id: worker_id.to_owned(),
                        hive_id: beat.hive_id.clone(),
                        device: beat.device.clone(),
                        stop_reason,
                        prompt_tokens,
                        tokens,
                        tokens_per_s,
                        worker_ttft_ms: ttft_ms,
                        ttft_ms: first_token_ms.unwrap_or(ttft_ms),
                        total_ms: started.elapsed().as_secs_f64() * 1000.0,
                    }));
                    return Ok(Stats {
                        ttft: Duration::from_secs_f64(first_token_ms.unwrap_or(ttft_ms) / 1000.0),
                        tokens: u64::from(tokens),
                        tokens_per_s,
                    });
                }
                InferenceEvent::Error { code, message } => {
                    return Err(fail(
                        tokens_seen,
                        code,
                        format!("worker {worker_id}: {message}"),
                    ));
                }
            }
        }
    }
    Err(fail(
        tokens_seen,
        ErrorCode::WorkerFailed,
        format!("worker {worker_id} closed the stream before the end"),
    ))
}
