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
//! ```text
//! ```
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
//! | `GET /v2/health/live`, `GET /v2/health/ready` | 200, or 503 (not ready: warming up, shedding load, draining) |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata: inputs and outputs with datatypes and shapes |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | 200, or 503 |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | inference, JSON tensors |
//! | `POST /v2/repository/index` | every model version and its state |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /v1/embeddings` | OpenAI embeddings (`openai.rs`) |
//! | `POST /embed`, `/rerank`, `/tokenize` | Hugging Face TEI (`tei.rs`) |
//! | `POST /v1/models/{m}[/versions/{v}]:predict`, `GET /v1/models/{m}` | TF Serving / KServe V1 (`tfserving.rs`) |
//! | `POST /predictions/{m}[/{v}]`, `GET /ping` | TorchServe (`torchserve.rs`) |
//!
//! Errors are `{"error": "..."}` (the OpenAI, TEI and TorchServe routes use their own
//! protocol's shape): 400 bad input (the message says what to fix), 404 unknown
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

mod codec;
mod codec_kinds;
mod config;
mod error;
mod kind;
mod natural;
mod oip;
mod openai;
mod openapi;
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

use crate::config::Args;
use crate::routes::{App, router};
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

pub(crate) async fn run(args: Args) -> Result<(), String> {
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
        max_inputs: args.max_inputs,
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
    let drain_timeout = args.drain_timeout();
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
    // clap prints the help, or what is wrong with the flags, and exits 2 on a bad one.
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modelhost-serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modelhost-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
