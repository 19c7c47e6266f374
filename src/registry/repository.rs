//! A model repository on disk in the Triton / TF Serving layout, `ROOT/NAME/VERSION/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Registry, RegistryError};
use crate::error::LoadError;
use crate::model::Model;

/// Loads one version directory into a model.
type Loader<M> = Box<dyn Fn(&Path) -> Result<M, LoadError> + Send + Sync>;

/// Says whether a version directory belongs to this repository.
type Accept = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// What a [`ModelRepository::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// `(name, version)` deployed.
    pub added: Vec<(String, String)>,
    /// `(name, version)` retired.
    pub removed: Vec<(String, String)>,
    /// Version directories that failed to load, with the error.
    pub failed: Vec<(String, String, String)>,
}

/// Keeps a [`Registry`] in step with a directory of models, `ROOT/NAME/VERSION/`: every
/// version directory found is deployed, and [`reload`](Self::reload) deploys new ones and
/// retires removed ones. The highest version of a model (numeric order when the names are
/// numbers, as in Triton and TF Serving) becomes stable when the model first appears.
pub struct ModelRepository<M: Model> {
    root: PathBuf,
    registry: Arc<Registry<M>>,
    loader: Loader<M>,
    accept: Accept,
    loaded: Mutex<BTreeSet<(String, String)>>,
}

impl<M: Model> std::fmt::Debug for ModelRepository<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRepository")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A total order of version names: names with a numeric prefix above names without one,
/// then by that number (any length, leading zeros ignored), then by the rest as text, and
/// last by the whole name, so `9 < 10 < 10-hotfix < 11` and no two names compare equal.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(name: &str) -> (bool, usize, &str, &str, &str) {
        let digits = name.len() - name.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, rest) = name.split_at(digits);
        let significant = number.trim_start_matches('0');
        (digits > 0, significant.len(), significant, rest, name)
    }
    key(a).cmp(&key(b))
}

impl<M: Model> ModelRepository<M> {
    /// Scans `root` and deploys every `NAME/VERSION/` directory into `registry` with
    /// `loader`. Directories that fail to load are reported, not fatal.
    pub fn open(
        root: impl Into<PathBuf>,
        registry: Arc<Registry<M>>,
        loader: impl Fn(&Path) -> Result<M, LoadError> + Send + Sync + 'static,
    ) -> Result<(Self, ReloadReport), LoadError> {
        Self::open_filtered(root, registry, |_: &Path| true, loader)
    }

    /// [`open`](Self::open), taking only the version directories that `accept` returns
    /// true for; the others are left alone (neither loaded nor reported as failed), on
    /// every [`reload`](Self::reload) too. Several repositories, one per model type, can
    /// so share one root: each accepts the directories of its own kind.
    ///
    /// ```
    /// use std::path::Path;
    /// use std::sync::Arc;
    /// use modelhost::{models::mlp::MlpClassifier, registry::ModelRepository, registry::Registry};
    ///
    /// let root = std::env::temp_dir().join(format!("modelhost-doc-repo-{}", std::process::id()));
    /// let version = root.join("digits/1");
    /// std::fs::create_dir_all(&version)?;
    /// for file in ["model.json", "model.safetensors"] {
    ///     std::fs::copy(Path::new("examples/assets/digits").join(file), version.join(file))?;
    /// }
    /// std::fs::create_dir_all(root.join("some-text-model/1"))?; // another kind's directory
    ///
    /// let registry = Arc::new(Registry::new());
    /// let is_mlp = |dir: &Path| dir.join("model.json").is_file();
    /// let load = |dir: &Path| MlpClassifier::load(dir);
    /// let (_repository, report) =
    ///     ModelRepository::open_filtered(&root, registry.clone(), is_mlp, load)?;
    /// assert_eq!(report.added, [("digits".to_string(), "1".to_string())]);
    /// assert!(report.failed.is_empty());
    /// assert_eq!(registry.models(), ["digits"]);
    /// # std::fs::remove_dir_all(&root)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_filtered(
        root: impl Into<PathBuf>,
        registry: Arc<Registry<M>>,
        accept: impl Fn(&Path) -> bool + Send + Sync + 'static,
        loader: impl Fn(&Path) -> Result<M, LoadError> + Send + Sync + 'static,
    ) -> Result<(Self, ReloadReport), LoadError> {
        let repository = ModelRepository {
            root: root.into(),
            registry,
            loader: Box::new(loader),
            accept: Box::new(accept),
            loaded: Mutex::new(BTreeSet::new()),
        };
        let report = repository.reload()?;
        Ok((repository, report))
    }

    /// The registry it fills.
    pub fn registry(&self) -> &Arc<Registry<M>> {
        &self.registry
    }

    fn scan(&self) -> Result<BTreeSet<(String, String)>, LoadError> {
        let mut found = BTreeSet::new();
        let models = std::fs::read_dir(&self.root).map_err(|e| LoadError::io(&self.root, e))?;
        for model in models.flatten() {
            if !model.path().is_dir() {
                continue;
            }
            let name = model.file_name().to_string_lossy().into_owned();
            let versions =
                std::fs::read_dir(model.path()).map_err(|e| LoadError::io(model.path(), e))?;
            for version in versions.flatten() {
                if version.path().is_dir() && (self.accept)(&version.path()) {
                    found.insert((
                        name.clone(),
                        version.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
        }
        Ok(found)
    }

    /// Deploys version directories that appeared and retires those that disappeared. A
    /// removed stable version is replaced by the highest remaining version first.
    pub fn reload(&self) -> Result<ReloadReport, LoadError> {
        let found = self.scan()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = ReloadReport::default();

        let mut new: Vec<(String, String)> = found.difference(&loaded).cloned().collect();
        new.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| version_order(&a.1, &b.1)));
        let known_models = self.registry.models();
        for (name, version) in &new {
            let dir = self.root.join(name).join(version);
            let deployed = (self.loader)(&dir)
                .map_err(|e| e.to_string())
                .and_then(|model| {
                    self.registry
                        .deploy(name, version, model)
                        .map_err(|e| e.to_string())
                });
            match deployed {
                Ok(_) => {
                    loaded.insert((name.clone(), version.clone()));
                    report.added.push((name.clone(), version.clone()));
                    // A model that is new serves its highest version (deployed last, since
                    // versions go in order); new versions of a known model wait to be
                    // promoted.
                    if !known_models.contains(name) {
                        let _ = self.registry.promote(name, version);
                    }
                }
                Err(e) => report.failed.push((name.clone(), version.clone(), e)),
            }
        }

        let gone: Vec<(String, String)> = loaded.difference(&found).cloned().collect();
        for (name, version) in gone {
            if self.registry.stable(&name).ok().as_deref() == Some(version.as_str()) {
                let next = loaded
                    .iter()
                    .filter(|(n, v)| {
                        *n == name && *v != version && found.contains(&(n.clone(), v.clone()))
                    })
                    .map(|(_, v)| v.clone())
                    .max_by(|a, b| version_order(a, b));
                if let Some(next) = next {
                    let _ = self.registry.promote(&name, &next);
                }
            }
            match self.registry.retire(&name, &version) {
                Ok(()) | Err(RegistryError::UnknownVersion { .. }) => {
                    loaded.remove(&(name.clone(), version.clone()));
                    report.removed.push((name, version));
                }
                Err(e) => report.failed.push((name, version, e.to_string())),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::version_order;
    use proptest::prelude::*;

    #[test]
    fn numeric_prefixes_order_numerically_then_by_the_rest() {
        let mut names = vec!["10-hotfix", "b", "9", "10", "010", "a", "2", "1a", "11"];
        names.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            names,
            ["a", "b", "1a", "2", "9", "010", "10", "10-hotfix", "11"]
        );
    }

    fn name() -> impl Strategy<Value = String> {
        "[0-9]{0,3}[-a-z0-9]{0,3}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Antisymmetric, transitive and equal only for equal names: a total order, so
        /// sorting any permutation gives one result.
        #[test]
        fn version_order_is_a_total_order(a in name(), b in name(), c in name()) {
            use std::cmp::Ordering::*;
            prop_assert_eq!(version_order(&a, &b), version_order(&b, &a).reverse());
            prop_assert_eq!(version_order(&a, &b) == Equal, a == b);
            if version_order(&a, &b) != Greater && version_order(&b, &c) != Greater {
                prop_assert_ne!(version_order(&a, &c), Greater);
            }
        }

        #[test]
        fn every_permutation_sorts_the_same(
            (names, mut shuffled) in prop::collection::vec(name(), 0..12)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            let mut sorted = names;
            sorted.sort_by(|a, b| version_order(a, b));
            shuffled.sort_by(|a, b| version_order(a, b));
            prop_assert_eq!(shuffled, sorted);
        }
    }
}
