//! Models by their Hugging Face Hub id (feature `hub`, off by default).
//!
//! [`snapshot`] resolves a repository id and a revision to a local directory that holds
//! the files the loaders read, downloading what the cache lacks through
//! [hf-hub](https://docs.rs/hf-hub)'s blocking client into the Hub's own cache layout
//! (`models--org--name/snapshots/COMMIT/`, shared with Python's `huggingface_hub`). The
//! loaders' `from_hub` functions (`SentenceEmbedder`, `TextClassifier`, `CrossEncoder`,
//! `ImageClassifier`) call it and load that directory:
//!
//! ```no_run
//! use modelhost::hub::HubOptions;
//! use modelhost::models::sentence::SentenceEmbedder;
//! use modelhost::models::text::TextOptions;
//!
//! let embedder = SentenceEmbedder::from_hub("sentence-transformers/all-MiniLM-L6-v2")?;
//!
//! let pinned = HubOptions::new().revision("c9745ed1d9f207416be6d2e6f8de32d1f16199bf");
//! let embedder = SentenceEmbedder::from_hub_with(
//!     "sentence-transformers/all-MiniLM-L6-v2",
//!     &pinned,
//!     TextOptions::default(),
//! )?;
//! # Ok::<(), modelhost::error::LoadError>(())
//! ```
//!
//! ## What is downloaded
//!
//! One request lists the revision's files with their sizes and its commit
//! (`/api/models/{repo}/revision/{revision}?blobs=true`); every file is then downloaded at
//! that commit, so one load never mixes two commits of a branch. Of the files listed,
//! those a loader reads: `config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`, `modules.json`, `sentence_bert_config.json`,
//! `config_sentence_transformers.json`, `preprocessor_config.json`, `model.json`,
//! `modelhost.json` and the first weights file of
//! [`crate::formats::WEIGHT_FILE_NAMES`] (`model.safetensors`, else
//! `pytorch_model.bin`, …), at the repository's root and in every module directory
//! `modules.json` lists (`1_Pooling/`, `2_Dense/`, …). A file the listing does not have is
//! not asked for, and an optional one that answers 404 anyway is skipped; the loader then
//! says which file it missed.
//!
//! ## Settings and the environment
//!
//! | setting | [`HubOptions`] | else the environment | else |
//! |---|---|---|---|
//! | revision | [`revision`](HubOptions::revision) | — | `main` |
//! | Hub address | [`endpoint`](HubOptions::endpoint) | `HF_ENDPOINT` | `https://huggingface.co` |
//! | cache | [`cache_dir`](HubOptions::cache_dir) | `HF_HUB_CACHE`, `HF_HOME/hub` | `~/.cache/huggingface/hub` |
//! | token | [`token`](HubOptions::token) | `HF_TOKEN` | the token file next to the cache (`HF_HOME/token`) |
//! | offline | [`offline`](HubOptions::offline) | `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`) | online |
//!
//! Offline, only the cache is read: a revision it holds loads, one it lacks is
//! [`LoadError::HubNotCached`]. Online, a Hub that cannot be reached (connection refused,
//! DNS, TLS) falls back to the cache too, as `huggingface_hub` does; a Hub that answers
//! with an error status does not ([`LoadError::HubStatus`]).
//!
//! ## Limits, and what hf-hub does not check
//!
//! Repository ids, revisions and every module path of `modules.json` are checked before
//! any request that uses them ([`LoadError::HubRefused`]): a path stays inside the
//! repository. The sizes the listing declares are added up before the first download and
//! refused past [`max_bytes`](HubOptions::max_bytes) (16 GiB by default,
//! [`LoadError::HubTooLarge`]), and every file is checked against its declared size once
//! it is on disk (a file that differs is deleted from the cache). hf-hub 0.4 copies a
//! download's body to disk without a bound of its own and without a read timeout, and it
//! names cache files after the `ETag` and `X-Repo-Commit` headers of the answer: the Hub
//! address is trusted for those. A panic inside hf-hub (it unwraps a few headers of
//! redirects) is caught and reported as [`LoadError::HubResponse`].

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use crate::error::LoadError;
use crate::formats::WEIGHT_FILE_NAMES;

/// The Hub's address when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` names one.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The default of [`HubOptions::max_bytes`]: 16 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// The most bytes of the revision's file listing that are read.
const MAX_LISTING_BYTES: u64 = 32 << 20;

/// The files a loader may read, looked for at the root and in every module directory.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "preprocessor_config.json",
    "model.json",
    "modelhost.json",
];

const REPO_ID_RULE: &str = "a Hub repository id is `name` or `org/name`: letters, digits, `.`, `_` and `-`, each part starting with a letter or digit, at most 96 characters, without `--` or `..`";
const REVISION_RULE: &str = "a revision is a branch, tag or commit: letters, digits, `.`, `_`, `-` and `/`, at most 255 characters, without `..`, `//` or a leading or trailing `/`";
const PATH_RULE: &str = "a module path is a relative path inside the repository: names of letters, digits, `.`, `_` and `-`, separated by `/`, none of them `.` or `..`";

/// Where and how [`snapshot`] finds a repository: revision, Hub address, cache, token,
/// offline mode and the download limit. Unset settings come from the environment as the
/// [module page](self) tables.
///
/// ```
/// use modelhost::hub::HubOptions;
///
/// let options = HubOptions::new()
///     .revision("v2")
///     .cache_dir("/var/cache/models")
///     .endpoint("https://hub.internal.example")
///     .offline(false)
///     .max_bytes(2 << 30);
/// assert_eq!(options.revision_name(), "v2");
/// ```
#[derive(Clone)]
pub struct HubOptions {
    revision: String,
    cache_dir: Option<PathBuf>,
    endpoint: Option<String>,
    token: Option<String>,
    offline: Option<bool>,
    max_bytes: u64,
    progress: bool,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("max_bytes", &self.max_bytes)
            .field("progress", &self.progress)
            .finish()
    }
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            revision: "main".into(),
            cache_dir: None,
            endpoint: None,
            token: None,
            offline: None,
            max_bytes: DEFAULT_MAX_BYTES,
            progress: false,
        }
    }
}

impl HubOptions {
    /// The defaults: revision `main`, everything else from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The branch, tag or commit to load (default `main`).
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = revision.into();
        self
    }

    /// The revision [`revision`](Self::revision) set.
    pub fn revision_name(&self) -> &str {
        &self.revision
    }

    /// The cache directory (the Hub's layout: `models--org--name/…`), instead of
    /// `HF_HUB_CACHE`, `HF_HOME/hub` or `~/.cache/huggingface/hub`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The Hub's address (`http://` or `https://`), instead of `HF_ENDPOINT` or
    /// [`DEFAULT_ENDPOINT`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The token sent to the Hub (private and gated repositories), instead of `HF_TOKEN`
    /// or the token file. It is never printed (`Debug` shows `<set>`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Offline (only the cache is read) or online, whatever `HF_HUB_OFFLINE` says.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = Some(offline);
        self
    }

    /// The most bytes the files of one model may declare together (default
    /// [`DEFAULT_MAX_BYTES`], 16 GiB); checked before the first download.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Draw hf-hub's progress bar on stderr while a file downloads (default off).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }
}

/// A revision of a Hub repository in the local cache: the directory to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    repo: String,
    revision: String,
    commit: String,
    dir: PathBuf,
}

impl Snapshot {
    /// The directory holding the model's files (`…/models--org--name/snapshots/COMMIT`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The repository id, `org/name`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The repository's name without its organisation: what a loaded model is named.
    pub fn name(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }

    /// The revision asked for.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The commit the revision resolved to.
    pub fn commit(&self) -> &str {
        &self.commit
    }
}

/// Splits `org/name@revision` into the repository id and the revision (`None` without an
/// `@`), and checks both. The examples and the server take Hub models in this form.
///
/// ```
/// use modelhost::hub::parse_reference;
///
/// assert_eq!(parse_reference("org/model@v2")?, ("org/model".to_string(), Some("v2".to_string())));
/// assert_eq!(parse_reference("org/model")?, ("org/model".to_string(), None));
/// assert!(parse_reference("../model").is_err());
/// # Ok::<(), modelhost::error::LoadError>(())
/// ```
pub fn parse_reference(reference: &str) -> Result<(String, Option<String>), LoadError> {
    let (repo, revision) = match reference.split_once('@') {
        Some((repo, revision)) => (repo, Some(revision)),
        None => (reference, None),
    };
    check_repo_id(repo)?;
    if let Some(revision) = revision {
        check_revision(revision)?;
    }
    Ok((repo.to_string(), revision.map(str::to_string)))
}

/// Whether `s` could be a Hub repository id (`org/name` or `name`): the examples read a
/// `--model` that is not an existing path as one.
pub fn is_repo_id(s: &str) -> bool {
    check_repo_id(s.split_once('@').map_or(s, |(repo, _)| repo)).is_ok()
}

fn refused(what: impl Into<String>, value: &str, allowed: &'static str) -> LoadError {
    LoadError::HubRefused {
        what: what.into(),
        value: value.to_string(),
        allowed,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Refuses a repository id that could leave the cache's `models--org--name` directory or
/// the Hub's URL space.
fn check_repo_id(id: &str) -> Result<(), LoadError> {
    let part_ok = |part: &str| {
        (1..=96).contains(&part.len())
            && part.chars().all(is_name_char)
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !part.ends_with(['.', '-'])
    };
    let parts: Vec<&str> = id.split('/').collect();
    let ok = (1..=2).contains(&parts.len())
        && parts.iter().all(|p| part_ok(p))
        && !id.contains("--")
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(refused("repository id", id, REPO_ID_RULE))
    }
}

fn check_revision(revision: &str) -> Result<(), LoadError> {
    let ok = (1..=255).contains(&revision.len())
        && revision.chars().all(|c| is_name_char(c) || c == '/')
        && !revision.contains("..")
        && !revision.contains("//")
        && !revision.starts_with('/')
        && !revision.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(refused("revision", revision, REVISION_RULE))
    }
}

/// A module path of `modules.json`, as a relative path inside the repository (`""`: the
/// root).
fn check_module_path(repo: &str, path: &str) -> Result<String, LoadError> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Ok(String::new());
    }
    let ok = path.len() <= 255
        && path.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && part.chars().all(is_name_char)
        });
    if ok {
        Ok(path.to_string())
    } else {
        Err(refused(
            format!("module path in {repo}'s modules.json"),
            path,
            PATH_RULE,
        ))
    }
}

/// A Hub commit id: 40 lowercase hexadecimal digits.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// The settings after the environment has filled in what the options left unset.
struct Settings {
    endpoint: String,
    cache_dir: PathBuf,
    token: Option<String>,
    /// Why downloads are off; `None`: online.
    offline: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    fn of(options: &HubOptions) -> Result<Settings, LoadError> {
        let endpoint = match &options.endpoint {
            Some(url) => url.clone(),
            None => env("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
        };
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(LoadError::InvalidOption {
                option: "endpoint",
                value: endpoint,
                allowed: "an http:// or https:// address (HubOptions::endpoint or HF_ENDPOINT)"
                    .into(),
            });
        }
        let cache_dir = match &options.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir().ok_or_else(|| LoadError::InvalidOption {
                option: "cache_dir",
                value: "unset".into(),
                allowed: "a directory: HubOptions::cache_dir, HF_HUB_CACHE or HF_HOME (there is no home directory for ~/.cache/huggingface/hub)".into(),
            })?,
        };
        let token = options.token.clone().or_else(|| env("HF_TOKEN"));
        let offline = match options.offline {
            Some(true) => Some("HubOptions::offline is set".to_string()),
            Some(false) => None,
            None => env("HF_HUB_OFFLINE")
                .filter(|v| {
                    matches!(
                        v.trim().to_ascii_lowercase().as_str(),
                        "1" | "true" | "yes" | "on"
                    )
                })
                .map(|v| format!("HF_HUB_OFFLINE={v}")),
        };
        Ok(Settings {
            endpoint,
            cache_dir,
            token,
            offline,
        })
    }
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`, as `huggingface_hub` looks for it.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = env("HF_HUB_CACHE") {
        return Some(dir.into());
    }
    if let Some(home) = env("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    let cache = match env("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::home_dir()?.join(".cache"),
    };
    Some(cache.join("huggingface").join("hub"))
}

/// The revision's file listing, as the Hub's model-info API gives it with `blobs=true`.
#[derive(Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    #[serde(default)]
    size: Option<u64>,
}

impl Listing {
    fn has(&self, file: &str) -> bool {
        self.siblings.iter().any(|s| s.rfilename == file)
    }

    /// The size the Hub declares for `file` (the LFS object's size for an LFS file).
    fn size(&self, file: &str) -> Option<u64> {
        let sibling = self.siblings.iter().find(|s| s.rfilename == file)?;
        sibling.lfs.as_ref().and_then(|l| l.size).or(sibling.size)
    }
}

/// One repository at one revision, while it is being resolved.
struct Resolver<'a> {
    repo: &'a str,
    revision: &'a str,
    settings: Settings,
    cache: Cache,
}

/// Resolves `repo_id` at [`HubOptions::revision`] to a directory in the local cache that
/// holds the files a loader reads, downloading the ones the cache lacks. See the
/// [module page](self) for the files, the settings and the limits.
///
/// Errors: [`LoadError::HubRefused`] for an id, revision or module path that is not
/// allowed (nothing was requested for it), [`LoadError::HubStatus`] for an HTTP error
/// (404: no such repository, revision or file), [`LoadError::HubUnreachable`] when the Hub
/// cannot be reached and the cache has no copy, [`LoadError::HubNotCached`] offline
/// without a copy, [`LoadError::HubTooLarge`] past [`HubOptions::max_bytes`],
/// [`LoadError::HubResponse`] for an answer no Hub gives, [`LoadError::Io`] for the cache.
pub fn snapshot(repo_id: &str, options: &HubOptions) -> Result<Snapshot, LoadError> {
    check_repo_id(repo_id)?;
    check_revision(&options.revision)?;
    let settings = Settings::of(options)?;
    let resolver = Resolver {
        repo: repo_id,
        revision: &options.revision,
        cache: Cache::new(settings.cache_dir.clone()),
        settings,
    };
    if let Some(why) = &resolver.settings.offline {
        return resolver.cached().ok_or_else(|| resolver.not_cached(why));
    }
    let mut builder = ApiBuilder::from_cache(resolver.cache.clone())
        .with_endpoint(resolver.settings.endpoint.clone())
        .with_progress(options.progress);
    if let Some(token) = &resolver.settings.token {
        builder = builder.with_token(Some(token.clone()));
    }
    let api = builder.build().map_err(|e| resolver.api_error(e, None))?;
    let listing = match resolver.listing(&api) {
        Err(LoadError::HubUnreachable { .. }) if resolver.cached().is_some() => {
            tracing::warn!(
                repo = repo_id,
                revision = options.revision,
                "the Hub cannot be reached; loading the cached copy"
            );
            return resolver
                .cached()
                .ok_or_else(|| resolver.not_cached("the Hub is unreachable"));
        }
        other => other?,
    };
    resolver.download(&api, &listing, options.max_bytes)
}

impl Resolver<'_> {
    fn hf_repo(&self, revision: &str) -> Repo {
        Repo::with_revision(self.repo.to_string(), RepoType::Model, revision.to_string())
    }

    /// `…/models--org--name`.
    fn repo_dir(&self) -> PathBuf {
        self.settings
            .cache_dir
            .join(self.hf_repo(self.revision).folder_name())
    }

    /// The cached snapshot of the revision: the commit `refs/REVISION` names (written once
    /// every file of a load is there), or the revision itself when it is a commit that has
    /// a snapshot.
    fn cached(&self) -> Option<Snapshot> {
        let repo_dir = self.repo_dir();
        let commit = if is_commit(self.revision)
            && repo_dir.join("snapshots").join(self.revision).is_dir()
        {
            self.revision.to_string()
        } else {
            let named = std::fs::read_to_string(repo_dir.join("refs").join(self.revision)).ok()?;
            let named = named.trim();
            is_commit(named).then(|| named.to_string())?
        };
        let dir = repo_dir.join("snapshots").join(&commit);
        dir.is_dir().then(|| Snapshot {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            commit,
            dir,
        })
    }

    fn not_cached(&self, why: &str) -> LoadError {
        LoadError::HubNotCached {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            cache: self.settings.cache_dir.clone(),
            why: why.to_string(),
        }
    }

    fn response(&self, what: impl Into<String>) -> LoadError {
        LoadError::HubResponse {
            repo: self.repo.to_string(),
            what: what.into(),
        }
    }

    /// An hf-hub error as a [`LoadError`] that names the file (`None`: the listing).
    fn api_error(&self, error: ApiError, file: Option<&str>) -> LoadError {
        let what = file.unwrap_or("the file listing");
        match error {
            ApiError::RequestError(e) => self.http_error(*e, file),
            ApiError::TooManyRetries(e) => self.api_error(*e, file),
            ApiError::IoError(source) => LoadError::Io {
                path: self.repo_dir(),
                source,
            },
            ApiError::LockAcquisition(path) => LoadError::Io {
                path,
                source: std::io::Error::other(
                    "another process holds the download lock of this file; retry once it is done",
                ),
            },
            ApiError::MissingHeader(h) => {
                self.response(format!("the answer for {what} has no `{h}` header"))
            }
            ApiError::InvalidHeader(h) => {
                self.response(format!("the answer for {what} has an invalid `{h}` header"))
            }
            ApiError::ParseIntError(_) => self.response(format!(
                "the answer for {what} has a Content-Range whose size is not a number"
            )),
            other => self.response(format!("{what}: {other}")),
        }
    }

    fn http_error(&self, error: ureq::Error, file: Option<&str>) -> LoadError {
        match error {
            ureq::Error::Status(status, _) => LoadError::HubStatus {
                repo: self.repo.to_string(),
                revision: self.revision.to_string(),
                file: file.map(str::to_string),
                status,
            },
            ureq::Error::Transport(t) => LoadError::HubUnreachable {
                repo: self.repo.to_string(),
                revision: self.revision.to_string(),
                endpoint: self.settings.endpoint.clone(),
                message: t.to_string(),
            },
        }
    }

    /// The revision's files and commit (one request).
    fn listing(&self, api: &Api) -> Result<Listing, LoadError> {
        let response = api
            .repo(self.hf_repo(self.revision))
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| self.http_error(e, None))?;
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_LISTING_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| LoadError::HubUnreachable {
                repo: self.repo.to_string(),
                revision: self.revision.to_string(),
                endpoint: self.settings.endpoint.clone(),
                message: format!("the file listing broke off: {e}"),
            })?;
        if body.len() as u64 > MAX_LISTING_BYTES {
            return Err(self.response(format!(
                "the file listing is over {MAX_LISTING_BYTES} bytes"
            )));
        }
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| self.response(format!("the file listing is not the Hub's JSON: {e}")))?;
        if !is_commit(&listing.sha) {
            return Err(self.response(format!(
                "the file listing names commit {:?}; a commit id is 40 hexadecimal digits",
                listing.sha
            )));
        }
        Ok(listing)
    }

    /// Downloads the files a loader reads (what the cache lacks) at the listing's commit,
    /// then points `refs/REVISION` at it.
    fn download(
        &self,
        api: &Api,
        listing: &Listing,
        max_bytes: u64,
    ) -> Result<Snapshot, LoadError> {
        let commit = listing.sha.clone();
        let pinned = api.repo(self.hf_repo(&commit));
        let dir = self.repo_dir().join("snapshots").join(&commit);
        let mut files = model_files(listing, "");
        // modules.json first: it names the module directories whose files are needed too.
        if listing.has("modules.json") {
            self.check_total(listing, &["modules.json".to_string()], max_bytes)?;
            if let Some(path) = self.fetch(&pinned, &dir, listing, "modules.json")? {
                for module in self.module_paths(&path)? {
                    if !module.is_empty() {
                        files.extend(model_files(listing, &module));
                    }
                }
            }
        }
        files.retain(|f| f != "modules.json");
        self.check_total(listing, &files, max_bytes)?;
        for file in &files {
            self.fetch(&pinned, &dir, listing, file)?;
        }
        self.cache
            .repo(self.hf_repo(self.revision))
            .create_ref(&commit)
            .map_err(|e| LoadError::io(self.repo_dir().join("refs").join(self.revision), e))?;
        Ok(Snapshot {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            commit,
            dir,
        })
    }

    /// Refuses files whose declared sizes add up past `max_bytes`.
    fn check_total(
        &self,
        listing: &Listing,
        files: &[String],
        max_bytes: u64,
    ) -> Result<(), LoadError> {
        let mut total = 0u64;
        for file in files {
            let size = listing.size(file).unwrap_or(0);
            if size > max_bytes {
                return Err(LoadError::HubTooLarge {
                    repo: self.repo.to_string(),
                    file: file.clone(),
                    bytes: size,
                    limit: max_bytes,
                });
            }
            total = total.saturating_add(size);
        }
        if total > max_bytes {
            return Err(LoadError::HubTooLarge {
                repo: self.repo.to_string(),
                file: format!("all {} files together", files.len()),
                bytes: total,
                limit: max_bytes,
            });
        }
        Ok(())
    }

    /// The checked module paths of the downloaded `modules.json`.
    fn module_paths(&self, modules_json: &Path) -> Result<Vec<String>, LoadError> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            path: String,
        }
        let entries: Vec<Entry> = crate::load::read_json(modules_json)?;
        entries
            .iter()
            .map(|e| check_module_path(self.repo, &e.path))
            .collect()
    }

    /// Downloads `file` into the snapshot (or finds it there) and checks it against the
    /// listing's size; `None` for an optional file that answers 404.
    fn fetch(
        &self,
        pinned: &ApiRepo,
        dir: &Path,
        listing: &Listing,
        file: &str,
    ) -> Result<Option<PathBuf>, LoadError> {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pinned.get(file)));
        let path = match got {
            Ok(Ok(path)) => path,
            Ok(Err(e)) => match self.api_error(e, Some(file)) {
                LoadError::HubStatus { status: 404, .. } if is_optional(file) => return Ok(None),
                e => return Err(e),
            },
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(self.response(format!(
                    "hf-hub failed on the answer for {file} (a panic: {message})"
                )));
            }
        };
        let expected = dir.join(file);
        if path != expected {
            return Err(self.response(format!(
                "{file} was answered from another commit ({}) than the listing's",
                path.display()
            )));
        }
        let on_disk = std::fs::metadata(&path)
            .map_err(|e| LoadError::io(&path, e))?
            .len();
        if let Some(declared) = listing.size(file)
            && declared != on_disk
        {
            // Out of the cache, so that the next load downloads it again.
            if let Ok(blob) = path.canonicalize() {
                let _ = std::fs::remove_file(blob);
            }
            let _ = std::fs::remove_file(&path);
            return Err(self.response(format!(
                "{file} is {on_disk} bytes on disk, but the listing declares {declared}; it was removed from the cache"
            )));
        }
        Ok(Some(path))
    }
}

/// Whether a load goes on without `file` (a 404 skips it): every file but the
/// configuration and the weights at the root.
fn is_optional(file: &str) -> bool {
    file != "config.json" && !WEIGHT_FILE_NAMES.contains(&file)
}

/// The files of directory `dir` (`""`: the root) that the listing has and a loader reads:
/// [`MODEL_FILES`] and the first weights file.
fn model_files(listing: &Listing, dir: &str) -> Vec<String> {
    let join = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    let mut files: Vec<String> = (MODEL_FILES.iter())
        .map(|name| join(name))
        .filter(|f| listing.has(f))
        .collect();
    if let Some(weights) = (WEIGHT_FILE_NAMES.iter())
        .map(|name| join(name))
        .find(|f| listing.has(f))
    {
        files.push(weights);
    }
    files
}
