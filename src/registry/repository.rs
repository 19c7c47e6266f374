//! A model repository on disk in the Triton / TF Serving layout, `ROOT/NAME/VERSION/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Registry, RegistryError};
use crate::error::LoadError;
use crate::model::Model;

/// Loads one version directory into a model.
type Loader<M> = Box<dyn Fn(&Path) -> Result<M, LoadError> + Send + Sync>;

/// Says whether a version directory belongs to this repository.
type Accept = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// What a [`ModelRepository::reload`] or [`ModelRepository::load`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// `(name, version)` deployed.
    pub added: Vec<(String, String)>,
    /// `(name, version)` retired.
    pub removed: Vec<(String, String)>,
    /// Version directories that failed to load, with the error.
    pub failed: Vec<(String, String, String)>,
}

/// What the repository has done to its registry; one lock, held by each operation from
/// its scan to its last change.
#[derive(Default)]
struct State {
    /// `(name, version)` deployed from a directory.
    loaded: BTreeSet<(String, String)>,
    /// Models taken out by [`ModelRepository::unload`], with the versions they had; a
    /// reload leaves them out until [`ModelRepository::load`].
    unloaded: BTreeMap<String, Vec<String>>,
}

/// Keeps a [`Registry`] in step with a directory of models, `ROOT/NAME/VERSION/`: every
/// version directory found is deployed, and [`reload`](Self::reload) deploys new ones and
/// retires removed ones. The highest version of a model (numeric order when the names are
/// numbers, as in Triton and TF Serving) becomes stable when the model first appears.
///
/// One model at a time, as Triton's model control does it: [`unload`](Self::unload) takes a
/// model out of the registry (and out of every reload) and [`load`](Self::load) brings its
/// directory back in step.
pub struct ModelRepository<M: Model> {
    root: PathBuf,
    registry: Arc<Registry<M>>,
    loader: Loader<M>,
    accept: Accept,
    state: Mutex<State>,
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

/// Whether `name` is one directory name (not empty, `.`, `..` or a path), so that
/// `ROOT/name` stays inside the repository.
fn is_model_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(c)) if c == name)
        && components.next().is_none()
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
            state: Mutex::new(State::default()),
        };
        let report = repository.reload()?;
        Ok((repository, report))
    }

    /// The registry it fills.
    pub fn registry(&self) -> &Arc<Registry<M>> {
        &self.registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the accepted version directories of model directory `dir` to `found`.
    fn scan_model(
        &self,
        name: &str,
        dir: &Path,
        found: &mut BTreeSet<(String, String)>,
    ) -> Result<(), LoadError> {
        let versions = std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))?;
        for version in versions.flatten() {
            if version.path().is_dir() && (self.accept)(&version.path()) {
                found.insert((
                    name.to_string(),
                    version.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
        Ok(())
    }

    fn scan(&self) -> Result<BTreeSet<(String, String)>, LoadError> {
        let mut found = BTreeSet::new();
        let models = std::fs::read_dir(&self.root).map_err(|e| LoadError::io(&self.root, e))?;
        for model in models.flatten() {
            if !model.path().is_dir() {
                continue;
            }
            let name = model.file_name().to_string_lossy().into_owned();
            self.scan_model(&name, &model.path(), &mut found)?;
        }
        Ok(found)
    }

    /// Deploys version directories that appeared and retires those that disappeared. A
    /// removed stable version is replaced by the highest remaining version first. Models
    /// taken out by [`unload`](Self::unload) stay out.
    pub fn reload(&self) -> Result<ReloadReport, LoadError> {
        let mut found = self.scan()?;
        let mut state = self.lock();
        found.retain(|(name, _)| !state.unloaded.contains_key(name));
        let loaded = state.loaded.clone();
        Ok(self.sync(&mut state, &found, &loaded))
    }

    /// Brings one model in step with its directory `ROOT/name/`, as [`reload`](Self::reload)
    /// does for all: version directories not deployed are loaded and deployed, deployed
    /// versions whose directory is gone are retired, and a model none of whose version
    /// directories this repository accepts any more is removed from the registry. A model
    /// taken out by [`unload`](Self::unload) comes back. The files of a version that is
    /// deployed already are not read again: a change ships as a new version directory.
    ///
    /// A version that fails to load is in the report's `failed`; `name` that is not one
    /// directory name, or a directory that cannot be read, is an error.
    ///
    /// ```
    /// use std::path::Path;
    /// use std::sync::Arc;
    /// use modelhost::{models::mlp::MlpClassifier, registry::ModelRepository, registry::Registry};
    ///
    /// let root = std::env::temp_dir().join(format!("modelhost-doc-load-{}", std::process::id()));
    /// std::fs::create_dir_all(&root)?;
    /// let registry = Arc::new(Registry::new());
    /// let load = |dir: &Path| MlpClassifier::load(dir);
    /// let (repository, _) = ModelRepository::open(&root, registry.clone(), load)?;
    /// assert!(registry.models().is_empty());
    ///
    /// // A model added on disk while serving.
    /// let version = root.join("digits/1");
    /// std::fs::create_dir_all(&version)?;
    /// for file in ["model.json", "model.safetensors"] {
    ///     std::fs::copy(Path::new("examples/assets/digits").join(file), version.join(file))?;
    /// }
    /// let report = repository.load("digits")?;
    /// assert_eq!(report.added, [("digits".to_string(), "1".to_string())]);
    ///
    /// // Unloaded: out of the registry, and out of every reload until loaded again.
    /// assert_eq!(repository.unload("digits")?, ["1"]);
    /// assert!(registry.models().is_empty());
    /// assert!(repository.reload()?.added.is_empty());
    /// assert_eq!(repository.unloaded(), [("digits".to_string(), "1".to_string())]);
    /// repository.load("digits")?;
    /// assert_eq!(registry.models(), ["digits"]);
    /// # std::fs::remove_dir_all(&root)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(&self, name: &str) -> Result<ReloadReport, LoadError> {
        let dir = self.root.join(name);
        if !is_model_name(name) {
            return Err(LoadError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a model name is one directory name under the repository root",
                ),
            ));
        }
        let mut found = BTreeSet::new();
        self.scan_model(name, &dir, &mut found)?;
        let mut state = self.lock();
        state.unloaded.remove(name);
        let loaded: BTreeSet<(String, String)> = (state.loaded.iter())
            .filter(|(n, _)| n == name)
            .cloned()
            .collect();
        if found.is_empty() && !loaded.is_empty() {
            let mut report = ReloadReport::default();
            match self.registry.remove(name) {
                Ok(_) | Err(RegistryError::UnknownModel { .. }) => {
                    state.loaded.retain(|(n, _)| n != name);
                    report.removed.extend(loaded);
                }
                Err(e) => {
                    (report.failed).extend(loaded.into_iter().map(|(n, v)| (n, v, e.to_string())))
                }
            }
            return Ok(report);
        }
        Ok(self.sync(&mut state, &found, &loaded))
    }

    /// Takes model `name` out of the registry with all its versions
    /// ([`Registry::remove`]: each answers what it accepted, then stops) and keeps it out
    /// of every [`reload`](Self::reload) until [`load`](Self::load). Returns the versions
    /// taken out; none when it was unloaded already.
    pub fn unload(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let mut state = self.lock();
        if state.unloaded.contains_key(name) {
            return Ok(Vec::new());
        }
        let versions = self.registry.remove(name)?;
        state.loaded.retain(|(n, _)| n != name);
        state.unloaded.insert(name.to_string(), versions.clone());
        Ok(versions)
    }

    /// `(name, version)` of the models taken out by [`unload`](Self::unload), with the
    /// versions each had then.
    pub fn unloaded(&self) -> Vec<(String, String)> {
        (self.lock().unloaded.iter())
            .flat_map(|(name, versions)| versions.iter().map(|v| (name.clone(), v.clone())))
            .collect()
    }

    /// Deploys what is in `found` and not deployed, retires what is in `scope` (the
    /// deployed versions the scan covered) and not in `found`.
    fn sync(
        &self,
        state: &mut State,
        found: &BTreeSet<(String, String)>,
        scope: &BTreeSet<(String, String)>,
    ) -> ReloadReport {
        let loaded = &mut state.loaded;
        let mut report = ReloadReport::default();

        let mut new: Vec<(String, String)> = found.difference(loaded).cloned().collect();
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

        let gone: Vec<(String, String)> = scope.difference(found).cloned().collect();
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
        report
    }
}

#[cfg(test)]
mod tests {
    use super::{is_model_name, version_order};
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

    #[test]
    fn a_model_name_is_one_directory_name() {
        for good in ["digits", "minilm-v2", "a.b", "..."] {
            assert!(is_model_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "/etc", "../x", "a/", "./a"] {
            assert!(!is_model_name(bad), "{bad}");
        }
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
