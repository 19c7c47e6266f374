//! OpenAI's embeddings API, `POST /v1/embeddings`, for text embedders: what the official
//! SDKs and the many tools built on them send.
//!
//! `input` is a text or a list of texts (token-id arrays are refused), `model` names the
//! embedder (optional when only one is served), `encoding_format` is `float` (default) or
//! `base64` (little-endian f32, what the Python SDK asks for), `dimensions` keeps the first
//! n components and renormalises them. A text past the model's maximum sequence length is
//! truncated, as sentence-transformers does; `usage` counts the tokens the model read,
//! special tokens included. Errors are OpenAI's `{"error": {"message", "type", "param",
//! "code"}}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use modelhost::models::sentence::EmbedRequest;
use modelhost::registry::VersionHandle;

use crate::error::{ApiError, ApiResult};
use crate::kind::Kind;
use crate::limits::admission;
use crate::request;
use crate::routes::{App, AppState};
use crate::sets::predict_rows;
use crate::text::{TextHandle, pick};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/embeddings", post(embeddings))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

/// An error in OpenAI's shape, naming the request field at fault.
struct OpenAiError {
    error: ApiError,
    param: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        OpenAiError { error, param: None }
    }
}

fn bad(param: &'static str, message: String) -> OpenAiError {
    OpenAiError {
        error: ApiError::bad(message),
        param: Some(param),
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.error.status;
        let (kind, code) = match status.as_u16() {
            404 => ("invalid_request_error", Some("model_not_found")),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            s if s >= 500 => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        let param = match (self.param, code) {
            (None, Some("model_not_found")) => Some("model"),
            (param, _) => param,
        };
        let body = json!({"error": {
            "message": self.error.message, "type": kind, "param": param, "code": code,
        }});
        let mut response = self.error.into_response();
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response
    }
}

/// `input` as texts: a string or a list of strings.
fn texts(input: Value) -> Result<Vec<String>, OpenAiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![text]),
        Value::Array(items) => items,
        Value::Null => {
            return Err(bad(
                "input",
                "`input` is missing; send a text or a list of texts".into(),
            ));
        }
        other => {
            return Err(bad(
                "input",
                format!("`input` is {other}; send a text or a list of texts"),
            ));
        }
    };
    if items.is_empty() {
        return Err(bad(
            "input",
            "`input` is an empty list; send at least one text".into(),
        ));
    }
    admission()
        .check_count(items.len(), "inputs")
        .map_err(|error| OpenAiError {
            error,
            param: Some("input"),
        })?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text),
            Value::Number(_) | Value::Array(_) => Err(bad(
                "input",
                "token-id arrays are not supported: this server tokenizes with the model's own \
                 tokenizer; send the texts as strings"
                    .into(),
            )),
            other => Err(bad(
                "input",
                format!("`input[{i}]` is {other}; send texts as strings"),
            )),
        })
        .collect()
}

async fn embeddings(State(app): AppState, body: Result<Bytes, BytesRejection>) -> Response {
    match embeddings_answer(&app, body).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn embeddings_answer(
    app: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<EmbeddingsResponse, OpenAiError> {
    let expected = "{\"input\": \"text\" or [\"texts\"], \"model\": \"name\"}";
    let request: EmbeddingsRequest = request::json(app, body, expected)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(
                "encoding_format",
                format!("`encoding_format` is {other:?}; use \"float\" or \"base64\""),
            ));
        }
    };
    let texts = texts(request.input)?;
    let (name, handle) = pick(
        app,
        request.model.as_deref(),
        &[Kind::TextEmbedder],
        "/v1/embeddings",
    )?;
    let TextHandle::Embedder(handle) = handle else {
        return Err(ApiError::bad(format!("model `{name}` is not a text embedder")).into());
    };
    let dim = handle.predictor().model().dim();
    let dimensions = match request.dimensions {
        None | Some(Value::Null) => dim,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=dim as u64).contains(&n) => n as usize,
            _ => {
                return Err(bad(
                    "dimensions",
                    format!("`dimensions` is {v}; model `{name}` gives 1 to {dim} dimensions"),
                ));
            }
        },
    };
    let (embeddings, tokens) = embed_counting(&handle, texts).await?;
    let data = (embeddings.into_iter().enumerate())
        .map(|(index, e)| {
            let v = shorten(e, dimensions);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: match base64 {
                    true => Vector::Base64(base64::encode(le_bytes(&v))),
                    false => Vector::Float(v),
                },
            }
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: name,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// The embeddings of `texts` and the number of tokens the model read for them.
async fn embed_counting(
    handle: &VersionHandle<crate::text::Embedder>,
    texts: Vec<String>,
) -> ApiResult<(Vec<Vec<f32>>, usize)> {
    let counted = handle.clone();
    let counting = texts.clone();
    let tokens = crate::limits::admission()
        .blocking(move || {
            let model = counted.predictor().model();
            let many = counting.len() > 1;
            counting.iter().enumerate().try_fold(0, |sum, (i, text)| {
                let tokens = model.tokenize(text).map_err(|e| match many {
                    true => ApiError::bad(format!("input[{i}]: {e}")),
                    false => ApiError::bad(e.to_string()),
                })?;
                Ok::<_, ApiError>(sum + tokens.len())
            })
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let requests = texts.into_iter().map(EmbedRequest::from).collect();
    let embeddings = predict_rows(handle, requests).await?;
    Ok((
        embeddings.into_iter().map(|e| e.into_vec()).collect(),
        tokens,
    ))
}

/// The first `dimensions` components, renormalised to unit length when any were cut.
fn shorten(mut v: Vec<f32>, dimensions: usize) -> Vec<f32> {
    if dimensions < v.len() {
        v.truncate(dimensions);
        normalize(&mut v);
    }
    v
}

/// Scales `v` to unit length (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_vectors_have_unit_length_and_keep_direction() {
        let v = shorten(vec![3.0, 4.0, 12.0], 2);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(shorten(vec![1.0, 2.0], 2), vec![1.0, 2.0]);
        assert_eq!(shorten(vec![0.0, 0.0, 1.0], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        assert_eq!(base64::encode(le_bytes(&[1.0, -2.0])), "AACAPwAAAMA=");
    }
}
