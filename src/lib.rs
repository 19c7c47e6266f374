//! # modelhost
//!
//! Serve machine-learning models inside your own process: a typed [`Predictor`] that
//! validates and preprocesses inputs on the caller's thread, batches concurrent requests
//! dynamically on a worker thread, and hands each caller its own output — on CPU or CUDA,
//! through [candle](https://github.com/huggingface/candle).
//!
//! ```
//! use modelhost::Predictor;
//! use modelhost::models::mlp::MlpClassifier;
//!
//! let model = MlpClassifier::load("examples/assets/digits")?;
//! let predictor = Predictor::builder(model).max_batch_size(16).build()?;
//!
//! // An 8x8 image of a handwritten zero, grey levels 0..=16.
//! let zero = vec![
//!     0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0., 0., 3., 15., 2.,
//!     0., 11., 8., 0., 0., 4., 12., 0., 0., 8., 8., 0., 0., 5., 8., 0., 0., 9., 8., 0., 0.,
//!     4., 11., 0., 1., 12., 7., 0., 0., 2., 14., 5., 10., 12., 0., 0., 0., 0., 6., 13., 10.,
//!     0., 0., 0.,
//! ];
//! assert_eq!(predictor.predict(zero)?.label, "0");
//!
//! // Bad input is refused on the caller's thread with an error that names the limit.
//! let err = predictor.predict(vec![0.0; 3]).unwrap_err();
//! assert_eq!(err.to_string(), "`pixels` has 3 values; the model expects exactly 64");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The path of a request: [`Model::prepare`] (caller's thread) → bounded queue → a batch of
//! up to [`BatchPolicy::max_batch_size`](batch::BatchPolicy::max_batch_size) requests,
//! waiting at most [`BatchPolicy::max_delay`](batch::BatchPolicy::max_delay) →
//! [`Model::run_batch`] (worker thread) → one answer per request. Every accepted request
//! gets exactly one answer: its output or a typed [`PredictError`](error::PredictError).
//!
//! ## Where things are
//!
//! The request path is at the root: [`Predictor`] (with [`PredictorBuilder`],
//! [`PredictFuture`], [`RequestOptions`], [`Health`]) and the [`Model`] trait it serves
//! (with [`Signature`], [`TensorSpec`], [`DataType`], [`BatchOutputs`]). Each concept
//! around it is a module with a page of its own:
//!
//! | module | what it holds |
//! |---|---|
//! | [`models`] | the concrete models: sentence embedder, text classifier, cross-encoder, image classifier, tabular model, MLP |
//! | [`batch`] | the batching policy: batch size, token budget, delay, queue capacity, grouping |
//! | [`cache`] | the LRU prediction cache with single-flight |
//! | [`registry`] | model versions: deploy, promote, roll back, A/B and shadow routing, model repositories |
//! | [`metrics`] | counters, latency histograms and the Prometheus exposition |
//! | `drift` | data and concept drift monitors (feature `drift`, on by default) |
//! | [`formats`] | weight files by content: safetensors, PyTorch checkpoints, npz, GGUF, ONNX |
//! | `hub` | models by their Hugging Face Hub id: `from_hub` on the loaders (feature `hub`) |
//! | [`error`] | one error type per boundary |
//!
//! Every public type has one path: the root for the request path, its module otherwise.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod batch;
pub mod cache;
#[cfg(feature = "drift")]
pub mod drift;
mod encoder;
pub mod error;
pub mod formats;
#[cfg(feature = "hub")]
pub mod hub;
mod load;
pub mod metrics;
mod model;
pub mod models;
mod oneshot;
mod predictor;
pub mod registry;
mod util;

pub use candle_core::{DType, Device};
pub use model::{BatchCost, BatchOutputs, DataType, Model, Signature, TensorSpec};
pub use predictor::{Health, PredictFuture, Predictor, PredictorBuilder, RequestOptions};
