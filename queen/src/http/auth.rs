//! API-token check: when a token is configured, every protected route needs
//! `Authorization: Bearer <token>`, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rbee_protocol::ErrorCode;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::state::AppState;

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.config.queen.api_token.as_deref() else {
        return Ok(next.run(request).await);
    };
    if same(bearer(request.headers()), expected) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong API token",
        )
        .with_hint("send `Authorization: Bearer <token>`; rbee-keeper reads it from config.toml"))
    }
}

/// The bearer token of a request, or `""`.
pub fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Constant-time equality, so the time taken tells nothing about the token.
pub fn same(presented: &str, expected: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}
