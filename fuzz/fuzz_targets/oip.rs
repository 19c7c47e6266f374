//! Bytes as an Open Inference Protocol infer request, JSON or with binary tensor data: the
//! server's own decoding (`src/bin/modelhost-serve/oip/`, included as it is) never
//! panics, refuses with a message, and an accepted request's tensors hold exactly the
//! values their shapes say; the typed accessors agree with the shapes, and a response made
//! of what they read encodes to a header whose binary sizes add up to the body.
//!
//! The first byte picks the `Inference-Header-Content-Length` header: 0 none (all JSON),
//! 1 the next two bytes as a little-endian length, 2 the text up to the first newline (any
//! text), 3 the whole rest's length. The rest is the body.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/bin/modelhost-serve/oip/mod.rs"]
mod oip;

use oip::{
    BinaryOutputs, Datatype, InferResponse, InputData, InputTensor, OutputTensor, TensorData,
};
use serde_json::Value;

fn split(data: &[u8]) -> Option<(Option<String>, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    Some(match mode % 4 {
        0 => (None, rest),
        1 => {
            let (length, body) = rest.split_first_chunk::<2>()?;
            (Some(u16::from_le_bytes(*length).to_string()), body)
        }
        2 => {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let header = String::from_utf8_lossy(&rest[..end]).into_owned();
            (Some(header), rest.get(end + 1..).unwrap_or_default())
        }
        _ => (Some(rest.len().to_string()), rest),
    })
}

fn leaves(v: &Value) -> u64 {
    match v {
        Value::Array(items) => items.iter().map(leaves).sum(),
        _ => 1,
    }
}

/// BYTES elements counted here, independently of the decoder: `None` if malformed.
fn bytes_elements(mut rest: &[u8]) -> Option<u64> {
    let mut n = 0;
    while !rest.is_empty() {
        let (length, after) = rest.split_first_chunk::<4>()?;
        rest = after.get(u32::from_le_bytes(*length) as usize..)?;
        n += 1;
    }
    Some(n)
}

/// What the tensor holds, checked against its shape: binary data when decoded, JSON data
/// when read (`None`: the JSON disagrees, and every accessor must refuse it).
fn check(tensor: &InputTensor) -> Option<u64> {
    let count = tensor.shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
    match &tensor.data {
        InputData::Json(v) => {
            let agrees = count == Some(leaves(v));
            assert_eq!(tensor.value_count().is_ok(), agrees, "{tensor:?}");
            if !agrees {
                assert!(tensor.floats().is_err() && tensor.ints().is_err());
                assert!(tensor.texts().is_err() && tensor.byte_strings().is_err());
                assert!(tensor.values().is_err());
                return None;
            }
        }
        InputData::Binary(bytes) => {
            let count = count.expect("an accepted binary shape's count fits in u64");
            let datatype = Datatype::parse(&tensor.datatype).expect("a known datatype");
            match datatype.size() {
                Some(size) => assert_eq!(bytes.len() as u64, count * size as u64),
                None => assert_eq!(bytes_elements(bytes), Some(count), "{tensor:?}"),
            }
        }
    }
    let count = count?;
    assert_eq!(tensor.value_count().ok(), usize::try_from(count).ok());
    Some(count)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = split(data) else {
        return;
    };
    let request = match oip::decode_request(header.as_deref(), body) {
        Ok(request) => request,
        Err(e) => {
            assert!(!e.0.is_empty());
            return;
        }
    };
    let mut outputs = Vec::new();
    for tensor in &request.inputs {
        let Some(count) = check(tensor) else {
            continue;
        };
        if let Ok(values) = tensor.floats() {
            assert_eq!(values.len() as u64, count);
            outputs.push(OutputTensor {
                name: "floats",
                datatype: "FP32",
                shape: vec![values.len()],
                data: TensorData::Fp32(values),
            });
        }
        if let Ok(values) = tensor.ints() {
            assert_eq!(values.len() as u64, count);
            outputs.push(OutputTensor {
                name: "ints",
                datatype: "INT64",
                shape: vec![values.len()],
                data: TensorData::Int64(values),
            });
        }
        if let Ok(values) = tensor.texts() {
            assert_eq!(values.len() as u64, count);
            outputs.push(OutputTensor {
                name: "texts",
                datatype: "BYTES",
                shape: vec![values.len()],
                data: TensorData::Bytes(values),
            });
        }
        if let Ok(values) = tensor.byte_strings() {
            assert_eq!(values.len() as u64, count);
        }
        if let Ok(values) = tensor.values() {
            assert_eq!(values.len() as u64, count);
        }
    }

    // The response, all JSON and all binary.
    let response = InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: request.id.clone(),
        outputs,
    };
    let json = oip::encode_response(&response, &BinaryOutputs::default()).expect("encodes");
    assert_eq!(json.header_length, None);
    serde_json::from_slice::<Value>(&json.body).expect("JSON");
    let all = BinaryOutputs {
        all: true,
        outputs: Vec::new(),
    };
    let binary = oip::encode_response(&response, &all).expect("encodes");
    if response.outputs.is_empty() {
        assert_eq!(binary.header_length, None);
        return;
    }
    let length = binary.header_length.expect("a header length");
    let header: Value = serde_json::from_slice(&binary.body[..length]).expect("JSON header");
    let sizes: u64 = header["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            o["parameters"]["binary_data_size"]
                .as_u64()
                .expect("a size")
        })
        .sum();
    assert_eq!(sizes, (binary.body.len() - length) as u64);
});
