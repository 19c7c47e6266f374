//! The codec: named protocol tensors ↔ a model's typed inputs and outputs.

use std::borrow::Cow;

use serde_json::Value;

use modelhost::Model;
use modelhost::models::Classification;
use modelhost::models::classifier::TextClassifier;
use modelhost::models::mlp::MlpClassifier;
use modelhost::models::sentence::{EmbedRequest, Embedding};

use crate::error::{ApiError, ApiResult};
use crate::oip::{InferRequest, InputTensor, OutputTensor, TensorData, TensorMeta};
use crate::sets::select_input;

/// How one model type's typed inputs and outputs map to protocol tensors.
pub(crate) trait Codec: Model<Input: Clone> {
    /// `platform` in model metadata.
    const PLATFORM: &'static str;

    /// The one input tensor, batch dimension first (the first, for a kind that takes
    /// several: see [`inputs_meta`](Self::inputs_meta)).
    fn input_meta(&self) -> TensorMeta;

    /// Every input tensor, batch dimension first: the one of
    /// [`input_meta`](Self::input_meta) unless the kind takes several.
    fn inputs_meta(&self) -> Vec<TensorMeta> {
        vec![self.input_meta()]
    }

    /// The rows of a request to model `name`: its one input checked against the model's
    /// and [`decode`](Self::decode)d. A kind that takes several inputs reads them all.
    fn decode_request(
        &self,
        name: &str,
        outputs: &[TensorMeta],
        request: &InferRequest,
    ) -> ApiResult<Vec<Self::Input>> {
        let tensor = select_input(name, &self.input_meta(), outputs, request)?;
        self.decode(tensor)
    }

    /// The output tensors, batch dimension first.
    fn outputs_meta(&self) -> Vec<TensorMeta>;

    /// The rows of the request's input tensor (whose name is checked already).
    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<Self::Input>>;

    /// One tensor per output, each with the batch's rows.
    fn encode(&self, outputs: Vec<Self::Output>) -> Vec<OutputTensor>;
}

pub(crate) fn expect_datatype(tensor: &InputTensor, datatype: &str) -> ApiResult<()> {
    if tensor.datatype == datatype {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "input `{}` has datatype {}; the model takes {datatype}",
            tensor.name, tensor.datatype
        )))
    }
}

// The typed accessors below read JSON `data` and binary tensor data alike; each checks the
// values present against the shape before it allocates for them.

/// The tensor's values, flat and row-major, checked against its shape: borrowed from JSON
/// `data` (flat or nested), converted from binary data.
#[allow(dead_code, reason = "for codecs that walk JSON values themselves")]
pub(crate) fn flat_data(tensor: &InputTensor) -> ApiResult<Vec<Cow<'_, Value>>> {
    Ok(tensor.values()?)
}

/// The tensor's values (see [`flat_data`]) read by `read`; a value it refuses is a 400
/// naming its index and `rule`.
#[allow(
    dead_code,
    reason = "for codecs of datatypes without an accessor below"
)]
pub(crate) fn typed_data<T>(
    tensor: &InputTensor,
    rule: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> ApiResult<Vec<T>> {
    Ok(tensor.read_values(rule, read)?)
}

/// The tensor's values as `f32`: JSON numbers, or binary data of a numeric datatype.
pub(crate) fn floats(tensor: &InputTensor) -> ApiResult<Vec<f32>> {
    Ok(tensor.floats()?)
}

/// The tensor's values as `i64`: JSON integers, or binary data of an integer datatype.
#[allow(dead_code, reason = "for codecs of token ids and other integer inputs")]
pub(crate) fn ints(tensor: &InputTensor) -> ApiResult<Vec<i64>> {
    Ok(tensor.ints()?)
}

/// The tensor's values as byte strings: BYTES binary elements as sent (any bytes), or
/// JSON strings.
#[allow(dead_code, reason = "for codecs of raw bytes (encoded images)")]
pub(crate) fn byte_strings(tensor: &InputTensor) -> ApiResult<Vec<Vec<u8>>> {
    Ok(tensor.byte_strings()?)
}

pub(crate) fn no_rows(tensor: &InputTensor) -> ApiError {
    ApiError::bad(format!(
        "input `{}` has shape {:?}, with no rows; send at least one",
        tensor.name, tensor.shape
    ))
}

/// A one-text-per-row input named as the model's signature names it.
pub(crate) fn text_input_meta(model: &impl Model) -> TensorMeta {
    TensorMeta {
        name: (model.signature().inputs.first())
            .map_or_else(|| "text".to_string(), |t| t.name.clone()),
        datatype: "BYTES",
        shape: vec![-1],
    }
}

/// The texts of a BYTES input of shape `[N]` or `[N, 1]` (JSON strings, or binary
/// elements that are UTF-8).
pub(crate) fn decode_texts(tensor: &InputTensor) -> ApiResult<Vec<String>> {
    expect_datatype(tensor, "BYTES")?;
    let rows = match tensor.shape[..] {
        [n] | [n, 1] => n,
        _ => {
            return Err(ApiError::bad(format!(
                "input `{}` has shape {:?}; the model takes one text per row: [N] or [N, 1]",
                tensor.name, tensor.shape
            )));
        }
    };
    if rows == 0 {
        return Err(no_rows(tensor));
    }
    Ok(tensor.texts()?)
}

/// A classifier's outputs: `probabilities` `[N, classes]`, `label` and `class` `[N]`.
pub(crate) fn classification_meta(classes: usize) -> Vec<TensorMeta> {
    vec![
        TensorMeta {
            name: "probabilities".into(),
            datatype: "FP32",
            shape: vec![-1, classes as i64],
        },
        TensorMeta {
            name: "label".into(),
            datatype: "BYTES",
            shape: vec![-1],
        },
        TensorMeta {
            name: "class".into(),
            datatype: "INT64",
            shape: vec![-1],
        },
    ]
}

pub(crate) fn encode_classifications(
    outputs: Vec<Classification>,
    classes: usize,
) -> Vec<OutputTensor> {
    let rows = outputs.len();
    let class = outputs.iter().map(|c| c.index as i64).collect();
    let label = outputs.iter().map(|c| c.label.clone()).collect();
    let probabilities = outputs.into_iter().flat_map(|c| c.scores).collect();
    vec![
        OutputTensor {
            name: "probabilities",
            datatype: "FP32",
            shape: vec![rows, classes],
            data: TensorData::Fp32(probabilities),
        },
        OutputTensor {
            name: "label",
            datatype: "BYTES",
            shape: vec![rows],
            data: TensorData::Bytes(label),
        },
        OutputTensor {
            name: "class",
            datatype: "INT64",
            shape: vec![rows],
            data: TensorData::Int64(class),
        },
    ]
}

/// The prompt a request's `parameters` ask for: `prompt_name` (one of the model's
/// prompts) or `prompt` (a text to prepend), at most one; `None` for the default.
fn request_prompt(
    request: &InferRequest,
) -> ApiResult<Option<modelhost::models::sentence::Prompt>> {
    use modelhost::models::sentence::Prompt;
    let get = |key: &str| request.parameters.as_ref().and_then(|p| p.get(key));
    let string = |key: &str, v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::bad(format!(
            "parameters.{key} is {other}; it must be a string"
        ))),
    };
    match (get("prompt_name"), get("prompt")) {
        (None, None) => Ok(None),
        (Some(name), None) => Ok(Some(Prompt::Named(string("prompt_name", name)?))),
        (None, Some(text)) => Ok(Some(Prompt::Text(string("prompt", text)?))),
        (Some(_), Some(_)) => Err(ApiError::bad(
            "the request has both parameters.prompt_name and parameters.prompt; send one",
        )),
    }
}

impl Codec for crate::text::Embedder {
    const PLATFORM: &'static str = "modelhost_text_embedder";

    /// The texts, each with the prompt of the request's `parameters` (`prompt_name` or
    /// `prompt`), else the model's default.
    fn decode_request(
        &self,
        name: &str,
        outputs: &[TensorMeta],
        request: &InferRequest,
    ) -> ApiResult<Vec<EmbedRequest>> {
        let prompt = request_prompt(request)?;
        let tensor = select_input(name, &self.input_meta(), outputs, request)?;
        let mut rows = self.decode(tensor)?;
        if let Some(prompt) = prompt {
            rows.iter_mut().for_each(|r| r.prompt = prompt.clone());
        }
        Ok(rows)
    }

    fn input_meta(&self) -> TensorMeta {
        text_input_meta(self)
    }

    fn outputs_meta(&self) -> Vec<TensorMeta> {
        vec![TensorMeta {
            name: "embedding".into(),
            datatype: "FP32",
            shape: vec![-1, self.dim() as i64],
        }]
    }

    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<EmbedRequest>> {
        Ok(decode_texts(tensor)?
            .into_iter()
            .map(EmbedRequest::from)
            .collect())
    }

    fn encode(&self, outputs: Vec<Embedding>) -> Vec<OutputTensor> {
        let rows = outputs.len();
        vec![OutputTensor {
            name: "embedding",
            datatype: "FP32",
            shape: vec![rows, self.dim()],
            data: TensorData::Fp32(outputs.into_iter().flat_map(Embedding::into_vec).collect()),
        }]
    }
}

impl Codec for MlpClassifier {
    const PLATFORM: &'static str = "modelhost_mlp_classifier";

    fn input_meta(&self) -> TensorMeta {
        TensorMeta {
            name: self.config().input_name.clone(),
            datatype: "FP32",
            shape: vec![-1, self.config().input_dim as i64],
        }
    }

    fn outputs_meta(&self) -> Vec<TensorMeta> {
        classification_meta(self.config().labels.len())
    }

    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<Vec<f32>>> {
        expect_datatype(tensor, "FP32")?;
        let dim = self.config().input_dim;
        let rows = match tensor.shape[..] {
            [d] if d == dim as u64 => 1,
            [n, d] if d == dim as u64 => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "input `{}` has shape {:?}; the model takes [{dim}] or [N, {dim}]",
                    tensor.name, tensor.shape
                )));
            }
        };
        if rows == 0 {
            return Err(no_rows(tensor));
        }
        let values = floats(tensor)?;
        Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    fn encode(&self, outputs: Vec<Classification>) -> Vec<OutputTensor> {
        encode_classifications(outputs, self.config().labels.len())
    }
}

impl Codec for TextClassifier {
    const PLATFORM: &'static str = "modelhost_text_classifier";

    fn input_meta(&self) -> TensorMeta {
        text_input_meta(self)
    }

    /// `probabilities` are softmax scores, or independent sigmoids for a multi-label head
    /// (`label` and `class` are then the highest-scoring label).
    fn outputs_meta(&self) -> Vec<TensorMeta> {
        classification_meta(self.labels().len())
    }

    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<String>> {
        decode_texts(tensor)
    }

    fn encode(&self, outputs: Vec<Classification>) -> Vec<OutputTensor> {
        encode_classifications(outputs, self.labels().len())
    }
}
