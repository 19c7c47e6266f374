//! ONNX graphs through candle-onnx (feature `onnx`): the graph's weights equal the
//! safetensors fixture's, it computes what the same maths in candle computes, it serves as
//! a `Model`, and an operator candle-onnx lacks is refused at load, by name.
#![cfg(feature = "onnx")]

mod common;

use std::collections::HashMap;

use candle_core::{D, Device, Tensor};
use common::{format_fixture, values};
use modelhost::formats::onnx::OnnxModel;
use modelhost::formats::{self, WeightFormat};
use modelhost::{InputError, LoadError, PredictError, Predictor};

fn reference() -> HashMap<String, Tensor> {
    formats::load_tensors(&format_fixture("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn the_graphs_initializers_are_the_safetensors_tensors() {
    let path = format_fixture("mlp.onnx");
    assert_eq!(formats::detect(&path).unwrap(), WeightFormat::Onnx);
    let loaded = formats::load_tensors(&path, &Device::Cpu).unwrap();
    let reference = reference();
    assert_eq!(loaded.len(), reference.len());
    for (name, want) in &reference {
        assert_eq!(loaded[name].dims(), want.dims(), "{name}");
        assert_eq!(loaded[name].dtype(), want.dtype(), "{name}");
        assert_eq!(values(&loaded[name]), values(want), "{name}");
    }
}

#[test]
fn the_graph_computes_what_candle_computes_and_serves_as_a_model() {
    let model = OnnxModel::load(format_fixture("mlp.onnx")).unwrap();
    assert_eq!(model.inputs()[0].name, "x");
    assert_eq!(model.inputs()[0].shape, vec![-1, 4]);
    let rows = vec![vec![0.5f32, -1.0, 2.0, 0.25], vec![-0.3, 0.7, 0.1, -2.0]];
    let x = Tensor::from_vec(rows.concat(), (2, 4), &Device::Cpu).unwrap();
    let w = reference();
    let h = x
        .matmul(&w["layers.0.weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&w["layers.0.bias"])
        .unwrap()
        .relu()
        .unwrap();
    let logits = h
        .matmul(&w["head.weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&w["head.bias"])
        .unwrap();
    let expected = candle_nn::ops::softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();

    let predictor = Predictor::builder(model).build().unwrap();
    for (row, want) in predictor.predict_many(rows).into_iter().zip(&expected) {
        let got = row.unwrap();
        assert_eq!(got.len(), 2);
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
    match predictor.predict(vec![1.0; 3]) {
        Err(PredictError::Input(InputError::WrongLength {
            field,
            expected,
            got,
        })) => {
            assert_eq!((field.as_str(), expected, got), ("x", 4, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_operator_candle_onnx_lacks_is_refused_at_load_by_name() {
    let err = OnnxModel::load(format_fixture("unsupported.onnx")).unwrap_err();
    assert!(matches!(err, LoadError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("ONNX operator `Einsum`"), "{err}");
    assert!(err.to_string().contains("MatMul"), "{err}");
    let dir = std::env::temp_dir().join(format!("modelhost-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(format_fixture("mlp.onnx")).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = OnnxModel::load(&cut).unwrap_err();
    assert!(err.to_string().contains("not a valid ONNX model"), "{err}");
}
