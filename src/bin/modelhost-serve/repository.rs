//! The model repository extension, as tritonclient calls it: the index of every model
//! version and its state (`get_model_repository_index`), and loading or unloading one
//! model while the server runs (`load_model`, `unload_model`).
//!
//! Unloading takes every version of a model out at once: it answers 404 from then on, its
//! predictors answer what they accepted and stop, and the index lists its versions as
//! `UNAVAILABLE` (reason `unloaded`); a SIGHUP rescan leaves it out. Loading brings a
//! model's directory, `ROOT/NAME/`, in step with the disk: a model added on disk starts
//! serving, an unloaded one comes back, new version directories are deployed and removed
//! ones retired. Changes are made one at a time, under [`App::control`].

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use modelhost::registry::{RegistryError, ReloadReport};

use crate::error::{ApiError, ApiResult};
use crate::kind::Kind;
use crate::routes::{App, AppState, reply};

/// The optional JSON body of an index, load or unload request.
#[derive(Debug, Default, Deserialize)]
struct ControlBody {
    /// Index: only the versions that are ready.
    #[serde(default)]
    ready: Option<bool>,
    /// Load and unload: options (`config` and `file:...` on load are not supported).
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// The body as a [`ControlBody`]; an empty body is an empty one.
fn control_body(body: &[u8]) -> ApiResult<ControlBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ControlBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the request body is not a repository request: {e}; send nothing, or a JSON \
             object such as {{\"parameters\": {{}}}} (index: {{\"ready\": true}})"
        ))
    })
}

pub(crate) async fn index(State(app): AppState, body: Bytes) -> Response {
    let ready_only = match control_body(&body) {
        Ok(control) => control.ready.unwrap_or(false),
        Err(e) => return e.into_response(),
    };
    let mut index: Vec<(String, Value)> = Vec::new();
    for set in &app.sets {
        let kind = set.kind().name();
        for name in set.names() {
            for (version, ready) in set.versions(&name) {
                let state = if ready { "READY" } else { "UNAVAILABLE" };
                index.push((
                    name.clone(),
                    json!({"name": name, "version": version, "state": state, "kind": kind}),
                ));
            }
        }
        for (name, version) in set.unloaded() {
            index.push((
                name.clone(),
                json!({"name": name, "version": version, "state": "UNAVAILABLE",
                       "reason": "unloaded", "kind": kind}),
            ));
        }
    }
    // By name; each model's versions stay in deployment order.
    index.sort_by(|a, b| a.0.cmp(&b.0));
    let entries = (index.into_iter())
        .map(|(_, entry)| entry)
        .filter(|entry| !ready_only || entry["state"] == "READY")
        .collect();
    axum::Json(Value::Array(entries)).into_response()
}

pub(crate) async fn load(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    body: Bytes,
) -> Response {
    let answer = async {
        let parameters = control_body(&body)?.parameters.unwrap_or_default();
        if let Some(key) = (parameters.keys()).find(|k| *k == "config" || k.starts_with("file:")) {
            return Err(ApiError::bad(format!(
                "load_model with parameters.{key} (a configuration or files sent with the \
                 request) is not supported; put the model's files in the repository, \
                 ROOT/{model}/VERSION/, and load it by name"
            )));
        }
        tokio::task::spawn_blocking(move || load_model(&app, &model))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    reply(answer.await)
}

pub(crate) async fn unload(
    State(app): AppState,
    UrlPath(model): UrlPath<String>,
    body: Bytes,
) -> Response {
    let answer = async {
        // `unload_dependents` (tritonclient always sends it) has nothing to act on here: no
        // model depends on another.
        control_body(&body)?;
        tokio::task::spawn_blocking(move || unload_model(&app, &model))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    reply(answer.await)
}

/// Whether `name` is one directory name, so that `ROOT/name` stays in the repository.
fn is_model_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// The version directories of a model directory, in name order.
fn version_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn names(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(_, version)| version.as_str()).collect()
}

pub(crate) fn load_model(app: &App, name: &str) -> ApiResult<Value> {
    if !is_model_name(name) {
        return Err(ApiError::bad(format!(
            "{name:?} is not a model name: a model is one directory of the repository, named \
             without `/`, and not `.` or `..`"
        )));
    }
    let dir = app.models_root.join(name);
    if !dir.is_dir() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "the model repository has no directory `{name}`; put the model's versions in \
                 ROOT/{name}/VERSION/ and load it again"
            ),
        ));
    }
    let versions = version_dirs(&dir);
    if versions.is_empty() {
        return Err(ApiError::bad(format!(
            "model directory `{name}` has no version directories; put each version in \
             ROOT/{name}/VERSION/"
        )));
    }
    let (mut kinds, mut unknown) = (Vec::new(), Vec::new());
    for version in &versions {
        match Kind::of(version) {
            Ok(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Ok(_) => {}
            Err(e) => unknown.push(e),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::bad(format!(
            "model `{name}` cannot be loaded: {}",
            unknown.join("; ")
        )));
    }
    if kinds.len() > 1 {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        return Err(ApiError::bad(format!(
            "model `{name}` has versions of kinds {kinds:?}; give each kind its own model name"
        )));
    }

    let _one_change = app.control.lock().unwrap_or_else(PoisonError::into_inner);
    let mut report = ReloadReport::default();
    let mut errors = Vec::new();
    for set in &app.sets {
        match set.load(name) {
            Ok(r) => {
                report.added.extend(r.added);
                report.removed.extend(r.removed);
                report.failed.extend(r.failed);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let serving: Vec<String> = (app.sets.iter())
        .flat_map(|s| s.versions(name))
        .map(|(version, _)| version)
        .collect();
    eprintln!(
        "load {name}: added {:?}, removed {:?}, failed {:?}{}",
        names(&report.added),
        names(&report.removed),
        report.failed,
        if errors.is_empty() {
            String::new()
        } else {
            format!(", {errors:?}")
        }
    );
    let failed: Vec<String> = (report.failed.iter())
        .map(|(_, version, e)| format!("version `{version}`: {e}"))
        .chain(errors)
        .collect();
    if !failed.is_empty() {
        return Err(ApiError::bad(format!(
            "model `{name}` could not be loaded: {}; versions serving: {serving:?}",
            failed.join("; ")
        )));
    }
    Ok(json!({
        "name": name,
        "versions": serving,
        "added": names(&report.added),
        "removed": names(&report.removed),
    }))
}

pub(crate) fn unload_model(app: &App, name: &str) -> ApiResult<Value> {
    let _one_change = app.control.lock().unwrap_or_else(PoisonError::into_inner);
    let mut unloaded: Option<Vec<String>> = None;
    for set in &app.sets {
        match set.unload(name) {
            Ok(versions) => unloaded.get_or_insert_with(Vec::new).extend(versions),
            Err(RegistryError::UnknownModel { .. }) => {}
            Err(e) => return Err(ApiError::registry(e)),
        }
    }
    let Some(versions) = unloaded else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model named `{name}` is loaded, so there is nothing to unload"),
        ));
    };
    eprintln!("unload {name}: versions {versions:?}");
    Ok(json!({"name": name, "unloaded": versions}))
}
