//! Routing: how a model's requests are spread over its versions (fixed, weighted, sticky,
//! shadow), and the immutable per-model table a request reads once.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::version::{Routed, VersionHandle, VersionState};
use super::{Registry, RegistryError, STABLE};
use crate::model::Model;
use crate::util::random_draw;

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

/// One model's versions, labels and routing; immutable once published.
pub(super) struct Table<M: Model> {
    /// Versions in deployment order.
    pub(super) versions: BTreeMap<u64, Arc<VersionState<M>>>,
    pub(super) labels: HashMap<String, Arc<str>>,
    /// Stable versions before the current one, most recent last.
    pub(super) previous_stable: Vec<Arc<str>>,
    pub(super) routing: Routing,
    /// The routing resolved to versions: cumulative weights.
    pub(super) resolved: Vec<(u64, Arc<VersionState<M>>)>,
    pub(super) shadow: Option<(Arc<VersionState<M>>, f64)>,
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
    pub(super) fn find(&self, target: &str) -> Option<&Arc<VersionState<M>>> {
        let version = self.labels.get(target).map_or(target, |v| &**v);
        self.versions.values().find(|s| &*s.version == version)
    }

    pub(super) fn known(&self) -> Vec<String> {
        self.versions
            .values()
            .map(|s| s.version.to_string())
            .collect()
    }

    /// Resolves the routing's targets to versions.
    pub(super) fn resolve(&mut self) {
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

impl<M: Model> Registry<M> {
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

    /// [`predict`](Self::predict) without blocking: the version is picked and a shadow copy
    /// sent now, the request queued now; the future resolves to the answer. Dropping it
    /// cancels the request.
    pub fn predict_async(
        &self,
        name: &str,
        input: M::Input,
    ) -> impl Future<Output = Result<Routed<M::Output>, RegistryError>> + Send + use<M> {
        let answer = self
            .pick_and_mirror(name, None, std::slice::from_ref(&input))
            .map(|handle| handle.predict_async(input));
        async move { Ok(answer?.await?) }
    }

    fn predict_routed(
        &self,
        name: &str,
        sticky_key: Option<&dyn StickyKey>,
        input: M::Input,
    ) -> Result<Routed<M::Output>, RegistryError> {
        let handle = self.pick_and_mirror(name, sticky_key, std::slice::from_ref(&input))?;
        Ok(handle.predict(input)?)
    }

    /// Routes a request of several rows: picks one version for all of them (the handle's
    /// `predict_async` then queues each row) and, when the routing asks for shadow copies,
    /// sends each row to the shadow version with the routing's probability.
    pub fn route_with_shadow(
        &self,
        name: &str,
        inputs: &[M::Input],
    ) -> Result<VersionHandle<M>, RegistryError> {
        self.pick_and_mirror(name, None, inputs)
    }

    /// Picks the version for one request and, when the routing asks for one, sends a copy
    /// of each input to the shadow version (each with the routing's probability).
    fn pick_and_mirror(
        &self,
        name: &str,
        sticky_key: Option<&dyn StickyKey>,
        inputs: &[M::Input],
    ) -> Result<VersionHandle<M>, RegistryError> {
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
        {
            for input in inputs {
                if (random_draw() as f64 / u64::MAX as f64) < *fraction {
                    Self::mirror(shadow.clone(), input.clone());
                }
            }
        }
        Ok(VersionHandle { state })
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
            // A shadow copy's failure is the shadow's, never the live traffic's.
            if answer.is_err() {
                stats_of.stats.shadow_errors.fetch_add(1, Ordering::Relaxed);
            }
            stats_of.stats.latency.record(started.elapsed());
        });
        if submitted.is_err() {
            shadow.stats.shadow_requests.fetch_add(1, Ordering::Relaxed);
            shadow.stats.shadow_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
