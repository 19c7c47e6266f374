//! ONNX graphs run through candle-onnx (feature `onnx`; its build needs `protoc`).
//!
//! [`OnnxModel::load`] refuses a graph that uses an operator candle-onnx does not
//! implement, naming the operator and its node, instead of failing on the first request.
//! The operators that run are [`SUPPORTED_OPS`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_onnx::onnx::{ModelProto, tensor_shape_proto::dimension::Value as Dim, type_proto};

use crate::error::{InputError, LoadError, RuntimeError};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// The ONNX operators candle-onnx 0.11 evaluates (from its `simple_eval`).
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "CumSum",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "HardSwish",
    "Identity",
    "If",
    "LSTM",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "RNN",
    "Range",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "ScatterND",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// A graph input or output: name and shape (`-1` for a dimension without a fixed size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphTensor {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its shape; `-1` where the graph leaves the size open (a batch dimension).
    pub shape: Vec<i64>,
}

/// An ONNX graph, checked against what candle-onnx runs.
///
/// As a [`Model`] it serves graphs with one f32 input of shape `[batch, ...]` and one
/// output: `Input` is one row (the values after the batch dimension, row-major), `Output`
/// the output's row. Other graphs run through [`OnnxModel::run`].
pub struct OnnxModel {
    name: String,
    path: PathBuf,
    proto: ModelProto,
    inputs: Vec<GraphTensor>,
    outputs: Vec<GraphTensor>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

fn shape_of(value: &candle_onnx::onnx::ValueInfoProto) -> Vec<i64> {
    let Some(type_proto::Value::TensorType(t)) =
        value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Vec::new();
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => v,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl OnnxModel {
    /// Reads an ONNX file and checks every node's operator.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(LoadError::MissingFile {
                path: path.to_path_buf(),
                what: "the ONNX model",
            });
        }
        let proto = candle_onnx::read_file(path)
            .map_err(|e| LoadError::format(path, format!("not a valid ONNX model: {e}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| LoadError::format(path, "an ONNX model without a graph"))?;
        if let Some(node) = graph
            .node
            .iter()
            .find(|n| !SUPPORTED_OPS.contains(&n.op_type.as_str()))
        {
            return Err(LoadError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "ONNX operator `{}` (node `{}`); candle-onnx runs {}",
                    node.op_type,
                    node.name,
                    SUPPORTED_OPS.join(", ")
                ),
            });
        }
        let initialized: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|i| !initialized.contains(i.name.as_str()))
            .map(|i| GraphTensor {
                name: i.name.clone(),
                shape: shape_of(i),
            })
            .collect();
        let outputs = graph
            .output
            .iter()
            .map(|o| GraphTensor {
                name: o.name.clone(),
                shape: shape_of(o),
            })
            .collect();
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onnx".into());
        Ok(OnnxModel {
            name,
            path: path.to_path_buf(),
            proto,
            inputs,
            outputs,
        })
    }

    /// The graph's inputs (initializers excluded).
    pub fn inputs(&self) -> &[GraphTensor] {
        &self.inputs
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[GraphTensor] {
        &self.outputs
    }

    /// The graph's initializers (its weights), by name.
    pub fn initializers(&self) -> Result<HashMap<String, Tensor>, LoadError> {
        let graph = self.proto.graph.as_ref().map(|g| g.initializer.as_slice());
        graph
            .unwrap_or_default()
            .iter()
            .map(|t| {
                candle_onnx::eval::get_tensor(t, &t.name)
                    .map(|tensor| (t.name.clone(), tensor))
                    .map_err(|e| {
                        LoadError::format(&self.path, format!("initializer `{}`: {e}", t.name))
                    })
            })
            .collect()
    }

    /// Runs the graph on named inputs; returns its outputs by name.
    pub fn run(
        &self,
        inputs: HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>, RuntimeError> {
        let mut outputs = candle_onnx::simple_eval(&self.proto, inputs)?;
        Ok(self
            .outputs
            .iter()
            .filter_map(|o| outputs.remove_entry(&o.name))
            .collect())
    }

    /// Values per row of the single input (the product of its non-batch dimensions).
    fn row_len(&self) -> Option<usize> {
        match (self.inputs.as_slice(), self.outputs.as_slice()) {
            ([input], [_]) if input.shape.len() >= 2 && input.shape[1..].iter().all(|&d| d > 0) => {
                Some(input.shape[1..].iter().product::<i64>() as usize)
            }
            _ => None,
        }
    }
}

impl Model for OnnxModel {
    type Input = Vec<f32>;
    type Prepared = Vec<f32>;
    type Output = Vec<f32>;

    fn signature(&self) -> Signature {
        let mut signature = Signature::new(self.name.clone());
        for i in &self.inputs {
            signature = signature.input(TensorSpec::new(
                i.name.clone(),
                DataType::F32,
                i.shape.get(1..).unwrap_or_default(),
            ));
        }
        for o in &self.outputs {
            signature = signature.output(TensorSpec::new(
                o.name.clone(),
                DataType::F32,
                o.shape.get(1..).unwrap_or_default(),
            ));
        }
        signature
    }

    fn prepare(&self, row: Vec<f32>) -> Result<Vec<f32>, InputError> {
        let input = self.inputs.first().map_or("input", |i| i.name.as_str());
        let Some(expected) = self.row_len() else {
            return Err(InputError::Invalid {
                field: input.into(),
                reason: "this graph does not have one input of fixed row shape and one output; call OnnxModel::run".into(),
            });
        };
        if row.len() != expected {
            return Err(InputError::WrongLength {
                field: input.into(),
                expected,
                got: row.len(),
            });
        }
        if let Some((index, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(InputError::NotFinite {
                field: input.into(),
                index,
                value,
            });
        }
        Ok(row)
    }

    fn run_batch(&self, batch: &[Vec<f32>]) -> Result<BatchOutputs<Vec<f32>>, RuntimeError> {
        let (input, output) = match (self.inputs.first(), self.outputs.first()) {
            (Some(i), Some(o)) => (i, o),
            _ => {
                return Err(RuntimeError::Backend {
                    message: "the graph has no input or output".into(),
                });
            }
        };
        let mut dims: Vec<usize> = vec![batch.len()];
        dims.extend(input.shape[1..].iter().map(|&d| d as usize));
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, dims, &Device::Cpu)?;
        let mut outputs = self.run(HashMap::from([(input.name.clone(), x)]))?;
        let y = outputs
            .remove(&output.name)
            .ok_or_else(|| RuntimeError::Backend {
                message: format!("the graph did not produce `{}`", output.name),
            })?;
        let rows = y
            .flatten_from(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        Ok(rows.into_iter().map(Ok).collect())
    }
}
