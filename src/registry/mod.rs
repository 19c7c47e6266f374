//! Named models with versions: deploy, label, promote, roll back, retire, remove, and
//! route requests between versions (fixed, weighted, sticky, shadow).
//!
//! Each model's state is one immutable table behind an [`ArcSwap`]: a request loads it once
//! and sees one consistent version set, writers build a new table and swap the pointer, so
//! a hot swap never blocks or fails a request. A retired version leaves the table at once
//! and keeps serving what already reached it; its workers drain and stop when the last
//! handle to it is dropped.
//!
//! ```
//! use modelhost::{models::mlp::MlpClassifier, registry::Registry, registry::Routing};
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

mod error;
mod repository;
mod routing;
mod version;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;

pub use error::RegistryError;
pub use repository::{ModelRepository, ReloadReport};
pub use routing::{Routing, StickyKey};
pub use version::{Routed, VersionHandle, VersionReport};

use crate::metrics::{Metrics, Scrape};
use crate::model::Model;
use crate::predictor::{Health, Predictor, PredictorBuilder};
use routing::Table;
use version::{VersionState, VersionStats};

/// The label of the version that takes traffic by default.
pub const STABLE: &str = "stable";

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
        // Removed while this writer waited: a change published now would be lost with it.
        let current = self
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(e, &entry));
        if !current {
            return Err(RegistryError::UnknownModel { name: name.into() });
        }
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
    /// the routing or promoted. A version named `stable` or like one of the model's labels
    /// is refused with [`RegistryError::NameClash`] (and so is a label named like a
    /// version), so a target always means one thing.
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
            // A target names a label first: a version named like one could never be reached.
            if version == STABLE || table.labels.contains_key(version) {
                return Err(RegistryError::NameClash {
                    name: name.into(),
                    clash: version.into(),
                    reason: "a label, so it cannot name a version".into(),
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
            if table.versions.values().any(|s| &*s.version == label) {
                return Err(RegistryError::NameClash {
                    name: name.into(),
                    clash: label.into(),
                    reason: "a version, so it cannot name a label".into(),
                });
            }
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

    /// Removes model `name` with every version of it, the stable one included, and
    /// returns the versions removed, in deployment order. As with
    /// [`retire`](Self::retire), each version takes no new requests, answers those it
    /// accepted, and stops when the last [`VersionHandle`] to it is dropped. Deploying
    /// `name` again starts a new model, with no labels, routing or rollback history.
    ///
    /// ```
    /// use modelhost::{models::mlp::MlpClassifier, registry::Registry, registry::RegistryError};
    ///
    /// let registry = Registry::new();
    /// registry.deploy("digits", "1", MlpClassifier::load("examples/assets/digits")?)?;
    /// registry.deploy("digits", "2", MlpClassifier::load("examples/assets/digits")?)?;
    /// assert_eq!(registry.remove("digits")?, ["1", "2"]);
    /// assert!(registry.models().is_empty());
    /// assert!(matches!(
    ///     registry.predict("digits", vec![0.0; 64]),
    ///     Err(RegistryError::UnknownModel { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let entry = self
            .models
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| RegistryError::UnknownModel { name: name.into() })?;
        // A writer that took the entry before it left the map finishes first (and any
        // later one finds it gone), so the table read here is the last one.
        let seq = entry.write.lock().unwrap_or_else(PoisonError::into_inner);
        let table = entry.table.load_full();
        drop(seq);
        let versions = table
            .versions
            .values()
            .map(|s| s.version.to_string())
            .collect();
        // Dropping the last handle to a version drains and joins its workers: outside
        // every lock.
        drop(table);
        drop(entry);
        Ok(versions)
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
}

impl<M: Model> Registry<M> {
    /// Adds the metrics of every version of every model to a scrape.
    pub(crate) fn scrape_into(&self, scrape: &mut Scrape) {
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
    pub fn health(&self, name: &str) -> Result<Health, RegistryError> {
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

impl Metrics {
    /// Exports the metrics of every version of every model in `registry`, as they come and
    /// go, for as long as the registry lives.
    pub fn register_registry<M: Model>(&self, registry: &Arc<Registry<M>>) {
        let weak = Arc::downgrade(registry);
        self.register_source(move |scrape| match weak.upgrade() {
            Some(r) => {
                r.scrape_into(scrape);
                true
            }
            None => false,
        });
    }
}
