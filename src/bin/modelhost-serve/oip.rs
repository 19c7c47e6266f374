//! Open Inference Protocol v2 messages: the infer request and response, and tensor metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An inference request (`POST .../infer`).
#[derive(Debug, Deserialize)]
pub(crate) struct InferRequest {
    #[serde(default)]
    pub(crate) id: Option<String>,
    pub(crate) inputs: Vec<InputTensor>,
    #[serde(default)]
    pub(crate) outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InputTensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) datatype: String,
    pub(crate) data: Value,
    #[serde(default)]
    pub(crate) parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RequestedOutput {
    pub(crate) name: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct InferResponse {
    pub(crate) model_name: String,
    pub(crate) model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    pub(crate) outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize)]
pub(crate) struct OutputTensor {
    pub(crate) name: &'static str,
    pub(crate) datatype: &'static str,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: TensorData,
}

/// Flat, row-major tensor data; f32 is written at f32 precision.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum TensorData {
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Int64(Vec<i64>),
    Bytes(Vec<String>),
}

/// An input or output as model metadata lists it; `-1` is a variable dimension.
#[derive(Debug, Serialize)]
pub(crate) struct TensorMeta {
    pub(crate) name: String,
    pub(crate) datatype: &'static str,
    pub(crate) shape: Vec<i64>,
}
