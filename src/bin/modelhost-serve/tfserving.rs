//! TensorFlow Serving's REST API, which KServe's V1 protocol shares:
//! `POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict` and `GET /v1/models/{m}[/versions/{v}]`.
//!
//! A request holds rows, `{"instances": [row, ...]}` (answered `{"predictions": [...]}`),
//! or columns, `{"inputs": {"<input>": [value, ...], ...}}` or `{"inputs": [row, ...]}`
//! (answered `{"outputs": [...]}`); rows and answers are each kind's natural JSON (see
//! `natural.rs`). The status answer is TF Serving's `model_version_status`, with KServe
//! V1's `name` and `ready` beside it. Errors are `{"error": "..."}`, as in TF Serving.
//!
//! axum's routes cannot put `:predict` after a parameter, so the last path segment is
//! taken whole and split at its last `:`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::limits::admission;
use crate::natural::NaturalRows;
use crate::request;
use crate::routes::{App, AppState, reply};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/models/{model}", get(status).post(predict))
        .route(
            "/v1/models/{model}/versions/{version}",
            get(version_status).post(predict_version),
        )
        .route("/v1/models/{model}/labels/{label}", post(predict_version))
}

/// `name:verb` → `name`, refusing any verb but `predict`.
fn predict_target<'a>(segment: &'a str, path: &str) -> ApiResult<&'a str> {
    match segment.rsplit_once(':') {
        Some((target, "predict")) => Ok(target),
        Some((target, verb)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("`:{verb}` is not served; send POST {path}{target}:predict"),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint POST {path}{segment}; send POST {path}{segment}:predict"),
        )),
    }
}

async fn predict(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let name = predict_target(&model, "/v1/models/")?;
        predict_answer(&app, name, None, body).await
    };
    reply(answer.await)
}

async fn predict_version(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let path = format!("/v1/models/{model}/versions/");
        let version = predict_target(&version, &path)?;
        predict_answer(&app, &model, Some(version), body).await
    };
    reply(answer.await)
}

#[derive(Deserialize)]
struct PredictRequest {
    #[serde(default)]
    instances: Option<Value>,
    #[serde(default)]
    inputs: Option<Value>,
}

const EXPECTED: &str = "{\"instances\": [row, ...]} or {\"inputs\": {\"<input>\": [value, ...]}}";

async fn predict_answer(
    app: &App,
    model: &str,
    version: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Value> {
    let set = app.find(model)?;
    if let Some(version) = version {
        // An unknown version is a 404 whatever the body holds.
        set.ready(model, Some(version))?;
    }
    let request: PredictRequest = request::json(app, body, EXPECTED)?;
    let (rows, key) = match (request.instances, request.inputs) {
        (Some(instances), None) => (rows_of(instances, "instances")?, "predictions"),
        (None, Some(inputs)) => (columns(inputs)?, "outputs"),
        _ => {
            return Err(ApiError::bad(format!(
                "send either `instances` (rows) or `inputs` (columns): {EXPECTED}"
            )));
        }
    };
    admission().check_count(rows.len(), "rows")?;
    let (_, answers) = set
        .predict_natural(model, version, NaturalRows::Json(rows))
        .await?;
    Ok(json!({ key: answers }))
}

fn rows_of(value: Value, field: &str) -> ApiResult<Vec<Value>> {
    match value {
        Value::Array(rows) if !rows.is_empty() => Ok(rows),
        other => Err(ApiError::bad(format!(
            "`{field}` is {}; send a non-empty list of rows",
            if other.is_array() {
                "empty"
            } else {
                "not a list"
            }
        ))),
    }
}

/// Columns `{"<input>": [v0, v1, ...]}` as rows `{"<input>": v0}`, ...; a list is rows
/// already.
fn columns(inputs: Value) -> ApiResult<Vec<Value>> {
    let columns = match inputs {
        Value::Object(columns) if !columns.is_empty() => columns,
        other => return rows_of(other, "inputs"),
    };
    let mut rows: Option<Vec<Map<String, Value>>> = None;
    for (name, column) in columns {
        let Value::Array(values) = column else {
            return Err(ApiError::bad(format!(
                "input `{name}` is not a list; columns are {{\"<input>\": [value, ...]}}"
            )));
        };
        let rows = rows.get_or_insert_with(|| vec![Map::new(); values.len()]);
        if rows.len() != values.len() || values.is_empty() {
            return Err(ApiError::bad(format!(
                "input `{name}` has {} values and another input {}; send every input with the \
                 same number of values, at least one",
                values.len(),
                rows.len()
            )));
        }
        for (row, value) in rows.iter_mut().zip(values) {
            row.insert(name.clone(), value);
        }
    }
    Ok(rows
        .unwrap_or_default()
        .into_iter()
        .map(Value::Object)
        .collect())
}

async fn status(State(app): AppState, UrlPath(model): UrlPath<String>) -> Response {
    if model.contains(':') {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("GET is not allowed on /v1/models/{model}; POST it"),
        )
        .into_response();
    }
    reply(status_answer(&app, &model, None))
}

async fn version_status(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
) -> Response {
    reply(status_answer(&app, &model, Some(&version)))
}

fn status_answer(app: &App, model: &str, version: Option<&str>) -> ApiResult<Value> {
    let set = app.find(model)?;
    let metadata = set.metadata(model, version)?;
    let listed: Vec<&str> = (metadata["versions"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let versions: Vec<(String, bool)> = (set.versions(model).into_iter())
        .filter(|(v, _)| listed.contains(&v.as_str()))
        .collect();
    let statuses: Vec<Value> = (versions.iter().rev())
        .map(|(v, ready)| {
            json!({
                "version": v,
                "state": if *ready { "AVAILABLE" } else { "LOADING" },
                "status": {"error_code": "OK", "error_message": ""},
            })
        })
        .collect();
    Ok(json!({
        "name": model,
        "ready": versions.iter().all(|(_, ready)| *ready),
        "model_version_status": statuses,
    }))
}
