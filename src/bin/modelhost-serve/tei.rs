//! Hugging Face text-embeddings-inference's API: `POST /embed` (text embedders),
//! `POST /rerank` (cross-encoders) and `POST /tokenize` (text embedders and classifiers).
//!
//! TEI serves one model; here a request may name one with the `model` query parameter
//! (`/embed?model=minilm`) or the `X-Model` header, and without either the only model of
//! the route's kinds answers. As in TEI, `truncate` defaults to false: a text past the
//! model's maximum sequence length is refused (413) unless the request says
//! `"truncate": true`. Errors are TEI's `{"error": "...", "error_type": "..."}`: 413 and
//! 422 `Validation`, 400 `Empty`, 404 unknown model, 429 `Overloaded`, 503 `Unhealthy`,
//! 500 `Backend`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use modelhost::models::classifier::TextPair;

use crate::error::{ApiError, ApiResult};
use crate::kind::Kind;
use crate::limits::admission;
use crate::openai::normalize;
use crate::request;
use crate::routes::{App, AppState};
use crate::sets::predict_rows;
use crate::text::{TextHandle, pick};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/embed", post(embed))
        .route("/rerank", post(rerank))
        .route("/tokenize", post(tokenize))
}

/// An error in TEI's shape; `empty`: TEI's 400 `Empty` (no inputs).
struct TeiError {
    error: ApiError,
    empty: bool,
}

impl From<ApiError> for TeiError {
    fn from(error: ApiError) -> Self {
        TeiError {
            error,
            empty: false,
        }
    }
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        let (status, kind) = match self.error.status.as_u16() {
            400 if self.empty => (StatusCode::BAD_REQUEST, "Empty"),
            400 => (StatusCode::UNPROCESSABLE_ENTITY, "Validation"),
            429 => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
            503 => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
            s if s >= 500 => (self.error.status, "Backend"),
            _ => (self.error.status, "Validation"),
        };
        let body = json!({"error": self.error.message, "error_type": kind});
        let mut response = ApiError::new(status, "").into_response();
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response
    }
}

fn empty(field: &str) -> TeiError {
    TeiError {
        error: ApiError::bad(format!("`{field}` is empty; send at least one text")),
        empty: true,
    }
}

/// The `model` query parameter, or the `X-Model` header.
fn model_name(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let query = (uri.query().unwrap_or_default().split('&'))
        .find_map(|pair| pair.strip_prefix("model="))
        .map(percent_decoded);
    query.or_else(|| {
        (headers.get("x-model"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// `%XX` escapes and `+` decoded (a model name is rarely more than letters and digits).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `inputs`: a text or a list of texts, at most `--max-client-batch-size`.
fn texts(inputs: Value, field: &str) -> Result<Vec<String>, TeiError> {
    let items = match inputs {
        Value::String(text) => return Ok(vec![text]),
        Value::Array(items) => items,
        other => {
            return Err(ApiError::bad(format!(
                "`{field}` is {other}; send a text or a list of texts"
            ))
            .into());
        }
    };
    if items.is_empty() {
        return Err(empty(field));
    }
    admission().check_count(items.len(), field)?;
    (items.into_iter().enumerate())
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text),
            Value::Number(_) | Value::Array(_) => Err(ApiError::bad(
                "token-id inputs are not supported; send the texts as strings",
            )
            .into()),
            other => Err(ApiError::bad(format!("`{field}[{i}]` is {other}; send strings")).into()),
        })
        .collect()
}

fn direction(truncation_direction: Option<&str>) -> ApiResult<()> {
    match truncation_direction {
        None | Some("right" | "Right") => Ok(()),
        Some(other) => Err(ApiError::bad(format!(
            "`truncation_direction` {other:?} is not supported; texts are cut on the right"
        ))),
    }
}

fn too_long(i: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "input {i} has more than {max} tokens, the most the model reads; send a shorter \
             text or \"truncate\": true"
        ),
    )
}

#[derive(Deserialize)]
struct EmbedRequest {
    #[serde(default)]
    inputs: Value,
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    /// One of the model's prompts (`config_sentence_transformers.json`); without it the
    /// model's default prompt, if any.
    #[serde(default)]
    prompt_name: Option<String>,
}

async fn embed(
    State(app): AppState,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match embed_answer(&app, model_name(&uri, &headers), body).await {
        Ok(vectors) => axum::Json(vectors).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn embed_answer(
    app: &App,
    model: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<Vec<f32>>, TeiError> {
    let request: EmbedRequest = request::json(app, body, "{\"inputs\": \"text\" or [\"texts\"]}")?;
    direction(request.truncation_direction.as_deref())?;
    let texts = texts(request.inputs, "inputs")?;
    let request_prompt_name = request.prompt_name.clone();
    let (name, handle) = pick(app, model.as_deref(), &[Kind::TextEmbedder], "/embed")?;
    let TextHandle::Embedder(embedder) = &handle else {
        return Err(ApiError::bad(format!("model `{name}` is not a text embedder")).into());
    };
    let normalizes = embedder.predictor().model().normalizes();
    if request.normalize == Some(false) && normalizes {
        return Err(ApiError::bad(format!(
            "model `{name}` normalises its embeddings (a Normalize module in its modules.json); \
             \"normalize\": false cannot undo that: leave it out or send true"
        ))
        .into());
    }
    let model = embedder.predictor().model();
    let prompt = match &request.prompt_name {
        Some(name) => prompt_text(model, name)?,
        None => model
            .default_prompt_name()
            .and_then(|n| model.prompt(n))
            .unwrap_or(""),
    };
    if !request.truncate.unwrap_or(false) {
        // What the model reads: the prompt, then the text.
        let read: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        refuse_truncated(&handle, &read).await?;
    }
    let requests = texts
        .into_iter()
        .map(|text| {
            let request = modelhost::models::sentence::EmbedRequest::new(text);
            match &request_prompt_name {
                Some(name) => request.with_prompt_name(name.clone()),
                None => request,
            }
        })
        .collect();
    let embeddings = predict_rows(embedder, requests).await?;
    let mut vectors: Vec<Vec<f32>> = embeddings.into_iter().map(|e| e.into_vec()).collect();
    if !normalizes && request.normalize != Some(false) {
        vectors.iter_mut().for_each(|v| normalize(v));
    }
    Ok(vectors)
}

/// The text of the embedder's prompt `name`; a 422 listing the model's prompts when it
/// has none of that name.
fn prompt_text<'m>(model: &'m crate::text::Embedder, name: &str) -> ApiResult<&'m str> {
    model.prompt(name).ok_or_else(|| {
        ApiError::bad(
            modelhost::error::InputError::UnknownPrompt {
                name: name.to_string(),
                known: model.prompt_names(),
            }
            .to_string(),
        )
    })
}

/// Refuses (413) a text the model would cut to its maximum sequence length.
async fn refuse_truncated(handle: &TextHandle, texts: &[String]) -> ApiResult<()> {
    let (texts, handle) = (texts.to_vec(), handle.clone());
    crate::limits::admission()
        .blocking(move || {
            for (i, text) in texts.iter().enumerate() {
                if let Some(tokens) = handle.tokens(text) {
                    let tokens = tokens?;
                    if tokens.truncated {
                        return Err(too_long(i, tokens.len()));
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[derive(Deserialize)]
struct RerankRequest {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    texts: Value,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
}

#[derive(Serialize)]
struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

async fn rerank(
    State(app): AppState,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match rerank_answer(&app, model_name(&uri, &headers), body).await {
        Ok(ranks) => axum::Json(ranks).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rerank_answer(
    app: &App,
    model: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<Rank>, TeiError> {
    let expected = "{\"query\": \"text\", \"texts\": [\"texts\"]}";
    let request: RerankRequest = request::json(app, body, expected)?;
    direction(request.truncation_direction.as_deref())?;
    let Some(query) = request.query else {
        return Err(ApiError::bad(format!("`query` is missing; expected {expected}")).into());
    };
    let texts = texts(request.texts, "texts")?;
    let (name, handle) = pick(app, model.as_deref(), &[Kind::CrossEncoder], "/rerank")?;
    let TextHandle::CrossEncoder(ranker) = handle else {
        return Err(ApiError::bad(format!("model `{name}` is not a cross-encoder")).into());
    };
    let pairs: Vec<TextPair> = (texts.iter())
        .map(|t| TextPair::new(query.clone(), t.clone()))
        .collect();
    if !request.truncate.unwrap_or(false) {
        let (checking, ranker) = (pairs.clone(), ranker.clone());
        crate::limits::admission()
            .blocking(move || {
                let model = ranker.predictor().model();
                for (i, pair) in checking.iter().enumerate() {
                    let tokens = model
                        .tokens(pair)
                        .map_err(|e| ApiError::bad(format!("text {i}: {e}")))?;
                    if tokens.truncated {
                        return Err(too_long(i, tokens.len()));
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    }
    let scores = predict_rows(&ranker, pairs).await?;
    let mut ranks: Vec<Rank> = (scores.into_iter().zip(texts).enumerate())
        .map(|(index, (r, text))| Rank {
            index,
            score: if request.raw_scores { r.logit } else { r.score },
            text: request.return_text.then_some(text),
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(ranks)
}

#[derive(Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    inputs: Value,
    #[serde(default)]
    add_special_tokens: Option<bool>,
    /// An embedder's prompt, tokenized before the text (offsets are then into the
    /// prompt followed by the text).
    #[serde(default)]
    prompt_name: Option<String>,
}

#[derive(Serialize)]
struct SimpleToken {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

async fn tokenize(
    State(app): AppState,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match tokenize_answer(&app, model_name(&uri, &headers), body).await {
        Ok(lists) => axum::Json(lists).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn tokenize_answer(
    app: &App,
    model: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<Vec<SimpleToken>>, TeiError> {
    let request: TokenizeRequest =
        request::json(app, body, "{\"inputs\": \"text\" or [\"texts\"]}")?;
    let texts = texts(request.inputs, "inputs")?;
    let kinds = [Kind::TextEmbedder, Kind::TextClassifier];
    let (name, handle) = pick(app, model.as_deref(), &kinds, "/tokenize")?;
    let prompt = match (&request.prompt_name, &handle) {
        (None, _) => String::new(),
        (Some(prompt), TextHandle::Embedder(h)) => {
            prompt_text(h.predictor().model(), prompt)?.to_string()
        }
        (Some(_), _) => {
            return Err(ApiError::bad(format!(
                "model `{name}` is not a text embedder; `prompt_name` applies to embedders"
            ))
            .into());
        }
    };
    let specials = request.add_special_tokens.unwrap_or(true);
    let lists = crate::limits::admission()
        .blocking(move || {
            (texts.iter().enumerate())
                .map(|(i, text)| {
                    let text = format!("{prompt}{text}");
                    let tokens = handle.tokens(&text).unwrap_or_else(|| {
                        Err(ApiError::bad("/tokenize serves single-text models"))
                    });
                    let tokens =
                        tokens.map_err(|e| ApiError::bad(format!("input {i}: {}", e.message)))?;
                    Ok(tokens
                        .tokens
                        .into_iter()
                        .filter(|t| specials || !t.special)
                        .map(|t| SimpleToken {
                            id: t.id,
                            text: t.text,
                            special: t.special,
                            start: t.start,
                            stop: t.stop,
                        })
                        .collect())
                })
                .collect::<ApiResult<Vec<Vec<SimpleToken>>>>()
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(lists)
}
