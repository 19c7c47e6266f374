//! The OpenAPI 3.0 document of the endpoints.

use serde_json::{Map, Value, json};

pub(crate) fn openapi_document() -> Value {
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok_json = |schema: &str, what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let model =
        json!({"name": "model", "in": "path", "required": true, "schema": {"type": "string"}});
    let version = json!({"name": "version", "in": "path", "required": true, "schema": {"type": "string"}, "description": "a version or a label (e.g. stable)"});
    let health = |what: &str| {
        json!({"get": {"summary": what, "responses": {
            "200": ok_json("Health", "yes"), "503": ok_json("Health", "no")}}})
    };
    let metadata = |params: Value| {
        json!({"get": {"summary": "Model metadata: inputs, outputs, versions", "parameters": params, "responses": {
            "200": ok_json("ModelMetadata", "the model's metadata"), "404": error}}})
    };
    let model_ready = |params: Value| {
        json!({"get": {"summary": "Is the model ready", "parameters": params, "responses": {
            "200": ok_json("ModelReady", "ready"), "503": ok_json("ModelReady", "not ready"), "404": error}}})
    };
    let binary_header = json!({"name": "Inference-Header-Content-Length", "in": "header", "required": false,
        "schema": {"type": "integer", "minimum": 0},
        "description": "binary tensor data extension: the length of the JSON that starts the body; the inputs with parameters.binary_data_size follow it, in input order"});
    let binary_body = json!({"type": "string", "format": "binary",
        "description": "the JSON (InferRequest / InferResponse), then the binary tensor data: little-endian elements, BYTES elements as a 4-byte little-endian length and the bytes"});
    let infer = |params: Value| {
        let mut params = params;
        if let Some(list) = params.as_array_mut() {
            list.push(binary_header.clone());
        }
        json!({"post": {"summary": "Run inference", "parameters": params,
            "requestBody": {"required": true, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": binary_body.clone()}}},
            "responses": {
                "200": {"description": "the outputs: JSON, or (when outputs are asked for as binary data) the JSON then their data, its length in the Inference-Header-Content-Length header",
                    "headers": {"Inference-Header-Content-Length": {"schema": {"type": "integer"}, "description": "the JSON's length, when binary data follows it"}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                        "application/octet-stream": {"schema": binary_body.clone()}}},
                "400": error, "404": error, "413": error, "415": error, "429": error, "500": error, "503": error}}})
    };
    let control_body = json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RepositoryControl"}}}});
    let control = |summary: &str| {
        json!({"post": {"summary": summary, "parameters": [model.clone()], "requestBody": control_body.clone(),
            "responses": {"200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": error, "404": error}}})
    };
    let both = json!([model, version]);
    let one = json!([model]);
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "modelhost-serve (Open Inference Protocol v2)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of KServe v2 / Triton: health, metadata, inference with JSON tensors or binary tensor data, and the model repository extension. Errors are {\"error\": \"...\"}."
        },
        "paths": {
            "/v2/health/live": health("Is the server live"),
            "/v2/health/ready": health("Is the server ready (every model warmed up, not shedding load, not draining)"),
            "/v2": {"get": {"summary": "Server metadata", "responses": {"200": ok_json("ServerMetadata", "the server's metadata")}}},
            "/v2/models/{model}": metadata(one.clone()),
            "/v2/models/{model}/versions/{version}": metadata(both.clone()),
            "/v2/models/{model}/ready": model_ready(one.clone()),
            "/v2/models/{model}/versions/{version}/ready": model_ready(both.clone()),
            "/v2/models/{model}/infer": infer(one),
            "/v2/models/{model}/versions/{version}/infer": infer(both),
            "/v2/repository/index": {"post": {"summary": "Every model version and its state",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean", "description": "only the versions that are ready"}}}}}},
                "responses": {"200": {"description": "the index", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/RepositoryEntry"}}}}}, "400": error}}},
            "/v2/repository/models/{model}/load": control("Load a model from its repository directory: a model added on disk, an unloaded one, new or removed versions"),
            "/v2/repository/models/{model}/unload": control("Unload every version of a model until it is loaded again"),
            "/v2/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string", "description": "what is wrong and what to do"}}},
            "Health": {"type": "object", "properties": {"live": {"type": "boolean"}, "ready": {"type": "boolean"}}},
            "ModelReady": {"type": "object", "required": ["name", "ready"], "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
            "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
                "name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array", "items": {"type": "string"}}}},
            "TensorMetadata": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
                "name": {"type": "string"}, "datatype": {"$ref": "#/components/schemas/Datatype"},
                "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1 is a variable dimension"}}},
            "ModelMetadata": {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
                "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}, "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}}}},
            "Datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
            "InputTensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"$ref": "#/components/schemas/Datatype"},
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0, "description": "the input's data is this many bytes of binary data after the JSON, instead of data"}}},
                "data": {"description": "row-major values, flat or nested: strings for BYTES, numbers otherwise (absent with parameters.binary_data_size)", "type": "array", "items": {}}}},
            "RequestedOutput": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean", "description": "return this output as binary data"}}}}},
            "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean", "description": "return every output as binary data, unless an output says otherwise"}}},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/InputTensor"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/RequestedOutput"}}}},
            "OutputTensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
                "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"$ref": "#/components/schemas/Datatype"},
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "description": "the output's data is this many bytes of binary data after the JSON"}}},
                "data": {"type": "array", "items": {}, "description": "absent when the output is binary data"}}},
            "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/OutputTensor"}}}},
            "RepositoryEntry": {"type": "object", "required": ["name", "version", "state"], "properties": {
                "name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": {"type": "string", "description": "why it is unavailable (unloaded)"}, "kind": {"type": "string"}}},
            "RepositoryControl": {"type": "object", "properties": {"parameters": {"type": "object", "description": "unload_dependents is accepted and has nothing to act on; config and file:... on load are refused"}}}
        }}
    });
    if let Some(paths) = document["paths"].as_object_mut() {
        paths.extend(compat_paths());
    }
    document
}

/// The routes of the other protocols: OpenAI, TEI, TF Serving / KServe V1, TorchServe.
fn compat_paths() -> Map<String, Value> {
    let answer = |what: &str, schema: Value| json!({"description": what, "content": {"application/json": {"schema": schema}}});
    let any = json!({"type": "object"});
    let errors = |shape: &str| json!({"description": format!("error: {shape}"), "content": {"application/json": {"schema": {"type": "object"}}}});
    let post = |summary: &str, request: Value, ok: Value, shape: &str, params: Value| {
        json!({"post": {"summary": summary, "parameters": params,
            "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
            "responses": {"200": ok, "400": errors(shape), "404": errors(shape), "413": errors(shape), "422": errors(shape), "429": errors(shape), "503": errors(shape)}}})
    };
    let texts =
        json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]});
    let path_param = |name: &str, what: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": what});
    let tei_model = json!([
        {"name": "model", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the model (or header X-Model); default: the only model of the route's kind"}
    ]);
    let tf_status = |params: Value| {
        json!({"summary": "TF Serving model status (with KServe V1's name and ready)", "parameters": params,
        "responses": {"200": answer("model_version_status", any.clone()), "404": errors("{\"error\": \"...\"}")}})
    };
    let tf_predict = |params: Value| {
        post(
            "TF Serving / KServe V1 predict: the last segment ends in :predict",
            json!({"type": "object", "properties": {"instances": {"type": "array", "items": {}}, "inputs": {}}}),
            answer(
                "{\"predictions\": [...]} or {\"outputs\": [...]}",
                any.clone(),
            ),
            "{\"error\": \"...\"}",
            params,
        )
    };
    let torch = |params: Value| {
        json!({"post": {"summary": "TorchServe inference: the raw body is the input (text, image file, or JSON)", "parameters": params,
        "requestBody": {"required": true, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": answer("the output's natural JSON", any.clone()), "400": errors("TorchServe's {code, type, message}"), "404": errors("TorchServe's {code, type, message}")}}})
    };
    let paths = json!({
        "/v1/embeddings": post("OpenAI embeddings (text embedders)",
            json!({"type": "object", "required": ["input"], "properties": {"input": texts.clone(), "model": {"type": "string"},
                "encoding_format": {"type": "string", "enum": ["float", "base64"]}, "dimensions": {"type": "integer", "minimum": 1}}}),
            answer("{object: list, data: [{object: embedding, index, embedding}], model, usage}", any.clone()),
            "OpenAI's {\"error\": {message, type, param, code}}", json!([])),
        "/embed": post("TEI embed (text embedders)",
            json!({"type": "object", "required": ["inputs"], "properties": {"inputs": texts.clone(), "normalize": {"type": "boolean"}, "truncate": {"type": "boolean"}, "prompt_name": {"type": "string"}}}),
            answer("one vector per input", json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}})),
            "TEI's {error, error_type}", tei_model.clone()),
        "/rerank": post("TEI rerank (cross-encoders)",
            json!({"type": "object", "required": ["query", "texts"], "properties": {"query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
                "raw_scores": {"type": "boolean"}, "return_text": {"type": "boolean"}, "truncate": {"type": "boolean"}}}),
            answer("[{index, score, text?}] by score, highest first", json!({"type": "array", "items": {"type": "object"}})),
            "TEI's {error, error_type}", tei_model.clone()),
        "/tokenize": post("TEI tokenize (text embedders and classifiers)",
            json!({"type": "object", "required": ["inputs"], "properties": {"inputs": texts, "add_special_tokens": {"type": "boolean"}, "prompt_name": {"type": "string"}}}),
            answer("[[{id, text, special, start, stop}]]", json!({"type": "array", "items": {"type": "array", "items": {"type": "object"}}})),
            "TEI's {error, error_type}", tei_model),
        "/v1/models/{model}": {"get": tf_status(json!([path_param("model", "the model")])),
            "post": tf_predict(json!([path_param("model", "NAME:predict")]))["post"].clone()},
        "/v1/models/{model}/versions/{version}": {"get": tf_status(json!([path_param("model", "the model"), path_param("version", "a version or a label")])),
            "post": tf_predict(json!([path_param("model", "the model"), path_param("version", "VERSION:predict")]))["post"].clone()},
        "/v1/models/{model}/labels/{label}": tf_predict(json!([path_param("model", "the model"), path_param("label", "LABEL:predict")])),
        "/predictions/{model}": torch(json!([path_param("model", "the model")])),
        "/predictions/{model}/{version}": torch(json!([path_param("model", "the model"), path_param("version", "a version or a label")])),
        "/ping": {"get": {"summary": "TorchServe health", "responses": {"200": answer("{\"status\": \"Healthy\"}", any.clone()), "503": answer("{\"status\": \"Unhealthy\"}", any)}}}
    });
    match paths {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
