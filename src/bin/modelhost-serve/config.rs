//! The server's configuration: every flag can also be set by an environment variable
//! (`MODELHOST_*`, named in `--help`); a flag given on the command line wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Serve every model of a model repository (`ROOT/NAME/VERSION/`) over HTTP: the Open
/// Inference Protocol v2 (KServe, Triton, MLServer), Prometheus metrics and an OpenAPI
/// document.
#[derive(Debug, Clone, Parser)]
#[command(name = "modelhost-serve", version)]
pub(crate) struct Args {
    /// The model repository: one directory per model, one subdirectory per version.
    #[arg(long, env = "MODELHOST_MODELS", value_name = "ROOT")]
    pub(crate) models: PathBuf,
    /// Serve a Hugging Face Hub model as model NAME: `NAME=ORG/REPO[@REVISION]` (repeat the
    /// flag, or comma-separate). Downloaded once into the Hub cache at start-up (HF_HOME,
    /// HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE apply) and linked as ROOT/NAME/1.
    #[cfg(feature = "hub")]
    #[arg(
        long = "hub-model",
        env = "MODELHOST_HUB_MODELS",
        value_delimiter = ',',
        value_name = "NAME=ORG/REPO[@REV]"
    )]
    pub(crate) hub_models: Vec<String>,
    /// Address to listen on (port 0: any free port, printed at start-up).
    #[arg(long, env = "MODELHOST_ADDR", default_value = "127.0.0.1:8000")]
    pub(crate) addr: SocketAddr,
    /// Most rows in one model batch.
    #[arg(long, env = "MODELHOST_MAX_BATCH_SIZE", default_value_t = 32)]
    pub(crate) max_batch_size: usize,
    /// Most tokens in one text batch (padding included); unset: no token limit.
    #[arg(long, env = "MODELHOST_MAX_BATCH_TOKENS")]
    pub(crate) max_batch_tokens: Option<usize>,
    /// How long a batch waits for company, in milliseconds.
    #[arg(
        long = "max-delay-ms",
        env = "MODELHOST_MAX_DELAY_MS",
        default_value_t = 2
    )]
    pub(crate) max_delay_ms: u64,
    /// Rows waiting per model version before one-row requests are refused with 429.
    #[arg(long, env = "MODELHOST_QUEUE_CAPACITY", default_value_t = 1024)]
    pub(crate) queue_capacity: usize,
    /// Drop a row that waited this long in the queue (503); unset: no deadline.
    #[arg(long = "deadline-ms", env = "MODELHOST_DEADLINE_MS")]
    pub(crate) deadline_ms: Option<u64>,
    /// Prediction cache for text embedders, in MiB; 0: no cache.
    #[arg(long = "cache-mb", env = "MODELHOST_CACHE_MB", default_value_t = 0)]
    pub(crate) cache_mb: usize,
    /// Most rows (texts, images, feature rows) one request may carry (413 above it).
    #[arg(long, env = "MODELHOST_MAX_CLIENT_BATCH_SIZE", default_value_t = 1024)]
    pub(crate) max_client_batch_size: usize,
    /// Rows of multi-row requests queued at once, across all models (default: half of
    /// --queue-capacity); the rest of each queue stays free for one-row requests.
    #[arg(long, env = "MODELHOST_MAX_BULK_ROWS")]
    pub(crate) max_bulk_rows: Option<usize>,
    /// Where the models run: `cpu`, or `cuda` / `cuda:N` (a build with `--features cuda`).
    #[arg(long, env = "MODELHOST_DEVICE", default_value = "cpu")]
    pub(crate) device: String,
    /// The text models' weights and activations: `f32`, or `f16` / `bf16` (for GPUs; on
    /// the CPU they take the portable path and are slower).
    #[arg(long, env = "MODELHOST_DTYPE", value_enum, default_value_t = Dtype::F32)]
    pub(crate) dtype: Dtype,
    /// The text models' matrix products on the CPU: `f32`, `bf16` (half the weight
    /// memory) or `int8` (the fastest with AVX-512 VNNI; min cosine 0.994 on MiniLM).
    /// Needs `--device cpu` and `--dtype f32`.
    #[arg(long, env = "MODELHOST_PRECISION", value_enum, default_value_t = PrecisionArg::F32)]
    pub(crate) precision: PrecisionArg,
    /// The most bytes of one text handed to the tokenizer (checked before tokenizing).
    #[arg(long, env = "MODELHOST_MAX_INPUT_BYTES", default_value_t = 1 << 20)]
    pub(crate) max_input_bytes: usize,
    /// Cut texts past a model's maximum sequence length (as sentence-transformers does);
    /// `--auto-truncate false` refuses them with a 400 instead.
    #[arg(
        long,
        env = "MODELHOST_AUTO_TRUNCATE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub(crate) auto_truncate: bool,
    /// Request bodies held at once, in bytes, across all requests (a body is held from its
    /// first byte to its answer); a request past it gets a 503. Default: 32 × --max-body-bytes.
    #[arg(long, env = "MODELHOST_MAX_BODY_BYTES_IN_FLIGHT")]
    pub(crate) max_body_bytes_in_flight: Option<usize>,
    /// A client must send its whole body within this many seconds (408 after).
    #[arg(
        long = "body-timeout-s",
        env = "MODELHOST_BODY_TIMEOUT_S",
        default_value_t = 30
    )]
    pub(crate) body_timeout_s: u64,
    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = "MODELHOST_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub(crate) max_body_bytes: usize,
    /// A client must send a request's headers within this many seconds, or its connection
    /// is closed (slow clients cannot hold connections).
    #[arg(
        long = "header-timeout-s",
        env = "MODELHOST_HEADER_TIMEOUT_S",
        default_value_t = 10
    )]
    pub(crate) header_timeout_s: u64,
    /// A request (reading its body included) taking longer than this many seconds is
    /// answered 503 and its queued rows cancelled.
    #[arg(
        long = "request-timeout-s",
        env = "MODELHOST_REQUEST_TIMEOUT_S",
        default_value_t = 120
    )]
    pub(crate) request_timeout_s: u64,
    /// Connections open at once; one more is answered 503 and closed.
    #[arg(long, env = "MODELHOST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Require `Authorization: Bearer KEY` on every route but the health probes.
    #[arg(long, env = "MODELHOST_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Answer CORS requests from this origin (repeat the flag, or comma-separate; `*`: any).
    #[arg(long, env = "MODELHOST_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub(crate) cors_allow_origin: Vec<String>,
    /// Log lines as JSON objects (one per request and per event) or as text.
    #[arg(long, env = "MODELHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub(crate) log_format: LogFormat,
    /// On SIGTERM, how long requests in flight may take before they are closed, in seconds.
    #[arg(
        long = "drain-timeout-s",
        env = "MODELHOST_DRAIN_TIMEOUT_S",
        default_value_t = 30
    )]
    pub(crate) drain_timeout_s: u64,
}

/// The text models' dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Dtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
}

/// The packed CPU engine's precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PrecisionArg {
    /// 32-bit floats.
    F32,
    /// bf16 weights, f32 activations and accumulation.
    Bf16,
    /// int8 weights and activations (Q/K/V in bf16), i32 accumulation.
    Int8,
}

/// How log lines are written (to stderr); `RUST_LOG` filters them (default `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl Args {
    /// The device `--device` names; an error says what is allowed.
    pub(crate) fn device(&self) -> Result<modelhost::Device, String> {
        let bad = || {
            format!(
                "--device {:?}: use `cpu`, `cuda` or `cuda:N` (N a GPU index)",
                self.device
            )
        };
        let ordinal = match self.device.as_str() {
            "cpu" => return Ok(modelhost::Device::Cpu),
            "cuda" => 0,
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(bad)?,
        };
        modelhost::Device::new_cuda(ordinal).map_err(|e| {
            format!(
                "--device {}: {e} (CUDA needs a build with `--features cuda` and a GPU)",
                self.device
            )
        })
    }

    /// How text models load: device, dtype, precision, input bound and truncation.
    pub(crate) fn text_options(
        &self,
        device: &modelhost::Device,
    ) -> modelhost::models::text::TextOptions {
        modelhost::models::text::TextOptions {
            truncate: self.auto_truncate,
            max_input_bytes: self.max_input_bytes,
            device: device.clone(),
            dtype: match self.dtype {
                Dtype::F32 => modelhost::DType::F32,
                Dtype::F16 => modelhost::DType::F16,
                Dtype::Bf16 => modelhost::DType::BF16,
            },
            precision: match self.precision {
                PrecisionArg::F32 => modelhost::models::text::Precision::F32,
                PrecisionArg::Bf16 => modelhost::models::text::Precision::Bf16,
                PrecisionArg::Int8 => modelhost::models::text::Precision::Int8,
            },
            ..Default::default()
        }
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_s)
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    pub(crate) fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.deadline_ms.map(Duration::from_millis)
    }

    pub(crate) fn cache_bytes(&self) -> usize {
        self.cache_mb.saturating_mul(1 << 20)
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s)
    }
}
