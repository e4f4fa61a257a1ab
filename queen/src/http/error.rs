//! HTTP errors: every failure is the protocol's error body with a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rbee_protocol::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail::new(code, message),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.detail.hint = Some(hint.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(ErrorBody::from(self.detail))).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Parses a JSON body, turning serde's message (with line and column) into a 400.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let (code, hint) = if e.is_syntax() || e.is_eof() {
            (ErrorCode::InvalidJson, "the body must be one JSON object")
        } else {
            (
                ErrorCode::BadRequest,
                "see the operation vocabulary in DESIGN.md",
            )
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, format!("request body: {e}")).with_hint(hint)
    })
}
