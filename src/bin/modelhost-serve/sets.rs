//! Model sets: one registry (and repository) per kind, behind one object-safe trait.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use modelhost::batch::BatchPolicy;
use modelhost::cache::PredictionCache;
use modelhost::error::LoadError;
use modelhost::metrics::Metrics;
use modelhost::models::classifier::{CrossEncoder, TextClassifier};
use modelhost::models::image::ImageClassifier;
use modelhost::models::mlp::MlpClassifier;
use modelhost::models::sentence::SentenceEmbedder;
use modelhost::models::tabular::TabularModel;
use modelhost::registry::{ModelRepository, Registry, RegistryError, ReloadReport, VersionHandle};
use modelhost::{Model, PredictorBuilder};

use crate::codec::Codec;
use crate::config::Args;
use crate::error::{ApiError, ApiResult};
use crate::kind::{Kind, unrecognised};
use crate::natural::{self, Natural, NaturalRows};
use crate::oip::{InferRequest, InferResponse, InputTensor, TensorMeta};
use crate::text::TextHandle;

pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The models of one kind.
pub(crate) trait ModelSet: Send + Sync {
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
    /// Rows in the model's natural JSON (TF Serving, KServe V1, TorchServe): the version
    /// that answered and one answer per row.
    fn predict_natural(
        &self,
        name: &str,
        version: Option<&str>,
        rows: NaturalRows,
    ) -> BoxFuture<ApiResult<(String, Vec<Value>)>>;
    /// The model as the OpenAI and TEI routes use it; `None` unless it reads text.
    fn text(&self, name: &str, version: Option<&str>) -> ApiResult<Option<TextHandle>>;
    fn reload(&self) -> Result<ReloadReport, LoadError>;
    /// Stops taking requests, answers those queued, joins the workers.
    fn shutdown(&self);
}

pub(crate) struct Served<M: Codec> {
    pub(crate) kind: Kind,
    pub(crate) repository: ModelRepository<M>,
}

impl<M: Codec> Served<M> {
    pub(crate) fn registry(&self) -> &Arc<Registry<M>> {
        self.repository.registry()
    }

    /// The version a request for `version` (none: the model's routing) goes to.
    fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<VersionHandle<M>, RegistryError> {
        match version {
            Some(v) => self.registry().handle(name, v),
            None => self.registry().route(name, None),
        }
    }
}

/// Predicts `inputs` on `handle`: one row through `predict_async`; several as one
/// `predict_many` call on a blocking thread, so the batcher sees all of them. An error
/// names its row when there are several.
pub(crate) async fn predict_rows<M: Model>(
    handle: &VersionHandle<M>,
    mut inputs: Vec<M::Input>,
) -> ApiResult<Vec<M::Output>> {
    let rows = inputs.len();
    let answers = match (rows, inputs.pop()) {
        (1, Some(input)) => vec![handle.predictor().predict_async(input).await],
        (_, last) => {
            inputs.extend(last);
            let pinned = handle.clone();
            tokio::task::spawn_blocking(move || pinned.predictor().predict_many(inputs))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.map_err(|e| ApiError::predict(e, (rows > 1).then_some(i))))
        .collect()
}

/// Checks the request's tensor names against the model's and returns its one input.
pub(crate) fn select_input<'r>(
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

pub(crate) fn binary_unsupported() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the binary tensor data extension is not supported; send tensors as JSON \
         (tritonclient: set_data_from_numpy(..., binary_data=False))",
    )
}

impl<M: Codec + Natural> ModelSet for Served<M> {
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
            "inputs": model.inputs_meta(),
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
        let handle = self.resolve(name, version);
        let name = name.to_string();
        Box::pin(async move {
            let handle = handle.map_err(ApiError::registry)?;
            let model = handle.predictor().model();
            let outputs_meta = model.outputs_meta();
            let inputs = model.decode_request(&name, &outputs_meta, &request)?;
            let outputs = predict_rows(&handle, inputs).await?;
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

    fn predict_natural(
        &self,
        name: &str,
        version: Option<&str>,
        rows: NaturalRows,
    ) -> BoxFuture<ApiResult<(String, Vec<Value>)>> {
        natural::predict(self.resolve(name, version), rows)
    }

    fn text(&self, name: &str, version: Option<&str>) -> ApiResult<Option<TextHandle>> {
        let handle = self.resolve(name, version).map_err(ApiError::registry)?;
        Ok(M::text_handle(handle))
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

/// How every predictor of the server is configured: the batch policy and deadline.
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

/// A registry whose predictors [`configure`] sets up.
fn registry<M: Model>(policy: &BatchPolicy, deadline: Option<Duration>) -> Registry<M> {
    Registry::with_predictor_config(configure(policy.clone(), deadline))
}

/// Opens the repository of one kind over `root` (the directories of that kind), with its
/// registry registered for metrics; load failures go to `failed`.
fn open_kind<M: Codec + Natural>(
    args: &Args,
    metrics: &Metrics,
    kind: Kind,
    registry: Registry<M>,
    load: impl Fn(&Path) -> Result<M, LoadError> + Send + Sync + 'static,
    failed: &mut Vec<String>,
) -> Result<Box<dyn ModelSet>, String> {
    let registry = Arc::new(registry);
    let (repository, report) = ModelRepository::open_filtered(
        &args.models,
        registry.clone(),
        move |dir: &Path| Kind::of(dir) == Ok(kind),
        load,
    )
    .map_err(|e| e.to_string())?;
    metrics.register_registry(&registry);
    failed
        .extend((report.failed.iter()).map(|(name, version, e)| format!("{name}/{version}: {e}")));
    Ok(Box::new(Served { kind, repository }))
}

/// Opens one repository per kind over `root`, each taking the directories of its kind.
pub(crate) fn open_sets(args: &Args, metrics: &Metrics) -> Result<Vec<Box<dyn ModelSet>>, String> {
    let policy = BatchPolicy {
        max_batch_size: args.max_batch_size,
        max_batch_tokens: args.max_batch_tokens,
        max_delay: args.max_delay(),
        queue_capacity: args.queue_capacity,
        ..BatchPolicy::default()
    };
    let deadline = args.deadline();

    // Texts repeat (search queries, labels): the embedder may cache, keyed by raw text.
    let cache = (args.cache_bytes() > 0).then(|| {
        let cache = Arc::new(
            PredictionCache::builder()
                .max_bytes(args.cache_bytes())
                .build(),
        );
        metrics.register_cache("text", &cache);
        cache
    });
    let configure_text = configure(policy.clone(), deadline);
    let text = Registry::with_predictor_config(move |b| {
        let b = configure_text(b);
        match &cache {
            Some(cache) => b.cache(cache.clone()),
            None => b,
        }
    });
    let mut failed = Vec::new();
    let f = &mut failed;
    let sets = vec![
        open_kind(
            args,
            metrics,
            Kind::TextEmbedder,
            text,
            |d: &Path| SentenceEmbedder::load(d),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::TextClassifier,
            registry(&policy, deadline),
            |d: &Path| TextClassifier::load(d),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::CrossEncoder,
            registry(&policy, deadline),
            |d: &Path| CrossEncoder::load(d),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::MlpClassifier,
            registry(&policy, deadline),
            |d: &Path| MlpClassifier::load(d),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::ImageClassifier,
            registry(&policy, deadline),
            |d: &Path| ImageClassifier::load(d),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::Tabular,
            registry(&policy, deadline),
            |d: &Path| TabularModel::load(d),
            f,
        )?,
    ];
    failed.extend(unrecognised(&args.models));
    if !failed.is_empty() {
        return Err(format!(
            "some model versions could not be loaded:\n  {}",
            failed.join("\n  ")
        ));
    }
    refuse_name_clashes(&sets)?;
    Ok(sets)
}

/// Refuses a model name that has versions of two kinds (each kind has its own registry).
fn refuse_name_clashes(sets: &[Box<dyn ModelSet>]) -> Result<(), String> {
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
    Ok(())
}
