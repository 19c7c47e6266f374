//! Named models with versions: deploy, label, promote, roll back, retire, and route
//! requests between versions (fixed, weighted, sticky, shadow).
//!
//! Each model's state is one immutable table behind an [`ArcSwap`]: a request loads it once
//! and sees one consistent version set, writers build a new table and swap the pointer, so
//! a hot swap never blocks or fails a request. A retired version leaves the table at once
//! and keeps serving what already reached it; its workers drain and stop when the last
//! handle to it is dropped.
//!
//! ```
//! use modelhost::{MlpClassifier, Registry, Routing};
//!
//! let registry = Registry::new();
//! registry.deploy("digits", "1", MlpClassifier::load("examples/assets/digits")?)?;
//! registry.deploy("digits", "2", MlpClassifier::load("examples/assets/digits")?)?;
//! // 90 % of traffic to the stable version (1, the first deployed), 10 % to the canary.
//! registry.label("digits", "2", "canary")?;
//! registry.set_routing("digits", Routing::split([("stable", 90), ("canary", 10)]))?;
//! let answer = registry.predict("digits", vec![0.0; 64])?;
//! assert!(["1", "2"].contains(&&*answer.version));
//! registry.promote("digits", "2")?; // 2 is stable now, and takes all traffic
//! registry.rollback("digits")?; // back to 1
//! assert_eq!(registry.stable("digits")?, "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod repository;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use repository::{ModelRepository, ReloadReport};

use crate::error::{ConfigError, PredictError};
use crate::metrics::PredictorStats;
use crate::metrics::{LatencyHistogram, LatencySummary};
use crate::model::Model;
use crate::predictor::{Predictor, PredictorBuilder};
use crate::util::random_draw;

/// The label of the version that takes traffic by default.
pub const STABLE: &str = "stable";

/// A registry operation could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No model of that name is deployed.
    #[error("no model named `{name}` is deployed")]
    UnknownModel {
        /// The name asked for.
        name: String,
    },
    /// The model has no version or label of that name.
    #[error("model `{name}` has no version or label `{version}`; it has versions {known:?}")]
    UnknownVersion {
        /// The model.
        name: String,
        /// The version or label asked for.
        version: String,
        /// The versions it has.
        known: Vec<String>,
    },
    /// The version exists already.
    #[error("model `{name}` already has a version `{version}`; retire it first")]
    VersionExists {
        /// The model.
        name: String,
        /// The version.
        version: String,
    },
    /// Rolling back needs a previous stable version.
    #[error("model `{name}` has no previous stable version to roll back to")]
    NothingToRollBack {
        /// The model.
        name: String,
    },
    /// The stable version cannot be retired.
    #[error(
        "version `{version}` of `{name}` is stable; promote another version before retiring it"
    )]
    RetiringStable {
        /// The model.
        name: String,
        /// The version.
        version: String,
    },
    /// A routing rule is invalid.
    #[error("invalid routing for `{name}`: {reason}")]
    InvalidRouting {
        /// The model.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A predictor deployed under a name and version it was not built for.
    #[error(
        "the predictor was built as `{predictor}`, not `{name}/{version}`; build it with .identity(\"{name}\", \"{version}\")"
    )]
    IdentityMismatch {
        /// The model.
        name: String,
        /// The version.
        version: String,
        /// The identity it was built with.
        predictor: String,
    },
    /// The version's predictor could not be started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The prediction itself failed.
    #[error(transparent)]
    Predict(#[from] PredictError),
}

/// How a model's requests are spread over its versions. Targets are version names or labels
/// (`"stable"`, `"canary"`, ...), resolved whenever the model's versions or labels change;
/// a target that resolves to nothing is skipped, and with no target left traffic goes to
/// the stable version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routing {
    /// `(target, weight)`: each request goes to one target with probability
    /// weight / total. Empty: everything to the stable version.
    pub split: Vec<(String, u32)>,
    /// `(target, fraction)`: that fraction of requests is also sent to the target; its
    /// answers are discarded (its statistics kept) and the caller never waits for it.
    pub shadow: Option<(String, f64)>,
}

impl Routing {
    /// Everything to one version or label.
    pub fn fixed(target: impl Into<String>) -> Self {
        Routing {
            split: vec![(target.into(), 1)],
            shadow: None,
        }
    }

    /// A weighted split, e.g. `[("stable", 90), ("canary", 10)]`.
    pub fn split<T: Into<String>>(targets: impl IntoIterator<Item = (T, u32)>) -> Self {
        Routing {
            split: targets.into_iter().map(|(t, w)| (t.into(), w)).collect(),
            shadow: None,
        }
    }

    /// Also mirrors `fraction` (0..=1) of requests to `target`.
    pub fn with_shadow(mut self, target: impl Into<String>, fraction: f64) -> Self {
        self.shadow = Some((target.into(), fraction));
        self
    }
}

/// An answer and the version that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<O> {
    /// The version that answered.
    pub version: Arc<str>,
    /// Its output.
    pub output: O,
    /// An id unique within this process, to join ground truth to this answer later
    /// ([`AccuracyMonitor`](crate::AccuracyMonitor)).
    pub request_id: u64,
}

/// The source of [`Routed::request_id`].
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Per-version request statistics.
#[derive(Default)]
struct VersionStats {
    requests: AtomicU64,
    errors: AtomicU64,
    shadow_requests: AtomicU64,
    shadow_errors: AtomicU64,
    latency: LatencyHistogram,
}

impl VersionStats {
    fn record(&self, started: Instant, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(started.elapsed());
    }
}

struct VersionState<M: Model> {
    version: Arc<str>,
    predictor: Predictor<M>,
    stats: VersionStats,
}

/// A cheap, cloneable handle pinned to one version of a model: it keeps answering with that
/// version after promotions and rollbacks, and keeps the version alive while it exists.
pub struct VersionHandle<M: Model> {
    state: Arc<VersionState<M>>,
}

impl<M: Model> Clone for VersionHandle<M> {
    fn clone(&self) -> Self {
        VersionHandle {
            state: self.state.clone(),
        }
    }
}

impl<M: Model> std::fmt::Debug for VersionHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionHandle")
            .field("version", &self.state.version)
            .finish()
    }
}

impl<M: Model> VersionHandle<M> {
    /// The version this handle is pinned to.
    pub fn version(&self) -> &str {
        &self.state.version
    }

    /// The version's predictor.
    pub fn predictor(&self) -> &Predictor<M> {
        &self.state.predictor
    }

    /// Predicts with this version, counting the request in its statistics.
    pub fn predict(&self, input: M::Input) -> Result<Routed<M::Output>, PredictError> {
        let started = Instant::now();
        let answer = self.state.predictor.predict(input);
        self.state.stats.record(started, answer.is_ok());
        answer.map(|output| Routed {
            request_id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            version: self.state.version.clone(),
            output,
        })
    }
}

/// One model's versions, labels and routing; immutable once published.
struct Table<M: Model> {
    /// Versions in deployment order.
    versions: BTreeMap<u64, Arc<VersionState<M>>>,
    labels: HashMap<String, Arc<str>>,
    /// Stable versions before the current one, most recent last.
    previous_stable: Vec<Arc<str>>,
    routing: Routing,
    /// The routing resolved to versions: cumulative weights.
    resolved: Vec<(u64, Arc<VersionState<M>>)>,
    shadow: Option<(Arc<VersionState<M>>, f64)>,
}

impl<M: Model> Clone for Table<M> {
    fn clone(&self) -> Self {
        Table {
            versions: self.versions.clone(),
            labels: self.labels.clone(),
            previous_stable: self.previous_stable.clone(),
            routing: self.routing.clone(),
            resolved: self.resolved.clone(),
            shadow: self.shadow.clone(),
        }
    }
}

impl<M: Model> Table<M> {
    fn find(&self, target: &str) -> Option<&Arc<VersionState<M>>> {
        let version = self.labels.get(target).map_or(target, |v| &**v);
        self.versions.values().find(|s| &*s.version == version)
    }

    fn known(&self) -> Vec<String> {
        self.versions
            .values()
            .map(|s| s.version.to_string())
            .collect()
    }

    /// Resolves the routing's targets to versions.
    fn resolve(&mut self) {
        let mut resolved = Vec::new();
        let mut total = 0u64;
        for (target, weight) in &self.routing.split {
            if *weight == 0 {
                continue;
            }
            if let Some(state) = self.find(target) {
                total += u64::from(*weight);
                resolved.push((total, state.clone()));
            }
        }
        if resolved.is_empty()
            && let Some(stable) = self.find(STABLE)
        {
            resolved.push((1, stable.clone()));
        }
        self.resolved = resolved;
        self.shadow = self
            .routing
            .shadow
            .as_ref()
            .and_then(|(target, fraction)| Some((self.find(target)?.clone(), *fraction)));
    }

    /// Picks a version for a draw in `0..u64::MAX`.
    fn pick(&self, draw: u64) -> Option<&Arc<VersionState<M>>> {
        let total = self.resolved.last()?.0;
        let point = draw % total;
        self.resolved
            .iter()
            .find(|(cumulative, _)| point < *cumulative)
            .map(|(_, s)| s)
    }
}

struct Entry<M: Model> {
    table: ArcSwap<Table<M>>,
    /// Serialises writers; readers never take it.
    write: Mutex<u64>,
}

/// Configures the predictor of each deployed version.
type Configure<M> = Box<dyn Fn(PredictorBuilder<M>) -> PredictorBuilder<M> + Send + Sync>;

/// Named models with versions and routing. See the [module](self) docs.
pub struct Registry<M: Model> {
    models: RwLock<HashMap<String, Arc<Entry<M>>>>,
    configure: Configure<M>,
}

impl<M: Model> std::fmt::Debug for Registry<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Registry").field("models", &names).finish()
    }
}

impl<M: Model> Default for Registry<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// One version as [`Registry::versions`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionReport {
    /// The version.
    pub version: String,
    /// Labels pointing at it.
    pub labels: Vec<String>,
    /// Share of routed traffic it takes now (0..=1).
    pub traffic: f64,
    /// Requests answered through the registry or a handle (shadow copies excluded).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Shadow copies sent to it.
    pub shadow_requests: u64,
    /// Of those, failed or refused.
    pub shadow_errors: u64,
    /// End-to-end latency of its requests (shadow copies included).
    pub latency: LatencySummary,
    /// Its predictor's counters.
    pub predictor: PredictorStats,
}

/// The 64-bit FNV-1a hash.
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A stable hash of a sticky key (the same in every process and run).
fn sticky_draw(key: &impl Hash) -> u64 {
    // FNV-1a: a fixed algorithm, so a key lands on the same version in every process,
    // run and Rust release (std's DefaultHasher promises none of that).
    let mut hasher = Fnv1a(0xcbf2_9ce4_8422_2325);
    key.hash(&mut hasher);
    // Spread the bits so `% total` uses all of them.
    let mut z = hasher.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<M: Model> Registry<M> {
    /// An empty registry whose versions get predictors with default settings.
    pub fn new() -> Self {
        Self::with_predictor_config(|b| b)
    }

    /// An empty registry whose versions get predictors configured by `configure` (batching,
    /// cache, ...). The registry sets each predictor's identity to (name, version).
    pub fn with_predictor_config(
        configure: impl Fn(PredictorBuilder<M>) -> PredictorBuilder<M> + Send + Sync + 'static,
    ) -> Self {
        Registry {
            models: RwLock::new(HashMap::new()),
            configure: Box::new(configure),
        }
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry<M>>, RegistryError> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownModel { name: name.into() })
    }

    /// Applies `change` to a copy of the model's table and publishes it.
    fn update<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut Table<M>, &mut u64) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let entry = self.entry(name)?;
        let mut seq = entry.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = Table::clone(&entry.table.load());
        let out = change(&mut table, &mut seq)?;
        table.resolve();
        let old = entry.table.swap(Arc::new(table));
        drop(seq);
        // The old table may hold the last handle to a retired version, whose drop drains
        // its queue and joins its workers: never under the writer lock.
        drop(old);
        Ok(out)
    }

    /// Names of the deployed models.
    pub fn models(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Deploys `model` as `version` of `name` and returns a handle pinned to it. The first
    /// version of a model becomes `stable`; later ones take no traffic until labelled into
    /// the routing or promoted.
    pub fn deploy(
        &self,
        name: &str,
        version: &str,
        model: M,
    ) -> Result<VersionHandle<M>, RegistryError> {
        let builder = (self.configure)(Predictor::builder(model)).identity(name, version);
        self.deploy_predictor(name, version, builder.build()?)
    }

    /// Deploys a predictor you built as `version` of `name`; it must have been built with
    /// `.identity(name, version)` so that its cache entries and metrics carry the right
    /// labels.
    pub fn deploy_predictor(
        &self,
        name: &str,
        version: &str,
        predictor: Predictor<M>,
    ) -> Result<VersionHandle<M>, RegistryError> {
        if predictor.identity() != (name, version) {
            let (has_model, has_version) = predictor.identity();
            return Err(RegistryError::IdentityMismatch {
                name: name.into(),
                version: version.into(),
                predictor: format!("{has_model}/{has_version}"),
            });
        }
        {
            let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
            models.entry(name.to_string()).or_insert_with(|| {
                Arc::new(Entry {
                    table: ArcSwap::from_pointee(Table {
                        versions: BTreeMap::new(),
                        labels: HashMap::new(),
                        previous_stable: Vec::new(),
                        routing: Routing::default(),
                        resolved: Vec::new(),
                        shadow: None,
                    }),
                    write: Mutex::new(0),
                })
            });
        }
        self.update(name, |table, seq| {
            if table.versions.values().any(|s| &*s.version == version) {
                return Err(RegistryError::VersionExists {
                    name: name.into(),
                    version: version.into(),
                });
            }
            let state = Arc::new(VersionState {
                version: version.into(),
                predictor,
                stats: VersionStats::default(),
            });
            *seq += 1;
            table.versions.insert(*seq, state.clone());
            if !table.labels.contains_key(STABLE) {
                table.labels.insert(STABLE.into(), version.into());
            }
            Ok(VersionHandle { state })
        })
    }

    /// Points `label` at `version` (moving it if it pointed elsewhere). Setting `stable`
    /// this way is [`promote`](Self::promote).
    pub fn label(&self, name: &str, version: &str, label: &str) -> Result<(), RegistryError> {
        if label == STABLE {
            return self.promote(name, version);
        }
        self.update(name, |table, _| {
            let version = Self::version_of(table, name, version)?;
            table.labels.insert(label.into(), version);
            Ok(())
        })
    }

    /// Removes a label (not `stable`).
    pub fn unlabel(&self, name: &str, label: &str) -> Result<(), RegistryError> {
        self.update(name, |table, _| {
            if label != STABLE {
                table.labels.remove(label);
            }
            Ok(())
        })
    }

    fn version_of(table: &Table<M>, name: &str, target: &str) -> Result<Arc<str>, RegistryError> {
        table
            .find(target)
            .map(|s| s.version.clone())
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.into(),
                version: target.into(),
                known: table.known(),
            })
    }

    /// Makes `version` (or the version a label points at) stable; the stable version before
    /// it is remembered for [`rollback`](Self::rollback). Other labels on it (`canary`) are
    /// removed: it is not a candidate any more.
    pub fn promote(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        self.update(name, |table, _| {
            let version = Self::version_of(table, name, version)?;
            let old = table.labels.insert(STABLE.into(), version.clone());
            if let Some(old) = old
                && old != version
            {
                table.previous_stable.push(old);
            }
            table
                .labels
                .retain(|label, v| label == STABLE || *v != version);
            Ok(())
        })
    }

    /// Makes the previous stable version stable again; returns it.
    pub fn rollback(&self, name: &str) -> Result<String, RegistryError> {
        self.update(name, |table, _| {
            while let Some(previous) = table.previous_stable.pop() {
                // Skip versions retired since.
                if table.versions.values().any(|s| s.version == previous) {
                    table.labels.insert(STABLE.into(), previous.clone());
                    return Ok(previous.to_string());
                }
            }
            Err(RegistryError::NothingToRollBack { name: name.into() })
        })
    }

    /// Removes `version`: it takes no new requests, answers those it accepted, and stops
    /// when the last [`VersionHandle`] to it is dropped. The stable version cannot be
    /// retired.
    pub fn retire(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        self.update(name, |table, _| {
            let version = Self::version_of(table, name, version)?;
            if table.labels.get(STABLE) == Some(&version) {
                return Err(RegistryError::RetiringStable {
                    name: name.into(),
                    version: version.to_string(),
                });
            }
            table.versions.retain(|_, s| s.version != version);
            table.labels.retain(|_, v| *v != version);
            Ok(())
        })
    }

    /// Sets how requests are spread over versions.
    pub fn set_routing(&self, name: &str, routing: Routing) -> Result<(), RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidRouting {
            name: name.into(),
            reason: reason.into(),
        };
        if !routing.split.is_empty() && routing.split.iter().all(|(_, w)| *w == 0) {
            return Err(invalid(
                "every weight is 0; give at least one target a positive weight",
            ));
        }
        if let Some((_, fraction)) = &routing.shadow
            && !(0.0..=1.0).contains(fraction)
        {
            return Err(invalid("the shadow fraction must lie in [0, 1]"));
        }
        self.update(name, |table, _| {
            table.routing = routing;
            Ok(())
        })
    }

    /// The stable version of `name`.
    pub fn stable(&self, name: &str) -> Result<String, RegistryError> {
        let table = self.entry(name)?.table.load_full();
        Self::version_of(&table, name, STABLE).map(|v| v.to_string())
    }

    /// A handle pinned to `version` (or the version a label points at).
    pub fn handle(&self, name: &str, version: &str) -> Result<VersionHandle<M>, RegistryError> {
        let table = self.entry(name)?.table.load_full();
        table
            .find(version)
            .map(|state| VersionHandle {
                state: state.clone(),
            })
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.into(),
                version: version.into(),
                known: table.known(),
            })
    }

    /// The version the routing picks for one request: by `sticky_key` when given (the same
    /// key always lands on the same version while the routing and versions are unchanged),
    /// else at random by weight.
    pub fn route(
        &self,
        name: &str,
        sticky_key: Option<&dyn StickyKey>,
    ) -> Result<VersionHandle<M>, RegistryError> {
        let entry = self.entry(name)?;
        let table = entry.table.load();
        let draw = sticky_key.map_or_else(random_draw, |k| k.draw());
        table
            .pick(draw)
            .map(|state| VersionHandle {
                state: state.clone(),
            })
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.into(),
                version: STABLE.into(),
                known: table.known(),
            })
    }

    /// Per-version statistics side by side, in deployment order.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionReport>, RegistryError> {
        let table = self.entry(name)?.table.load_full();
        let total = table.resolved.last().map_or(0, |(c, _)| *c);
        Ok(table
            .versions
            .values()
            .map(|s| {
                let mut labels: Vec<String> = table
                    .labels
                    .iter()
                    .filter(|(_, v)| **v == s.version)
                    .map(|(l, _)| l.clone())
                    .collect();
                labels.sort();
                let mut previous = 0;
                let mut share = 0;
                for (cumulative, state) in &table.resolved {
                    if Arc::ptr_eq(state, s) {
                        share += cumulative - previous;
                    }
                    previous = *cumulative;
                }
                VersionReport {
                    version: s.version.to_string(),
                    labels,
                    traffic: if total == 0 {
                        0.0
                    } else {
                        share as f64 / total as f64
                    },
                    requests: s.stats.requests.load(Ordering::Relaxed),
                    errors: s.stats.errors.load(Ordering::Relaxed),
                    shadow_requests: s.stats.shadow_requests.load(Ordering::Relaxed),
                    shadow_errors: s.stats.shadow_errors.load(Ordering::Relaxed),
                    latency: s.stats.latency.summary(),
                    predictor: s.predictor.stats(),
                }
            })
            .collect())
    }
}

impl<M: Model> Registry<M> {
    /// Adds the metrics of every version of every model to a scrape.
    pub(crate) fn scrape_into(&self, scrape: &mut crate::metrics::Scrape) {
        let entries: Vec<Arc<Entry<M>>> = self
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for entry in entries {
            for state in entry.table.load().versions.values() {
                state.predictor.scrape_into(scrape);
            }
        }
    }

    /// Health of a model: its stable version's predictor.
    pub fn health(&self, name: &str) -> Result<crate::predictor::Health, RegistryError> {
        Ok(self.handle(name, STABLE)?.predictor().health())
    }

    /// True when every model's stable version is ready.
    pub fn ready(&self) -> bool {
        self.models()
            .iter()
            .all(|name| self.health(name).is_ok_and(|h| h.ready))
    }

    /// True when every model's stable version is live.
    pub fn live(&self) -> bool {
        self.models()
            .iter()
            .all(|name| self.health(name).is_ok_and(|h| h.live))
    }
}

/// A caller-supplied key for sticky routing (a user id, a session id): anything hashable.
pub trait StickyKey {
    /// The key's draw in `0..u64::MAX`, stable across runs.
    fn draw(&self) -> u64;
}

impl<T: Hash + ?Sized> StickyKey for T {
    fn draw(&self) -> u64 {
        sticky_draw(&self)
    }
}

impl<M: Model> Registry<M>
where
    M::Input: Clone,
{
    /// Routes one request (see [`route`](Self::route)) and predicts; a shadow copy is sent
    /// when the routing asks for one. The answer says which version produced it.
    pub fn predict(&self, name: &str, input: M::Input) -> Result<Routed<M::Output>, RegistryError> {
        self.predict_routed(name, None, input)
    }

    /// [`predict`](Self::predict) routed by a sticky key.
    pub fn predict_sticky(
        &self,
        name: &str,
        sticky_key: &dyn StickyKey,
        input: M::Input,
    ) -> Result<Routed<M::Output>, RegistryError> {
        self.predict_routed(name, Some(sticky_key), input)
    }

    fn predict_routed(
        &self,
        name: &str,
        sticky_key: Option<&dyn StickyKey>,
        input: M::Input,
    ) -> Result<Routed<M::Output>, RegistryError> {
        let entry = self.entry(name)?;
        // One load per request: the request sees one version set, whatever swaps meanwhile.
        let table = entry.table.load_full();
        let draw = sticky_key.map_or_else(random_draw, |k| k.draw());
        let Some(state) = table.pick(draw).cloned() else {
            return Err(RegistryError::UnknownVersion {
                name: name.into(),
                version: STABLE.into(),
                known: table.known(),
            });
        };
        if let Some((shadow, fraction)) = &table.shadow
            && !Arc::ptr_eq(shadow, &state)
            && (random_draw() as f64 / u64::MAX as f64) < *fraction
        {
            Self::mirror(shadow.clone(), input.clone());
        }
        drop(table);
        let handle = VersionHandle { state };
        Ok(handle.predict(input)?)
    }

    /// Sends a copy to the shadow version without waiting; only its statistics keep the
    /// answer.
    fn mirror(shadow: Arc<VersionState<M>>, input: M::Input) {
        let started = Instant::now();
        let stats_of = shadow.clone();
        let submitted = shadow.predictor.submit_detached(input, move |answer| {
            stats_of
                .stats
                .shadow_requests
                .fetch_add(1, Ordering::Relaxed);
            if answer.is_err() {
                stats_of.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            stats_of.stats.latency.record(started.elapsed());
        });
        if submitted.is_err() {
            shadow.stats.shadow_requests.fetch_add(1, Ordering::Relaxed);
            shadow.stats.shadow_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
