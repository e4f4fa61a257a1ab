//! `infer`: pick the best ready worker for a model and relay its token stream.

use futures::StreamExt;
use rbee_protocol::sse::SseDecoder;
use rbee_protocol::{ErrorCode, ErrorDetail, InferenceEvent, InferenceRequest, JobEvent};
use serde_json::json;

use super::{JobContext, OpResult};
use crate::workers::WorkerView;

/// Whether a worker serves `model`: its file name, or that name without `.gguf`.
fn serves(worker: &WorkerView, model: &str) -> bool {
    let name = worker.heartbeat.model.as_str();
    name == model || name.strip_suffix(".gguf") == Some(model)
}

/// The schedulable worker for `model` with the shortest queue; pins narrow the choice.
pub fn schedule(
    workers: Vec<WorkerView>,
    model: &str,
    hive: Option<&str>,
    worker: Option<&str>,
) -> Result<WorkerView, ErrorDetail> {
    let known = workers.len();
    workers
        .into_iter()
        .filter(|w| w.is_schedulable() && serves(w, model))
        .filter(|w| hive.is_none_or(|h| w.heartbeat.hive_id == h))
        .filter(|w| worker.is_none_or(|id| w.heartbeat.worker_id == id))
        .min_by_key(|w| (w.heartbeat.queue_depth, w.heartbeat.state != rbee_protocol::WorkerState::Ready))
        .ok_or_else(|| {
            ErrorDetail::new(ErrorCode::NoWorker, format!("no ready worker serves {model} ({known} worker(s) known)"))
                .with_hint("spawn one with `rbee-keeper worker spawn --hive H --model M`; `rbee-keeper worker list` shows what runs")
        })
}

pub async fn infer(
    ctx: &JobContext,
    model: &str,
    hive: Option<&str>,
    worker: Option<&str>,
    mut request: InferenceRequest,
) -> OpResult {
    let chosen = schedule(ctx.state.workers.list(), model, hive, worker)?;
    let worker_id = chosen.heartbeat.worker_id.clone();
    ctx.narrate(
        "infer",
        &worker_id,
        format!(
            "routing to worker {worker_id} on {} ({})",
            chosen.heartbeat.hive_id, chosen.heartbeat.device
        ),
    );
    request.request_id.get_or_insert_with(|| ctx.job.id.clone());
    let failed = |message: String| ErrorDetail::new(ErrorCode::WorkerFailed, message);
    let response = ctx
        .state
        .http
        .post(format!(
            "{}/v1/inference",
            chosen.heartbeat.url.trim_end_matches('/')
        ))
        .json(&request)
        .send()
        .await
        .map_err(|e| failed(format!("cannot reach worker {worker_id}: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let code = if status.as_u16() == 503 {
            ErrorCode::QueueFull
        } else {
            ErrorCode::WorkerFailed
        };
        return Err(ErrorDetail::new(
            code,
            format!("worker {worker_id} answered {status}: {body}"),
        ));
    }
    let mut decoder = SseDecoder::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| failed(format!("the stream from worker {worker_id} broke: {e}")))?;
        for frame in decoder.feed(&chunk).map_err(|e| failed(e.to_string()))? {
            let event: InferenceEvent = serde_json::from_str(&frame.data).map_err(|e| {
                ErrorDetail::new(
                    ErrorCode::WorkerFailed,
                    format!("worker {worker_id} sent an unreadable event ({e})"),
                )
            })?;
            match event {
                InferenceEvent::Started { .. } => {}
                InferenceEvent::Token { t, i } => ctx.emit(JobEvent::Token { t, i }),
                InferenceEvent::End {
                    stop_reason,
                    prompt_tokens,
                    tokens,
                    ttft_ms,
                    tokens_per_s,
                } => {
                    ctx.result(json!({
                        "worker_id": worker_id,
                        "stop_reason": stop_reason,
                        "prompt_tokens": prompt_tokens,
                        "tokens": tokens,
                        "ttft_ms": ttft_ms,
                        "tokens_per_s": tokens_per_s,
                    }));
                    return Ok(());
                }
                InferenceEvent::Error { code, message } => {
                    return Err(ErrorDetail::new(
                        code,
                        format!("worker {worker_id}: {message}"),
                    ));
                }
            }
        }
    }
    Err(failed(format!(
        "worker {worker_id} closed the stream before the end"
    )))
}
