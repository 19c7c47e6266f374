//! ONNX graphs run through `candle-onnx` (cargo feature `onnx`).
//!
//! [`OnnxModel::load`] decodes the `ModelProto`, walks every node of the graph (and of
//! `If` branches) and refuses an operator outside [`ONNX_OPERATORS`] with
//! [`LoadError::UnsupportedOperator`] naming it and its node, so an unsupported graph fails
//! at load time rather than on the first request. [`OnnxModel::run`] evaluates the graph
//! on named input tensors; as a [`Model`] it takes and returns named tensors, one request
//! at a time (candle-onnx evaluates a graph per call; inputs are not concatenated).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx;

use super::{ONNX_OPERATORS, WeightFormat};
use crate::error::{InputError, LoadError, RuntimeError};
use crate::model::{BatchOutputs, DataType, Model, Signature, TensorSpec};

/// A graph input or output: its name, element type and shape (`None` for a dimension the
/// graph leaves symbolic, such as the batch).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxValueInfo {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its element type, when the graph declares one candle can hold.
    pub dtype: Option<DType>,
    /// Its dimensions; `None` marks a symbolic or unknown one.
    pub shape: Vec<Option<usize>>,
}

/// An ONNX model evaluated by `candle-onnx` on the CPU.
pub struct OnnxModel {
    name: String,
    path: PathBuf,
    model: onnx::ModelProto,
    inputs: Vec<OnnxValueInfo>,
    outputs: Vec<OnnxValueInfo>,
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

fn read(path: &Path) -> Result<onnx::ModelProto, LoadError> {
    if super::detect(path)? != WeightFormat::Onnx {
        return Err(LoadError::Unsupported {
            path: path.to_path_buf(),
            what: "this file is not an ONNX model".into(),
        });
    }
    let model = candle_onnx::read_file(path)
        .map_err(|e| LoadError::corrupt(path, WeightFormat::Onnx, e))?;
    // Protobuf has no end marker: a file cut at a field boundary decodes. Every valid model
    // has a graph and an opset import, which exporters write last.
    if model.graph.is_none() || model.opset_import.is_empty() {
        return Err(LoadError::corrupt(
            path,
            WeightFormat::Onnx,
            "the model has no graph or no opset_import (is the file cut short?)",
        ));
    }
    Ok(model)
}

/// The graph's initializers (its weights), by name.
pub(crate) fn initializers(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, LoadError> {
    let model = read(path)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| LoadError::corrupt(path, WeightFormat::Onnx, "the model has no graph"))?;
    graph
        .initializer
        .iter()
        .map(|t| {
            let tensor = candle_onnx::eval::get_tensor(t, &t.name)
                .and_then(|x| x.to_device(device))
                .map_err(|e| {
                    LoadError::corrupt(
                        path,
                        WeightFormat::Onnx,
                        format!("initializer `{}`: {e}", t.name),
                    )
                })?;
            Ok((t.name.clone(), tensor))
        })
        .collect()
}

fn check_operators(path: &Path, graph: &onnx::GraphProto) -> Result<(), LoadError> {
    for node in &graph.node {
        if !ONNX_OPERATORS.contains(&node.op_type.as_str()) {
            return Err(LoadError::UnsupportedOperator {
                path: path.to_path_buf(),
                op: node.op_type.clone(),
                node: node.name.clone(),
                supported: ONNX_OPERATORS,
            });
        }
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                check_operators(path, g)?;
            }
            for g in &attr.graphs {
                check_operators(path, g)?;
            }
        }
    }
    Ok(())
}

fn value_info(v: &onnx::ValueInfoProto) -> OnnxValueInfo {
    use onnx::tensor_shape_proto::dimension::Value as Dim;
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx::type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    let dtype = tensor
        .and_then(|t| onnx::tensor_proto::DataType::try_from(t.elem_type).ok())
        .and_then(candle_onnx::dtype);
    let shape = tensor
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(n)) => usize::try_from(n).ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    OnnxValueInfo {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

impl OnnxModel {
    /// Loads an ONNX model, refusing a graph with an operator outside [`ONNX_OPERATORS`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let model = read(path)?;
        let graph = model.graph.as_ref().ok_or_else(|| {
            LoadError::corrupt(path, WeightFormat::Onnx, "the model has no graph")
        })?;
        check_operators(path, graph)?;
        let weights: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|i| !weights.contains(i.name.as_str()))
            .map(value_info)
            .collect();
        let outputs = graph.output.iter().map(value_info).collect();
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onnx-model".into());
        Ok(OnnxModel {
            name,
            path: path.to_path_buf(),
            model,
            inputs,
            outputs,
        })
    }

    /// The graph's inputs (initializers excluded).
    pub fn inputs(&self) -> &[OnnxValueInfo] {
        &self.inputs
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[OnnxValueInfo] {
        &self.outputs
    }

    /// Evaluates the graph on named inputs (on the CPU) and returns its outputs by name.
    pub fn run(
        &self,
        inputs: HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>, RuntimeError> {
        let inputs = inputs
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
            .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
        let mut all = candle_onnx::simple_eval(&self.model, inputs)?;
        Ok(self
            .outputs
            .iter()
            .filter_map(|o| all.remove_entry(&o.name))
            .collect())
    }
}

fn data_type(dtype: Option<DType>) -> DataType {
    match dtype {
        Some(DType::I64) => DataType::I64,
        Some(DType::I32) => DataType::I32,
        Some(DType::U8) => DataType::U8,
        _ => DataType::F32,
    }
}

fn spec(v: &OnnxValueInfo) -> TensorSpec {
    let shape: Vec<i64> = v.shape.iter().map(|d| d.map_or(-1, |n| n as i64)).collect();
    TensorSpec::new(v.name.clone(), data_type(v.dtype), shape)
}

impl Model for OnnxModel {
    type Input = HashMap<String, Tensor>;
    type Prepared = HashMap<String, Tensor>;
    type Output = HashMap<String, Tensor>;

    fn signature(&self) -> Signature {
        let mut s = Signature::new(self.name.clone());
        s.inputs = self.inputs.iter().map(spec).collect();
        s.outputs = self.outputs.iter().map(spec).collect();
        s
    }

    fn prepare(&self, input: Self::Input) -> Result<Self::Prepared, InputError> {
        for want in &self.inputs {
            let Some(t) = input.get(&want.name) else {
                return Err(InputError::Invalid {
                    field: want.name.clone(),
                    reason: "the graph needs this input and it is missing".into(),
                });
            };
            if let Some(dtype) = want.dtype
                && t.dtype() != dtype
            {
                return Err(InputError::Invalid {
                    field: want.name.clone(),
                    reason: format!("dtype {:?}; the graph expects {dtype:?}", t.dtype()),
                });
            }
            let fits = t.rank() == want.shape.len()
                && t.dims()
                    .iter()
                    .zip(&want.shape)
                    .all(|(&d, w)| w.is_none_or(|w| w == d));
            if !want.shape.is_empty() && !fits {
                return Err(InputError::Invalid {
                    field: want.name.clone(),
                    reason: format!(
                        "shape {:?}; the graph expects {:?} (None: any size)",
                        t.dims(),
                        want.shape
                    ),
                });
            }
        }
        Ok(input)
    }

    fn run_batch(
        &self,
        batch: &[Self::Prepared],
    ) -> Result<BatchOutputs<Self::Output>, RuntimeError> {
        Ok(batch
            .iter()
            .map(|inputs| self.run(inputs.clone()))
            .collect())
    }
}
