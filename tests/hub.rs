//! `from_hub` against a Hub served by the test itself: a std `TcpListener` that answers the
//! requests `modelhost::hub` makes, in the Hub's URL layout — the revision's file listing
//! (`/api/models/{repo}/revision/{rev}`), then one download per file
//! (`/{repo}/resolve/{rev}/{file}`, with `X-Repo-Commit` and `ETag`). It serves the
//! sentence-transformers fixtures of `tests/fixtures/st/` (and the RoBERTa / MPNet ones of
//! `tests/fixtures/arch/`) and logs every request, so the tests can count downloads and
//! show that a refused path was never asked for. A revision can be told to misbehave on
//! one file ([`Fault`]): a longer, endless or stalled body, a hostile commit or ETag, a
//! redirect elsewhere. No test touches the environment: every setting is an explicit
//! `HubOptions`.

mod common;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use modelhost::error::LoadError;
use modelhost::hub::{self, HubOptions};
use modelhost::models::classifier::{CrossEncoder, TextClassifier, TextPair};
use modelhost::models::sentence::{Embedding, Prompt, SentenceEmbedder};
use modelhost::models::text::TextOptions;

const MAIN: &str = "1111111111111111111111111111111111111111";
const V2: &str = "2222222222222222222222222222222222222222";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/st")
        .join(name)
}

/// How the server misbehaves on one file.
#[derive(Clone)]
enum Fault {
    /// The body is this many bytes longer than the file (and than the listing declares),
    /// with a Content-Length that says so.
    Extra(usize),
    /// The file, then bytes without end, without a Content-Length.
    Endless,
    /// The file without a Content-Length and these bytes more: only the body's length
    /// tells.
    ExtraUnannounced(usize),
    /// The headers and half the body, then nothing (the connection stays open).
    Stall,
    /// This `X-Repo-Commit` header.
    Commit(&'static str),
    /// This `ETag` header.
    Etag(&'static str),
    /// A 302 to the same path at this address, with the Hub's headers (`X-Repo-Commit`,
    /// `X-Linked-Etag: "linked-…"`) on the redirect, as the Hub answers for LFS files.
    Redirect(String),
}

/// One revision of a served repository: the names it answers to (branches, tags, its
/// commit), the commit, the directory of its files, files the listing names that are
/// not there (the server answers them 404), and faults by file.
struct Revision {
    names: Vec<&'static str>,
    commit: &'static str,
    dir: PathBuf,
    phantom: Vec<&'static str>,
    faults: Vec<(&'static str, Fault)>,
}

impl Revision {
    fn new(commit: &'static str, names: &[&'static str], dir: PathBuf) -> Self {
        let mut names = names.to_vec();
        names.push(commit);
        Revision {
            names,
            commit,
            dir,
            phantom: Vec::new(),
            faults: Vec::new(),
        }
    }

    fn fault(mut self, file: &'static str, fault: Fault) -> Self {
        self.faults.push((file, fault));
        self
    }
}

type Repos = HashMap<&'static str, Vec<Revision>>;

/// The local Hub: serves `repos` until dropped (or `stop`), logging each request as
/// `"GET /path [range] [auth]"` (`auth`: it carried an `Authorization` header).
struct FakeHub {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl FakeHub {
    fn start(repos: Repos) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let repos = Arc::new(repos);
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (repos, log) = (repos.clone(), log2.clone());
                std::thread::spawn(move || serve(stream, &repos, &log));
            }
        });
        FakeHub {
            url: format!("http://{addr}"),
            log,
            stop,
            thread: Some(thread),
            addr,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops listening: later connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    fn options(&self, cache: &Path) -> HubOptions {
        HubOptions::new()
            .endpoint(&self.url)
            .cache_dir(cache)
            .offline(false)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Answers one request on `stream` (one request per connection: `Connection: close`).
fn serve(mut stream: TcpStream, repos: &Repos, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let (mut range, mut auth) = (None, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
            auth |= name.eq_ignore_ascii_case("authorization");
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut entry = format!("GET {target}");
    if let Some(r) = &range {
        entry.push_str(&format!(" {r}"));
    }
    if auth {
        entry.push_str(" auth");
    }
    log.lock().unwrap().push(entry);
    let path = target.split('?').next().unwrap_or("").replace("%2F", "/");
    let not_found = |stream: &mut TcpStream, code: &str| {
        respond(
            stream,
            "404 Not Found",
            &[("X-Error-Code", code.to_string())],
            br#"{"error":"not found"}"#,
        )
    };
    let find = |repo: &str, rev: &str| -> Option<&Revision> {
        repos.get(repo)?.iter().find(|r| r.names.contains(&rev))
    };
    // /api/models/{org}/{name}/revision/{rev}
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let mut parts = rest.splitn(4, '/');
        let (org, name, word, rev) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let repo = format!("{org}/{name}");
        let Some(revision) = find(&repo, rev).filter(|_| word == "revision") else {
            return not_found(&mut stream, "RepoNotFound");
        };
        let mut siblings: Vec<serde_json::Value> = files_under(&revision.dir)
            .into_iter()
            .map(|f| {
                let size = std::fs::metadata(revision.dir.join(&f)).unwrap().len();
                serde_json::json!({"rfilename": f, "size": size})
            })
            .collect();
        for phantom in &revision.phantom {
            siblings.push(serde_json::json!({"rfilename": phantom, "size": 10}));
        }
        let body = serde_json::json!({"id": repo, "sha": revision.commit, "siblings": siblings});
        return respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let mut parts = path.trim_start_matches('/').splitn(5, '/');
    let (org, name, word, rev, file) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let repo = format!("{org}/{name}");
    let Some(revision) = find(&repo, rev).filter(|_| word == "resolve") else {
        return not_found(&mut stream, "RepoNotFound");
    };
    if file.split('/').any(|p| p == ".." || p.is_empty()) {
        return not_found(&mut stream, "EntryNotFound");
    }
    let Ok(bytes) = std::fs::read(revision.dir.join(file)) else {
        return not_found(&mut stream, "EntryNotFound");
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let etag = format!("\"{:016x}{:08x}\"", hasher.finish(), bytes.len());
    let size = bytes.len();
    let fault = (revision.faults.iter())
        .find(|(f, _)| *f == file)
        .map(|(_, fault)| fault.clone());
    let mut headers = vec![
        ("X-Repo-Commit", revision.commit.to_string()),
        ("ETag", etag.clone()),
    ];
    match fault {
        None => {}
        Some(Fault::Commit(commit)) => headers[0].1 = commit.to_string(),
        Some(Fault::Etag(tag)) => headers[1].1 = tag.to_string(),
        Some(Fault::Extra(extra)) => {
            let body: Vec<u8> = bytes.iter().copied().chain(vec![b' '; extra]).collect();
            return respond(&mut stream, "200 OK", &headers, &body);
        }
        Some(Fault::Redirect(to)) => {
            headers[1] = (
                "X-Linked-Etag",
                format!("\"linked-{}\"", etag.trim_matches('"')),
            );
            headers.push(("Location", format!("{to}{target}")));
            return respond(&mut stream, "302 Found", &headers, b"");
        }
        Some(fault @ (Fault::Endless | Fault::ExtraUnannounced(_) | Fault::Stall)) => {
            let length = match fault {
                Fault::Stall => format!("Content-Length: {size}\r\n"),
                _ => String::new(),
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\n{length}Connection: close\r\nX-Repo-Commit: {}\r\nETag: {etag}\r\n\r\n",
                revision.commit
            );
            let _ = stream.write_all(head.as_bytes());
            match fault {
                Fault::Stall => {
                    let _ = stream.write_all(&bytes[..size / 2]);
                    let _ = stream.flush();
                    std::thread::sleep(Duration::from_secs(300));
                }
                Fault::ExtraUnannounced(extra) => {
                    let _ = stream.write_all(&bytes);
                    let _ = stream.write_all(&vec![b' '; extra]);
                }
                _ => {
                    let _ = stream.write_all(&bytes);
                    // Until the client hangs up.
                    while stream.write_all(&[b' '; 4096]).is_ok() {}
                }
            }
            return;
        }
    }
    let (status, body) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (start, end) = r.split_once('-').unwrap();
            let start: usize = start.parse().unwrap();
            let end: usize = if end.is_empty() {
                size - 1
            } else {
                end.parse().unwrap()
            };
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            ("206 Partial Content", &bytes[start..=end.min(size - 1)])
        }
        None => ("200 OK", &bytes[..]),
    };
    respond(&mut stream, status, &headers, body)
}

/// The repositories most tests use: `fixtures/st` with `cls-dense-normalize` (a
/// Transformer, CLS pooling, a Dense layer, Normalize) on `main` and `max` (max pooling)
/// on `v2`.
fn standard_repos() -> Repos {
    HashMap::from([(
        "fixtures/st",
        vec![
            Revision::new(MAIN, &["main"], fixture("cls-dense-normalize")),
            Revision::new(V2, &["v2"], fixture("max")),
        ],
    )])
}

const TEXTS: [&str; 3] = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by eleven percent.",
];

fn embed(embedder: &SentenceEmbedder) -> Vec<Embedding> {
    let batch: Vec<_> = TEXTS
        .iter()
        .map(|t| embedder.tokenize_with(t, &Prompt::Default).unwrap())
        .collect();
    embedder.embed_batch(&batch).unwrap()
}

fn max_difference(a: &[Embedding], b: &[Embedding]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.dim(), y.dim());
            x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// The `resolve` (file) requests of a log.
fn file_requests(log: &[String]) -> Vec<&String> {
    log.iter().filter(|r| r.contains("/resolve/")).collect()
}

#[test]
fn from_hub_downloads_into_the_cache_and_embeds_as_the_local_directory() {
    let hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-download");
    let embedder = SentenceEmbedder::from_hub_with(
        "fixtures/st",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let local = SentenceEmbedder::load(fixture("cls-dense-normalize")).unwrap();
    let (ours, theirs) = (embed(&embedder), embed(&local));
    assert_eq!(ours[0].dim(), local.dim());
    assert!(
        ours[0].iter().any(|v| v.abs() > 1e-3),
        "a real vector: {:?}",
        ours[0]
    );
    assert!(max_difference(&ours, &theirs) <= 1e-6);

    // The Hub's cache layout, at the listing's commit, and the name of the repository.
    let snapshot = cache.join("models--fixtures--st/snapshots").join(MAIN);
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer_config.json",
    ] {
        assert!(snapshot.join(file).is_file(), "{file} is in the snapshot");
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("models--fixtures--st/refs/main")).unwrap(),
        MAIN
    );
    assert!(
        format!("{embedder:?}").contains("name: \"st\""),
        "{embedder:?}"
    );

    // One listing, then one request per file for the 10 files the loader reads:
    // references.json (not a model file) is never asked for.
    let log = hub.requests();
    assert_eq!(
        log[0],
        format!("GET /api/models/fixtures/st/revision/main?blobs=true")
    );
    assert_eq!(file_requests(&log).len(), 10, "{log:#?}");
    assert!(
        log.iter().all(|r| !r.contains("references.json")),
        "{log:#?}"
    );
    assert!(
        file_requests(&log)
            .iter()
            .all(|r| r.contains(&format!("/resolve/{MAIN}/"))),
        "every file is asked for at the listing's commit: {log:#?}"
    );
}

#[test]
fn a_second_load_downloads_nothing_and_works_offline_and_with_the_hub_gone() {
    let mut hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-second");
    let first = SentenceEmbedder::from_hub_with(
        "fixtures/st",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let expected = embed(&first);
    let after_first = hub.requests().len();
    assert_eq!(file_requests(&hub.requests()).len(), 10);

    // Online again: only the listing (to resolve `main`); every file comes from the cache.
    let again = SentenceEmbedder::from_hub_with(
        "fixtures/st",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let log = hub.requests();
    assert_eq!(log.len(), after_first + 1, "{log:#?}");
    assert!(log[after_first].starts_with("GET /api/models/fixtures/st/revision/main"));
    assert!(max_difference(&embed(&again), &expected) <= 1e-6);

    // Offline: no request at all.
    let offline = hub.options(&cache).offline(true);
    let cached =
        SentenceEmbedder::from_hub_with("fixtures/st", &offline, TextOptions::default()).unwrap();
    assert_eq!(hub.requests().len(), after_first + 1);
    assert!(max_difference(&embed(&cached), &expected) <= 1e-6);

    // The Hub gone (connection refused): online falls back to the cache.
    let options = hub.options(&cache);
    hub.stop();
    let fallback =
        SentenceEmbedder::from_hub_with("fixtures/st", &options, TextOptions::default()).unwrap();
    assert!(max_difference(&embed(&fallback), &expected) <= 1e-6);

    // A revision never loaded is not in the cache: the Hub's absence is the error.
    let err = hub::snapshot("fixtures/st", &options.clone().revision("v2")).unwrap_err();
    assert!(
        matches!(&err, LoadError::HubUnreachable { repo, revision, .. } if repo == "fixtures/st" && revision == "v2"),
        "{err:?}"
    );
}

#[test]
fn a_missing_repository_is_a_typed_404_naming_it() {
    let hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-missing");
    let err = SentenceEmbedder::from_hub_with(
        "nobody/nothing",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap_err();
    match &err {
        LoadError::HubStatus {
            repo,
            revision,
            file,
            status,
        } => {
            assert_eq!(
                (repo.as_str(), revision.as_str(), file, *status),
                ("nobody/nothing", "main", &None, 404)
            );
        }
        other => panic!("expected HubStatus, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("nobody/nothing") && message.contains("HTTP 404"),
        "{message}"
    );

    // An unknown revision of a known repository: the same, naming the revision.
    let err = hub::snapshot("fixtures/st", &hub.options(&cache).revision("nope")).unwrap_err();
    assert!(
        matches!(&err, LoadError::HubStatus { revision, status: 404, .. } if revision == "nope"),
        "{err:?}"
    );
}

#[test]
fn offline_with_an_empty_cache_is_a_typed_error_and_requests_nothing() {
    let hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-offline");
    let options = hub.options(&cache).offline(true);
    let err = SentenceEmbedder::from_hub_with("fixtures/st", &options, TextOptions::default())
        .unwrap_err();
    match &err {
        LoadError::HubNotCached {
            repo,
            revision,
            cache: dir,
            ..
        } => {
            assert_eq!((repo.as_str(), revision.as_str()), ("fixtures/st", "main"));
            assert_eq!(dir, &cache);
        }
        other => panic!("expected HubNotCached, got {other:?}"),
    }
    assert!(err.to_string().contains("HubOptions::offline"), "{err}");
    assert!(hub.requests().is_empty());
}

#[test]
fn paths_that_leave_the_repository_are_refused_before_they_are_requested() {
    // A repository whose modules.json puts the Pooling module at `../x`.
    let evil = common::scratch_dir("hub-evil-repo");
    for file in files_under(&fixture("max")) {
        let to = evil.join(&file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture("max").join(&file), to).unwrap();
    }
    let modules = std::fs::read_to_string(evil.join("modules.json")).unwrap();
    std::fs::write(
        evil.join("modules.json"),
        modules.replace("\"1_Pooling\"", "\"../x\""),
    )
    .unwrap();
    let hub = FakeHub::start(HashMap::from([(
        "evil/escape",
        vec![Revision::new(MAIN, &["main"], evil)],
    )]));
    let cache = common::scratch_dir("hub-evil-cache");
    let err = SentenceEmbedder::from_hub_with(
        "evil/escape",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoadError::HubRefused { what, value, .. } if value == "../x" && what.contains("modules.json")),
        "{err:?}"
    );
    let log = hub.requests();
    assert!(
        log.iter()
            .all(|r| !r.contains("..") && !r.contains("x/config.json")),
        "{log:#?}"
    );
    // Only the listing and modules.json were asked for, and no file was loaded.
    assert!(
        file_requests(&log)
            .iter()
            .all(|r| r.contains("/modules.json")),
        "{log:#?}"
    );

    // Ids and revisions that could leave the cache or the URL space: refused, unrequested.
    for id in [
        "../evil",
        "/etc/passwd",
        "a/b/c",
        "org--x/y",
        "org/na me",
        "",
        "org/",
        "-org/x",
    ] {
        let err = hub::snapshot(id, &hub.options(&cache)).unwrap_err();
        assert!(
            matches!(&err, LoadError::HubRefused { what, .. } if what == "repository id"),
            "{id:?}: {err:?}"
        );
    }
    for revision in ["../../x", "/abs", "a//b", "main/", "a b"] {
        let err =
            hub::snapshot("evil/escape", &hub.options(&cache).revision(revision)).unwrap_err();
        assert!(
            matches!(&err, LoadError::HubRefused { what, .. } if what == "revision"),
            "{revision:?}: {err:?}"
        );
    }
    assert_eq!(
        hub.requests().len(),
        log.len(),
        "refused ids made no request"
    );
}

#[test]
fn the_revision_is_honoured() {
    let hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-revision");
    let v2 = hub.options(&cache).revision("v2");
    let snapshot = hub::snapshot("fixtures/st", &v2).unwrap();
    assert_eq!((snapshot.commit(), snapshot.revision()), (V2, "v2"));
    assert!(snapshot.dir().ends_with(format!("snapshots/{V2}")));

    let from_v2 = embed(
        &SentenceEmbedder::from_hub_with("fixtures/st", &v2, TextOptions::default()).unwrap(),
    );
    let max = embed(&SentenceEmbedder::load(fixture("max")).unwrap());
    let main = embed(&SentenceEmbedder::load(fixture("cls-dense-normalize")).unwrap());
    assert!(max_difference(&from_v2, &max) <= 1e-6);
    assert!(from_v2[0].dim() != main[0].dim() || max_difference(&from_v2, &main) > 1e-2);
    assert!(
        file_requests(&hub.requests())
            .iter()
            .all(|r| r.contains(&format!("/resolve/{V2}/")))
    );

    // A commit id is a revision too; offline, `v2` and its commit resolve from the cache.
    let by_commit = hub.options(&cache).revision(V2).offline(true);
    assert_eq!(
        hub::snapshot("fixtures/st", &by_commit).unwrap().dir(),
        snapshot.dir()
    );
    let offline = v2.clone().offline(true);
    assert_eq!(
        hub::snapshot("fixtures/st", &offline).unwrap().dir(),
        snapshot.dir()
    );
    // `main` was never loaded.
    let err = hub::snapshot("fixtures/st", &hub.options(&cache).offline(true)).unwrap_err();
    assert!(matches!(err, LoadError::HubNotCached { .. }), "{err:?}");
}

#[test]
fn declared_sizes_past_the_limit_are_refused_before_the_download() {
    let hub = FakeHub::start(standard_repos());
    let cache = common::scratch_dir("hub-limit");
    let options = hub.options(&cache).max_bytes(100_000);
    let err = hub::snapshot("fixtures/st", &options).unwrap_err();
    match &err {
        LoadError::HubTooLarge {
            repo,
            file,
            bytes,
            limit,
        } => {
            assert_eq!(
                (repo.as_str(), file.as_str(), *limit),
                ("fixtures/st", "model.safetensors", 100_000)
            );
            assert_eq!(
                *bytes,
                std::fs::metadata(fixture("cls-dense-normalize/model.safetensors"))
                    .unwrap()
                    .len()
            );
        }
        other => panic!("expected HubTooLarge, got {other:?}"),
    }
    let log = hub.requests();
    assert!(
        log.iter().all(|r| !r.contains("model.safetensors")),
        "{log:#?}"
    );
}

#[test]
fn an_optional_file_that_answers_404_does_not_fail_the_load() {
    let mut revision = Revision::new(MAIN, &["main"], fixture("max"));
    revision.phantom = vec!["special_tokens_map.json", "1_Pooling/model.safetensors"];
    let hub = FakeHub::start(HashMap::from([("fixtures/max", vec![revision])]));
    let cache = common::scratch_dir("hub-optional");
    let embedder = SentenceEmbedder::from_hub_with(
        "fixtures/max",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let local = SentenceEmbedder::load(fixture("max")).unwrap();
    assert!(max_difference(&embed(&embedder), &embed(&local)) <= 1e-6);
    let log = hub.requests();
    assert!(
        log.iter().any(|r| r.contains("/special_tokens_map.json")),
        "{log:#?}"
    );
}

#[test]
fn references_parse_into_repository_and_revision() {
    assert_eq!(
        hub::parse_reference("BAAI/bge-small-en-v1.5@refs/pr/3").unwrap(),
        (
            "BAAI/bge-small-en-v1.5".to_string(),
            Some("refs/pr/3".to_string())
        )
    );
    assert!(hub::is_repo_id("gpt2") && hub::is_repo_id("org/name@v1"));
    assert!(!hub::is_repo_id("./models/x") && !hub::is_repo_id("models/x/y"));
    assert!(matches!(
        hub::parse_reference("org/x@../y"),
        Err(LoadError::HubRefused { .. })
    ));
    // The token never shows in Debug output.
    let options = HubOptions::new().token("hf_secret");
    assert!(!format!("{options:?}").contains("hf_secret"));
}

/// `modelhost-serve --hub-model st=fixtures/st`: downloaded at start-up through the
/// environment the server gets (its own, not this process's), linked as `ROOT/st/1` and
/// served as a text embedder.
#[cfg(feature = "server")]
#[test]
fn the_server_serves_a_hub_model_linked_into_its_repository() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let hub = FakeHub::start(standard_repos());
    let root = common::scratch_dir("hub-serve-root");
    let cache = common::scratch_dir("hub-serve-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelhost-serve"))
        .arg("--models")
        .arg(&root)
        .args(["--addr", "127.0.0.1:0", "--hub-model", "st=fixtures/st@v2"])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "0")
        .env_remove("HF_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .map(str::to_string);
    let get = |path: &str| -> String {
        let mut stream = TcpStream::connect(addr.as_deref().unwrap()).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let metadata = addr.as_ref().map(|_| get("/v2/models/st"));
    let _ = child.kill();
    let _ = child.wait();
    let metadata = metadata.unwrap_or_else(|| panic!("the server did not start: {line:?}"));
    assert!(metadata.starts_with("HTTP/1.1 200"), "{metadata}");
    assert!(metadata.contains("\"name\":\"st\""), "{metadata}");
    let link = std::fs::read_link(root.join("st/1")).unwrap();
    assert!(
        link.ends_with(format!("models--fixtures--st/snapshots/{V2}")),
        "{link:?}"
    );
    assert!(
        file_requests(&hub.requests())
            .iter()
            .all(|r| r.contains(V2))
    );
}

/// Every file under the cache (`blobs/`, `snapshots/`, `refs/`, temporary files
/// included); empty when a failed load left nothing behind.
fn cache_files(cache: &Path) -> Vec<String> {
    if cache.exists() {
        files_under(cache)
    } else {
        Vec::new()
    }
}

/// `fixtures/st` at `main` (the `cls-dense-normalize` fixture) misbehaving on its root
/// weights, which are downloaded after six other files.
fn faulty(fault: Fault) -> FakeHub {
    let revision = Revision::new(MAIN, &["main"], fixture("cls-dense-normalize"))
        .fault("model.safetensors", fault);
    FakeHub::start(HashMap::from([("fixtures/st", vec![revision])]))
}

/// After a failed load, a Hub that answers correctly loads into the same cache.
fn a_correct_hub_loads_into(cache: &Path) {
    let hub = FakeHub::start(standard_repos());
    let embedder =
        SentenceEmbedder::from_hub_with("fixtures/st", &hub.options(cache), TextOptions::default())
            .unwrap();
    let local = SentenceEmbedder::load(fixture("cls-dense-normalize")).unwrap();
    assert!(max_difference(&embed(&embedder), &embed(&local)) <= 1e-6);
}

#[test]
fn a_body_longer_than_declared_is_refused_and_leaves_nothing_in_the_cache() {
    let size = std::fs::metadata(fixture("cls-dense-normalize/model.safetensors"))
        .unwrap()
        .len();
    for (name, fault, received) in [
        // The Content-Length already says so: nothing of the body is read.
        ("extra", Fault::Extra(1000), 0),
        // Only the body tells: it is read up to one byte past the declared size.
        ("unannounced", Fault::ExtraUnannounced(1000), size + 1),
        ("endless", Fault::Endless, size + 1),
    ] {
        let hub = faulty(fault);
        let cache = common::scratch_dir(&format!("hub-longer-{name}"));
        let err = SentenceEmbedder::from_hub_with(
            "fixtures/st",
            &hub.options(&cache),
            TextOptions::default(),
        )
        .unwrap_err();
        match &err {
            LoadError::HubDownload {
                repo,
                file,
                declared,
                received: got,
                ..
            } => {
                assert_eq!(
                    (repo.as_str(), file.as_str(), *declared, *got),
                    ("fixtures/st", "model.safetensors", Some(size), received),
                    "{name}: {err}"
                );
            }
            other => panic!("{name}: expected HubDownload, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("declared {size} bytes")),
            "{name}: {message}"
        );
        // The files downloaded before it are gone too, and no temporary file is left.
        let repo_dir = cache.join("models--fixtures--st");
        for dir in ["blobs", "snapshots", "refs"] {
            assert_eq!(
                cache_files(&repo_dir.join(dir)),
                Vec::<String>::new(),
                "{name}"
            );
        }
        assert_eq!(cache_files(&cache), Vec::<String>::new(), "{name}");
        // Offline, nothing is taken for a copy.
        let offline = hub.options(&cache).offline(true);
        assert!(matches!(
            hub::snapshot("fixtures/st", &offline),
            Err(LoadError::HubNotCached { .. })
        ));
        drop(hub);
        a_correct_hub_loads_into(&cache);
    }
}

#[test]
fn a_body_that_stalls_fails_after_the_read_timeout_instead_of_hanging() {
    let hub = faulty(Fault::Stall);
    let cache = common::scratch_dir("hub-stall");
    let options = hub.options(&cache).read_timeout(Duration::from_secs(1));
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(hub::snapshot("fixtures/st", &options));
    });
    // A bound on this test's own wait only: the load must return, not hang.
    let result = receive
        .recv_timeout(Duration::from_secs(240))
        .expect("the load returned instead of hanging on the stalled body");
    let size = std::fs::metadata(fixture("cls-dense-normalize/model.safetensors"))
        .unwrap()
        .len();
    match &result {
        Err(LoadError::HubDownload {
            file,
            declared,
            received,
            problem,
            ..
        }) => {
            assert_eq!(
                (file.as_str(), *declared),
                ("model.safetensors", Some(size))
            );
            assert!(*received < size, "{result:?}");
            assert!(problem.contains("read_timeout"), "{problem}");
        }
        other => panic!("expected HubDownload, got {other:?}"),
    }
    assert_eq!(cache_files(&cache), Vec::<String>::new());
    drop(hub);
    a_correct_hub_loads_into(&cache);
}

#[test]
fn hostile_commit_and_etag_headers_are_refused_before_they_become_paths() {
    for (name, fault, header) in [
        ("commit", Fault::Commit("../../../../evil"), "X-Repo-Commit"),
        ("etag", Fault::Etag("\"../../../evil\""), "ETag"),
        ("etag-dots", Fault::Etag("\"..\""), "ETag"),
        ("etag-slash", Fault::Etag("\"a/b\""), "ETag"),
    ] {
        let hub = faulty(fault);
        let cache = common::scratch_dir(&format!("hub-hostile-{name}"));
        let err = hub::snapshot("fixtures/st", &hub.options(&cache)).unwrap_err();
        assert!(
            matches!(&err, LoadError::HubRefused { what, .. } if what.contains(header) && what.contains("model.safetensors")),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("is refused"), "{err}");
        assert_eq!(cache_files(&cache), Vec::<String>::new(), "{name}");
        assert!(!cache.parent().unwrap().join("evil").exists());
    }
    // A well-formed commit that is not the listing's: the answer is from elsewhere.
    let hub = faulty(Fault::Commit(V2));
    let cache = common::scratch_dir("hub-hostile-other-commit");
    let err = hub::snapshot("fixtures/st", &hub.options(&cache)).unwrap_err();
    assert!(
        matches!(&err, LoadError::HubResponse { what, .. } if what.contains(V2) && what.contains(MAIN)),
        "{err:?}"
    );
    assert_eq!(cache_files(&cache), Vec::<String>::new());
}

#[test]
fn a_redirect_to_storage_gets_no_token_and_the_blob_is_named_by_the_hub() {
    let storage = FakeHub::start(standard_repos());
    let hub = faulty(Fault::Redirect(storage.url.clone()));
    let cache = common::scratch_dir("hub-redirect");
    let options = hub.options(&cache).token("hf_secret");
    let embedder =
        SentenceEmbedder::from_hub_with("fixtures/st", &options, TextOptions::default()).unwrap();
    let local = SentenceEmbedder::load(fixture("cls-dense-normalize")).unwrap();
    assert!(max_difference(&embed(&embedder), &embed(&local)) <= 1e-6);

    let (ours, theirs) = (hub.requests(), storage.requests());
    assert!(ours.iter().all(|r| r.ends_with(" auth")), "{ours:#?}");
    assert_eq!(
        theirs,
        [format!("GET /fixtures/st/resolve/{MAIN}/model.safetensors")],
        "storage got one request, without the token"
    );
    // The blob is named after the Hub's X-Linked-Etag, not storage's ETag.
    let blobs = cache_files(&cache.join("models--fixtures--st/blobs"));
    assert!(blobs.iter().any(|b| b.starts_with("linked-")), "{blobs:?}");
    let weights = cache.join(format!(
        "models--fixtures--st/snapshots/{MAIN}/model.safetensors"
    ));
    assert!(
        std::fs::read_link(&weights)
            .unwrap()
            .to_string_lossy()
            .contains("blobs/linked-")
    );
}

fn arch_fixture(arch: &str, head: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(arch)
        .join(head)
}

fn arch_json<T: serde::de::DeserializeOwned>(path: PathBuf) -> T {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn arch_repos() -> Repos {
    HashMap::from([
        (
            "fixtures/roberta-classify",
            vec![Revision::new(
                MAIN,
                &["main"],
                arch_fixture("roberta", "classify"),
            )],
        ),
        (
            "fixtures/mpnet-rerank",
            vec![Revision::new(
                MAIN,
                &["main"],
                arch_fixture("mpnet", "rerank"),
            )],
        ),
    ])
}

#[test]
fn a_roberta_text_classifier_from_the_hub_classifies_as_its_directory() {
    #[derive(serde::Deserialize)]
    struct Refs {
        logits: Vec<Vec<f32>>,
    }
    let hub = FakeHub::start(arch_repos());
    let cache = common::scratch_dir("hub-classify");
    let dir = arch_fixture("roberta", "classify");
    let ours = TextClassifier::from_hub_with(
        "fixtures/roberta-classify",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let local = TextClassifier::load(&dir).unwrap();
    assert_eq!(ours.labels(), local.labels());
    let texts: Vec<String> = arch_json(dir.parent().unwrap().parent().unwrap().join("texts.json"));
    let refs: Refs = arch_json(dir.join("references.json"));
    let (mut worst, mut worst_ref) = (0f32, 0f32);
    for (chunk, logits) in texts.chunks(16).zip(refs.logits.chunks(16)) {
        let classify = |c: &TextClassifier| {
            let batch: Vec<_> = chunk.iter().map(|t| c.tokenize(t).unwrap()).collect();
            c.classify_batch(&batch).unwrap()
        };
        for ((a, b), theirs) in classify(&ours).iter().zip(classify(&local)).zip(logits) {
            assert_eq!(a.scores.len(), b.scores.len());
            let max = theirs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = theirs.iter().map(|l| (l - max).exp()).sum();
            for ((p, q), l) in a.scores.iter().zip(&b.scores).zip(theirs) {
                worst = worst.max((p - q).abs());
                worst_ref = worst_ref.max((p - (l - max).exp() / sum).abs());
            }
        }
    }
    assert_eq!(worst, 0.0, "the Hub's copy classifies as the directory");
    assert!(worst_ref <= 1e-4, "and as transformers: {worst_ref}");
    assert!(format!("{ours:?}").contains("roberta-classify"), "{ours:?}");
}

#[test]
fn an_mpnet_cross_encoder_from_the_hub_scores_as_its_directory() {
    #[derive(serde::Deserialize)]
    struct Refs {
        scores: Vec<f32>,
    }
    let hub = FakeHub::start(arch_repos());
    let cache = common::scratch_dir("hub-rerank");
    let dir = arch_fixture("mpnet", "rerank");
    let ours = CrossEncoder::from_hub_with(
        "fixtures/mpnet-rerank",
        &hub.options(&cache),
        TextOptions::default(),
    )
    .unwrap();
    let local = CrossEncoder::load(&dir).unwrap();
    let pairs: Vec<(String, String)> =
        arch_json(dir.parent().unwrap().parent().unwrap().join("pairs.json"));
    let pairs: Vec<TextPair> = pairs
        .into_iter()
        .map(|(q, p)| TextPair::new(q, p))
        .collect();
    let refs: Refs = arch_json(dir.join("references.json"));
    assert_eq!(refs.scores.len(), pairs.len());
    let (mut worst, mut worst_ref) = (0f32, 0f32);
    for (chunk, theirs) in pairs.chunks(16).zip(refs.scores.chunks(16)) {
        let score = |c: &CrossEncoder| {
            let batch: Vec<_> = chunk.iter().map(|p| c.tokenize(p).unwrap()).collect();
            c.score_batch(&batch).unwrap()
        };
        for ((a, b), t) in score(&ours).iter().zip(score(&local)).zip(theirs) {
            worst = worst.max((a.score - b.score).abs());
            worst_ref = worst_ref.max((a.score - t).abs());
        }
    }
    assert_eq!(worst, 0.0, "the Hub's copy scores as the directory");
    assert!(
        worst_ref <= 1e-4,
        "and as sentence-transformers: {worst_ref}"
    );
}
