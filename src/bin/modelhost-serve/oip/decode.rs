//! Decoding an infer request: JSON, or JSON then binary tensor data; every size checked
//! against the bytes present before anything is read or allocated.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    BinaryOutputs, Datatype, InferRequest, InputData, InputTensor, Malformed, RequestedOutput,
    datatype_names, describe_count, element_count, malformed,
};

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct WireInput {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A boolean parameter; absent is `None`, anything but a boolean is refused.
fn bool_parameter(
    parameters: Option<&Map<String, Value>>,
    key: &str,
    owner: &str,
) -> Result<Option<bool>, Malformed> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => malformed(format!(
            "{owner} has parameters.{key} = {other}; it must be true or false"
        )),
    }
}

/// Decodes an infer request: the whole body as JSON, or, with the
/// `Inference-Header-Content-Length` header's value, that many bytes of JSON followed by
/// the binary data of the inputs that give `parameters.binary_data_size`.
pub(crate) fn decode_request(
    header_length: Option<&str>,
    body: &[u8],
) -> Result<InferRequest, Malformed> {
    let (json, binary) = match header_length {
        None => (body, None),
        Some(text) => {
            let Ok(length) = text.trim().parse::<usize>() else {
                return malformed(format!(
                    "the Inference-Header-Content-Length header is {text:?}; it must be the \
                     length in bytes of the JSON that starts the body, a whole number"
                ));
            };
            let Some((json, rest)) = body.split_at_checked(length) else {
                return malformed(format!(
                    "the Inference-Header-Content-Length header says the JSON is {length} \
                     bytes, but the body has {} bytes; it must be at most the body's length \
                     (the JSON comes first, the binary tensor data after it)",
                    body.len()
                ));
            };
            (json, Some(rest))
        }
    };
    let wire: WireRequest = serde_json::from_slice(json).map_err(|e| {
        let what = if e.is_data() {
            "the request is not an infer request"
        } else {
            "the request body is not valid JSON"
        };
        Malformed(format!(
            "{what}: {e}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \
             \"data\"}}]}} (see /v2/openapi.json)"
        ))
    })?;

    // Each input's binary size, and their sum against what follows the JSON, before any
    // input is read.
    let mut sizes = Vec::with_capacity(wire.inputs.len());
    for input in &wire.inputs {
        let size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => match v.as_u64() {
                Some(size) => Some(size),
                None => {
                    return malformed(format!(
                        "input `{}` has parameters.binary_data_size = {v}; it must be the \
                         byte length of its binary data, a whole number",
                        input.name
                    ));
                }
            },
        };
        if size.is_some() && binary.is_none() {
            return malformed(format!(
                "input `{}` has parameters.binary_data_size, but the request has no \
                 Inference-Header-Content-Length header; binary data needs that header (the \
                 JSON's length in bytes), or send the values as JSON `data`",
                input.name
            ));
        }
        sizes.push(size);
    }
    let rest = binary.unwrap_or(&[]);
    let total = sizes
        .iter()
        .flatten()
        .try_fold(0u64, |sum, size| sum.checked_add(*size));
    if total != Some(rest.len() as u64) {
        return malformed(format!(
            "the inputs' parameters.binary_data_size add up to {} bytes, but {} bytes follow \
             the {}-byte JSON header; they must be equal (each binary input's data, in input \
             order, and nothing else)",
            describe_count(total),
            rest.len(),
            json.len()
        ));
    }

    let mut inputs = Vec::with_capacity(wire.inputs.len());
    let mut offset = 0usize;
    for (input, size) in wire.inputs.into_iter().zip(sizes) {
        let data = match (input.data, size) {
            (Some(_), Some(_)) => {
                return malformed(format!(
                    "input `{}` has both `data` and parameters.binary_data_size; send its \
                     values one way",
                    input.name
                ));
            }
            (None, None) => {
                return malformed(format!(
                    "input `{}` has no `data`; send its values as `data`, or as binary data \
                     with parameters.binary_data_size",
                    input.name
                ));
            }
            // Counted against the shape when read (`InputTensor::value_count`), after the
            // model has checked the datatype and shape: its message says more.
            (Some(values), None) => InputData::Json(values),
            (None, Some(size)) => {
                // The sizes add up to `rest.len()`, so each fits; checked all the same.
                let bytes = usize::try_from(size)
                    .ok()
                    .and_then(|size| offset.checked_add(size))
                    .and_then(|end| rest.get(offset..end).map(|bytes| (bytes, end)));
                let Some((bytes, end)) = bytes else {
                    return malformed(format!(
                        "input `{}`: its binary data runs past the end of the body",
                        input.name
                    ));
                };
                offset = end;
                check_binary(&input.name, &input.datatype, &input.shape, bytes)?;
                InputData::Binary(bytes.to_vec())
            }
        };
        inputs.push(InputTensor {
            name: input.name,
            shape: input.shape,
            datatype: input.datatype,
            data,
            parameters: input.parameters,
        });
    }

    let mut binary_outputs = BinaryOutputs {
        all: bool_parameter(
            wire.parameters.as_ref(),
            "binary_data_output",
            "the request",
        )?
        .unwrap_or(false),
        outputs: Vec::new(),
    };
    for output in wire.outputs.iter().flatten() {
        let owner = format!("output `{}`", output.name);
        if output
            .parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("classification"))
        {
            return malformed(format!(
                "{owner} asks for parameters.classification (the classification extension), \
                 which this server does not support; ask for the output itself"
            ));
        }
        if let Some(binary) = bool_parameter(output.parameters.as_ref(), "binary_data", &owner)? {
            binary_outputs.outputs.push((output.name.clone(), binary));
        }
    }
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs: wire.outputs,
        parameters: wire.parameters,
        binary_outputs,
    })
}

/// The elements of BYTES binary data: a 4-byte little-endian length, then that many
/// bytes. Yields an error, once, where the data is cut short.
pub(super) struct BytesElements<'a> {
    pub(super) rest: &'a [u8],
}

/// Where BYTES binary data is cut short.
pub(super) enum CutShort {
    /// Fewer than 4 bytes are left for an element's length.
    Length { left: usize },
    /// An element's length is past the end.
    Body { length: u32, left: usize },
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = Result<&'a [u8], CutShort>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((length, after)) = self.rest.split_first_chunk::<4>() else {
            let left = self.rest.len();
            self.rest = &[];
            return Some(Err(CutShort::Length { left }));
        };
        let length = u32::from_le_bytes(*length);
        let Some((element, rest)) = usize::try_from(length)
            .ok()
            .and_then(|n| after.split_at_checked(n))
        else {
            let left = after.len();
            self.rest = &[];
            return Some(Err(CutShort::Body { length, left }));
        };
        self.rest = rest;
        Some(Ok(element))
    }
}

pub(super) fn cut_short(name: &str, index: u64, cut: CutShort) -> Malformed {
    let what = match cut {
        CutShort::Length { left } => format!(
            "needs a 4-byte length but only {left} bytes are left in the input's binary data"
        ),
        CutShort::Body { length, left } => format!(
            "says it is {length} bytes long but only {left} bytes are left in the input's \
             binary data"
        ),
    };
    Malformed(format!(
        "input `{name}`: BYTES element {index} {what}; each element is a 4-byte little-endian \
         length and then that many bytes, and they fill the binary_data_size exactly"
    ))
}

pub(super) fn check_binary(
    name: &str,
    datatype: &str,
    shape: &[u64],
    bytes: &[u8],
) -> Result<(), Malformed> {
    let Some(dt) = Datatype::parse(datatype) else {
        return malformed(format!(
            "input `{name}` has datatype {datatype:?}; binary data is defined for {}",
            datatype_names()
        ));
    };
    let count = element_count(shape);
    match dt.size() {
        Some(size) => {
            let expected = count.and_then(|n| n.checked_mul(size as u64));
            if expected != Some(bytes.len() as u64) {
                return malformed(format!(
                    "input `{name}` has shape {shape:?} of {datatype}: {} values of {size} \
                     bytes, {} bytes, but its parameters.binary_data_size is {}; they must be \
                     equal",
                    describe_count(count),
                    describe_count(expected),
                    bytes.len()
                ));
            }
        }
        None => {
            let mut found = 0u64;
            for element in (BytesElements { rest: bytes }) {
                if let Err(cut) = element {
                    return Err(cut_short(name, found, cut));
                }
                found += 1;
            }
            if count != Some(found) {
                return malformed(format!(
                    "input `{name}` has shape {shape:?}, which holds {} values, but its binary \
                     data holds {found} BYTES elements; send a shape and data that agree",
                    describe_count(count)
                ));
            }
        }
    }
    Ok(())
}
