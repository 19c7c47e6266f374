//! Errors as clients see them: a status and `{"error": "..."}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use modelhost::error::{CapacityError, PredictError};
use modelhost::registry::RegistryError;

use crate::oip::Malformed;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn registry(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownModel { .. } | RegistryError::UnknownVersion { .. } => {
                Self::new(StatusCode::NOT_FOUND, e.to_string())
            }
            RegistryError::Predict(e) => Self::predict(e, None),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    /// Input errors → 400, a full queue → 429, not computed for lifecycle reasons
    /// (shutting down, past the deadline, worker gone) → 503, the model failed → 500.
    pub(crate) fn predict(e: PredictError, row: Option<usize>) -> Self {
        let status = match &e {
            PredictError::Input(_) => StatusCode::BAD_REQUEST,
            PredictError::Capacity(CapacityError::QueueFull { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PredictError::Capacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match row {
            Some(row) => format!("row {row}: {e}"),
            None => e.to_string(),
        };
        Self::new(status, message)
    }
}

/// A request that breaks the protocol is a 400 with its message.
impl From<Malformed> for ApiError {
    fn from(e: Malformed) -> Self {
        ApiError::bad(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
