//! Open Inference Protocol v2 messages: the infer request and response, and tensor
//! metadata, with Triton's binary tensor data extension in both directions.
//!
//! [`decode_request`] and [`encode_response`] are pure functions of bytes, free of the
//! HTTP stack, so that `fuzz/fuzz_targets/oip.rs` can include this module as it is. Every
//! allocation a request sizes is bounded by bytes it sent: a shape's element count is
//! checked against the data present before anything is read from it (binary data when
//! the request is decoded, JSON `data` when a codec reads it).
//!
//! Binary data (`Inference-Header-Content-Length: N`): the body's first `N` bytes are the
//! JSON; each input whose `parameters.binary_data_size` is set takes that many of the
//! bytes after it, in input order, and the sizes add up to exactly what follows the JSON.
//! Elements are little-endian in their native size (BOOL one byte); a BYTES element is a
//! 4-byte little-endian length and then that many bytes.

mod decode;
mod encode;
mod values;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use decode::decode_request;
pub(crate) use encode::{EncodedResponse, encode_response};

/// The request and response header giving the JSON's length when binary data follows it.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request that breaks the protocol; the message says what is allowed (a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed<T>(message: String) -> Result<T, Malformed> {
    Err(Malformed(message))
}

/// The tensor datatypes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    pub(crate) const ALL: [Datatype; 14] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Bf16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element in binary data; `None` for BYTES, whose elements carry their
    /// own length.
    pub(crate) fn size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }
}

/// The names of every datatype, for messages.
fn datatype_names() -> String {
    let names: Vec<&str> = Datatype::ALL.iter().map(|d| d.name()).collect();
    names.join(", ")
}

/// The number of values a shape holds; `None` past `u64`.
pub(crate) fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d))
}

fn describe_count(count: Option<u64>) -> String {
    count.map_or_else(|| format!("more than {}", u64::MAX), |n| n.to_string())
}

/// An inference request (`POST .../infer`).
#[derive(Debug)]
pub(crate) struct InferRequest {
    pub(crate) id: Option<String>,
    pub(crate) inputs: Vec<InputTensor>,
    pub(crate) outputs: Option<Vec<RequestedOutput>>,
    /// The request's parameters as sent (`binary_data_output` is read into
    /// `binary_outputs`; the text embedder's codec reads `prompt_name` and `prompt`).
    #[allow(
        dead_code,
        reason = "unread where this module is compiled alone (the oip fuzz target)"
    )]
    pub(crate) parameters: Option<Map<String, Value>>,
    /// Which outputs the response carries as binary data.
    pub(crate) binary_outputs: BinaryOutputs,
}

#[derive(Debug, Clone)]
pub(crate) struct InputTensor {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) datatype: String,
    pub(crate) data: InputData,
    /// The input's parameters as sent (`binary_data_size` included).
    #[allow(
        dead_code,
        reason = "the protocol's field, for codecs that take options"
    )]
    pub(crate) parameters: Option<Map<String, Value>>,
}

/// An input's values: as JSON or as binary data. Read them with the typed accessors
/// ([`InputTensor::floats`], [`InputTensor::texts`], ...), which treat both alike.
#[derive(Debug, Clone)]
pub(crate) enum InputData {
    /// The JSON `data`: row-major values, flat or nested; counted against the shape when
    /// read.
    Json(Value),
    /// Binary data: little-endian elements, checked against the shape and datatype.
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RequestedOutput {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) parameters: Option<Map<String, Value>>,
}

/// Which outputs go back as binary data: `binary_data` on a requested output, else the
/// request's `binary_data_output`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BinaryOutputs {
    pub(crate) all: bool,
    pub(crate) outputs: Vec<(String, bool)>,
}

impl BinaryOutputs {
    pub(crate) fn wants(&self, output: &str) -> bool {
        (self.outputs.iter())
            .find(|(name, _)| name == output)
            .map_or(self.all, |(_, binary)| *binary)
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A binary request: the JSON, its length as the header, the inputs' bytes after it.
    fn binary(json: Value, data: &[&[u8]]) -> (String, Vec<u8>) {
        let mut body = json.to_string().into_bytes();
        let header = body.len().to_string();
        data.iter().for_each(|d| body.extend_from_slice(d));
        (header, body)
    }

    fn elements(items: &[&[u8]]) -> Vec<u8> {
        (items.iter())
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect()
    }

    fn decode(header: &str, body: &[u8]) -> Result<InferRequest, Malformed> {
        decode_request(Some(header), body)
    }

    #[test]
    fn json_requests_decode_as_before() {
        let body = json!({"id": "a", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
            "data": [[1, 2.5], [3, 4]]}], "outputs": [{"name": "y"}]})
        .to_string();
        let request = decode_request(None, body.as_bytes()).unwrap();
        assert_eq!(request.id.as_deref(), Some("a"));
        assert_eq!(request.inputs[0].floats().unwrap(), [1.0, 2.5, 3.0, 4.0]);
        assert_eq!(request.binary_outputs, BinaryOutputs::default());
        // A count that disagrees with the shape is refused when read, not when decoded.
        let body =
            json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]});
        let request = decode_request(None, body.to_string().as_bytes()).unwrap();
        assert!(
            (request.inputs[0].floats().unwrap_err().0)
                .contains("input `x` has shape [3], which holds 3 values, but `data` has 1")
        );
    }

    #[test]
    fn binary_inputs_of_every_kind_read_as_their_values() {
        let floats: Vec<u8> = [1.5f32, -2.0, f32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ints: Vec<u8> = [7i32, -7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let texts = elements(&[b"hello", "Grüße".as_bytes(), b""]);
        let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (header, body) = binary(
            json!({"inputs": [
                {"name": "f", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
                {"name": "j", "shape": [1], "datatype": "INT64", "data": [5]},
                {"name": "i", "shape": [2, 1], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
                {"name": "t", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": texts.len()}},
                {"name": "b", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}},
                {"name": "h", "shape": [4], "datatype": "FP16", "parameters": {"binary_data_size": 8}},
            ]}),
            &[&floats, &ints, &texts, &[1, 0], &halves],
        );
        let request = decode(&header, &body).unwrap();
        let [f, j, i, t, b, h] = &request.inputs[..] else {
            panic!("six inputs");
        };
        assert_eq!(f.floats().unwrap(), [1.5, -2.0, f32::MAX]);
        assert_eq!(j.ints().unwrap(), [5]);
        assert_eq!(i.ints().unwrap(), [7, -7]);
        assert_eq!(i.floats().unwrap(), [7.0, -7.0]);
        assert_eq!(t.texts().unwrap(), ["hello", "Grüße", ""]);
        assert_eq!(t.byte_strings().unwrap()[1], "Grüße".as_bytes());
        let bools: Vec<Value> = b
            .values()
            .unwrap()
            .into_iter()
            .map(|v| v.into_owned())
            .collect();
        assert_eq!(bools, [json!(true), json!(false)]);
        assert_eq!(h.floats().unwrap(), [1.0, -2.0, 65504.0, 2f32.powi(-24)]);
        assert!(
            f.texts()
                .unwrap_err()
                .0
                .contains("data[0] is 1.5; FP32 data must be JSON strings")
        );
        assert!(
            t.floats()
                .unwrap_err()
                .0
                .contains("input `t` is BYTES; numbers are read")
        );
        assert!(
            f.ints()
                .unwrap_err()
                .0
                .contains("integers are read from an integer datatype")
        );
    }

    #[test]
    fn non_utf8_texts_and_out_of_range_integers_are_refused_where_read() {
        let texts = elements(&[b"ok", b"\xff"]);
        let big = u64::MAX.to_le_bytes();
        let (header, body) = binary(
            json!({"inputs": [
                {"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": texts.len()}},
                {"name": "u", "shape": [1], "datatype": "UINT64", "parameters": {"binary_data_size": 8}},
                {"name": "n", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
            ]}),
            &[&texts, &big, &f32::NAN.to_le_bytes()],
        );
        let request = decode(&header, &body).unwrap();
        let [t, u, n] = &request.inputs[..] else {
            panic!("three inputs");
        };
        assert_eq!(t.byte_strings().unwrap(), [b"ok".to_vec(), vec![0xff]]);
        assert!(t.texts().unwrap_err().0.contains("data[1] is not UTF-8"));
        assert!(
            u.ints()
                .unwrap_err()
                .0
                .contains("data[0] is 18446744073709551615")
        );
        assert!(
            n.floats().unwrap()[0].is_nan(),
            "the model judges NaN, not the protocol"
        );
        assert!(
            n.values()
                .unwrap_err()
                .0
                .contains("data[0] is NaN, not a finite number")
        );
    }

    #[test]
    fn malformed_framing_is_refused_before_anything_is_read() {
        let one = |shape: Value, datatype: &str, size: u64| {
            json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                "parameters": {"binary_data_size": size}}]})
        };
        let refused = |header: &str, body: &[u8], want: &str| {
            let e = decode(header, body).unwrap_err();
            assert!(e.0.contains(want), "{:?} does not contain {want:?}", e.0);
        };
        let (header, body) = binary(one(json!([2]), "FP32", 8), &[&[0; 8]]);
        refused(
            &(body.len() + 1).to_string(),
            &body,
            "must be at most the body's length",
        );
        refused("-1", &body, "it must be the length in bytes");
        refused(
            &header,
            &body[..body.len() - 1],
            "add up to 8 bytes, but 7 bytes follow",
        );
        let (header, body) = binary(one(json!([u64::MAX, u64::MAX]), "INT64", 8), &[&[0; 8]]);
        refused(
            &header,
            &body,
            "more than 18446744073709551615 values of 8 bytes",
        );
        let (header, body) = binary(one(json!([1_000_000_000_000u64]), "FP64", 8), &[&[0; 8]]);
        refused(
            &header,
            &body,
            "1000000000000 values of 8 bytes, 8000000000000 bytes",
        );
        let texts = [&u32::MAX.to_le_bytes()[..], b"abc"].concat();
        let (header, body) = binary(one(json!([1]), "BYTES", 7), &[&texts]);
        refused(
            &header,
            &body,
            "says it is 4294967295 bytes long but only 3 bytes are left",
        );
        let (header, body) = binary(one(json!([3]), "BYTES", 3), &[b"abc"]);
        refused(
            &header,
            &body,
            "BYTES element 0 needs a 4-byte length but only 3 bytes",
        );
        let sizes = json!({"inputs": [
            {"name": "a", "shape": [1], "datatype": "UINT8", "parameters": {"binary_data_size": u64::MAX}},
            {"name": "b", "shape": [1], "datatype": "UINT8", "parameters": {"binary_data_size": 2}}]});
        let (header, body) = binary(sizes, &[&[0; 3]]);
        refused(
            &header,
            &body,
            "add up to more than 18446744073709551615 bytes",
        );
        // Without the header the whole body is the JSON: binary data cannot follow it.
        let body = one(json!([1]), "UINT8", 1).to_string();
        let e = decode_request(None, body.as_bytes()).unwrap_err();
        assert!(
            e.0.contains("no Inference-Header-Content-Length header"),
            "{e}"
        );
    }

    #[test]
    fn binary_outputs_follow_the_request_and_their_sizes_add_up() {
        let request = json!({"inputs": [], "parameters": {"binary_data_output": true},
            "outputs": [{"name": "p"}, {"name": "c", "parameters": {"binary_data": false}}]});
        let request = decode_request(None, request.to_string().as_bytes()).unwrap();
        assert!(request.binary_outputs.wants("p") && request.binary_outputs.wants("label"));
        assert!(!request.binary_outputs.wants("c"));
        let response = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![
                OutputTensor {
                    name: "p",
                    datatype: "FP32",
                    shape: vec![2],
                    data: TensorData::Fp32(vec![0.25, -1.0]),
                },
                OutputTensor {
                    name: "label",
                    datatype: "BYTES",
                    shape: vec![2],
                    data: TensorData::Bytes(vec!["seven".into(), String::new()]),
                },
                OutputTensor {
                    name: "c",
                    datatype: "INT64",
                    shape: vec![1],
                    data: TensorData::Int64(vec![7]),
                },
            ],
        };
        let encoded = encode_response(&response, &request.binary_outputs).unwrap();
        let length = encoded.header_length.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..length]).unwrap();
        assert_eq!(
            header["outputs"],
            json!([
                {"name": "p", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
                {"name": "label", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}},
                {"name": "c", "datatype": "INT64", "shape": [1], "data": [7]},
            ])
        );
        let data = &encoded.body[length..];
        assert_eq!(
            &data[..8],
            [0.25f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat()
        );
        assert_eq!(&data[8..], elements(&[b"seven", b""]));
        // Nothing asked for in binary: the JSON as before.
        let encoded = encode_response(&response, &BinaryOutputs::default()).unwrap();
        assert_eq!(encoded.header_length, None);
        assert_eq!(encoded.body, serde_json::to_vec(&response).unwrap());
    }
}
