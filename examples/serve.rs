//! An HTTP server for every model of a model repository, speaking the Open Inference
//! Protocol v2 (the REST API of KServe, Triton and MLServer), with Prometheus metrics and an
//! OpenAPI document.
//!
//! ```text
//! cargo run --release --example serve -- --models ROOT [--addr 127.0.0.1:8000]
//!     [--max-batch-size 32] [--max-batch-tokens N] [--max-delay-ms 2] [--queue-capacity 1024]
//!     [--deadline-ms N] [--cache-mb 0] [--max-body-bytes 8388608] [--drain-timeout-s 30]
//! ```
//!
//! `ROOT` is a model repository, `ROOT/NAME/VERSION/`. The kind of each version directory
//! is recognised from its own files: `tokenizer.json` with a `config.json` whose
//! `architectures` name a `...ForSequenceClassification` (a Hugging Face fine-tuned text
//! classifier as it comes) is a text classifier; other `tokenizer.json` directories with
//! `modules.json` or `config.json` (a sentence-transformers directory) are text embedders;
//! `model.json` with `model.safetensors` is an MLP classifier (the shipped digits model). A
//! `modelhost.json` of `{"kind": "text-embedder"}`, `{"kind": "text-classifier"}` or
//! `{"kind": "mlp-classifier"}` overrides the guess. The highest version of each model is
//! the one that answers when a request names no version.
//!
//! Endpoints (see `GET /v2/openapi.json`):
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v2/health/live`, `GET /v2/health/ready` | 200, or 503 (not ready: warming up, shedding load, draining) |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata: inputs and outputs with datatypes and shapes |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | 200, or 503 |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | inference, JSON tensors |
//! | `POST /v2/repository/index` | every model version and its state |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are `{"error": "..."}`: 400 bad input (the message says what to fix), 404 unknown
//! model, version or route, 405 wrong method, 413 body over `--max-body-bytes`, 415 the
//! binary tensor extension (send JSON: tritonclient's `binary_data=False`), 429 queue full,
//! 503 shutting down or a request past its `--deadline-ms` (both: not computed, retry;
//! 429 and 503 carry `Retry-After: 1`), 500 the model failed.
//!
//! A request of N rows (shape `[N]` of BYTES, `[N, 64]` of FP32) goes to the predictor as
//! one `predict_many` call, so the dynamic batcher sees all of its rows; such a request
//! waits for room in the queue rather than being shed, and a one-row request is shed with
//! 429 when the queue is full. SIGTERM or Ctrl-C stops accepting connections, answers every
//! request already received (for at most `--drain-timeout-s`), drains the predictors and
//! exits 0. SIGHUP rescans the repository: new version directories are deployed (a new
//! version of a known model answers at `/versions/{v}`, and by default once the default
//! version's directory is removed), removed ones retired.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use modelhost::{
    Model, PredictorBuilder, batch::BatchPolicy, cache::PredictionCache, error::CapacityError,
    error::LoadError, error::PredictError, metrics::Metrics, models::Classification,
    models::classifier::TextClassifier, models::mlp::MlpClassifier, models::sentence::Embedding,
    models::sentence::SentenceEmbedder, registry::ModelRepository, registry::Registry,
    registry::RegistryError, registry::ReloadReport,
};

const USAGE: &str = "usage: serve --models ROOT [--addr 127.0.0.1:8000] [--max-batch-size 32] \
[--max-batch-tokens N] [--max-delay-ms 2] [--queue-capacity 1024] [--deadline-ms N] \
[--cache-mb 0] [--max-body-bytes 8388608] [--drain-timeout-s 30]";

// ---------------------------------------------------------------------------------------
// Command line

struct Args {
    models: PathBuf,
    addr: SocketAddr,
    max_batch_size: usize,
    max_batch_tokens: Option<usize>,
    max_delay: Duration,
    queue_capacity: usize,
    deadline: Option<Duration>,
    cache_bytes: usize,
    max_body_bytes: usize,
    drain_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut models = None;
    let mut args = Args {
        models: PathBuf::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        max_batch_size: 32,
        max_batch_tokens: None,
        max_delay: Duration::from_millis(2),
        queue_capacity: 1024,
        deadline: None,
        cache_bytes: 0,
        max_body_bytes: 8 << 20,
        drain_timeout: Duration::from_secs(30),
    };
    fn number<T: std::str::FromStr>(flag: &str, value: String) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        value
            .parse()
            .map_err(|e| format!("{flag} {value}: {e}\n{USAGE}"))
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--models" => models = Some(PathBuf::from(value()?)),
            "--addr" => args.addr = number(&flag, value()?)?,
            "--max-batch-size" => args.max_batch_size = number(&flag, value()?)?,
            "--max-batch-tokens" => args.max_batch_tokens = Some(number(&flag, value()?)?),
            "--max-delay-ms" => args.max_delay = Duration::from_millis(number(&flag, value()?)?),
            "--queue-capacity" => args.queue_capacity = number(&flag, value()?)?,
            "--deadline-ms" => {
                args.deadline = Some(Duration::from_millis(number(&flag, value()?)?))
            }
            "--cache-mb" => args.cache_bytes = number::<usize>(&flag, value()?)? << 20,
            "--max-body-bytes" => args.max_body_bytes = number(&flag, value()?)?,
            "--drain-timeout-s" => {
                args.drain_timeout = Duration::from_secs(number(&flag, value()?)?)
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    args.models = models.ok_or(format!("--models is required\n{USAGE}"))?;
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Model kinds: recognised from a version directory's own files

/// The kinds of model this server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TextEmbedder,
    TextClassifier,
    MlpClassifier,
}

impl Kind {
    const ALL: [Kind; 3] = [
        Kind::TextEmbedder,
        Kind::TextClassifier,
        Kind::MlpClassifier,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::TextEmbedder => "text-embedder",
            Kind::TextClassifier => "text-classifier",
            Kind::MlpClassifier => "mlp-classifier",
        }
    }

    /// The kind of a version directory: `modelhost.json`'s `kind` if there is one, else
    /// guessed from the files.
    fn of(dir: &Path) -> Result<Kind, String> {
        let manifest = dir.join("modelhost.json");
        if manifest.is_file() {
            #[derive(Deserialize)]
            struct Manifest {
                kind: String,
            }
            let text = std::fs::read_to_string(&manifest)
                .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
            let m: Manifest = serde_json::from_str(&text)
                .map_err(|e| format!("invalid {}: {e}", manifest.display()))?;
            return Kind::ALL
                .into_iter()
                .find(|k| k.name() == m.kind)
                .ok_or_else(|| {
                    format!(
                        "{}: unknown kind `{}`; use \"text-embedder\", \"text-classifier\" or \"mlp-classifier\"",
                        manifest.display(),
                        m.kind
                    )
                });
        }
        let has = |f: &str| dir.join(f).is_file();
        if has("model.json") && has("model.safetensors") {
            Ok(Kind::MlpClassifier)
        } else if has("tokenizer.json") && sequence_classification(&dir.join("config.json")) {
            Ok(Kind::TextClassifier)
        } else if has("tokenizer.json") && (has("modules.json") || has("config.json")) {
            Ok(Kind::TextEmbedder)
        } else {
            Err(format!(
                "{}: not a model directory this server knows (a sentence-transformers directory, \
                 a transformers text classifier, model.json + model.safetensors, or a \
                 modelhost.json naming the kind)",
                dir.display()
            ))
        }
    }
}

/// Whether a Hugging Face `config.json` declares a sequence-classification head (as
/// transformers saves a fine-tuned classifier). Unreadable files say no: loading as an
/// embedder then reports what is wrong with them.
fn sequence_classification(config: &Path) -> bool {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        architectures: Vec<String>,
    }
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str::<Config>(&text).ok())
        .is_some_and(|c| {
            c.architectures
                .iter()
                .any(|a| a.ends_with("ForSequenceClassification"))
        })
}

/// Version directories under `root` whose kind cannot be told, with the reason.
fn unrecognised(root: &Path) -> Vec<String> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    dirs(root)
        .iter()
        .flat_map(|model| dirs(model))
        .filter_map(|version| Kind::of(&version).err())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Protocol messages

/// An inference request (`POST .../infer`).
#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
}

#[derive(Debug, Serialize)]
struct InferResponse {
    model_name: String,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: TensorData,
}

/// Flat, row-major tensor data; f32 is written at f32 precision.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum TensorData {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Bytes(Vec<String>),
}

/// An input or output as model metadata lists it; `-1` is a variable dimension.
#[derive(Debug, Serialize)]
struct TensorMeta {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
}

// ---------------------------------------------------------------------------------------
// Errors: always `{"error": "..."}`

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn registry(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownModel { .. } | RegistryError::UnknownVersion { .. } => {
                Self::new(StatusCode::NOT_FOUND, e.to_string())
            }
            RegistryError::Predict(e) => Self::predict(e, None),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    /// Input errors → 400, a full queue → 429, not computed for lifecycle reasons
    /// (shutting down, past the deadline, worker gone) → 503, the model failed → 500.
    fn predict(e: PredictError, row: Option<usize>) -> Self {
        let status = match &e {
            PredictError::Input(_) => StatusCode::BAD_REQUEST,
            PredictError::Capacity(CapacityError::QueueFull { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PredictError::Capacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match row {
            Some(row) => format!("row {row}: {e}"),
            None => e.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------
// The codec: named protocol tensors ↔ a model's typed inputs and outputs

/// How one model type's typed inputs and outputs map to protocol tensors.
trait Codec: Model<Input: Clone> {
    /// `platform` in model metadata.
    const PLATFORM: &'static str;

    /// The one input tensor, batch dimension first.
    fn input_meta(&self) -> TensorMeta;

    /// The output tensors, batch dimension first.
    fn outputs_meta(&self) -> Vec<TensorMeta>;

    /// The rows of the request's input tensor (whose name is checked already).
    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<Self::Input>>;

    /// One tensor per output, each with the batch's rows.
    fn encode(&self, outputs: Vec<Self::Output>) -> Vec<OutputTensor>;
}

fn expect_datatype(tensor: &InputTensor, datatype: &str) -> ApiResult<()> {
    if tensor.datatype == datatype {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "input `{}` has datatype {}; the model takes {datatype}",
            tensor.name, tensor.datatype
        )))
    }
}

/// The tensor's values, flat and row-major (`data` may be flat or nested), checked
/// against its shape.
fn flat_data(tensor: &InputTensor) -> ApiResult<Vec<&Value>> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other),
        }
    }
    let mut values = Vec::new();
    walk(&tensor.data, &mut values);
    let expected = tensor
        .shape
        .iter()
        .try_fold(1u64, |n, d| n.checked_mul(*d))
        .unwrap_or(u64::MAX);
    if values.len() as u64 != expected {
        return Err(ApiError::bad(format!(
            "input `{}` has shape {:?}, which holds {expected} values, but `data` has {}; \
             send a shape and data that agree (data is row-major, flat or nested)",
            tensor.name,
            tensor.shape,
            values.len()
        )));
    }
    Ok(values)
}

/// The tensor's values (see [`flat_data`]) read by `read`; a value it refuses is a 400
/// naming its index and `rule`.
fn typed_data<T>(
    tensor: &InputTensor,
    rule: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> ApiResult<Vec<T>> {
    flat_data(tensor)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            read(v).ok_or_else(|| {
                ApiError::bad(format!("input `{}`: data[{i}] is {v}; {rule}", tensor.name))
            })
        })
        .collect()
}

fn no_rows(tensor: &InputTensor) -> ApiError {
    ApiError::bad(format!(
        "input `{}` has shape {:?}, with no rows; send at least one",
        tensor.name, tensor.shape
    ))
}

/// A one-text-per-row input named as the model's signature names it.
fn text_input_meta(model: &impl Model) -> TensorMeta {
    TensorMeta {
        name: (model.signature().inputs.first())
            .map_or_else(|| "text".to_string(), |t| t.name.clone()),
        datatype: "BYTES",
        shape: vec![-1],
    }
}

/// The texts of a BYTES input of shape `[N]` or `[N, 1]`.
fn decode_texts(tensor: &InputTensor) -> ApiResult<Vec<String>> {
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
    typed_data(tensor, "BYTES data must be JSON strings", |v| {
        v.as_str().map(str::to_owned)
    })
}

/// A classifier's outputs: `probabilities` `[N, classes]`, `label` and `class` `[N]`.
fn classification_meta(classes: usize) -> Vec<TensorMeta> {
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

fn encode_classifications(outputs: Vec<Classification>, classes: usize) -> Vec<OutputTensor> {
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

impl Codec for SentenceEmbedder {
    const PLATFORM: &'static str = "modelhost_text_embedder";

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

    fn decode(&self, tensor: &InputTensor) -> ApiResult<Vec<String>> {
        decode_texts(tensor)
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
        let values = typed_data(tensor, "FP32 data must be JSON numbers", |v| {
            v.as_f64().map(|x| x as f32)
        })?;
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

// ---------------------------------------------------------------------------------------
// Model sets: one registry (and repository) per kind, behind one object-safe trait

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The models of one kind.
trait ModelSet: Send + Sync {
    fn kind(&self) -> Kind;
    fn names(&self) -> Vec<String>;
    /// `(version, ready)` of each version of `name`, in deployment order.
    fn versions(&self, name: &str) -> Vec<(String, bool)>;
    fn metadata(&self, name: &str, version: Option<&str>) -> ApiResult<Value>;
    fn ready(&self, name: &str, version: Option<&str>) -> ApiResult<bool>;
    fn all_ready(&self) -> bool;
    fn all_live(&self) -> bool;
    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<ApiResult<InferResponse>>;
    fn reload(&self) -> Result<ReloadReport, LoadError>;
    /// Stops taking requests, answers those queued, joins the workers.
    fn shutdown(&self);
}

struct Served<M: Codec> {
    kind: Kind,
    repository: ModelRepository<M>,
}

impl<M: Codec> Served<M> {
    fn registry(&self) -> &Arc<Registry<M>> {
        self.repository.registry()
    }
}

/// Checks the request's tensor names against the model's and returns its one input.
fn select_input<'r>(
    name: &str,
    input: &TensorMeta,
    outputs: &[TensorMeta],
    request: &'r InferRequest,
) -> ApiResult<&'r InputTensor> {
    let describe = |t: &TensorMeta| format!("`{}` ({}, shape {:?})", t.name, t.datatype, t.shape);
    if let Some(other) = request.inputs.iter().find(|t| t.name != input.name) {
        return Err(ApiError::bad(format!(
            "model `{name}` has no input `{}`; it takes one input, {}",
            other.name,
            describe(input)
        )));
    }
    let tensor = match &request.inputs[..] {
        [one] => one,
        [] => {
            return Err(ApiError::bad(format!(
                "missing input: model `{name}` takes one input, {}",
                describe(input)
            )));
        }
        _ => {
            return Err(ApiError::bad(format!(
                "input `{}` is given {} times; give it once",
                input.name,
                request.inputs.len()
            )));
        }
    };
    if tensor
        .parameters
        .as_ref()
        .is_some_and(|p| p.contains_key("binary_data_size"))
    {
        return Err(binary_unsupported());
    }
    for wanted in request.outputs.iter().flatten() {
        if !outputs.iter().any(|o| o.name == wanted.name) {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(ApiError::bad(format!(
                "model `{name}` has no output `{}`; its outputs are {names:?}",
                wanted.name
            )));
        }
    }
    Ok(tensor)
}

fn binary_unsupported() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the binary tensor data extension is not supported; send tensors as JSON \
         (tritonclient: set_data_from_numpy(..., binary_data=False))",
    )
}

impl<M: Codec> ModelSet for Served<M> {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn names(&self) -> Vec<String> {
        self.registry().models()
    }

    fn versions(&self, name: &str) -> Vec<(String, bool)> {
        let registry = self.registry();
        registry
            .versions(name)
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let ready = registry
                    .handle(name, &v.version)
                    .is_ok_and(|h| h.predictor().health().ready);
                (v.version, ready)
            })
            .collect()
    }

    fn metadata(&self, name: &str, version: Option<&str>) -> ApiResult<Value> {
        let registry = self.registry();
        let handle = registry
            .handle(name, version.unwrap_or(modelhost::registry::STABLE))
            .map_err(ApiError::registry)?;
        let versions: Vec<String> = match version {
            Some(_) => vec![handle.version().to_string()],
            None => self.versions(name).into_iter().map(|(v, _)| v).collect(),
        };
        let model = handle.predictor().model();
        Ok(json!({
            "name": name,
            "versions": versions,
            "platform": M::PLATFORM,
            "inputs": [model.input_meta()],
            "outputs": model.outputs_meta(),
        }))
    }

    fn ready(&self, name: &str, version: Option<&str>) -> ApiResult<bool> {
        let handle = self
            .registry()
            .handle(name, version.unwrap_or(modelhost::registry::STABLE))
            .map_err(ApiError::registry)?;
        Ok(handle.predictor().health().ready)
    }

    fn all_ready(&self) -> bool {
        self.registry().ready()
    }

    fn all_live(&self) -> bool {
        self.registry().live()
    }

    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<ApiResult<InferResponse>> {
        let handle = match version {
            Some(v) => self.registry().handle(name, v),
            None => self.registry().route(name, None),
        };
        let name = name.to_string();
        Box::pin(async move {
            let handle = handle.map_err(ApiError::registry)?;
            let model = handle.predictor().model();
            let outputs_meta = model.outputs_meta();
            let tensor = select_input(&name, &model.input_meta(), &outputs_meta, &request)?;
            let mut inputs = model.decode(tensor)?;
            let rows = inputs.len();
            let answers = match (rows, inputs.pop()) {
                (1, Some(input)) => vec![handle.predictor().predict_async(input).await],
                (_, last) => {
                    inputs.extend(last);
                    let pinned = handle.clone();
                    tokio::task::spawn_blocking(move || pinned.predictor().predict_many(inputs))
                        .await
                        .map_err(|e| {
                            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        })?
                }
            };
            let outputs = answers
                .into_iter()
                .enumerate()
                .map(|(i, a)| a.map_err(|e| ApiError::predict(e, (rows > 1).then_some(i))))
                .collect::<ApiResult<Vec<_>>>()?;
            let mut tensors = model.encode(outputs);
            if let Some(wanted) = &request.outputs {
                tensors.retain(|t| wanted.iter().any(|w| w.name == t.name));
            }
            Ok(InferResponse {
                model_name: name,
                model_version: handle.version().to_string(),
                id: request.id,
                outputs: tensors,
            })
        })
    }

    fn reload(&self) -> Result<ReloadReport, LoadError> {
        self.repository.reload()
    }

    fn shutdown(&self) {
        let registry = self.registry();
        for name in registry.models() {
            for v in registry.versions(&name).unwrap_or_default() {
                if let Ok(handle) = registry.handle(&name, &v.version) {
                    handle.predictor().shutdown();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server

struct App {
    sets: Vec<Box<dyn ModelSet>>,
    metrics: Metrics,
    draining: AtomicBool,
    max_body_bytes: usize,
}

type AppState = State<Arc<App>>;

impl App {
    fn find(&self, name: &str) -> ApiResult<&dyn ModelSet> {
        self.sets
            .iter()
            .find(|s| s.names().iter().any(|n| n == name))
            .map(|s| &**s)
            .ok_or_else(|| {
                let known: Vec<String> = self.sets.iter().flat_map(|s| s.names()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no model named `{name}`; this server serves {known:?}"),
                )
            })
    }
}

fn health_answer(key: &str, ok: bool) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ key: ok }))).into_response()
}

async fn live(State(app): AppState) -> Response {
    health_answer("live", app.sets.iter().all(|s| s.all_live()))
}

async fn ready(State(app): AppState) -> Response {
    let ok = !app.draining.load(Ordering::Relaxed) && app.sets.iter().all(|s| s.all_ready());
    health_answer("ready", ok)
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "modelhost",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository"],
    }))
    .into_response()
}

async fn model_metadata(State(app): AppState, UrlPath(model): UrlPath<String>) -> Response {
    reply(app.find(&model).and_then(|s| s.metadata(&model, None)))
}

async fn version_metadata(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
) -> Response {
    reply(
        app.find(&model)
            .and_then(|s| s.metadata(&model, Some(&version))),
    )
}

async fn model_ready(State(app): AppState, UrlPath(model): UrlPath<String>) -> Response {
    model_ready_answer(&app, &model, None)
}

async fn version_ready(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
) -> Response {
    model_ready_answer(&app, &model, Some(&version))
}

fn model_ready_answer(app: &App, model: &str, version: Option<&str>) -> Response {
    match app.find(model).and_then(|s| s.ready(model, version)) {
        Ok(ok) => {
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, axum::Json(json!({ "name": model, "ready": ok }))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn reply(answer: ApiResult<Value>) -> Response {
    match answer {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn infer(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_answer(&app, &model, None, &headers, body).await
}

async fn infer_version(
    State(app): AppState,
    UrlPath((model, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_answer(&app, &model, Some(&version), &headers, body).await
}

async fn infer_answer(
    app: &App,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let set = app.find(model)?;
        if let Some(version) = version {
            // An unknown version is a 404 whatever the body holds.
            set.ready(model, Some(version))?;
        }
        if headers.contains_key("inference-header-content-length") {
            return Err(binary_unsupported());
        }
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is over the limit of {} bytes; send fewer rows per \
                         request or start the server with a larger --max-body-bytes",
                        app.max_body_bytes
                    ),
                )
            } else {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        })?;
        let request: InferRequest = serde_json::from_slice(&body).map_err(|e| {
            let what = if e.is_data() {
                "the request is not an infer request"
            } else {
                "the request body is not valid JSON"
            };
            ApiError::bad(format!(
                "{what}: {e}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \
                 \"data\"}}]}} (see /v2/openapi.json)"
            ))
        })?;
        set.infer(model, version, request).await
    };
    match answer.await {
        Ok(response) => axum::Json(response).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn repository_index(State(app): AppState) -> Response {
    let mut index = Vec::new();
    for set in &app.sets {
        for name in set.names() {
            for (version, ready) in set.versions(&name) {
                index.push(json!({
                    "name": name,
                    "version": version,
                    "state": if ready { "READY" } else { "UNAVAILABLE" },
                    "kind": set.kind().name(),
                }));
            }
        }
    }
    axum::Json(Value::Array(index)).into_response()
}

async fn metrics(State(app): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.encode_prometheus(),
    )
        .into_response()
}

async fn openapi() -> Response {
    axum::Json(openapi_document()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {uri}; the endpoints are listed at GET /v2/openapi.json"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}; see GET /v2/openapi.json for the methods"),
    )
}

/// Any error answer that is not JSON yet (an extractor's rejection) becomes
/// `{"error": "..."}`.
async fn json_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status().as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts.status.to_string()
    } else {
        text
    };
    let mut answer = ApiError::new(parts.status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(app)
}

/// Opens one repository per kind over `root`, each taking the directories of its kind.
fn open_sets(args: &Args, metrics: &Metrics) -> Result<Vec<Box<dyn ModelSet>>, String> {
    let of_kind = |kind: Kind| move |dir: &Path| Kind::of(dir) == Ok(kind);
    let policy = BatchPolicy {
        max_batch_size: args.max_batch_size,
        max_batch_tokens: args.max_batch_tokens,
        max_delay: args.max_delay,
        queue_capacity: args.queue_capacity,
        ..BatchPolicy::default()
    };
    let deadline = args.deadline;
    fn configure<M: Model>(
        policy: BatchPolicy,
        deadline: Option<Duration>,
    ) -> impl Fn(PredictorBuilder<M>) -> PredictorBuilder<M> + Send + Sync + 'static {
        move |b| {
            let b = b.policy(policy.clone());
            match deadline {
                Some(d) => b.deadline(d),
                None => b,
            }
        }
    }

    // Texts repeat (search queries, labels): the embedder may cache, keyed by raw text.
    let cache = (args.cache_bytes > 0).then(|| {
        let cache = Arc::new(
            PredictionCache::builder()
                .max_bytes(args.cache_bytes)
                .build(),
        );
        metrics.register_cache("text", &cache);
        cache
    });
    let configure_text = configure(policy.clone(), deadline);
    let text = Arc::new(Registry::with_predictor_config(move |b| {
        let b = configure_text(b);
        match &cache {
            Some(cache) => b.cache(cache.clone()),
            None => b,
        }
    }));
    let (text_repo, text_report) = ModelRepository::open_filtered(
        &args.models,
        text.clone(),
        of_kind(Kind::TextEmbedder),
        |dir: &Path| SentenceEmbedder::load(dir),
    )
    .map_err(|e| e.to_string())?;
    let classifier = Arc::new(Registry::with_predictor_config(configure(
        policy.clone(),
        deadline,
    )));
    let (classifier_repo, classifier_report) = ModelRepository::open_filtered(
        &args.models,
        classifier.clone(),
        of_kind(Kind::TextClassifier),
        |dir: &Path| TextClassifier::load(dir),
    )
    .map_err(|e| e.to_string())?;
    let mlp = Arc::new(Registry::with_predictor_config(configure(policy, deadline)));
    let (mlp_repo, mlp_report) = ModelRepository::open_filtered(
        &args.models,
        mlp.clone(),
        of_kind(Kind::MlpClassifier),
        |dir: &Path| MlpClassifier::load(dir),
    )
    .map_err(|e| e.to_string())?;
    metrics.register_registry(&text);
    metrics.register_registry(&classifier);
    metrics.register_registry(&mlp);

    let failed: Vec<String> = [&text_report, &classifier_report, &mlp_report]
        .iter()
        .flat_map(|r| &r.failed)
        .map(|(name, version, e)| format!("{name}/{version}: {e}"))
        .chain(unrecognised(&args.models))
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "some model versions could not be loaded:\n  {}",
            failed.join("\n  ")
        ));
    }
    let sets: Vec<Box<dyn ModelSet>> = vec![
        Box::new(Served {
            kind: Kind::TextEmbedder,
            repository: text_repo,
        }),
        Box::new(Served {
            kind: Kind::TextClassifier,
            repository: classifier_repo,
        }),
        Box::new(Served {
            kind: Kind::MlpClassifier,
            repository: mlp_repo,
        }),
    ];
    let mut clash: Vec<String> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            let later = &sets[i + 1..];
            a.names()
                .into_iter()
                .filter(move |n| later.iter().any(|b| b.names().contains(n)))
        })
        .collect();
    clash.sort();
    clash.dedup();
    if !clash.is_empty() {
        return Err(format!(
            "models {clash:?} have versions of two kinds; give each kind its own model name"
        ));
    }
    Ok(sets)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Rescans the repository on every SIGHUP.
#[cfg(unix)]
fn reload_on_hangup(app: Arc<App>, hangup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hangup) = hangup else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for set in &app.sets {
                    match set.reload() {
                        Ok(r) => eprintln!(
                            "reload {}: added {:?}, removed {:?}, failed {:?}",
                            set.kind().name(),
                            r.added,
                            r.removed,
                            r.failed
                        ),
                        Err(e) => eprintln!("reload {}: {e}", set.kind().name()),
                    }
                }
            })
            .await;
        }
    });
}

async fn run(args: Args) -> Result<(), String> {
    // Taken before the models load (seconds): a SIGHUP during start-up is kept for a
    // rescan once serving, instead of its default action killing the server.
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    eprintln!("loading models from {}", args.models.display());
    let metrics = Metrics::new();
    let sets = open_sets(&args, &metrics)?;
    for set in &sets {
        for name in set.names() {
            let versions: Vec<String> = set.versions(&name).into_iter().map(|(v, _)| v).collect();
            eprintln!("model {name}: {} versions {versions:?}", set.kind().name());
        }
    }
    let app = Arc::new(App {
        sets,
        metrics,
        draining: AtomicBool::new(false),
        max_body_bytes: args.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to find the port (with --addr 127.0.0.1:0).
    println!("listening on http://{local}");
    #[cfg(unix)]
    reload_on_hangup(app.clone(), hangup);

    let stopping = Arc::new(tokio::sync::Notify::new());
    let server = {
        let (app, stopping) = (app.clone(), stopping.clone());
        axum::serve(listener, router(app.clone())).with_graceful_shutdown(async move {
            stop_signal().await;
            eprintln!("stopping: answering the requests in flight");
            app.draining.store(true, Ordering::Relaxed);
            stopping.notify_one();
        })
    };
    let drain_timeout = args.drain_timeout;
    let timed_out = async move {
        stopping.notified().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| e.to_string())?,
        () = timed_out => eprintln!("stopping: requests still open after {drain_timeout:?}; closing them"),
    }
    // No connection is left: drain and stop the predictors.
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.sets.iter().for_each(|s| s.shutdown()))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// OpenAPI 3.0 document of the endpoints above

fn openapi_document() -> Value {
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
    let infer = |params: Value| {
        json!({"post": {"summary": "Run inference", "parameters": params,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}},
            "responses": {
                "200": ok_json("InferResponse", "the outputs"),
                "400": error, "404": error, "413": error, "415": error, "429": error, "500": error, "503": error}}})
    };
    let both = json!([model, version]);
    let one = json!([model]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "modelhost example server (Open Inference Protocol v2)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of KServe v2 / Triton: health, metadata and inference with JSON tensors. Errors are {\"error\": \"...\"}."
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
            "/v2/repository/index": {"post": {"summary": "Every model version and its state", "responses": {"200": {"description": "the index", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/RepositoryEntry"}}}}}}}},
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
            "InputTensor": {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"$ref": "#/components/schemas/Datatype"},
                "parameters": {"type": "object"},
                "data": {"description": "row-major values, flat or nested: strings for BYTES, numbers otherwise", "type": "array", "items": {}}}},
            "RequestedOutput": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}},
            "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"}, "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/InputTensor"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/RequestedOutput"}}}},
            "OutputTensor": {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"$ref": "#/components/schemas/Datatype"}, "data": {"type": "array", "items": {}}}},
            "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/OutputTensor"}}}},
            "RepositoryEntry": {"type": "object", "required": ["name", "version", "state"], "properties": {
                "name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]}, "kind": {"type": "string"}}}
        }}
    })
}
