//! What every protocol does with a request body before its own work: the size limit, JSON
//! parsing with a message that says what was expected, and the limit on inputs.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::routes::App;

/// The body, or a 413 naming the limit (`--max-body-bytes`).
pub(crate) fn body(app: &App, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::body::too_large(app.max_body_bytes)
        } else {
            ApiError::new(rejection.status(), rejection.body_text())
        }
    })
}

/// The body as JSON of type `T`; `expected` says what a request looks like.
pub(crate) fn json<T: DeserializeOwned>(
    app: &App,
    raw: Result<Bytes, BytesRejection>,
    expected: &str,
) -> ApiResult<T> {
    let bytes = body(app, raw)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = if e.is_data() {
            "the request does not have the expected fields"
        } else {
            "the request body is not valid JSON"
        };
        ApiError::bad(format!("{what}: {e}; expected {expected}"))
    })
}

/// Whether the request declares a JSON body.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v.starts_with("application/json") || v.contains("+json")
        })
}
