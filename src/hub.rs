//! Models by their Hugging Face Hub id (feature `hub`, off by default).
//!
//! [`snapshot`] resolves a repository id and a revision to a local directory that holds
//! the files the loaders read, downloading what the cache lacks into the Hub's own cache
//! layout (`models--org--name/{blobs,snapshots/COMMIT,refs/REVISION}`, shared with
//! Python's `huggingface_hub`). The
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
//! | token | [`token`](HubOptions::token) | `HF_TOKEN` | the token file: `HF_TOKEN_PATH`, else `HF_HOME/token`, else `~/.cache/huggingface/token` |
//! | offline | [`offline`](HubOptions::offline) | `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`) | online |
//!
//! Offline, only the cache is read: a revision it holds loads, one it lacks is
//! [`LoadError::HubNotCached`]. Online, a Hub that cannot be reached (connection refused,
//! DNS, TLS) falls back to the cache too, as `huggingface_hub` does; a Hub that answers
//! with an error status does not ([`LoadError::HubStatus`]).
//!
//! ## Limits: what the Hub's answers may not do
//!
//! Repository ids, revisions and every module path of `modules.json` are checked before
//! any request that uses them ([`LoadError::HubRefused`]): a path stays inside the
//! repository. The sizes the listing declares are added up before the first download and
//! refused past [`max_bytes`](HubOptions::max_bytes) (16 GiB by default,
//! [`LoadError::HubTooLarge`]). The downloads are modelhost's own (ureq, not hf-hub's
//! client), so that an answer cannot fill the disk or hang the load:
//!
//! - every body is read through a limit of exactly the size the listing declares for the
//!   file (and what is left of `max_bytes`), streamed into a temporary file in the cache
//!   and renamed into place only once complete and of that size; a body that is longer,
//!   shorter, endless, or that stalls for longer than
//!   [`read_timeout`](HubOptions::read_timeout) (60 s by default; connecting:
//!   [`connect_timeout`](HubOptions::connect_timeout), 30 s) is
//!   [`LoadError::HubDownload`], saying what was declared and what arrived;
//! - a load that fails leaves the cache as it found it: the blobs and snapshot entries it
//!   had written are removed, and `refs/REVISION` is written only once every file is there;
//! - what becomes a path in the cache is checked first: the commit (the listing's, and an
//!   answer's `X-Repo-Commit` must be the same 40 hexadecimal digits) and the blob name
//!   (the answer's `X-Linked-Etag` or `ETag`: letters, digits, `-` and `_`), else
//!   [`LoadError::HubRefused`];
//! - at most 5 redirects are followed, and the token is sent only to the Hub's own
//!   address (scheme, host and port), never to the storage a file redirects to.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::error::LoadError;
use crate::formats::WEIGHT_FILE_NAMES;

/// The Hub's address when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` names one.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The default of [`HubOptions::max_bytes`]: 16 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// The default of [`HubOptions::connect_timeout`]: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`HubOptions::read_timeout`]: 60 s.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes of the revision's file listing that are read.
const MAX_LISTING_BYTES: u64 = 32 << 20;

/// The most bytes of the token file that are read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 5;

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
const COMMIT_RULE: &str = "a commit id is 40 lowercase hexadecimal digits, the listing's";
const BLOB_RULE: &str = "a blob name (the answer's X-Linked-Etag or ETag, without quotes) is 1 to 128 letters, digits, `-` and `_`";
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
    connect_timeout: Duration,
    read_timeout: Duration,
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
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
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
    /// [`DEFAULT_MAX_BYTES`], 16 GiB); checked before the first download, and no body is
    /// read past what is left of it.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long connecting to the Hub (or where it redirects) may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`], 30 s). Not zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one read of an answer may wait for its next bytes (default
    /// [`DEFAULT_READ_TIMEOUT`], 60 s): a server that stalls for longer fails the load
    /// ([`LoadError::HubDownload`] mid-body) instead of hanging it. An idle time, not a
    /// bound on the whole download. Not zero.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Print a line on stderr as each file starts and ends downloading (default off).
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
    connect_timeout: Duration,
    read_timeout: Duration,
    progress: bool,
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
        for (option, timeout) in [
            ("connect_timeout", options.connect_timeout),
            ("read_timeout", options.read_timeout),
        ] {
            if timeout.is_zero() {
                return Err(LoadError::InvalidOption {
                    option,
                    value: format!("{timeout:?}"),
                    allowed: "a duration above zero".into(),
                });
            }
        }
        let token = (options.token.clone())
            .or_else(|| env("HF_TOKEN"))
            .or_else(token_file)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
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
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
            progress: options.progress,
        })
    }
}

/// `huggingface_hub`'s home: `HF_HOME`, else `XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
fn hf_home() -> Option<PathBuf> {
    if let Some(home) = env("HF_HOME") {
        return Some(home.into());
    }
    let cache = match env("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::home_dir()?.join(".cache"),
    };
    Some(cache.join("huggingface"))
}

/// The token `huggingface-cli login` saved: `HF_TOKEN_PATH`, else `HF_HOME/token` (its
/// first 64 KiB; `None` without one).
fn token_file() -> Option<String> {
    let path = match env("HF_TOKEN_PATH") {
        Some(path) => PathBuf::from(path),
        None => hf_home()?.join("token"),
    };
    let mut token = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut token)
        .ok()?;
    Some(token)
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`, as `huggingface_hub` looks for it.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = env("HF_HUB_CACHE") {
        return Some(dir.into());
    }
    Some(hf_home()?.join("hub"))
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

/// `/` as `%2F`: a revision is one segment of the Hub's URLs (`refs/pr/3`). The other
/// characters a checked revision may hold need no escape.
fn url_revision(revision: &str) -> String {
    revision.replace('/', "%2F")
}

/// Why a request did not give an answer to read.
enum Failure {
    /// The HTTP client's error: a status of 400 or more, or a transport error.
    Http(Box<ureq::Error>),
    /// A redirect that cannot be followed (no `Location`, not http(s), too many).
    Redirect(String),
}

/// The HTTP client of one [`snapshot`]: ureq with the timeouts, the token and the redirects
/// handled here (so that the token goes only to the Hub's own address and the Hub's
/// headers are read before the answer leaves for the storage a file redirects to).
struct Client {
    agent: ureq::Agent,
    endpoint: url::Url,
    token: Option<String>,
}

/// An answer, and the headers of the last answer that came from the Hub's own address
/// (the one that names the commit and the blob before a redirect to storage).
struct Answer {
    response: ureq::Response,
    commit: Option<String>,
    etag: Option<String>,
}

impl Client {
    fn new(settings: &Settings) -> Result<Client, LoadError> {
        let endpoint = url::Url::parse(&settings.endpoint).map_err(|e| LoadError::InvalidOption {
            option: "endpoint",
            value: settings.endpoint.clone(),
            allowed: format!("an http:// or https:// address (HubOptions::endpoint or HF_ENDPOINT); this one does not parse: {e}"),
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(settings.connect_timeout)
            .timeout_read(settings.read_timeout)
            .timeout_write(settings.read_timeout)
            .redirects(0)
            .try_proxy_from_env(true)
            .user_agent(concat!("modelhost/", env!("CARGO_PKG_VERSION"), "; rust"))
            .build();
        Ok(Client {
            agent,
            endpoint,
            token: settings.token.clone(),
        })
    }

    /// `GET` `path` (below the endpoint, with its query), following at most
    /// [`MAX_REDIRECTS`] redirects; the token is sent to the endpoint's origin only.
    fn get(&self, path: &str) -> Result<Answer, Failure> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        let mut url = url::Url::parse(&format!("{base}{path}"))
            .map_err(|e| Failure::Redirect(format!("the address of {path} does not parse: {e}")))?;
        let (mut commit, mut etag) = (None, None);
        for _ in 0..=MAX_REDIRECTS {
            let own = url.origin() == self.endpoint.origin();
            let mut request = self.agent.request_url("GET", &url);
            if own && let Some(token) = &self.token {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            let response = request.call().map_err(|e| Failure::Http(Box::new(e)))?;
            if own {
                let header = |name: &str| response.header(name).map(str::to_string);
                commit = header("X-Repo-Commit").or(commit);
                etag = header("X-Linked-Etag").or_else(|| header("ETag")).or(etag);
            }
            if !(300..400).contains(&response.status()) {
                return Ok(Answer {
                    response,
                    commit,
                    etag,
                });
            }
            let location = response.header("Location").ok_or_else(|| {
                Failure::Redirect(format!("HTTP {} without a Location", response.status()))
            })?;
            url = url
                .join(location)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Failure::Redirect(format!(
                        "a redirect to {location:?}, not an http(s) address"
                    ))
                })?;
        }
        Err(Failure::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// A name for a temporary file next to `path` that no other load (in this process or
/// another) uses.
fn temporary(path: &Path, suffix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.{suffix}", std::process::id()));
    path.with_file_name(name)
}

/// A blob name from an `ETag`/`X-Linked-Etag` value: quotes and a weak `W/` dropped, then
/// checked, since it becomes a file name in `blobs/`.
fn blob_name(etag: &str) -> Option<String> {
    let name = etag.trim();
    let name = name.strip_prefix("W/").unwrap_or(name).trim_matches('"');
    let ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    ok.then(|| name.to_string())
}

/// What one load wrote into the cache, removed again if the load fails.
#[derive(Default)]
struct Written {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Written {
    /// Creates `dir` and records the directories that were not there.
    fn create_dir_all(&mut self, dir: &Path) -> Result<(), LoadError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        std::fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
        // Deepest first, so that they can be removed in this order.
        self.dirs.splice(0..0, missing);
        Ok(())
    }

    fn undo(self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for dir in &self.dirs {
            // Only if empty: another load may have put files there meanwhile.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// One repository at one revision, while it is being resolved.
struct Resolver<'a> {
    repo: &'a str,
    revision: &'a str,
    settings: Settings,
}

/// Resolves `repo_id` at [`HubOptions::revision`] to a directory in the local cache that
/// holds the files a loader reads, downloading the ones the cache lacks. See the
/// [module page](self) for the files, the settings and the limits.
///
/// Errors: [`LoadError::HubRefused`] for an id, revision or module path that is not
/// allowed (nothing was requested for it) or a commit or blob name in an answer that is
/// not one, [`LoadError::HubStatus`] for an HTTP error (404: no such repository, revision
/// or file), [`LoadError::HubUnreachable`] when the Hub cannot be reached and the cache has
/// no copy, [`LoadError::HubNotCached`] offline without a copy, [`LoadError::HubTooLarge`]
/// past [`HubOptions::max_bytes`], [`LoadError::HubDownload`] for a body that is not the
/// size declared or stalls, [`LoadError::HubResponse`] for an answer no Hub gives,
/// [`LoadError::Io`] for the cache.
pub fn snapshot(repo_id: &str, options: &HubOptions) -> Result<Snapshot, LoadError> {
    check_repo_id(repo_id)?;
    check_revision(&options.revision)?;
    let settings = Settings::of(options)?;
    let resolver = Resolver {
        repo: repo_id,
        revision: &options.revision,
        settings,
    };
    if let Some(why) = &resolver.settings.offline {
        return resolver.cached().ok_or_else(|| resolver.not_cached(why));
    }
    let client = Client::new(&resolver.settings)?;
    let listing = match resolver.listing(&client) {
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
    let mut written = Written::default();
    let result = resolver.download(&client, &listing, options.max_bytes, &mut written);
    if result.is_err() {
        written.undo();
    }
    result
}

impl Resolver<'_> {
    /// `…/models--org--name`, as `huggingface_hub` names it.
    fn repo_dir(&self) -> PathBuf {
        let name = format!("models--{}", self.repo.replace('/', "--"));
        self.settings.cache_dir.join(name)
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
            let mut named = String::new();
            std::fs::File::open(repo_dir.join("refs").join(self.revision))
                .ok()?
                .take(256)
                .read_to_string(&mut named)
                .ok()?;
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

    fn unreachable(&self, message: String) -> LoadError {
        LoadError::HubUnreachable {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            endpoint: self.settings.endpoint.clone(),
            message,
        }
    }

    /// A failed request as a [`LoadError`] that names the file (`None`: the listing).
    fn failure(&self, failure: Failure, file: Option<&str>) -> LoadError {
        let what = file.unwrap_or("the file listing");
        match failure {
            Failure::Http(e) => match *e {
                ureq::Error::Status(status, _) => LoadError::HubStatus {
                    repo: self.repo.to_string(),
                    revision: self.revision.to_string(),
                    file: file.map(str::to_string),
                    status,
                },
                ureq::Error::Transport(t) => self.unreachable(t.to_string()),
            },
            Failure::Redirect(why) => {
                self.response(format!("the answer for {what} redirects badly: {why}"))
            }
        }
    }

    /// The revision's files and commit (one request).
    fn listing(&self, client: &Client) -> Result<Listing, LoadError> {
        let path = format!(
            "/api/models/{}/revision/{}?blobs=true",
            self.repo,
            url_revision(self.revision)
        );
        let answer = client.get(&path).map_err(|e| self.failure(e, None))?;
        let mut body = Vec::new();
        answer
            .response
            .into_reader()
            .take(MAX_LISTING_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.unreachable(format!("the file listing broke off: {e}")))?;
        if body.len() as u64 > MAX_LISTING_BYTES {
            return Err(self.response(format!(
                "the file listing is over {MAX_LISTING_BYTES} bytes"
            )));
        }
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| self.response(format!("the file listing is not the Hub's JSON: {e}")))?;
        if !is_commit(&listing.sha) {
            return Err(refused(
                "commit of the file listing",
                &listing.sha,
                COMMIT_RULE,
            ));
        }
        Ok(listing)
    }

    /// Downloads the files a loader reads (what the cache lacks) at the listing's commit,
    /// then points `refs/REVISION` at it. What it writes is recorded in `written`.
    fn download(
        &self,
        client: &Client,
        listing: &Listing,
        max_bytes: u64,
        written: &mut Written,
    ) -> Result<Snapshot, LoadError> {
        let commit = listing.sha.clone();
        let dir = self.repo_dir().join("snapshots").join(&commit);
        let mut budget = max_bytes;
        let mut files = model_files(listing, "");
        // modules.json first: it names the module directories whose files are needed too.
        if listing.has("modules.json") {
            self.check_total(listing, &["modules.json".to_string()], max_bytes)?;
            if let Some(path) = self.fetch(
                client,
                &commit,
                listing,
                "modules.json",
                &mut budget,
                written,
            )? {
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
            self.fetch(client, &commit, listing, file, &mut budget, written)?;
        }
        if self.revision != commit {
            self.write_ref(&commit, written)?;
        }
        Ok(Snapshot {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            commit,
            dir,
        })
    }

    /// `refs/REVISION` = `commit`, replaced in one rename.
    fn write_ref(&self, commit: &str, written: &mut Written) -> Result<(), LoadError> {
        let path = self.repo_dir().join("refs").join(self.revision);
        if let Some(parent) = path.parent() {
            written.create_dir_all(parent)?;
        }
        let temp = temporary(&path, "tmp");
        let done = std::fs::write(&temp, commit).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&temp);
            return Err(LoadError::io(path, e));
        }
        Ok(())
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

    fn download_error(
        &self,
        file: &str,
        declared: Option<u64>,
        received: u64,
        problem: impl Into<String>,
    ) -> LoadError {
        LoadError::HubDownload {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            file: file.to_string(),
            declared,
            received,
            problem: problem.into(),
        }
    }

    /// `file` of the snapshot at `commit`: found in the cache at its declared size, or
    /// downloaded into `blobs/` and linked from `snapshots/COMMIT/`; `None` for an
    /// optional file that answers 404. No more than `budget` bytes are read (and it is
    /// lowered by what was).
    fn fetch(
        &self,
        client: &Client,
        commit: &str,
        listing: &Listing,
        file: &str,
        budget: &mut u64,
        written: &mut Written,
    ) -> Result<Option<PathBuf>, LoadError> {
        let repo_dir = self.repo_dir();
        let pointer = repo_dir.join("snapshots").join(commit).join(file);
        let declared = listing.size(file);
        let fits = |path: &Path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && declared.is_none_or(|d| m.len() == d))
        };
        if fits(&pointer) {
            return Ok(Some(pointer));
        }
        let answer = match client.get(&format!("/{}/resolve/{commit}/{file}", self.repo)) {
            Ok(answer) => answer,
            Err(e) => match self.failure(e, Some(file)) {
                LoadError::HubStatus { status: 404, .. } if is_optional(file) => return Ok(None),
                e => return Err(e),
            },
        };
        if let Some(named) = &answer.commit {
            if !is_commit(named) {
                return Err(refused(
                    format!("X-Repo-Commit of the answer for {file}"),
                    named,
                    COMMIT_RULE,
                ));
            }
            if named != commit {
                return Err(self.response(format!(
                    "{file} was answered from commit {named}, not the listing's {commit}"
                )));
            }
        }
        let etag = answer.etag.as_deref().ok_or_else(|| {
            self.response(format!(
                "the answer for {file} has no ETag (nor X-Linked-Etag) to name its blob"
            ))
        })?;
        let blob =
            repo_dir.join("blobs").join(blob_name(etag).ok_or_else(|| {
                refused(format!("ETag of the answer for {file}"), etag, BLOB_RULE)
            })?);
        if !fits(&blob) {
            self.receive(answer.response, file, declared, budget, &blob, written)?;
        }
        self.link(&blob, &pointer, file, written)?;
        Ok(Some(pointer))
    }

    /// Streams the body into a temporary file next to `blob`, through a limit of exactly
    /// the declared size (and `budget`), and renames it to `blob` once complete.
    fn receive(
        &self,
        response: ureq::Response,
        file: &str,
        declared: Option<u64>,
        budget: &mut u64,
        blob: &Path,
        written: &mut Written,
    ) -> Result<(), LoadError> {
        if let Some(declared) = declared {
            if declared > *budget {
                return Err(LoadError::HubTooLarge {
                    repo: self.repo.to_string(),
                    file: file.to_string(),
                    bytes: declared,
                    limit: *budget,
                });
            }
            // A Content-Length that already says otherwise: nothing is written.
            let length = (response.header("Content-Encoding").is_none())
                .then(|| response.header("Content-Length"))
                .flatten()
                .and_then(|l| l.trim().parse::<u64>().ok());
            if let Some(length) = length.filter(|&l| l != declared) {
                return Err(self.download_error(
                    file,
                    Some(declared),
                    0,
                    format!("the answer's Content-Length is {length} bytes"),
                ));
            }
        }
        let limit = declared.unwrap_or(*budget).min(*budget);
        if let Some(parent) = blob.parent() {
            written.create_dir_all(parent)?;
        }
        let temp = temporary(blob, "incomplete");
        if self.settings.progress {
            eprintln!(
                "modelhost: downloading {file} of {} ({} bytes)",
                self.repo,
                declared.map_or("an undeclared number of".to_string(), |d| d.to_string())
            );
        }
        let copied = copy_limited(response.into_reader(), &temp, limit);
        let received = match copied {
            Ok(received) => received,
            Err(Copy::Read(received, e)) => {
                let _ = std::fs::remove_file(&temp);
                return Err(self.download_error(
                    file,
                    declared,
                    received,
                    format!(
                        "the body broke off: {e} (a stall counts after HubOptions::read_timeout, {:?})",
                        self.settings.read_timeout
                    ),
                ));
            }
            Err(Copy::Write(e)) => {
                let _ = std::fs::remove_file(&temp);
                return Err(LoadError::io(temp, e));
            }
        };
        let problem = match declared {
            Some(d) if received > d => Some("the server sent more bytes than declared"),
            Some(d) if received < d => Some("the body ended early"),
            None if received > limit => {
                let _ = std::fs::remove_file(&temp);
                return Err(LoadError::HubTooLarge {
                    repo: self.repo.to_string(),
                    file: file.to_string(),
                    bytes: received,
                    limit,
                });
            }
            _ => None,
        };
        if let Some(problem) = problem {
            let _ = std::fs::remove_file(&temp);
            return Err(self.download_error(file, declared, received, problem));
        }
        let existed = blob.exists();
        if let Err(e) = std::fs::rename(&temp, blob) {
            let _ = std::fs::remove_file(&temp);
            return Err(LoadError::io(blob, e));
        }
        if !existed {
            written.files.push(blob.to_path_buf());
        }
        *budget -= received;
        if self.settings.progress {
            eprintln!(
                "modelhost: downloaded {file} of {} ({received} bytes)",
                self.repo
            );
        }
        Ok(())
    }

    /// `snapshots/COMMIT/file` → `../../blobs/NAME` (a relative symbolic link, as
    /// `huggingface_hub` writes; a copy where there are none), replaced in one rename.
    fn link(
        &self,
        blob: &Path,
        pointer: &Path,
        file: &str,
        written: &mut Written,
    ) -> Result<(), LoadError> {
        if let Some(parent) = pointer.parent() {
            written.create_dir_all(parent)?;
        }
        let temp = temporary(pointer, "tmp");
        #[cfg(unix)]
        let made = {
            let up = "../".repeat(file.split('/').count() + 1);
            let name = blob.file_name().unwrap_or_default().to_string_lossy();
            std::os::unix::fs::symlink(format!("{up}blobs/{name}"), &temp)
        };
        #[cfg(not(unix))]
        let made = {
            let _ = file;
            std::fs::copy(blob, &temp).map(|_| ())
        };
        let existed = pointer.exists();
        if let Err(e) = made.and_then(|()| std::fs::rename(&temp, pointer)) {
            let _ = std::fs::remove_file(&temp);
            return Err(LoadError::io(pointer, e));
        }
        if !existed {
            written.files.push(pointer.to_path_buf());
        }
        Ok(())
    }
}

/// Why [`copy_limited`] stopped.
enum Copy {
    /// Reading the body failed (a timeout, a broken connection) after this many bytes.
    Read(u64, std::io::Error),
    /// Writing the file failed.
    Write(std::io::Error),
}

/// Copies at most `limit + 1` bytes of `body` into a new file `to` (one byte past the
/// limit tells a longer body from one of exactly `limit`); the number copied.
fn copy_limited(body: impl Read, to: &Path, limit: u64) -> Result<u64, Copy> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).map_err(Copy::Write)?);
    let mut body = body.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 64 << 10];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(received, e)),
        };
        out.write_all(&buffer[..n]).map_err(Copy::Write)?;
        received += n as u64;
    }
    out.into_inner()
        .map_err(|e| Copy::Write(e.into_error()))?
        .sync_all()
        .map_err(Copy::Write)?;
    Ok(received)
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
