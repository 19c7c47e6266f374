//! Request bodies: read whole before any handler runs, within a time limit, a size limit,
//! and a process-wide budget of body bytes held at once (the body and what parsing it
//! makes stay bounded however many clients upload together).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The bounds on request bodies.
pub(crate) struct BodyBudget {
    /// KiB of bodies held at once, across every request.
    kib: Arc<Semaphore>,
    total_bytes: usize,
    /// The largest body of one request.
    max_bytes: usize,
    /// How long a client may take to send its body.
    timeout: Duration,
}

impl BodyBudget {
    pub(crate) fn new(total_bytes: usize, max_bytes: usize, timeout: Duration) -> Self {
        let kib = kib(total_bytes).min(Semaphore::MAX_PERMITS);
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib)),
            total_bytes,
            max_bytes,
            timeout,
        }
    }
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// The 413 for a body over `--max-body-bytes`.
pub(crate) fn too_large(max_bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over the limit of {max_bytes} bytes; send fewer rows per \
             request or start the server with a larger --max-body-bytes"
        ),
    )
}

/// Reserves the body's size (its `Content-Length`, or the most a body may be when it is
/// chunked) from the budget, reads it within the timeout, and holds the reservation until
/// the answer: 413 over the size limit (from `Content-Length`, before reading), 503 when
/// the budget is spent, 408 when the body is too slow.
pub(crate) async fn buffer_body(
    State(budget): State<Arc<BodyBudget>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the request body is compressed (Content-Encoding: {}), which this server \
                 does not read; send it uncompressed (tritonclient: no \
                 request_compression_algorithm)",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        )
        .into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let reserve = match declared {
        Some(n) if n > budget.max_bytes as u64 => {
            return too_large(budget.max_bytes).into_response();
        }
        Some(n) => n as usize,
        None if headers.contains_key(header::TRANSFER_ENCODING) => budget.max_bytes,
        None => 0,
    };
    let permits = u32::try_from(kib(reserve).max(1)).unwrap_or(u32::MAX);
    let Ok(permit) = budget.kib.clone().try_acquire_many_owned(permits) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is holding {} MiB of request bodies, its limit \
                 (--max-body-bytes-in-flight); retry shortly",
                budget.total_bytes >> 20
            ),
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(budget.timeout, axum::body::to_bytes(body, budget.max_bytes))
            .await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                let too_big = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return if too_big {
                    too_large(budget.max_bytes).into_response()
                } else {
                    ApiError::bad(format!("the request body could not be read: {e}"))
                        .into_response()
                };
            }
            Err(_) => {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s (--body-timeout-s)",
                        budget.timeout.as_secs_f64()
                    ),
                )
                .into_response();
            }
        };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(permit);
    response
}
