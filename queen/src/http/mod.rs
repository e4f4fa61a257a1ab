//! The queen's HTTP API. Transport only: handlers parse requests into protocol types
//! and hand them to the job runner or the registries.

mod auth;
mod cluster;
mod dashboard;
mod error;
mod jobs;
mod openai;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, middleware};
use rbee_protocol::{ErrorCode, WorkerHeartbeat};
use serde_json::json;

pub use error::ApiError;

use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/build-info", get(build_info))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route(
            "/v1/jobs/{id}",
            axum::routing::delete(jobs::cancel).get(jobs::get),
        )
        .route("/v1/jobs/{id}/stream", get(jobs::stream))
        .route("/v1/cluster/stream", get(cluster::stream))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    // The dashboard's assets carry no data, so they are served without the token; the
    // page asks for it and sends it with every API call.
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/health", get(health))
        .route("/v1/worker-heartbeat", post(heartbeat))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::map_response(json_rejections))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": rbee_protocol::VERSION}))
}

async fn build_info() -> Json<serde_json::Value> {
    Json(json!({
        "version": rbee_protocol::VERSION,
        "features": crate::features(),
        "build_timestamp": build_timestamp(),
    }))
}

async fn shutdown(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    tracing::info!("shutdown requested over HTTP");
    state.shutdown.cancel();
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "shutting_down"})),
    )
}

/// A heartbeat is accepted with the worker's own token (see [`crate::tokens`]) or the
/// API token; without an API token the queen is loopback-only and takes any.
async fn heartbeat(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let heartbeat: WorkerHeartbeat = error::parse_json(&body)?;
    if !rbee_protocol::validate::is_valid_name(&heartbeat.worker_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("worker_id {:?} is not a valid name", heartbeat.worker_id),
        ));
    }
    let presented = auth::bearer(&headers);
    let accepted = match &state.config.queen.api_token {
        None => true,
        Some(api_token) => {
            auth::same(presented, api_token)
                || state.worker_token_matches(&heartbeat.worker_id, presented)
        }
    };
    if !accepted {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            format!("heartbeat of worker {} without its token", heartbeat.worker_id),
        )
        .with_hint("workers spawned by this queen carry their token; a worker started by hand needs RBEE_WORKER_TOKEN set to the API token"));
    }
    state.workers.record(heartbeat);
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl axum::response::IntoResponse {
    let text = state.metrics.render(&state.metrics_snapshot());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
}

/// Gives the rejections axum answers by itself (a body over its size limit, a method a
/// route does not take) the JSON error body that every other error has, so a client
/// parses one shape for every 4xx.
async fn json_rejections(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || json {
        return response;
    }
    let (message, hint) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "the request body is larger than the queen accepts (2 MiB)".to_owned(),
            "send a smaller body; models travel with `model push`, not over this API",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "this route does not take that method".to_owned(),
            "the `Allow` header lists the methods it takes",
        ),
        other => (
            other.canonical_reason().unwrap_or("bad request").to_owned(),
            "see the queen's routes in DESIGN.md",
        ),
    };
    let mut answer = ApiError::new(status, ErrorCode::BadRequest, message)
        .with_hint(hint)
        .into_response();
    if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
        answer
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    answer
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route {}", uri.path()),
    )
    .with_hint("the queen's routes are / (the dashboard), /health, /metrics, /v1/build-info, /v1/jobs, /v1/cluster/stream, /v1/shutdown, /v1/models, /v1/chat/completions, /v1/completions")
}

/// The build time in RFC 3339, from the unix time `build.rs` recorded.
fn build_timestamp() -> String {
    let secs: u64 = env!("RBEE_BUILD_UNIX_TIME").parse().unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
