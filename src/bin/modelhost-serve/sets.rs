//! Model sets: one registry (and repository) per kind, behind one object-safe trait.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use modelhost::batch::BatchPolicy;
use modelhost::cache::PredictionCache;
use modelhost::error::LoadError;
use modelhost::metrics::Metrics;
use modelhost::models::classifier::{CrossEncoder, TextClassifier};
use modelhost::models::image::{ImageClassifier, ImageOptions};
use modelhost::models::mlp::MlpClassifier;
use modelhost::models::sentence::SentenceEmbedder;
use modelhost::models::tabular::TabularModel;
use modelhost::registry::{ModelRepository, Registry, RegistryError, ReloadReport, VersionHandle};
use modelhost::{Health, Model, PredictorBuilder};

use crate::codec::Codec;
use crate::config::Args;
use crate::error::{ApiError, ApiResult};
use crate::kind::{Kind, unrecognised};
use crate::limits::admission;
use crate::natural::{self, Natural, NaturalRows};
use crate::oip::{InferRequest, InferResponse, InputTensor, TensorMeta};
use crate::text::TextHandle;

/// How long a load waits for a new version's warm-up before answering.
pub(crate) const LOAD_WARM_UP_WAIT: Duration = Duration::from_secs(60);

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
    /// Brings model `name` in step with its directory ([`ModelRepository::load`]) and waits
    /// for the new versions' warm-up; a set that accepts none of its version directories
    /// and does not serve it changes nothing.
    fn load(&self, name: &str) -> Result<ReloadReport, LoadError>;
    /// Takes model `name` out until it is loaded again ([`ModelRepository::unload`]).
    fn unload(&self, name: &str) -> Result<Vec<String>, RegistryError>;
    /// `(name, version)` of the models unloaded, with the versions they had.
    fn unloaded(&self) -> Vec<(String, String)>;
    /// Stops taking requests, answers those queued, joins the workers.
    fn shutdown(&self);
}

pub(crate) struct Served<M: Codec> {
    pub(crate) kind: Kind,
    pub(crate) repository: ModelRepository<M>,
}

/// Ready to take traffic: live and warmed up. A full queue is not unreadiness — it answers
/// 429 to the callers it refuses, while the pod stays in the load balancer.
fn serving(health: &Health) -> bool {
    health.live && health.warmed_up
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

/// Predicts `inputs` on `handle` within the server's admission (`limits`): more rows
/// than one request may carry are a 413; a bulk request's rows are queued in chunks that
/// leave queue room to one-row requests, and dropping the future cancels them. An error
/// names its row when there are several.
pub(crate) async fn predict_rows<M: Model>(
    handle: &VersionHandle<M>,
    inputs: Vec<M::Input>,
) -> ApiResult<Vec<M::Output>> {
    let rows = inputs.len();
    let admission = admission();
    admission.check_rows(rows)?;
    admission
        .predict(handle, inputs)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.map(|routed| routed.output)
                .map_err(|e| ApiError::predict(e, (rows > 1).then_some(i)))
        })
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
        Ok(serving(&handle.predictor().health()))
    }

    fn all_ready(&self) -> bool {
        let registry = self.registry();
        registry.models().iter().all(|name| {
            registry.versions(name).unwrap_or_default().iter().all(|v| {
                registry
                    .handle(name, &v.version)
                    .is_ok_and(|h| serving(&h.predictor().health()))
            })
        })
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
        let registry = self.registry().clone();
        let (name, version) = (name.to_string(), version.map(str::to_string));
        Box::pin(async move {
            let probe = match &version {
                Some(v) => registry.handle(&name, v),
                None => registry.route(&name, None),
            }
            .map_err(ApiError::registry)?;
            let decode = |handle: &VersionHandle<M>| {
                let model = handle.predictor().model();
                model.decode_request(&name, &model.outputs_meta(), &request)
            };
            let mut inputs = decode(&probe)?;
            admission().check_rows(inputs.len())?;
            // A pinned version answers itself; otherwise the routing picks one version for
            // every row (and mirrors them to a shadow version when it asks for one).
            let handle = match &version {
                Some(_) => probe,
                None => {
                    let routed = registry
                        .route_with_shadow(&name, &inputs)
                        .map_err(ApiError::registry)?;
                    if routed.version() != probe.version() {
                        inputs = decode(&routed)?;
                    }
                    routed
                }
            };
            let model = handle.predictor().model();
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

    fn load(&self, name: &str) -> Result<ReloadReport, LoadError> {
        let mut report = self.repository.load(name)?;
        // Answered once the new versions can serve, as Triton's load does: each waits for
        // its warm-up, and one that fails or outlasts the wait is reported as failed.
        let registry = self.registry();
        for (model, version) in std::mem::take(&mut report.added) {
            let warm = registry.handle(&model, &version).map(|h| {
                let ok = h.predictor().wait_warmed_up(LOAD_WARM_UP_WAIT);
                (ok, h.predictor().health().warmup_error)
            });
            match warm {
                Ok((true, _)) => report.added.push((model, version)),
                Ok((false, error)) => {
                    let why = error
                        .unwrap_or_else(|| format!("still warming up after {LOAD_WARM_UP_WAIT:?}"));
                    report.failed.push((model, version, why));
                }
                Err(e) => report.failed.push((model, version, e.to_string())),
            }
        }
        Ok(report)
    }

    fn unload(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        self.repository.unload(name)
    }

    fn unloaded(&self) -> Vec<(String, String)> {
        self.repository.unloaded()
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
    let device = args.device()?;
    let text_options = args.text_options(&device);
    let image_options = ImageOptions {
        device: device.clone(),
        ..ImageOptions::default()
    };
    let (t, c, r) = (text_options.clone(), text_options.clone(), text_options);
    let (mlp_device, tabular_device) = (device.clone(), device);
    let mut failed = Vec::new();
    let f = &mut failed;
    let sets = vec![
        open_kind(
            args,
            metrics,
            Kind::TextEmbedder,
            text,
            move |d: &Path| {
                SentenceEmbedder::load_with(d, t.clone()).map(SentenceEmbedder::with_requests)
            },
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::TextClassifier,
            registry(&policy, deadline),
            move |d: &Path| TextClassifier::load_with(d, c.clone()),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::CrossEncoder,
            registry(&policy, deadline),
            move |d: &Path| CrossEncoder::load_with(d, r.clone()),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::MlpClassifier,
            registry(&policy, deadline),
            move |d: &Path| MlpClassifier::load_on(d, &mlp_device),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::ImageClassifier,
            registry(&policy, deadline),
            move |d: &Path| ImageClassifier::load_with(d, image_options.clone()),
            f,
        )?,
        open_kind(
            args,
            metrics,
            Kind::Tabular,
            registry(&policy, deadline),
            move |d: &Path| TabularModel::load_on(d, &tabular_device),
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
