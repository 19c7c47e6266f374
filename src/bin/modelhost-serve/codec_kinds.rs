//! The codecs of the cross-encoder, the image classifier and the tabular model: the kinds
//! whose requests are not one tensor of texts or numbers.
//!
//! | kind | inputs | outputs |
//! |---|---|---|
//! | cross-encoder | `query` and `passage`, BYTES `[N]` (a `query` of `[1]` goes with every passage) | `score`, `logit` FP32 `[N]` |
//! | image classifier | `image`, BYTES `[N]` of PNG/JPEG, each base64 in a JSON string or `{"b64": "..."}` | `probabilities`, `label`, `class` |
//! | tabular model | one input per feature, named as the feature, `[N]`: FP64 (any numeric datatype) for numbers and integers, BOOL, BYTES for categories; features with a default may be left out | `probabilities`, `label`, `class` for a classification; `value` FP64 `[N]` for a regression |

use std::collections::BTreeMap;

use serde_json::Value;

use modelhost::Model;
use modelhost::models::classifier::{CrossEncoder, Relevance, TextPair};
use modelhost::models::image::ImageClassifier;
use modelhost::models::tabular::{
    FeatureKind, FeatureValue, TabularModel, TabularOutput, TabularRow, Task,
};

use crate::codec::{
    Codec, byte_strings, classification_meta, decode_texts, encode_classifications,
    expect_datatype, flat_data, no_rows, typed_data,
};
use crate::error::{ApiError, ApiResult};
use crate::oip::{InferRequest, InputData, InputTensor, OutputTensor, TensorData, TensorMeta};

/// The request's inputs by name, each one of `inputs`, each at most once; the outputs it
/// asks for are checked against `outputs`.
pub(crate) fn named_inputs<'r>(
    model: &str,
    inputs: &[TensorMeta],
    outputs: &[TensorMeta],
    request: &'r InferRequest,
) -> ApiResult<BTreeMap<&'r str, &'r InputTensor>> {
    let known: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
    let mut named = BTreeMap::new();
    for tensor in &request.inputs {
        if !known.contains(&tensor.name.as_str()) {
            return Err(ApiError::bad(format!(
                "model `{model}` has no input `{}`; its inputs are {known:?}",
                tensor.name
            )));
        }
        if named.insert(tensor.name.as_str(), tensor).is_some() {
            return Err(ApiError::bad(format!(
                "input `{}` is given more than once; give it once",
                tensor.name
            )));
        }
    }
    for wanted in request.outputs.iter().flatten() {
        if !outputs.iter().any(|o| o.name == wanted.name) {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(ApiError::bad(format!(
                "model `{model}` has no output `{}`; its outputs are {names:?}",
                wanted.name
            )));
        }
    }
    Ok(named)
}

/// The number of rows of a one-value-per-row input: shape `[N]` or `[N, 1]`.
fn rows_of(tensor: &InputTensor, what: &str) -> ApiResult<usize> {
    match tensor.shape[..] {
        [n] | [n, 1] => usize::try_from(n).map_err(|_| no_rows(tensor)),
        _ => Err(ApiError::bad(format!(
            "input `{}` has shape {:?}; the model takes one {what} per row: [N] or [N, 1]",
            tensor.name, tensor.shape
        ))),
    }
}

fn bytes_meta(name: &str) -> TensorMeta {
    TensorMeta {
        name: name.into(),
        datatype: "BYTES",
        shape: vec![-1],
    }
}

fn fp32_output(name: &'static str, data: Vec<f32>) -> OutputTensor {
    OutputTensor {
        name,
        datatype: "FP32",
        shape: vec![data.len()],
        data: TensorData::Fp32(data),
    }
}

impl Codec for CrossEncoder {
    const PLATFORM: &'static str = "modelhost_cross_encoder";

    fn input_meta(&self) -> TensorMeta {
        bytes_meta("query")
    }

    fn inputs_meta(&self) -> Vec<TensorMeta> {
        vec![bytes_meta("query"), bytes_meta("passage")]
    }

    /// `score` after the model's activation (sigmoid unless its config says otherwise) and
    /// the raw `logit`, one per pair.
    fn outputs_meta(&self) -> Vec<TensorMeta> {
        ["score", "logit"]
            .into_iter()
            .map(|name| TensorMeta {
                name: name.into(),
                datatype: "FP32",
                shape: vec![-1],
            })
            .collect()
    }

    /// Never called: [`decode_request`](Codec::decode_request) reads both inputs.
    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<TextPair>> {
        Err(ApiError::bad(format!(
            "input `{}` alone is not a pair; a cross-encoder takes `query` and `passage`",
            tensor.name
        )))
    }

    fn decode_request(
        &self,
        name: &str,
        outputs: &[TensorMeta],
        request: &InferRequest,
    ) -> ApiResult<Vec<TextPair>> {
        let inputs = named_inputs(name, &self.inputs_meta(), outputs, request)?;
        let (Some(query), Some(passage)) = (inputs.get("query"), inputs.get("passage")) else {
            return Err(ApiError::bad(format!(
                "model `{name}` takes two inputs, `query` and `passage` (BYTES, shape [N]; a \
                 query of shape [1] goes with every passage)"
            )));
        };
        let queries = decode_texts(query)?;
        let passages = decode_texts(passage)?;
        if queries.len() != 1 && queries.len() != passages.len() {
            return Err(ApiError::bad(format!(
                "input `query` has {} rows and `passage` {}; send as many queries as passages, \
                 or one query for all of them",
                queries.len(),
                passages.len()
            )));
        }
        Ok(passages
            .into_iter()
            .enumerate()
            .map(|(i, passage)| {
                let query = queries.get(i).or(queries.first()).cloned();
                TextPair::new(query.unwrap_or_default(), passage)
            })
            .collect())
    }

    fn encode(&self, outputs: Vec<Relevance>) -> Vec<OutputTensor> {
        vec![
            fp32_output("score", outputs.iter().map(|r| r.score).collect()),
            fp32_output("logit", outputs.iter().map(|r| r.logit).collect()),
        ]
    }
}

/// Image bytes from a JSON value: base64 in a string or in `{"b64": "..."}` (KServe's and
/// TF Serving's convention for binary data in JSON).
pub(crate) fn image_bytes(value: &Value) -> Result<Vec<u8>, String> {
    let text = match value {
        Value::String(s) => s,
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(s)) if o.len() == 1 => s,
            _ => return Err(IMAGE_RULE.into()),
        },
        _ => return Err(IMAGE_RULE.into()),
    };
    base64::decode(text.trim())
        .map_err(|e| format!("the image is not valid base64 ({e}); {IMAGE_RULE}"))
}

pub(crate) const IMAGE_RULE: &str =
    "an image is a PNG or JPEG file, base64-encoded in a JSON string or in {\"b64\": \"...\"}";

impl Codec for ImageClassifier {
    const PLATFORM: &'static str = "modelhost_image_classifier";

    fn input_meta(&self) -> TensorMeta {
        let name = (self.signature().inputs.first())
            .map_or_else(|| "image".to_string(), |t| t.name.clone());
        bytes_meta(&name)
    }

    fn outputs_meta(&self) -> Vec<TensorMeta> {
        classification_meta(self.labels().len())
    }

    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<Vec<u8>>> {
        expect_datatype(tensor, "BYTES")?;
        if rows_of(tensor, "image")? == 0 {
            return Err(no_rows(tensor));
        }
        // Binary tensor data carries the files themselves; JSON carries them in base64.
        if let InputData::Binary(_) = tensor.data {
            return byte_strings(tensor);
        }
        flat_data(tensor)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                image_bytes(&v)
                    .map_err(|e| ApiError::bad(format!("input `{}`: data[{i}]: {e}", tensor.name)))
            })
            .collect()
    }

    fn encode(&self, outputs: Vec<modelhost::models::Classification>) -> Vec<OutputTensor> {
        encode_classifications(outputs, self.labels().len())
    }
}

/// The datatype a feature's input has in metadata.
fn feature_datatype(kind: &FeatureKind) -> &'static str {
    match kind {
        FeatureKind::Number { .. } => "FP64",
        FeatureKind::Integer { .. } => "INT64",
        FeatureKind::Boolean => "BOOL",
        FeatureKind::Category { .. } => "BYTES",
    }
}

const NUMERIC: [&str; 11] = [
    "FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64",
];

/// A feature's column: its values, read by the datatype its kind takes.
fn feature_column(kind: &FeatureKind, tensor: &InputTensor) -> ApiResult<Vec<FeatureValue>> {
    match kind {
        FeatureKind::Boolean => {
            expect_datatype(tensor, "BOOL")?;
            typed_data(tensor, "BOOL data must be JSON booleans", |v| {
                v.as_bool().map(FeatureValue::Bool)
            })
        }
        FeatureKind::Category { .. } => {
            expect_datatype(tensor, "BYTES")?;
            typed_data(tensor, "BYTES data must be JSON strings", |v| {
                v.as_str().map(FeatureValue::from)
            })
        }
        _ => {
            if !NUMERIC.contains(&tensor.datatype.as_str()) {
                return Err(ApiError::bad(format!(
                    "input `{}` has datatype {}; the feature is a number: send FP64 (or another \
                     numeric datatype)",
                    tensor.name, tensor.datatype
                )));
            }
            typed_data(tensor, "numeric data must be JSON numbers", |v| {
                v.as_f64().map(FeatureValue::Number)
            })
        }
    }
}

impl Codec for TabularModel {
    const PLATFORM: &'static str = "modelhost_tabular";

    fn input_meta(&self) -> TensorMeta {
        self.inputs_meta()
            .into_iter()
            .next()
            .unwrap_or_else(|| bytes_meta("row"))
    }

    fn inputs_meta(&self) -> Vec<TensorMeta> {
        (self.config().features.iter())
            .map(|f| TensorMeta {
                name: f.name.clone(),
                datatype: feature_datatype(&f.kind),
                shape: vec![-1],
            })
            .collect()
    }

    fn outputs_meta(&self) -> Vec<TensorMeta> {
        match &self.config().task {
            Task::Classification { labels } => classification_meta(labels.len()),
            _ => vec![TensorMeta {
                name: "value".into(),
                datatype: "FP64",
                shape: vec![-1],
            }],
        }
    }

    /// Never called: [`decode_request`](Codec::decode_request) reads every feature.
    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<TabularRow>> {
        Err(ApiError::bad(format!(
            "input `{}` alone is not a row; send one input per feature",
            tensor.name
        )))
    }

    fn decode_request(
        &self,
        name: &str,
        outputs: &[TensorMeta],
        request: &InferRequest,
    ) -> ApiResult<Vec<TabularRow>> {
        let inputs = named_inputs(name, &self.inputs_meta(), outputs, request)?;
        let features = &self.config().features;
        let missing: Vec<&str> = (features.iter())
            .filter(|f| f.default.is_none() && !inputs.contains_key(f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::bad(format!(
                "missing inputs {missing:?}: model `{name}` takes one input per feature, shape \
                 [N] (features with a default may be left out)"
            )));
        }
        let mut rows: Option<Vec<TabularRow>> = None;
        for feature in features {
            let Some(tensor) = inputs.get(feature.name.as_str()) else {
                continue;
            };
            let n = rows_of(tensor, "value")?;
            if n == 0 {
                return Err(no_rows(tensor));
            }
            let column = feature_column(&feature.kind, tensor)?;
            let rows = rows.get_or_insert_with(|| vec![TabularRow::new(); column.len()]);
            if rows.len() != column.len() {
                return Err(ApiError::bad(format!(
                    "input `{}` has {} rows and another input {}; send every feature with the \
                     same number of rows",
                    tensor.name,
                    column.len(),
                    rows.len()
                )));
            }
            for (row, value) in rows.iter_mut().zip(column) {
                row.set(feature.name.clone(), value);
            }
        }
        rows.ok_or_else(|| {
            ApiError::bad(format!(
                "missing inputs: model `{name}` takes one input per feature, shape [N]"
            ))
        })
    }

    fn encode(&self, outputs: Vec<TabularOutput>) -> Vec<OutputTensor> {
        match &self.config().task {
            Task::Classification { labels } => encode_classifications(
                outputs
                    .into_iter()
                    .filter_map(|o| o.class().cloned())
                    .collect(),
                labels.len(),
            ),
            _ => {
                let values: Vec<f64> = outputs.iter().filter_map(TabularOutput::value).collect();
                vec![OutputTensor {
                    name: "value",
                    datatype: "FP64",
                    shape: vec![values.len()],
                    data: TensorData::Fp64(values),
                }]
            }
        }
    }
}
