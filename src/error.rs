//! One error type per boundary.
//!
//! | boundary | type | raised by |
//! |---|---|---|
//! | the caller's input | [`InputError`] | [`Model::prepare`](crate::Model::prepare), on the caller's thread |
//! | loading a model | [`LoadError`] | `load` functions of the concrete models |
//! | running a batch | [`RuntimeError`] | [`Model::run_batch`](crate::Model::run_batch) and the worker |
//! | the queue | [`CapacityError`] | the predictor when it sheds load or shuts down |
//! | configuring a predictor | [`ConfigError`] | [`PredictorBuilder::build`](crate::PredictorBuilder::build) |
//!
//! [`PredictError`] is what a prediction returns: one of the first four. Every error that a
//! request can receive is `Clone`, so one failure can be handed to every caller it concerns.
//!
//! Match on the boundary, then on the variant; every message says what is allowed:
//!
//! ```
//! use modelhost::Predictor;
//! use modelhost::error::{InputError, PredictError};
//! use modelhost::models::mlp::MlpClassifier;
//!
//! let predictor = Predictor::builder(MlpClassifier::load("examples/assets/digits")?).build()?;
//! match predictor.predict(vec![0.0; 3]) {
//!     Err(PredictError::Input(InputError::WrongLength { expected, got, .. })) => {
//!         assert_eq!((expected, got), (64, 3));
//!     }
//!     other => panic!("expected a length error, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;
use std::time::Duration;

/// The caller's input was rejected before it reached the model. Nothing was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A text is longer than the model accepts and truncation is off.
    #[error(
        "input is {tokens} tokens long; the model accepts at most {max} tokens (shorten it or enable truncation)"
    )]
    TooLong {
        /// Tokens in the input, special tokens included.
        tokens: usize,
        /// The most the model accepts.
        max: usize,
    },
    /// A vector input has the wrong number of values.
    #[error("`{field}` has {got} values; the model expects exactly {expected}")]
    WrongLength {
        /// The input's name in the model's signature.
        field: String,
        /// The length the model expects.
        expected: usize,
        /// The length that was given.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("`{field}`[{index}] is {value}; only finite numbers are allowed")]
    NotFinite {
        /// The input's name in the model's signature.
        field: String,
        /// Position of the value.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A value lies outside the range the model was trained on.
    #[error("`{field}`[{index}] is {value}; allowed values lie in [{min}, {max}]")]
    OutOfRange {
        /// The input's name in the model's signature.
        field: String,
        /// Position of the value.
        index: usize,
        /// The offending value.
        value: f32,
        /// Smallest allowed value.
        min: f32,
        /// Largest allowed value.
        max: f32,
    },
    /// The tokenizer could not encode the text.
    #[error("the tokenizer could not encode the input: {message}")]
    Tokenize {
        /// The tokenizer's own message.
        message: String,
    },
    /// Any other rule of a model's own; `reason` says what is allowed.
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// The input's name in the model's signature.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A required named input (a feature) was not given, and it has no default.
    #[error("`{field}` is missing; the model needs it and it has no default")]
    Missing {
        /// The input's name.
        field: String,
    },
    /// A named input the model does not have.
    #[error("`{field}` is not an input of this model; its inputs are: {}", allowed.join(", "))]
    Unexpected {
        /// The name that was given.
        field: String,
        /// The model's inputs.
        allowed: Vec<String>,
    },
    /// A named input has the wrong kind of value.
    #[error("`{field}` is {got}; it must be {expected}")]
    WrongType {
        /// The input's name.
        field: String,
        /// What the model takes (e.g. "a number", "true or false").
        expected: String,
        /// What was given.
        got: String,
    },
    /// A named numeric input is NaN, infinite or outside its declared range.
    #[error("`{field}` is {value}; allowed values are finite and lie in [{min}, {max}]")]
    FeatureOutOfRange {
        /// The input's name.
        field: String,
        /// The value given.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// An image declares more pixels than the model accepts; refused from its header,
    /// before any pixel is decoded.
    #[error(
        "the image is {width}×{height} pixels; at most {max_pixels} pixels are allowed (downscale it first)"
    )]
    ImageTooLarge {
        /// Width the header declares.
        width: u32,
        /// Height the header declares.
        height: u32,
        /// The most pixels allowed.
        max_pixels: u64,
    },
    /// Decoding an image and resizing it to the network's input would take more memory
    /// than the model allows; refused from its header, before any pixel is decoded.
    /// Images far more elongated than the network's input cost the most.
    #[error(
        "the image is {width}×{height} pixels (upright); decoding and resizing it to the model's input would take about {needed} bytes of memory, and at most {max_bytes} are allowed (crop it closer to the model's aspect ratio or downscale it first)"
    )]
    ImageOverBudget {
        /// Width of the upright image (after its EXIF orientation).
        width: u32,
        /// Height of the upright image.
        height: u32,
        /// The bytes it would take.
        needed: u64,
        /// The most bytes allowed.
        max_bytes: u64,
    },
    /// A categorical input has a value outside its categories.
    #[error("`{field}` is {value:?}; allowed values are: {}", allowed.join(", "))]
    UnknownCategory {
        /// The input's name.
        field: String,
        /// The value given.
        value: String,
        /// The categories the model knows.
        allowed: Vec<String>,
    },
    /// An input is larger than the model accepts before any preprocessing (bytes of a text
    /// or an encoded image); refused before it is tokenized or decoded.
    #[error(
        "`{field}` is {bytes} bytes long; at most {max} bytes are accepted (shorten it, or raise the model's input limit)"
    )]
    TooManyBytes {
        /// The input's name.
        field: String,
        /// Its size in bytes.
        bytes: usize,
        /// The most bytes accepted.
        max: usize,
    },
    /// A request names a prompt the model does not have (sentence-transformers'
    /// `prompt_name`).
    #[error(
        "prompt `{name}` is not one of the model's prompts; {}",
        known_prompts(known)
    )]
    UnknownPrompt {
        /// The name given.
        name: String,
        /// The model's prompt names (`config_sentence_transformers.json`'s `prompts`).
        known: Vec<String>,
    },
}

/// "its prompts are: a, b" or "it has none".
fn known_prompts(known: &[String]) -> String {
    if known.is_empty() {
        "it has none (config_sentence_transformers.json lists no prompts)".into()
    } else {
        format!("its prompts are: {}", known.join(", "))
    }
}

/// The formats `formats::detect` recognises, for [`LoadError::UnknownFormat`]'s message.
pub(crate) const RECOGNISED: &str =
    "safetensors, PyTorch zip checkpoints (.pt/.pth/.bin), NumPy .npz, GGUF and ONNX";

/// A weights file's format, as its content announces it (`formats::detect`), and the
/// format [`LoadError::Corrupt`] names.
///
/// Defined here, next to the error that carries it, so that errors import nothing from
/// `formats`; `modelhost::error::WeightFormat` is its one public path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WeightFormat {
    /// Hugging Face safetensors.
    Safetensors,
    /// A PyTorch checkpoint in the zip format `torch.save` writes since PyTorch 1.6.
    PyTorchZip,
    /// A bare pickle stream: the legacy (before 1.6) PyTorch format, joblib or plain
    /// pickle. Scanned for unsafe globals, then refused.
    Pickle,
    /// A NumPy `.npz` archive of `.npy` arrays.
    Npz,
    /// A GGUF file (llama.cpp).
    Gguf,
    /// An ONNX model (a protobuf `ModelProto`).
    Onnx,
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::PyTorchZip => "PyTorch checkpoint",
            WeightFormat::Pickle => "pickle",
            WeightFormat::Npz => "NumPy npz",
            WeightFormat::Gguf => "GGUF",
            WeightFormat::Onnx => "ONNX",
        })
    }
}

/// A model could not be loaded from its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file the model needs is not there.
    #[error("{path} is missing: {what}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the file is for.
        what: &'static str,
    },
    /// A configuration file is malformed or holds a value the loader cannot use.
    #[error("invalid configuration in {path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The model asks for something this crate does not implement.
    #[error("unsupported model in {path}: {what}")]
    Unsupported {
        /// The file that asks for it.
        path: PathBuf,
        /// What is not supported, and what is.
        what: String,
    },
    /// The weights could not be read or do not match the configuration.
    #[error("cannot load weights from {path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The tensor library's message (names the tensor and shape where it can).
        message: String,
    },
    /// The tokenizer file could not be read.
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizer library's message.
        message: String,
    },
    /// The file's content matches none of the weight formats this crate reads.
    #[error("cannot tell the format of {path}: {what}; recognised by content are {RECOGNISED}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What the first bytes looked like.
        what: String,
    },
    /// A weights file is truncated or corrupt.
    #[error("{path} is not a valid {format} file: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The format its first bytes announce.
        format: WeightFormat,
        /// What is wrong, and where.
        what: String,
    },
    /// A pickle (PyTorch checkpoint) asks for a Python global outside tensor
    /// reconstruction. Nothing in it was run: the file is refused when the global is read.
    #[error(
        "{path} asks for the Python global `{global}`, which is not part of tensor reconstruction; the pickle was refused and nothing in it was run (allowed globals: {})",
        allowed.join(", ")
    )]
    UnsafePickle {
        /// The file.
        path: PathBuf,
        /// `module.name` of the global the pickle asked for, e.g. `posix.system`.
        global: String,
        /// The globals a pickle may ask for: what tensor reconstruction needs
        /// (`formats::pickle::ALLOWED_GLOBALS`), listed in the message.
        allowed: &'static [&'static str],
    },
    /// An ONNX graph uses an operator that the ONNX runtime (candle-onnx) does not
    /// implement.
    #[error(
        "{path}: node `{node}` uses the ONNX operator `{op}`, which is not supported; supported operators: {}",
        supported.join(", ")
    )]
    UnsupportedOperator {
        /// The ONNX file.
        path: PathBuf,
        /// The operator type, e.g. `NonMaxSuppression`.
        op: String,
        /// The name of the first node that uses it.
        node: String,
        /// The operators that are supported
        /// (`formats::ONNX_OPERATORS`), listed in the message.
        supported: &'static [&'static str],
    },
    /// Reading the file would cost more than the loader allows: memory materialised,
    /// interpreter work, entries or sizes out of proportion to the file. Nothing past the
    /// limit was allocated.
    #[error("{path}: {what}; the loader's limit is {limit} {unit}, so the file is refused")]
    OverBudget {
        /// The file.
        path: PathBuf,
        /// What would exceed the budget, e.g. "tensor `w` expands to 2147483648 bytes".
        what: String,
        /// The limit that applies.
        limit: u64,
        /// The limit's unit, e.g. "bytes" or "pickle opcodes".
        unit: &'static str,
    },
    /// A tensor has another shape than the model's configuration gives it (a
    /// sentence-transformers `Dense` layer whose weight does not match its `config.json`).
    #[error("{path}: tensor `{tensor}` has shape {got:?}; the configuration needs {expected:?}")]
    WrongShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name, e.g. `linear.weight`.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A load option holds a value the model cannot take (e.g. `truncate_dim` larger than
    /// the embedding, a `prompt_name` the model does not have).
    #[error("option `{option}` = {value} is not allowed: {allowed}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A Hugging Face Hub repository id, revision or file path was refused before any
    /// request was made for it, or a name in the Hub's answer that would become a path in
    /// the cache (a commit id, a blob name from an `ETag`) was refused before it was used
    /// (feature `hub`): it could leave the repository or the cache directory.
    #[error("{what} `{value}` is refused: {allowed}")]
    HubRefused {
        /// What the value is: "repository id", "revision", the file that named a path
        /// (e.g. "module path in org/name's modules.json"), or the header of an answer
        /// (e.g. "ETag of the answer for config.json").
        what: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The Hub answered a request with an HTTP error status (feature `hub`).
    #[error("{}", hub_status(repo, revision, file.as_deref(), *status))]
    HubStatus {
        /// The repository id, `org/name`.
        repo: String,
        /// The revision asked for (a branch, tag or commit).
        revision: String,
        /// The file asked for; `None` for the repository's file listing.
        file: Option<String>,
        /// The HTTP status, e.g. 404 or 401.
        status: u16,
    },
    /// The Hub could not be reached (connection, DNS, TLS), and the cache holds no copy of
    /// the revision to fall back on (feature `hub`).
    #[error(
        "cannot reach the Hub at {endpoint} for {repo} (revision {revision}): {message}; the cache holds no copy of it"
    )]
    HubUnreachable {
        /// The repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The Hub's address.
        endpoint: String,
        /// The HTTP client's message.
        message: String,
    },
    /// Offline (`HF_HUB_OFFLINE` or `HubOptions::offline`), and the cache holds no complete
    /// copy of the revision (feature `hub`).
    #[error(
        "{repo} (revision {revision}) is not in the Hub cache {}, and downloads are off ({why}); load it once online, or point the cache at a directory that holds it",
        cache.display()
    )]
    HubNotCached {
        /// The repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The cache directory that was looked in.
        cache: PathBuf,
        /// Why downloads are off, e.g. "HF_HUB_OFFLINE=1".
        why: String,
    },
    /// A file is larger than the download limit allows, by the size the Hub declares
    /// for it (or, where it declared none, by what arrived) (feature `hub`).
    #[error(
        "{repo}: {file} is {bytes} bytes; the download limit is {limit} bytes (raise HubOptions::max_bytes to load it)"
    )]
    HubTooLarge {
        /// The repository id.
        repo: String,
        /// The file, relative to the repository.
        file: String,
        /// Its size (with `file` = "all files", the total the model needs).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A file's download did not arrive as the listing declared it (feature `hub`): the
    /// body is longer or shorter than the declared size, or it broke off or stalled past
    /// `HubOptions::read_timeout`. Nothing of it is kept in the cache, nor anything else
    /// the failed load had written.
    #[error(
        "{repo} (revision {revision}): downloading {file} failed: {problem}; declared {}, received {received} bytes; nothing of the load is kept in the cache",
        declared.map_or("no size".to_string(), |d| format!("{d} bytes"))
    )]
    HubDownload {
        /// The repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The file, relative to the repository.
        file: String,
        /// The size the file listing declares (`None`: it declares none; then the body is
        /// bounded by what is left of `HubOptions::max_bytes`).
        declared: Option<u64>,
        /// The bytes read before the download stopped (at most one past `declared`).
        received: u64,
        /// What went wrong, e.g. "the server sent more bytes than declared".
        problem: String,
    },
    /// The Hub's answer is not what a Hub sends: a listing that is not JSON, a commit id
    /// that differs from the listing's, a redirect without a target (feature `hub`).
    #[error("{repo}: unexpected answer from the Hub: {what}")]
    HubResponse {
        /// The repository id.
        repo: String,
        /// What was wrong with the answer.
        what: String,
    },
}

/// The message of [`LoadError::HubStatus`]: what was asked for, the status, and what
/// usually causes it.
fn hub_status(repo: &str, revision: &str, file: Option<&str>, status: u16) -> String {
    let asked = match file {
        Some(file) => format!("{file} of {repo} (revision {revision})"),
        None => format!("repository {repo} (revision {revision})"),
    };
    let hint = match (status, file) {
        (404, None) => {
            "no such repository or revision (a private or gated one needs a token: HF_TOKEN or HubOptions::token)"
        }
        (404, Some(_)) => "the repository has no such file at this revision",
        (401 | 403, _) => {
            "the repository is private or gated: accept its terms on the Hub and give a token (HF_TOKEN or HubOptions::token)"
        }
        (429, _) => "rate limited; retry later",
        (500.., _) => "the Hub failed; retry later",
        _ => "the request was refused",
    };
    format!("the Hub answered HTTP {status} for {asked}: {hint}")
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        LoadError::Config {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        format: WeightFormat,
        what: impl std::fmt::Display,
    ) -> Self {
        LoadError::Corrupt {
            path: path.into(),
            format,
            what: what.to_string(),
        }
    }

    pub(crate) fn weights(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        LoadError::Weights {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// A batch failed while the model ran it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The tensor backend reported an error.
    #[error("model execution failed: {message}")]
    Backend {
        /// The backend's message.
        message: String,
    },
    /// The model panicked while running the batch this request was in.
    #[error("the model panicked while running a batch of {batch_size}: {message}")]
    Panicked {
        /// Size of the batch that was running.
        batch_size: usize,
        /// The panic's message.
        message: String,
    },
    /// The model returned a different number of outputs than it was given inputs.
    #[error("the model returned {got} outputs for a batch of {expected} inputs")]
    OutputCount {
        /// Inputs in the batch.
        expected: usize,
        /// Outputs returned.
        got: usize,
    },
}

impl From<candle_core::Error> for RuntimeError {
    fn from(e: candle_core::Error) -> Self {
        RuntimeError::Backend {
            message: e.to_string(),
        }
    }
}

/// The predictor did not take or could not finish a request for reasons of capacity or
/// lifecycle. The request was not computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// The queue is at capacity: the predictor sheds load instead of blocking.
    #[error("the queue is full ({capacity} requests waiting); retry later or raise queue_capacity")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The request waited past its deadline and was dropped before it was computed.
    #[error(
        "the request waited {waited:?}, past its deadline of {deadline:?}; it was not computed"
    )]
    DeadlineExceeded {
        /// How long the request had waited.
        waited: Duration,
        /// The deadline it was given.
        deadline: Duration,
    },
    /// The predictor is shutting down and takes no new requests.
    #[error("the predictor is shutting down and takes no new requests")]
    ShuttingDown,
    /// The worker stopped without answering (it should never happen; it is reported rather
    /// than leaving the caller waiting).
    #[error("the worker stopped before it answered this request")]
    WorkerGone,
}

/// Why a prediction failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// The input was rejected; see [`InputError`].
    #[error(transparent)]
    Input(#[from] InputError),
    /// The model failed; see [`RuntimeError`].
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The request was shed or dropped; see [`CapacityError`].
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

/// A predictor's settings are out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a value that is not allowed.
    #[error("`{name}` = {value} is not allowed: {allowed}")]
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The worker thread could not be started.
    #[error("cannot start the worker thread: {message}")]
    Spawn {
        /// The operating system's message.
        message: String,
    },
}
