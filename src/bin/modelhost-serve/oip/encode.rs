//! Encoding an infer response: all JSON, or JSON then the binary data of the outputs the
//! request asked for so.

use serde::Serialize;

use super::{BinaryOutputs, InferResponse, TensorData};

/// Appends `values` as little-endian bytes.
fn extend_le<T: bytemuck::Pod>(out: &mut Vec<u8>, values: &[T]) {
    let start = out.len();
    out.extend_from_slice(bytemuck::cast_slice(values));
    if cfg!(target_endian = "big") {
        out[start..]
            .chunks_exact_mut(size_of::<T>())
            .for_each(<[u8]>::reverse);
    }
}

impl TensorData {
    /// Appends the data in the binary format.
    fn write_binary(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            TensorData::Fp32(values) => extend_le(out, values),
            TensorData::Fp64(values) => extend_le(out, values),
            TensorData::Int64(values) => extend_le(out, values),
            TensorData::Bytes(values) => {
                for value in values {
                    let length = u32::try_from(value.len()).map_err(|_| {
                        format!(
                            "an output BYTES element of {} bytes is past the binary format's \
                             4 GiB limit",
                            value.len()
                        )
                    })?;
                    out.extend_from_slice(&length.to_le_bytes());
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// An encoded response body.
#[derive(Debug)]
pub(crate) struct EncodedResponse {
    pub(crate) body: Vec<u8>,
    /// The JSON's length when binary data follows it (the `Inference-Header-Content-Length`
    /// header to send); `None` when the body is all JSON.
    pub(crate) header_length: Option<usize>,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutput<'a>>,
}

#[derive(Serialize)]
struct WireOutput<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Encodes a response: all JSON, or, when `binary` wants any output as binary data, the
/// JSON (those outputs with `parameters.binary_data_size` and no `data`) followed by their
/// data in output order. An error is the server's (an output it cannot write).
pub(crate) fn encode_response(
    response: &InferResponse,
    binary: &BinaryOutputs,
) -> Result<EncodedResponse, String> {
    if !response.outputs.iter().any(|o| binary.wants(o.name)) {
        let body = serde_json::to_vec(response).map_err(|e| e.to_string())?;
        return Ok(EncodedResponse {
            body,
            header_length: None,
        });
    }
    let mut data = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for output in &response.outputs {
        let (parameters, json) = if binary.wants(output.name) {
            let start = data.len();
            output.data.write_binary(&mut data)?;
            let binary_data_size = data.len() - start;
            (Some(BinarySize { binary_data_size }), None)
        } else {
            (None, Some(&output.data))
        };
        outputs.push(WireOutput {
            name: output.name,
            datatype: output.datatype,
            shape: &output.shape,
            parameters,
            data: json,
        });
    }
    let mut body = serde_json::to_vec(&WireResponse {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: response.id.as_deref(),
        outputs,
    })
    .map_err(|e| e.to_string())?;
    let header_length = body.len();
    body.extend_from_slice(&data);
    Ok(EncodedResponse {
        body,
        header_length: Some(header_length),
    })
}
