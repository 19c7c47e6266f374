//! TorchServe's inference API: `POST /predictions/{m}[/{v}]` with the row as the raw body
//! (the text itself for a text model, the PNG or JPEG file for an image classifier, the
//! JSON row for the others, or any kind's natural JSON sent as `application/json`),
//! answered with the output's natural JSON; and `GET /ping`. Errors are TorchServe's
//! `{"code": 404, "type": "ModelNotFoundException", "message": "..."}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::natural::NaturalRows;
use crate::request;
use crate::routes::{App, AppState};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ping", get(ping))
        .route("/predictions/{model}", post(predict))
        .route("/predictions/{model}/{version}", post(predict_version))
}

/// An error in TorchServe's shape.
struct TorchServeError(ApiError);

impl IntoResponse for TorchServeError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let kind = match status.as_u16() {
            404 => "ModelNotFoundException",
            413 => "RequestEntityTooLargeException",
            429 | 503 => "ServiceUnavailableException",
            s if s >= 500 => "InternalServerException",
            _ => "BadRequestException",
        };
        let body = json!({"code": status.as_u16(), "type": kind, "message": self.0.message});
        let mut response = self.0.into_response();
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response
    }
}

async fn ping(State(app): AppState) -> Response {
    let ok = !app.draining.load(Ordering::Relaxed) && app.sets.iter().all(|s| s.all_ready());
    let (status, word) = match ok {
        true => (StatusCode::OK, "Healthy"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
    };
    (status, axum::Json(json!({ "status": word }))).into_response()
}

async fn predict(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(predict_answer(&app, &model, None, &headers, body).await)
}

async fn predict_version(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(predict_answer(&app, &model, Some(&version), &headers, body).await)
}

fn answer(result: ApiResult<Value>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => TorchServeError(e).into_response(),
    }
}

async fn predict_answer(
    app: &App,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Value> {
    let set = app.find(model)?;
    if let Some(version) = version {
        set.ready(model, Some(version))?;
    }
    let bytes = request::body(app, body)?;
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "the body is empty; send the input as the body (a text, an image file, or JSON)",
        ));
    }
    let rows = NaturalRows::Body {
        bytes,
        json: request::is_json(headers),
    };
    let (_, mut answers) = set.predict_natural(model, version, rows).await?;
    Ok(answers.pop().unwrap_or(Value::Null))
}
