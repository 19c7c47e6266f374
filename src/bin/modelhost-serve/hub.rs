//! `--hub-model NAME=ORG/REPO[@REVISION]` (feature `hub`): a Hugging Face Hub model served
//! as model `NAME`.
//!
//! At start-up each one is resolved into the Hub cache (downloaded once; `HF_HOME`,
//! `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` apply, see
//! `modelhost::hub`) and linked into the model repository as `ROOT/NAME/1`, a symbolic link
//! to the snapshot. From then on it is a model of the repository like any other: its kind
//! is recognised from its files, and SIGHUP, load and unload treat it alike. A restart
//! with another revision points the link at the new snapshot. `ROOT/NAME` must not hold a
//! model of its own: only that link.

use std::path::Path;

use modelhost::hub::{HubOptions, parse_reference, snapshot};

/// Resolves every `NAME=ORG/REPO[@REVISION]` of `specs` and links it at `ROOT/NAME/1`.
pub(crate) fn install(root: &Path, specs: &[String]) -> Result<(), String> {
    for spec in specs {
        let bad = |why: &str| {
            format!("--hub-model {spec:?}: {why}; write NAME=ORG/REPO or NAME=ORG/REPO@REVISION")
        };
        let (name, reference) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let is_name = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.starts_with('.')
            && !name.contains(['/', '\\']);
        if !is_name {
            return Err(bad(
                "NAME must be one directory name (no `/`, not starting with `.`)",
            ));
        }
        let (repo, revision) = parse_reference(reference).map_err(|e| bad(&e.to_string()))?;
        let mut options = HubOptions::new();
        if let Some(revision) = revision {
            options = options.revision(revision);
        }
        let snapshot = snapshot(&repo, &options).map_err(|e| format!("--hub-model {spec}: {e}"))?;
        link(&root.join(name), snapshot.dir()).map_err(|e| format!("--hub-model {spec}: {e}"))?;
        tracing::info!(
            model = name,
            repo,
            revision = snapshot.revision(),
            commit = snapshot.commit(),
            dir = %snapshot.dir().display(),
            "Hub model linked as version 1"
        );
    }
    Ok(())
}

/// Makes `model_dir/1` a symbolic link to `target`, replacing a link that is there; a
/// `model_dir` that holds anything else is refused.
fn link(model_dir: &Path, target: &Path) -> Result<(), String> {
    let version = model_dir.join("1");
    if model_dir.exists() {
        let entries = std::fs::read_dir(model_dir)
            .map_err(|e| format!("cannot read {}: {e}", model_dir.display()))?;
        for entry in entries.flatten() {
            let is_our_link = entry.file_name() == "1"
                && entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
            if !is_our_link {
                return Err(format!(
                    "{} already holds a model of its own ({}); give the Hub model another name",
                    model_dir.display(),
                    entry.path().display()
                ));
            }
        }
    }
    std::fs::create_dir_all(model_dir)
        .map_err(|e| format!("cannot create {}: {e}", model_dir.display()))?;
    symlink_replacing(target, &version)
}

#[cfg(unix)]
fn symlink_replacing(target: &Path, link: &Path) -> Result<(), String> {
    // A new link beside the old one, renamed over it: a rescan sees one or the other.
    let temporary = link.with_file_name(".1.hub-link");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)
        .and_then(|()| std::fs::rename(&temporary, link))
        .map_err(|e| {
            format!(
                "cannot link {} to {}: {e}",
                link.display(),
                target.display()
            )
        })
}

#[cfg(not(unix))]
fn symlink_replacing(_target: &Path, link: &Path) -> Result<(), String> {
    Err(format!(
        "cannot link {}: --hub-model needs symbolic links (Unix)",
        link.display()
    ))
}
