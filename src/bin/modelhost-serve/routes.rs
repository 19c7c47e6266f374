//! The HTTP routes and the state they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use modelhost::metrics::Metrics;

use crate::error::{ApiError, ApiResult};
use crate::oip::InferRequest;
use crate::openapi::openapi_document;
use crate::sets::{ModelSet, binary_unsupported};

pub(crate) struct App {
    pub(crate) sets: Vec<Box<dyn ModelSet>>,
    pub(crate) metrics: Metrics,
    pub(crate) draining: AtomicBool,
    pub(crate) max_body_bytes: usize,
    /// Most inputs in one request of the OpenAI, TEI and TF Serving routes.
    pub(crate) max_inputs: usize,
}

pub(crate) type AppState = State<Arc<App>>;

impl App {
    pub(crate) fn find(&self, name: &str) -> ApiResult<&dyn ModelSet> {
        self.sets
            .iter()
            .find(|s| s.names().iter().any(|n| n == name))
            .map(|s| &**s)
            .ok_or_else(|| {
                let known: Vec<String> = self.sets.iter().flat_map(|s| s.names()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no model named `{name}`; this server serves {known:?}"),
                )
            })
    }
}

pub(crate) fn health_answer(key: &str, ok: bool) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ key: ok }))).into_response()
}

pub(crate) async fn live(State(app): AppState) -> Response {
    health_answer("live", app.sets.iter().all(|s| s.all_live()))
}

pub(crate) async fn ready(State(app): AppState) -> Response {
    let ok = !app.draining.load(Ordering::Relaxed) && app.sets.iter().all(|s| s.all_ready());
    health_answer("ready", ok)
}

pub(crate) async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "modelhost",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository"],
    }))
    .into_response()
}

pub(crate) async fn model_metadata(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
) -> Response {
    reply(app.find(&model).and_then(|s| s.metadata(&model, None)))
}

pub(crate) async fn version_metadata(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
) -> Response {
    reply(
        app.find(&model)
            .and_then(|s| s.metadata(&model, Some(&version))),
    )
}

pub(crate) async fn model_ready(State(app): AppState, UrlPath(model): UrlPath<String>) -> Response {
    model_ready_answer(&app, &model, None)
}

pub(crate) async fn version_ready(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
) -> Response {
    model_ready_answer(&app, &model, Some(&version))
}

pub(crate) fn model_ready_answer(app: &App, model: &str, version: Option<&str>) -> Response {
    match app.find(model).and_then(|s| s.ready(model, version)) {
        Ok(ok) => {
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, axum::Json(json!({ "name": model, "ready": ok }))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) fn reply(answer: ApiResult<Value>) -> Response {
    match answer {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn infer(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_answer(&app, &model, None, &headers, body).await
}

pub(crate) async fn infer_version(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_answer(&app, &model, Some(&version), &headers, body).await
}

pub(crate) async fn infer_answer(
    app: &App,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let set = app.find(model)?;
        if let Some(version) = version {
            // An unknown version is a 404 whatever the body holds.
            set.ready(model, Some(version))?;
        }
        if headers.contains_key("inference-header-content-length") {
            return Err(binary_unsupported());
        }
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is over the limit of {} bytes; send fewer rows per \
                         request or start the server with a larger --max-body-bytes",
                        app.max_body_bytes
                    ),
                )
            } else {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        })?;
        let request: InferRequest = serde_json::from_slice(&body).map_err(|e| {
            let what = if e.is_data() {
                "the request is not an infer request"
            } else {
                "the request body is not valid JSON"
            };
            ApiError::bad(format!(
                "{what}: {e}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \
                 \"data\"}}]}} (see /v2/openapi.json)"
            ))
        })?;
        set.infer(model, version, request).await
    };
    match answer.await {
        Ok(response) => axum::Json(response).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn repository_index(State(app): AppState) -> Response {
    let mut index = Vec::new();
    for set in &app.sets {
        for name in set.names() {
            for (version, ready) in set.versions(&name) {
                index.push(json!({
                    "name": name,
                    "version": version,
                    "state": if ready { "READY" } else { "UNAVAILABLE" },
                    "kind": set.kind().name(),
                }));
            }
        }
    }
    axum::Json(Value::Array(index)).into_response()
}

pub(crate) async fn metrics(State(app): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.encode_prometheus(),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    axum::Json(openapi_document()).into_response()
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {uri}; the endpoints are listed at GET /v2/openapi.json"),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}; see GET /v2/openapi.json for the methods"),
    )
}

/// Any error answer that is not JSON yet (an extractor's rejection) becomes
/// `{"error": "..."}`.
pub(crate) async fn json_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status().as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts.status.to_string()
    } else {
        text
    };
    let mut answer = ApiError::new(parts.status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .merge(crate::openai::routes())
        .merge(crate::tei::routes())
        .merge(crate::tfserving::routes())
        .merge(crate::torchserve::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(app)
}
