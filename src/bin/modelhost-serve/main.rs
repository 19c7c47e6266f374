//! An HTTP server for every model of a model repository, speaking the Open Inference
//! Protocol v2 (the REST API of KServe, Triton and MLServer), with Prometheus metrics and an
//! OpenAPI document.
//!
//! ```text
//! cargo run --release --features server --bin modelhost-serve -- --models ROOT [--addr 127.0.0.1:8000]
//!     [--max-batch-size 32] [--max-batch-tokens N] [--max-delay-ms 2] [--queue-capacity 1024]
//!     [--deadline-ms N] [--cache-mb 0] [--max-body-bytes 8388608] [--drain-timeout-s 30]
//! ```
//!
//! Every flag can be set by an environment variable instead (`--help` names them).
//!
//! Built with `--features hub`, `--hub-model NAME=ORG/REPO[@REVISION]` (repeatable) serves
//! a Hugging Face Hub model as `NAME`: downloaded once into the Hub cache and linked into
//! the repository as `ROOT/NAME/1` (`hub.rs`).
//!
//! `ROOT` is a model repository, `ROOT/NAME/VERSION/`. The kind of each version directory
//! is recognised from its own files (`kind.rs`): `tabular.json` is a tabular model;
//! `model.json` with `model.safetensors` an MLP classifier (the shipped digits model);
//! `tokenizer.json` with a `config.json` whose `architectures` name a
//! `...ForSequenceClassification` a cross-encoder when the head has one label (`num_labels`,
//! else the size of `id2label`, and not multi-label), a text classifier otherwise; other
//! `tokenizer.json` directories with `modules.json` or `config.json` (sentence-transformers)
//! text embedders; a `config.json` naming a timm ResNet (`architecture`) or a ViT
//! (`model_type: vit`) an image classifier. A `modelhost.json` of `{"kind": "..."}`
//! (`text-embedder`, `text-classifier`, `cross-encoder`, `mlp-classifier`,
//! `image-classifier`, `tabular`) overrides the guess. The highest version of each model is
//! the one that answers when a request names no version.
//!
//! Endpoints (see `GET /v2/openapi.json`):
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v2/health/live`, `GET /v2/health/ready` | 200, or 503 (not ready: loading, warming up, draining) |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata: inputs and outputs with datatypes and shapes |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | 200, or 503 |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | inference: JSON tensors, or binary tensor data |
//! | `POST /v2/repository/index` | every model version and its state |
//! | `POST /v2/repository/models/{m}/load`, `.../unload` | load or unload one model |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /v1/embeddings` | OpenAI embeddings (`openai.rs`) |
//! | `POST /embed`, `/rerank`, `/tokenize` | Hugging Face TEI (`tei.rs`) |
//! | `POST /v1/models/{m}[/versions/{v}]:predict`, `GET /v1/models/{m}` | TF Serving / KServe V1 (`tfserving.rs`) |
//! | `POST /predictions/{m}[/{v}]`, `GET /ping` | TorchServe (`torchserve.rs`) |
//!
//! Triton's binary tensor data extension is spoken both ways (tritonclient's defaults): with
//! `Inference-Header-Content-Length: N`, the body's first N bytes are the JSON and the
//! inputs' binary data follows it; outputs asked for as binary data (`binary_data`, or the
//! request's `binary_data_output`) come back after the response's JSON (`oip`). Unloading a
//! model takes all its versions out until it is loaded again; loading (re)reads its
//! directory (`repository`).
//!
//! Errors are `{"error": "..."}` (the OpenAI, TEI and TorchServe routes use their own
//! protocol's shape): 400 bad input (the message says what to fix), 404 unknown
//! model, version or route, 405 wrong method, 413 body over `--max-body-bytes` or rows over
//! `--max-client-batch-size`, 401 without the `--api-key`, 429 queue full,
//! 503 shutting down or a request past its `--deadline-ms` (both: not computed, retry;
//! 429 and 503 carry `Retry-After: 1`), 500 the model failed.
//!
//! Errors are `{"error": "..."}`: 400 bad input (the message says what to fix), 404 unknown
//! or unloaded model, version or route, 405 wrong method, 413 body over `--max-body-bytes`,
//! 415 a compressed request body, 429 queue full, 503 shutting down or a request past its
//! `--deadline-ms` (both: not computed, retry; 429 and 503 carry `Retry-After: 1`), 500 the
//! model failed.
//!
//! A request of N rows (shape `[N]` of BYTES, `[N, 64]` of FP32) is answered by one
//! version; its rows are queued in chunks so that multi-row requests hold at most
//! `--max-bulk-rows` queued rows in all, and a one-row request is shed with
//! 429 when the queue is full. SIGTERM or Ctrl-C stops accepting connections, answers every
//! request already received (for at most `--drain-timeout-s`), drains the predictors and
//! exits 0. SIGHUP rescans the repository: new version directories are deployed (a new
//! version of a known model answers at `/versions/{v}`, and by default once the default
//! version's directory is removed), removed ones retired; unloaded models stay out.

mod body;
mod codec;
mod codec_kinds;
mod config;
mod error;
mod guard;
#[cfg(feature = "hub")]
mod hub;
mod kind;
mod limits;
mod listen;
mod natural;
mod observe;
mod oip;
mod openai;
mod openapi;
mod pool;
mod repository;
mod request;
mod routes;
mod sets;
mod tei;
mod text;
mod tfserving;
mod torchserve;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use modelhost::metrics::Metrics;

use crate::config::{Args, LogFormat};
use crate::listen::{Drained, Listen};
use crate::routes::{App, Guards, probe_router, router};
use crate::sets::open_sets;

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn stop_signal() {
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
pub(crate) fn reload_on_hangup(app: Arc<App>, hangup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hangup) = hangup else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _one_change = app
                    .control
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for set in &app.sets {
                    let kind = set.kind().name();
                    match set.reload() {
                        Ok(r) => tracing::info!(
                            kind,
                            added = ?r.added,
                            removed = ?r.removed,
                            failed = ?r.failed,
                            "reloaded the repository"
                        ),
                        Err(e) => tracing::error!(kind, error = %e, "reload failed"),
                    }
                }
            })
            .await;
        }
    });
}

pub(crate) async fn run(args: Args) -> Result<(), String> {
    // Taken before the models load (seconds): a SIGHUP during start-up is kept for a
    // rescan once serving, instead of its default action killing the server.
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tracing::info!("loading models from {}", args.models.display());
    let guards = Guards {
        api_key: args.api_key.as_deref().map(Arc::from),
        request_timeout: args.request_timeout(),
        cors: guard::cors(&args.cors_allow_origin)?,
        bodies: Arc::new(body::BodyBudget::new(
            (args.max_body_bytes_in_flight).unwrap_or(args.max_body_bytes.saturating_mul(32)),
            args.max_body_bytes,
            args.body_timeout(),
        )),
    };
    limits::install(limits::Admission::new(
        args.max_client_batch_size,
        args.max_bulk_rows.unwrap_or(args.queue_capacity / 2),
    ));
    #[cfg(feature = "hub")]
    if !args.hub_models.is_empty() {
        let (root, specs) = (args.models.clone(), args.hub_models.clone());
        tokio::task::spawn_blocking(move || hub::install(&root, &specs))
            .await
            .map_err(|e| format!("--hub-model: {e}"))??;
    }
    let metrics = Metrics::new();
    let sets = open_sets(&args, &metrics)?;
    for set in &sets {
        for name in set.names() {
            let versions: Vec<String> = set.versions(&name).into_iter().map(|(v, _)| v).collect();
            tracing::info!(model = name, kind = set.kind().name(), ?versions, "serving");
        }
    }
    let app = Arc::new(App {
        sets,
        metrics,
        draining: AtomicBool::new(false),
        max_body_bytes: args.max_body_bytes,
        http: Arc::default(),
        models_root: args.models.clone(),
        control: std::sync::Mutex::new(()),
    });
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to find the port (with --addr 127.0.0.1:0).
    println!("listening on http://{local}");
    #[cfg(unix)]
    reload_on_hangup(app.clone(), hangup);

    let listen = Listen {
        header_timeout: args.header_timeout(),
        max_connections: args.max_connections,
        drain_timeout: args.drain_timeout(),
    };
    let stop = {
        let app = app.clone();
        async move {
            stop_signal().await;
            tracing::info!("stopping: answering the requests in flight");
            app.draining.store(true, Ordering::Relaxed);
        }
    };
    let http = app.http.clone();
    let drained = listen
        .serve(
            listener,
            (
                router(app.clone(), &guards),
                probe_router(app.clone(), args.max_connections),
            ),
            stop,
            move || http.refused_connection(),
        )
        .await;
    if let Drained::TimedOut = drained {
        tracing::warn!(
            "stopping: requests still open after {:?}; closing them",
            listen.drain_timeout
        );
    }
    // No connection is left: drain and stop the predictors.
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.sets.iter().for_each(|s| s.shutdown()))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Log lines to stderr, JSON or text, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Caps glibc's malloc arenas at one per core (at least two) unless `MALLOC_ARENA_MAX`
/// says otherwise. glibc's default, eight per core, gives every new thread an arena of its
/// own; each version a reload deploys starts worker threads, and what those arenas keep
/// after the version retires grew the process by ~40 % over 180 swaps of a small model.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let cores = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread
    // of ours starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    cap_malloc_arenas();
    // clap prints the help, or what is wrong with the flags, and exits 2 on a bad one.
    let args = Args::parse();
    init_logging(args.log_format);
    // Preparing bulk rows and reloads block: they run on the blocking pool, bounded here
    // (tokio's default is 512 threads) so that bulk clients cannot multiply threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("modelhost-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
