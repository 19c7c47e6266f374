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
    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = "MODELHOST_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub(crate) max_body_bytes: usize,
    /// Most inputs (texts, rows, instances) in one request of the OpenAI, TEI and TF
    /// Serving routes (413 above it).
    #[arg(long, env = "MODELHOST_MAX_INPUTS", default_value_t = 2048)]
    pub(crate) max_inputs: usize,
    /// On SIGTERM, how long requests in flight may take before they are closed, in seconds.
    #[arg(
        long = "drain-timeout-s",
        env = "MODELHOST_DRAIN_TIMEOUT_S",
        default_value_t = 30
    )]
    pub(crate) drain_timeout_s: u64,
}

impl Args {
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
