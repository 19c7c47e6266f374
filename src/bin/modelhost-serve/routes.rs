//! The HTTP routes and the state they share.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_http::cors::CorsLayer;

use modelhost::metrics::Metrics;

use crate::body::{BodyBudget, buffer_body};
use crate::error::{ApiError, ApiResult};
use crate::guard::{request_timeout, require_api_key};
use crate::observe::{HttpMetrics, RequestInfo, mark_route, observe};
use crate::oip::{EncodedResponse, HEADER_LENGTH, decode_request, encode_response};
use crate::openapi::openapi_document;
use crate::repository;
use crate::sets::ModelSet;

pub(crate) struct App {
    pub(crate) sets: Vec<Box<dyn ModelSet>>,
    pub(crate) metrics: Metrics,
    pub(crate) draining: AtomicBool,
    pub(crate) max_body_bytes: usize,
    /// The model repository's root, `ROOT/NAME/VERSION/`.
    pub(crate) models_root: PathBuf,
    /// Held while models are loaded, unloaded or rescanned: one change at a time.
    pub(crate) control: Mutex<()>,
    pub(crate) http: Arc<HttpMetrics>,
}

/// The guards around every route.
pub(crate) struct Guards {
    pub(crate) api_key: Option<Arc<str>>,
    pub(crate) request_timeout: Duration,
    pub(crate) cors: Option<CorsLayer>,
    pub(crate) bodies: Arc<BodyBudget>,
}

pub(crate) type AppState = State<Arc<App>>;

impl App {
    pub(crate) fn find(&self, name: &str) -> ApiResult<&dyn ModelSet> {
        self.sets
            .iter()
            .find(|s| s.names().iter().any(|n| n == name))
            .map(|s| &**s)
            .ok_or_else(|| {
                if self
                    .sets
                    .iter()
                    .any(|s| s.unloaded().iter().any(|(n, _)| n == name))
                {
                    return ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "model `{name}` is unloaded; load it again with POST \
                             /v2/repository/models/{name}/load"
                        ),
                    );
                }
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
        "extensions": ["binary_tensor_data", "model_repository"],
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
        let body = crate::request::body(app, body)?;
        let header_length = match headers.get(HEADER_LENGTH) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::bad(
                    "the Inference-Header-Content-Length header is not text; it must be the \
                     length in bytes of the JSON that starts the body, a whole number",
                )
            })?),
        };
        let request = decode_request(header_length, &body)?;
        let binary = request.binary_outputs.clone();
        let response = set.infer(model, version, request).await?;
        let info = RequestInfo {
            model: model.to_string(),
            version: Some(response.model_version.clone()),
            rows: (response.outputs.first())
                .and_then(|t| t.shape.first().copied())
                .unwrap_or(0),
        };
        encode_response(&response, &binary)
            .map(|encoded| (encoded, info))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
    };
    let (mut response, info) = match answer.await {
        Ok((encoded, info)) => (encoded_answer(encoded), info),
        Err(e) => {
            let info = RequestInfo {
                model: model.to_string(),
                version: version.map(str::to_string),
                rows: 0,
            };
            (e.into_response(), info)
        }
    };
    response.extensions_mut().insert(info);
    response
}

/// An encoded infer response: JSON, or JSON and binary tensor data.
pub(crate) fn encoded_answer(encoded: EncodedResponse) -> Response {
    let content_type = match encoded.header_length {
        Some(_) => "application/octet-stream",
        None => "application/json",
    };
    let mut response = encoded.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = encoded.header_length {
        headers.insert(HEADER_LENGTH, HeaderValue::from(length));
    }
    response
}

pub(crate) async fn metrics(State(app): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.encode_prometheus() + &app.http.encode(),
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

/// What a connection past `--max-connections` is served: the health checks answer as
/// usual (an orchestrator must not restart a busy server), everything else is a 503.
pub(crate) fn probe_router(app: Arc<App>, max_connections: usize) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .fallback(move || async move {
            let mut answer = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server has {max_connections} connections open, its limit \
                     (--max-connections); retry later"
                ),
            )
            .into_response();
            answer.extensions_mut().insert(RequestInfo::default());
            answer
        })
        .with_state(app)
}

pub(crate) fn router(app: Arc<App>, guards: &Guards) -> Router {
    let limit = app.max_body_bytes;
    let http = app.http.clone();
    let mut router = Router::new()
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
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route("/v2/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .merge(crate::openai::routes())
        .merge(crate::tei::routes())
        .merge(crate::tfserving::routes())
        .merge(crate::torchserve::routes())
        .route_layer(from_fn(mark_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(guards.bodies.clone(), buffer_body))
        .layer(from_fn_with_state(guards.request_timeout, request_timeout))
        .layer(axum::middleware::map_response(json_errors));
    // Outer layers see what the inner ones answer: a refused key is counted and logged.
    if let Some(key) = &guards.api_key {
        router = router.layer(from_fn_with_state(key.clone(), require_api_key));
    }
    if let Some(cors) = &guards.cors {
        router = router.layer(cors.clone());
    }
    router
        .layer(from_fn_with_state(http, observe))
        .with_state(app)
}
