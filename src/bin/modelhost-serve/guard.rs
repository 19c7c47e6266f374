//! Request guards: the optional API key, the request timeout and CORS.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::error::ApiError;

/// Paths that answer without the API key: orchestrators probe them.
const OPEN_PATHS: [&str; 3] = ["/v2/health/live", "/v2/health/ready", "/ping"];

/// Refuses requests without `Authorization: Bearer KEY` (health probes excepted).
pub(crate) async fn require_api_key(
    State(key): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::OPTIONS || OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), key.as_bytes()) => next.run(request).await,
        _ => {
            let mut answer = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs an API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
            answer
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            answer
        }
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Answers 503 when a request (reading its body included) takes longer than `limit`;
/// dropping the handler cancels whatever it queued.
pub(crate) async fn request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s (--request-timeout-s) and was cancelled; \
                 send fewer rows per request or retry",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// CORS for the given origins (`*`: any), or `None` when none is configured.
pub(crate) fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| format!("--cors-allow-origin {o:?} is not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers(Any),
    ))
}
