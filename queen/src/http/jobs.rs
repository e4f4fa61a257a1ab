//! Job routes: submit an operation, stream its events (SSE), list, cancel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use rbee_protocol::{ErrorCode, Operation};
use serde_json::json;

use super::ApiError;
use super::error::parse_json;
use crate::jobs::{Job, JobSummary};
use crate::state::AppState;

pub async fn submit(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the queen is shutting down",
        ));
    }
    let operation: Operation = parse_json(&body)?;
    operation.validate().map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        detail: e.to_detail(),
    })?;
    let job = crate::operations::spawn(state, operation);
    Ok((
        StatusCode::CREATED,
        Json(json!({"job_id": job.id, "sse_url": format!("/v1/jobs/{}/stream", job.id)})),
    ))
}

pub async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<JobSummary>> {
    Json(state.jobs.list())
}

fn find(state: &AppState, id: &str) -> Result<Arc<Job>, ApiError> {
    state.jobs.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no job {id}"),
        )
        .with_hint("finished jobs are forgotten after the queen's job TTL; see GET /v1/jobs")
    })
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<JobSummary>, ApiError> {
    Ok(Json(find(&state, &id)?.summary()))
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobSummary>), ApiError> {
    let job = find(&state, &id)?;
    job.cancel("cancelled by the operator");
    Ok((StatusCode::ACCEPTED, Json(job.summary())))
}

/// SSE of a job from its first event (or after `Last-Event-ID` on reconnect).
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = find(&state, &id)?;
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    let events = job.subscribe(from).map(|(seq, event)| {
        let mut frame = Event::default().event(event.kind()).data(event.sse_data());
        if let Some(seq) = seq {
            frame = frame.id(seq.to_string());
        }
        Ok(frame)
    });
    let keepalive = Duration::from_millis(state.config.queen.keepalive_ms.max(10));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive)))
}
