//! Each kind's rows and answers in its natural JSON: what TensorFlow Serving and KServe V1
//! `instances` hold, what a TorchServe request body is, and what those protocols answer
//! (the library's own serde form of the output).
//!
//! | kind | one row | answer |
//! |---|---|---|
//! | text embedder | `"text"` or `{"text": "..."}`; TorchServe: the body is the text | `[f32, ...]` |
//! | text classifier | as the embedder | `{"label", "index", "score", "scores"}` |
//! | cross-encoder | `{"query": "...", "passage": "..."}` or `["query", "passage"]` | `{"score", "logit"}` |
//! | MLP classifier | `[f32; input_dim]` or `{"pixels": [...]}` | `{"label", "index", "score", "scores"}` |
//! | image classifier | `{"b64": "..."}` or a base64 string; TorchServe: the body is the PNG/JPEG file | `{"label", "index", "score", "scores"}` |
//! | tabular model | `{"feature": value, ...}` | `{"class": {...}}` or `{"value": f64}` |
//!
//! A single-input model also takes its row as `{"<input name>": row}` (TF Serving's named
//! row form). A TorchServe body that is not the text or image itself is that JSON.

use serde_json::Value;

use modelhost::Model;
use modelhost::models::Classification;
use modelhost::models::classifier::{CrossEncoder, Relevance, TextClassifier, TextPair};
use modelhost::models::image::ImageClassifier;
use modelhost::models::mlp::MlpClassifier;
use modelhost::models::sentence::{EmbedRequest, Embedding};
use modelhost::models::tabular::{TabularModel, TabularOutput, TabularRow};
use modelhost::registry::{RegistryError, VersionHandle};

use crate::codec::Codec;
use crate::codec_kinds::image_bytes;
use crate::error::{ApiError, ApiResult};
use crate::sets::{BoxFuture, predict_rows};
use crate::text::TextHandle;

/// Rows as a protocol other than the Open Inference Protocol sends them.
pub(crate) enum NaturalRows {
    /// Rows in the model's natural JSON (`instances`, or columns turned into rows).
    Json(Vec<Value>),
    /// One row: a TorchServe request body, and whether it is declared JSON.
    Body {
        bytes: axum::body::Bytes,
        json: bool,
    },
}

/// A model's rows and answers in its natural JSON.
pub(crate) trait Natural: Model + Sized {
    /// What one row looks like, for error messages.
    const ROW: &'static str;

    /// One row from its JSON.
    fn row_from_json(&self, value: Value) -> Result<Self::Input, String>;

    /// One row from a TorchServe body that is not declared JSON: JSON still, unless the
    /// kind reads a raw body (a text, an image file).
    fn row_from_body(&self, body: &[u8]) -> Result<Self::Input, String> {
        let value = serde_json::from_slice(body)
            .map_err(|e| format!("the body is not JSON ({e}); send {}", Self::ROW))?;
        self.row_from_json(value)
    }

    /// The answer for one row.
    fn answer_json(&self, output: Self::Output) -> Value;

    /// The handle as the OpenAI and TEI routes see it, for a text model.
    fn text_handle(_handle: VersionHandle<Self>) -> Option<TextHandle> {
        None
    }
}

/// `value`, or what `{"<name>": value}` holds.
fn unnamed(value: Value, name: &str) -> Value {
    match value {
        Value::Object(mut o) if o.len() == 1 && o.contains_key(name) => {
            o.remove(name).unwrap_or(Value::Null)
        }
        other => other,
    }
}

fn text_row(value: Value, name: &str) -> Result<String, String> {
    match unnamed(value, name) {
        Value::String(text) => Ok(text),
        other => Err(format!("{other} is not a text; send a JSON string")),
    }
}

/// An embedder's row: a text, `{"text": ...}`, and with it at most one of `prompt_name`
/// (one of the model's prompts) and `prompt` (a text to prepend).
fn embed_row(value: Value) -> Result<EmbedRequest, String> {
    let Value::Object(mut row) = value else {
        return text_row(value, "text").map(EmbedRequest::from);
    };
    let prompt_name = row.remove("prompt_name");
    let prompt = row.remove("prompt");
    let text = text_row(Value::Object(row), "text")?;
    let request = EmbedRequest::new(text);
    match (prompt_name, prompt) {
        (None, None) => Ok(request),
        (Some(Value::String(name)), None) => Ok(request.with_prompt_name(name)),
        (None, Some(Value::String(prompt))) => Ok(request.with_prompt(prompt)),
        (Some(_), Some(_)) => Err("the row has both `prompt_name` and `prompt`; send one".into()),
        (Some(other), None) | (None, Some(other)) => {
            Err(format!("the prompt is {other}; send it as a JSON string"))
        }
    }
}

fn text_body(body: &[u8]) -> Result<String, String> {
    String::from_utf8(body.to_vec())
        .map_err(|e| format!("the body is not UTF-8 text ({e}); send the text itself"))
}

fn serialized<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Natural for crate::text::Embedder {
    const ROW: &'static str = "a text: a JSON string or {\"text\": \"...\"}, optionally with \"prompt_name\" or \"prompt\"";

    fn row_from_json(&self, value: Value) -> Result<EmbedRequest, String> {
        embed_row(value)
    }

    fn row_from_body(&self, body: &[u8]) -> Result<EmbedRequest, String> {
        text_body(body).map(EmbedRequest::from)
    }

    fn answer_json(&self, output: Embedding) -> Value {
        serialized(&output.into_vec())
    }

    fn text_handle(handle: VersionHandle<Self>) -> Option<TextHandle> {
        Some(TextHandle::Embedder(handle))
    }
}

impl Natural for TextClassifier {
    const ROW: &'static str = "a text: a JSON string or {\"text\": \"...\"}";

    fn row_from_json(&self, value: Value) -> Result<String, String> {
        text_row(value, "text")
    }

    fn row_from_body(&self, body: &[u8]) -> Result<String, String> {
        text_body(body)
    }

    fn answer_json(&self, output: Classification) -> Value {
        serialized(&output)
    }

    fn text_handle(handle: VersionHandle<Self>) -> Option<TextHandle> {
        Some(TextHandle::Classifier(handle))
    }
}

impl Natural for CrossEncoder {
    const ROW: &'static str =
        "a pair: {\"query\": \"...\", \"passage\": \"...\"} or [\"query\", \"passage\"]";

    fn row_from_json(&self, value: Value) -> Result<TextPair, String> {
        let (query, passage) = match &value {
            Value::Object(o) if o.len() == 2 => (o.get("query"), o.get("passage")),
            Value::Array(a) if a.len() == 2 => (a.first(), a.get(1)),
            _ => (None, None),
        };
        match (query, passage) {
            (Some(Value::String(q)), Some(Value::String(p))) => Ok(TextPair::new(q, p)),
            _ => Err(format!("{value} is not a pair; send {}", Self::ROW)),
        }
    }

    fn answer_json(&self, output: Relevance) -> Value {
        serialized(&output)
    }

    fn text_handle(handle: VersionHandle<Self>) -> Option<TextHandle> {
        Some(TextHandle::CrossEncoder(handle))
    }
}

impl Natural for MlpClassifier {
    const ROW: &'static str = "a list of numbers, or {\"<input name>\": [numbers]}";

    fn row_from_json(&self, value: Value) -> Result<Vec<f32>, String> {
        let dim = self.config().input_dim;
        match unnamed(value, &self.config().input_name) {
            Value::Array(items) if items.len() == dim => items
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| format!("send {dim} JSON numbers")),
            other => Err(format!(
                "{} is not a row of {dim} numbers; send {}",
                summary(&other),
                Self::ROW
            )),
        }
    }

    fn answer_json(&self, output: Classification) -> Value {
        serialized(&output)
    }
}

impl Natural for ImageClassifier {
    const ROW: &'static str = "an image: {\"b64\": \"<base64 PNG or JPEG>\"} or a base64 string";

    fn row_from_json(&self, value: Value) -> Result<Vec<u8>, String> {
        image_bytes(&unnamed(value, &self.input_meta().name))
    }

    fn row_from_body(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        Ok(body.to_vec())
    }

    fn answer_json(&self, output: Classification) -> Value {
        serialized(&output)
    }
}

impl Natural for TabularModel {
    const ROW: &'static str = "a row: a JSON object of feature names and values";

    fn row_from_json(&self, value: Value) -> Result<TabularRow, String> {
        match value {
            Value::Object(_) => serde_json::from_value(value)
                .map_err(|e| format!("{e}; feature values are numbers, booleans or texts")),
            other => Err(format!(
                "{} is not a row; send {}",
                summary(&other),
                Self::ROW
            )),
        }
    }

    fn answer_json(&self, output: TabularOutput) -> Value {
        serialized(&output)
    }
}

/// A value in an error message, cut short.
fn summary(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// Decodes `rows` for the model of `handle`, predicts them and answers each in its natural
/// JSON, with the version that answered.
pub(crate) fn predict<M: Codec + Natural>(
    handle: Result<VersionHandle<M>, RegistryError>,
    rows: NaturalRows,
) -> BoxFuture<ApiResult<(String, Vec<Value>)>> {
    Box::pin(async move {
        let handle = handle.map_err(ApiError::registry)?;
        let model = handle.predictor().model();
        let inputs = match rows {
            NaturalRows::Json(values) => {
                let many = values.len() > 1;
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        model.row_from_json(v).map_err(|e| match many {
                            true => ApiError::bad(format!("instance {i}: {e}")),
                            false => ApiError::bad(e),
                        })
                    })
                    .collect::<ApiResult<Vec<_>>>()?
            }
            NaturalRows::Body { bytes, json } => {
                let row = match json {
                    true => serde_json::from_slice(&bytes)
                        .map_err(|e| format!("the body is not valid JSON ({e}); send {}", M::ROW))
                        .and_then(|v| model.row_from_json(v)),
                    false => model.row_from_body(&bytes),
                };
                vec![row.map_err(ApiError::bad)?]
            }
        };
        let outputs = predict_rows(&handle, inputs).await?;
        let answers = outputs.into_iter().map(|o| model.answer_json(o)).collect();
        Ok((handle.version().to_string(), answers))
    })
}
